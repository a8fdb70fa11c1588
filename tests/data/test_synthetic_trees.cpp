// The readers and the loader on trees written by the synthetic generator (the layouts a user's
// download has), and Maskiges made by combo-maskige's job runner read back by the dataset.
#include <filesystem>

#include "combo/data/avsbench.h"
#include "combo/data/loader.h"
#include "combo/data/synthetic.h"
#include "combo/maskige/maskige_jobs.h"
#include "combo/maskige/proposer.h"
#include "testing/testing.h"

namespace {

namespace fs = std::filesystem;
using namespace combo::data;

SynthReport synth(const std::string& dataset, const fs::path& out) {
  SynthOptions o;
  o.dataset = dataset;
  o.out = out.string();
  o.train_videos = 3;
  o.val_videos = 2;
  o.test_videos = 2;
  o.size = 64;
  o.num_classes = 3;
  o.seed = 5;
  o.write_raw_videos = false;
  return synthesize(o);
}

DatasetOptions options(DatasetKind kind, const std::string& root, const std::string& split) {
  DatasetOptions d;
  d.kind = kind;
  d.root = root;
  d.split = split;
  d.train = split == "train";
  return d;
}

TEST(SyntheticTreesIntegration, S4ReadsEverySplitAndLoadsDeterministically) {
  combo::testing::TempDir dir;
  const auto report = synth("s4", dir.path() / "AVSBench_object" / "Single-source");
  for (const char* split : {"train", "val", "test"}) {
    AvsDataset ds(options(DatasetKind::kS4, dir.path().string(), split));  // a parent folder
    EXPECT_EQ(ds.size(), std::string(split) == "train" ? 3 : 2) << split;
    Rng rng(0);
    const auto s = ds.load(0, rng);
    EXPECT_EQ(s.frames.sizes(), (std::vector<int64_t>{5, 3, 64, 64}));
    EXPECT_EQ(s.maskiges.sizes(), s.frames.sizes());
    EXPECT_EQ(s.log_mel.sizes(), (std::vector<int64_t>{5, 1, 96, 64}));
    EXPECT_EQ(s.has_gt.sum().item<int64_t>(), std::string(split) == "train" ? 1 : 5);
    // The sounding object is annotated: a non-empty strict part of the frame.
    const double fg = s.labels[0].eq(1).to(at::kFloat).mean().item<double>();
    EXPECT_GT(fg, 0.005);
    EXPECT_LT(fg, 0.5);
  }
  // Augmented training batches are identical whatever the number of workers.
  auto d = options(DatasetKind::kS4, report.root, "train");
  d.augment = true;
  d.augment_options.short_sides = {56, 64, 72};
  d.augment_options.crop_size = 64;
  d.augment_options.pad_size = 64;
  auto ds = std::make_shared<AvsDataset>(d);
  std::vector<at::Tensor> first;
  for (int workers : {0, 2}) {
    LoaderOptions lo;
    lo.batch_videos = 2;
    lo.num_workers = workers;
    lo.shuffle = true;
    lo.infinite = true;
    lo.seed = 9;
    DataLoader loader(ds, lo);
    for (int i = 0; i < 3; ++i) {
      const auto b = *loader.next();
      const auto joined = at::cat({b.inputs.images.flatten(), b.inputs.maskiges.flatten(),
                                   b.labels.to(at::kByte).flatten()});
      if (workers == 0) {
        first.push_back(joined);
      } else {
        EXPECT_TENSOR_EQ(first[i], joined);
      }
    }
  }
}

TEST(SyntheticTreesIntegration, Ms3AndAvssRead) {
  combo::testing::TempDir dir;
  synth("ms3", dir.path() / "Multi-sources");
  AvsDataset ms3(options(DatasetKind::kMS3, dir.path().string(), "val"));
  ASSERT_EQ(ms3.size(), 2);
  Rng rng(0);
  const auto m = ms3.load(1, rng);
  EXPECT_TRUE(m.has_gt.all().item<bool>());
  EXPECT_TRUE(m.labels.le(1).all().item<bool>());

  const auto avss_root = dir.path() / "AVSBench_semantic";
  synth("avss", avss_root);
  for (const char* split : {"train", "test"}) {
    AvsDataset avss(options(DatasetKind::kAVSS, dir.path().string(), split));
    for (int64_t i = 0; i < avss.size(); ++i) {
      const auto s = avss.load(i, rng);
      const int64_t t = s.group == "v2" ? 10 : 5;
      EXPECT_EQ(s.frames.sizes(), (std::vector<int64_t>{t, 3, 64, 64})) << s.video_id;
      EXPECT_EQ(s.slots, 10);
      const bool first_only = s.group == "v1s" && std::string(split) == "train";
      EXPECT_EQ(s.has_gt.sum().item<int64_t>(), first_only ? 1 : t) << s.video_id;
      EXPECT_LE(s.labels.masked_select(s.labels.ne(255)).max().item<int64_t>(), 3);
    }
    // The raw AVSBench frames with the official resize rules read too.
    auto raw = options(DatasetKind::kAVSS, avss_root.string(), split);
    raw.avss_frames = "raw";
    raw.image_size = 64;
    raw.load_maskige = false;
    AvsDataset r(raw);
    EXPECT_EQ(r.load(0, rng).frames.size(2), 64);
  }
}

TEST(SyntheticTreesIntegration, MaskigesFromTheBuiltInProposerLoad) {
  combo::testing::TempDir dir;
  const auto report = synth("s4", dir.path());
  fs::remove_all(fs::path(report.root) / "s4_data" / "pre_SAM_mask");
  const auto jobs = combo::maskige::dataset_jobs("s4", report.root);
  EXPECT_EQ(jobs.size(), 7u * 5u);
  auto proposer = combo::maskige::make_proposer("builtin");
  combo::maskige::MaskigeRunOptions ro;
  ro.jobs = 2;
  const auto summary = combo::maskige::run_maskige_jobs(jobs, proposer.get(), ro);
  EXPECT_EQ(summary.written, 35);
  EXPECT_TRUE(summary.failed.empty());
  AvsDataset ds(options(DatasetKind::kS4, report.root, "val"));
  Rng rng(0);
  const auto s = ds.load(1, rng);
  ASSERT_EQ(s.maskiges.sizes(), s.frames.sizes());
  // A Maskige is a colour code: several distinct colours per frame.
  const auto colours =
      std::get<0>(at::_unique((s.maskiges[0][0].to(at::kInt) * 65536 +
                               s.maskiges[0][1].to(at::kInt) * 256 + s.maskiges[0][2].to(at::kInt))
                                  .flatten()));
  EXPECT_GE(colours.numel(), 2);
}

}  // namespace
