// The loader reads through the dataset interface: any Dataset works (no AVSBench reader, no
// media library), order and content do not depend on the workers, skip_bad and errors come from
// the interface, and the in-memory synthetic task collates into batches with targets.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <atomic>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "combo/core/check.h"
#include "combo/data/dataset.h"
#include "combo/data/loader.h"
#include "combo/data/synthetic_dataset.h"
#include "testing/testing.h"

namespace {

using namespace combo::data;

// A dataset of `n` tiny videos whose pixels encode (index, first rng draw); video `broken`
// throws on load.
class CountingDataset final : public Dataset {
 public:
  CountingDataset(int64_t n, int64_t broken, bool skip) : n_(n), broken_(broken), skip_(skip) {}
  int64_t size() const override { return n_; }
  DatasetKind kind() const override { return DatasetKind::kMS3; }
  VideoSample load(int64_t index, Rng& rng) const override {
    ++loads;
    COMBO_CHECK(index != broken_, "counting video ", index, " is broken");
    VideoSample s;
    s.video_id = video_id(index);
    s.index = index;
    s.frames = at::full({2, 3, 4, 4}, index % 256, at::kByte);
    s.frames[1].fill_(static_cast<int64_t>(rng() % 256));
    s.log_mel = at::zeros({2, 1, 96, 64});
    s.labels = at::zeros({2, 4, 4}, at::kLong);
    s.labels[0][0][0] = 1;
    s.has_gt = at::ones({2}, at::kBool);
    s.slots = 2;
    return s;
  }
  const std::vector<std::string>& class_names() const override { return names_; }
  bool skip_bad() const override { return skip_; }
  std::string video_id(int64_t index) const override { return "count_" + std::to_string(index); }
  std::string describe() const override { return "counting"; }
  mutable std::atomic<int64_t> loads{0};

 private:
  int64_t n_, broken_;
  bool skip_;
  std::vector<std::string> names_ = {"background", "object"};
};

std::vector<VideoBatch> take(DataLoader& loader, int n) {
  std::vector<VideoBatch> out;
  for (int i = 0; i < n; ++i) {
    auto b = loader.next();
    if (!b) break;
    out.push_back(std::move(*b));
  }
  return out;
}

LoaderOptions shuffled(int64_t workers) {
  LoaderOptions o;
  o.batch_videos = 2;
  o.num_workers = workers;
  o.shuffle = true;
  o.infinite = true;
  o.seed = 7;
  return o;
}

}  // namespace

TEST(LoaderInterface, AnyDatasetSameBatchesWhateverTheWorkers) {
  auto ds = std::make_shared<CountingDataset>(5, -1, false);
  std::vector<std::vector<VideoBatch>> runs;
  for (int workers : {0, 1, 3}) {
    DataLoader loader(ds, shuffled(workers));
    runs.push_back(take(loader, 6));  // crosses epochs (3 batches per epoch, the last padded)
  }
  for (size_t r = 1; r < runs.size(); ++r)
    for (size_t i = 0; i < runs[0].size(); ++i) {
      EXPECT_EQ(runs[r][i].indices, runs[0][i].indices) << "run " << r << " batch " << i;
      EXPECT_TRUE(runs[r][i].inputs.images.equal(runs[0][i].inputs.images));
    }
  // Pixels of frame 0 are the video index: the batch holds the videos its indices name.
  const auto& b = runs[0][0];
  EXPECT_EQ(b.video_ids[0], "count_" + std::to_string(b.indices[0]));
  EXPECT_EQ(b.inputs.images[0][0][0][0].item<int64_t>(), b.indices[0]);
}

TEST(LoaderInterface, ErrorsAndSkipsComeFromTheInterface) {
  LoaderOptions o;
  o.num_workers = 2;
  {
    DataLoader loader(std::make_shared<CountingDataset>(4, 2, false), o);
    std::string msg;
    try {
      take(loader, 10);
    } catch (const combo::Error& e) {
      msg = e.what();
    }
    EXPECT_NE(msg.find("counting video 2 is broken"), std::string::npos) << msg;
  }
  DataLoader loader(std::make_shared<CountingDataset>(4, 2, true), o);
  EXPECT_EQ(take(loader, 10).size(), 3u);
  EXPECT_EQ(loader.skipped(), 1);
  ASSERT_EQ(loader.skipped_errors().size(), 1u);
  EXPECT_NE(loader.skipped_errors()[0].find("broken"), std::string::npos);
}

TEST(LoaderInterface, SyntheticTaskBatchesAndTargets) {
  DatasetOptions d;
  d.kind = DatasetKind::kS4;
  d.split = "train";
  d.train = true;
  d.image_size = 32;
  d.synthetic.train_videos = 5;
  auto ds = std::make_shared<SyntheticDataset>(d);
  DataLoader a(ds, shuffled(0)), b(ds, shuffled(2));
  const auto ba = take(a, 4), bb = take(b, 4);
  ASSERT_EQ(ba.size(), 4u);
  for (size_t i = 0; i < ba.size(); ++i) {
    EXPECT_EQ(ba[i].indices, bb[i].indices);
    EXPECT_TRUE(ba[i].inputs.images.equal(bb[i].inputs.images));
    EXPECT_TRUE(ba[i].inputs.log_mel.equal(bb[i].inputs.log_mel));
    EXPECT_TRUE(ba[i].labels.equal(bb[i].labels));
  }
  const auto& batch = ba[0];
  EXPECT_EQ(batch.inputs.images.sizes(), (std::vector<int64_t>{10, 3, 32, 32}));
  EXPECT_EQ(batch.inputs.maskiges.sizes(), (std::vector<int64_t>{10, 3, 32, 32}));
  EXPECT_EQ(batch.inputs.frames_per_video, (std::vector<int64_t>{5, 5}));
  // S4 training: one supervised frame per video, the first; its targets are the sounding object.
  const auto t = make_targets(batch, combo::loss::DatasetKind::kS4, /*train=*/true);
  EXPECT_EQ(t.layout.supervised_rows, (std::vector<int64_t>{0, 5}));
  ASSERT_EQ(t.targets.size(), 2u);
  for (const auto& target : t.targets) {
    EXPECT_GE(target.masks.size(0), 1);
    EXPECT_TRUE(target.labels.le(1).all().item<bool>());
  }
}
