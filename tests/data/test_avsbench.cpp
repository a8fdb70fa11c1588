// The AVSBench readers on small trees written here: indexes, shapes, flags, values, AVSS rules
// and every bad-input case of issue 6.
#include <opencv2/imgproc.hpp>

#include <filesystem>
#include <fstream>

#include "combo/core/check.h"
#include "combo/data/avsbench.h"
#include "combo/io/audio_reader.h"
#include "combo/io/image.h"
#include "testing/data_tree.h"
#include "testing/testing.h"

namespace {

namespace fs = std::filesystem;
using combo::data::AvsDataset;
using combo::data::DatasetKind;
using combo::data::DatasetOptions;
using combo::testing::TempDir;

DatasetOptions opts(DatasetKind kind, const fs::path& root, const std::string& split) {
  DatasetOptions o;
  o.kind = kind;
  o.root = root.string();
  o.split = split;
  o.train = split == "train";
  return o;
}

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const combo::Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "no combo::Error thrown";
  return "";
}

combo::data::VideoSample load(const AvsDataset& ds, int64_t i) {
  combo::data::Rng rng(0);
  return ds.load(i, rng);
}

class AvsbenchS4 : public combo::testing::SeededTest {
 protected:
  TempDir dir;
  fs::path root = dir.path() / "AVS_dataset" / "AVSBench_object" / "Single-source";
  combo::testing::TreeSpec spec;
  void SetUp() override {
    SeededTest::SetUp();
    combo::testing::write_s4_tree(root, spec);
  }
};

TEST_F(AvsbenchS4, IndexFollowsTheCsvAndTheLayout) {
  AvsDataset train(opts(DatasetKind::kS4, root, "train"));
  AvsDataset val(opts(DatasetKind::kS4, root, "val"));
  EXPECT_EQ(train.size(), spec.train);
  EXPECT_EQ(val.size(), spec.val);
  const auto& r = train.record(1);
  EXPECT_EQ(r.id, "vt1");
  EXPECT_EQ(r.group, "cat_b");
  ASSERT_EQ(r.frames.size(), 5u);
  EXPECT_EQ(fs::path(r.frames[2]).filename(), "vt1_3.png");
  EXPECT_NE(r.frames[0].find("s4_data/visual_frames/train/cat_b/vt1/"), std::string::npos);
  EXPECT_EQ(r.gts.size(), 1u);  // training: first frame only
  EXPECT_EQ(val.record(0).gts.size(), 5u);
  EXPECT_NE(r.wav.find("s4_data/audio_wav/train/cat_b/vt1.wav"), std::string::npos);
  EXPECT_NE(r.pkl.find("s4_data/audio_log_mel/train/cat_b/vt1.pkl"), std::string::npos);
  EXPECT_EQ(fs::path(r.maskiges[4]).filename(), "vt1_5_mask_color.png");
}

TEST_F(AvsbenchS4, RootsOfAvsbenchAndComboBothResolve) {
  const fs::path parent = dir.path();
  EXPECT_EQ(fs::path(combo::data::resolve_root(DatasetKind::kS4, parent.string())), root);
  EXPECT_EQ(
      fs::path(combo::data::resolve_root(DatasetKind::kS4, (parent / "AVS_dataset").string())),
      root);
  EXPECT_EQ(fs::path(combo::data::resolve_root(DatasetKind::kS4, root.string())), root);
  const auto msg = error_of([&] { combo::data::resolve_root(DatasetKind::kMS3, parent.string()); });
  EXPECT_NE(msg.find("ms3_data"), std::string::npos) << msg;
}

TEST_F(AvsbenchS4, WithoutCsvTheSortedListingIsUsed) {
  fs::remove(root / "s4_meta_data.csv");
  AvsDataset ds(opts(DatasetKind::kS4, root, "train"));
  ASSERT_EQ(ds.size(), spec.train);
  // cat_a/vt0, cat_a/vt2, cat_b/vt1 (categories, then videos, sorted).
  EXPECT_EQ(ds.record(0).id, "vt0");
  EXPECT_EQ(ds.record(1).id, "vt2");
  EXPECT_EQ(ds.record(2).id, "vt1");
}

TEST_F(AvsbenchS4, TrainingSampleHasFirstFrameGroundTruthOnly) {
  AvsDataset ds(opts(DatasetKind::kS4, root, "train"));
  const auto s = load(ds, 0);
  ASSERT_EQ(s.frames.sizes(), (std::vector<int64_t>{5, 3, spec.size, spec.size}));
  EXPECT_EQ(s.frames.scalar_type(), at::kByte);
  ASSERT_EQ(s.maskiges.sizes(), s.frames.sizes());
  ASSERT_EQ(s.log_mel.sizes(), (std::vector<int64_t>{5, 1, 96, 64}));
  ASSERT_EQ(s.labels.sizes(), (std::vector<int64_t>{5, spec.size, spec.size}));
  EXPECT_TRUE(s.has_gt[0].item<bool>());
  for (int k = 1; k < 5; ++k) {
    EXPECT_FALSE(s.has_gt[k].item<bool>());
    EXPECT_TRUE(s.labels[k].eq(255).all().item<bool>());
  }
  // Frame 1 ground truth: the square of test_mask as 0/1.
  const cv::Mat mask = combo::testing::test_mask(0, 1, spec.size, spec.size);
  const auto expected = combo::io::mat_to_chw(mask).squeeze(0).div(255).to(at::kLong);
  EXPECT_TENSOR_EQ(expected, s.labels[0]);
  // Pixels as written (PNG is lossless); RGB order.
  const auto frame = combo::io::mat_to_chw(combo::testing::test_frame(0, 1, spec.size, spec.size));
  EXPECT_TENSOR_EQ(frame, s.frames[0]);
  // The log-mel is the one of the wav.
  const auto mel = combo::io::audio_file_to_examples(ds.record(0).wav);
  EXPECT_TENSOR_EQ(mel.slice(0, 0, 5), s.log_mel);
  EXPECT_EQ(s.slots, 5);
}

TEST_F(AvsbenchS4, EvaluationSampleHasEveryGroundTruth) {
  AvsDataset ds(opts(DatasetKind::kS4, root, "test"));
  const auto s = load(ds, 1);
  EXPECT_TRUE(s.has_gt.all().item<bool>());
  EXPECT_TRUE(s.labels.le(1).all().item<bool>());
  EXPECT_GT(s.labels.sum().item<int64_t>(), 0);
}

TEST_F(AvsbenchS4, AugmentationSharesGeometryAcrossFramesMaskigesAndMasks) {
  auto o = opts(DatasetKind::kS4, root, "train");
  o.augment = true;
  o.augment_options.short_sides = {40, 48};
  o.augment_options.crop_size = 24;
  o.augment_options.pad_size = 24;
  o.augment_options.color_jitter = false;
  o.augment_options.flip_prob = 0.5;
  AvsDataset ds(o);
  int flipped_or_not_checked = 0;
  for (uint64_t seed = 0; seed < 6; ++seed) {
    combo::data::Rng rng(seed);
    const auto s = ds.load(0, rng);
    ASSERT_EQ(s.frames.size(2), 24);
    // The square is magenta (250,10,200) in the frame and 1 in the mask: after the shared
    // geometry they must still coincide (away from the interpolated border).
    const auto f = s.frames[0].to(at::kInt);
    const auto magenta = f[0].gt(200).logical_and(f[1].lt(60)).logical_and(f[2].gt(150));
    const auto obj = s.labels[0].eq(1);
    const auto agree = magenta.eq(obj).to(at::kFloat).mean().item<double>();
    EXPECT_GT(agree, 0.9) << "seed " << seed;
    // Maskige (grey / (180,120,120)) follows the same geometry.
    const auto m = s.maskiges[0].to(at::kInt);
    const auto m_obj = m[0].gt(150);
    EXPECT_GT(m_obj.eq(obj).to(at::kFloat).mean().item<double>(), 0.9) << "seed " << seed;
    ++flipped_or_not_checked;
  }
  EXPECT_EQ(flipped_or_not_checked, 6);
  // Same seed, same sample; another seed, another crop.
  combo::data::Rng a(3), b(3), c(4);
  EXPECT_TENSOR_EQ(ds.load(1, a).frames, ds.load(1, b).frames);
  EXPECT_FALSE(ds.load(1, a).frames.equal(ds.load(1, c).frames));
}

TEST_F(AvsbenchS4, BadInputMissingFrameNamesTheFile) {
  fs::remove(root / "s4_data/visual_frames/val/cat_a/vv0/vv0_3.png");
  const auto msg = error_of([&] { AvsDataset ds(opts(DatasetKind::kS4, root, "val")); });
  EXPECT_NE(msg.find("vv0_3.png"), std::string::npos) << msg;
}

TEST_F(AvsbenchS4, BadInputCorruptPngNamesTheFile) {
  const fs::path f = root / "s4_data/visual_frames/val/cat_b/vv1/vv1_2.png";
  std::string bytes = combo::testing::read_bytes_for_test(f);
  bytes.resize(bytes.size() / 2);
  std::ofstream(f, std::ios::binary) << bytes;
  AvsDataset ds(opts(DatasetKind::kS4, root, "val"));
  const auto msg = error_of([&] { load(ds, 1); });
  EXPECT_NE(msg.find("vv1_2.png"), std::string::npos) << msg;
  // Not an image at all.
  std::ofstream(f, std::ios::binary) << "hello";
  const auto msg2 = error_of([&] { load(ds, 1); });
  EXPECT_NE(msg2.find("vv1_2.png"), std::string::npos) << msg2;
}

TEST_F(AvsbenchS4, BadInputMaskValuesOtherThan0And255) {
  const fs::path f = root / "s4_data/gt_masks/val/cat_a/vv0/vv0_4.png";
  cv::Mat m = combo::io::read_label_map(f.string());
  m.at<uint8_t>(3, 5) = 1;
  combo::io::write_png(f.string(), m);
  AvsDataset ds(opts(DatasetKind::kS4, root, "val"));
  const auto msg = error_of([&] { load(ds, 0); });
  EXPECT_NE(msg.find("vv0_4.png"), std::string::npos) << msg;
  EXPECT_NE(msg.find("value 1 at x=5 y=3"), std::string::npos) << msg;
  auto o = opts(DatasetKind::kS4, root, "val");
  o.check_masks = false;  // the official reading: value // 255
  AvsDataset lax(o);
  EXPECT_EQ(load(lax, 0).labels[3][3][5].item<int64_t>(), 0);
}

TEST_F(AvsbenchS4, BadInputTruncatedWav) {
  const fs::path f = root / "s4_data/audio_wav/test/cat_a/vs0.wav";
  std::string bytes = combo::testing::read_bytes_for_test(f);
  bytes.resize(bytes.size() / 3);
  std::ofstream(f, std::ios::binary) << bytes;
  AvsDataset ds(opts(DatasetKind::kS4, root, "test"));
  const auto msg = error_of([&] { load(ds, 0); });
  EXPECT_NE(msg.find("vs0.wav"), std::string::npos) << msg;
}

TEST_F(AvsbenchS4, BadInputCsvRowWithoutFolder) {
  std::ofstream(root / "s4_meta_data.csv", std::ios::app) << "ghost,0,cat_a,val\n";
  const auto msg = error_of([&] { AvsDataset ds(opts(DatasetKind::kS4, root, "val")); });
  EXPECT_NE(msg.find("visual_frames/val/cat_a/ghost"), std::string::npos) << msg;
  // Asked to skip bad videos: a warning, the count, the rest loads.
  auto o = opts(DatasetKind::kS4, root, "val");
  o.skip_bad = true;
  AvsDataset ds(o);
  EXPECT_EQ(ds.size(), spec.val);
  ASSERT_EQ(ds.index_errors().size(), 1u);
  EXPECT_NE(ds.index_errors()[0].find("ghost"), std::string::npos);
}

TEST_F(AvsbenchS4, BadInputMissingMaskigeSaysHowToMakeIt) {
  fs::remove(root / "s4_data/pre_SAM_mask/val/cat_a/vv0/vv0_2_mask_color.png");
  AvsDataset ds(opts(DatasetKind::kS4, root, "val"));
  const auto msg = error_of([&] { load(ds, 0); });
  EXPECT_NE(msg.find("vv0_2_mask_color.png"), std::string::npos) << msg;
  EXPECT_NE(msg.find("combo-maskige"), std::string::npos) << msg;
  auto o = opts(DatasetKind::kS4, root, "val");
  o.load_maskige = false;
  AvsDataset no_maskige(o);
  EXPECT_FALSE(load(no_maskige, 0).maskiges.defined());
}

TEST(AvsbenchMs3, LayoutFlagsAndValues) {
  TempDir dir;
  const fs::path root = dir.path() / "Multi-sources";
  combo::testing::TreeSpec spec;
  combo::testing::write_ms3_tree(root, spec);
  AvsDataset ds(opts(DatasetKind::kMS3, dir.path(), "train"));
  ASSERT_EQ(ds.size(), spec.train);
  EXPECT_EQ(fs::path(ds.record(0).frames[0]).filename(), "mt0.mp4_1.png");
  EXPECT_EQ(fs::path(ds.record(0).maskiges[0]).filename(), "mt0.mp4_1_mask_color.png");
  combo::data::Rng rng(0);
  const auto s = ds.load(2, rng);
  EXPECT_TRUE(s.has_gt.all().item<bool>());  // MS3: every frame, every split
  const auto expected = combo::io::mat_to_chw(combo::testing::test_mask(2, 4, spec.size, spec.size))
                            .squeeze(0)
                            .div(255)
                            .to(at::kLong);
  EXPECT_TENSOR_EQ(expected, s.labels[3]);
  // Without the CSV: the listing of gt_masks/<split>.
  fs::remove(root / "ms3_meta_data.csv");
  AvsDataset listed(opts(DatasetKind::kMS3, root, "val"));
  EXPECT_EQ(listed.size(), spec.val);
}

class AvsbenchAvss : public combo::testing::SeededTest {};

TEST_F(AvsbenchAvss, ProcessedFramesFlagsAndSlots) {
  TempDir dir;
  const fs::path root = dir.path() / "AVSBench_semantic";
  combo::testing::write_avss_tree(root, 32, /*processed=*/true);
  AvsDataset train(opts(DatasetKind::kAVSS, dir.path(), "train"));
  ASSERT_EQ(train.size(), 3);
  EXPECT_EQ(train.class_names().size(), 71u);
  combo::data::Rng rng(0);
  const auto v1s = train.load(0, rng);
  EXPECT_EQ(v1s.group, "v1s");
  EXPECT_EQ(v1s.frames.sizes(), (std::vector<int64_t>{5, 3, 32, 32}));
  EXPECT_EQ(v1s.slots, 10);
  EXPECT_TENSOR_EQ(at::tensor({1, 0, 0, 0, 0}).to(at::kBool), v1s.has_gt);
  const auto v2 = train.load(2, rng);
  EXPECT_EQ(v2.frames.size(0), 10);
  EXPECT_EQ(v2.log_mel.size(0), 10);
  EXPECT_TRUE(v2.has_gt.all().item<bool>());
  // Class ids 3 and 7 alternate by frame.
  EXPECT_EQ(std::get<0>(at::_unique(v2.labels[0])).max().item<int64_t>(), 3);
  EXPECT_EQ(std::get<0>(at::_unique(v2.labels[1])).max().item<int64_t>(), 7);
  AvsDataset val(opts(DatasetKind::kAVSS, dir.path(), "val"));
  const auto v1s_val = val.load(0, rng);
  EXPECT_TRUE(v1s_val.has_gt.all().item<bool>());  // COMBO: five flags outside training
}

TEST_F(AvsbenchAvss, RawFramesUseTheOfficialResizeRulesAndThePalette) {
  TempDir dir;
  const fs::path root = dir.path() / "AVSBench_semantic";
  combo::testing::write_avss_tree(root, 32, /*processed=*/false);
  auto o = opts(DatasetKind::kAVSS, root, "val");
  o.image_size = 32;
  AvsDataset val(o);
  combo::data::Rng rng(0);
  const auto s = val.load(1, rng);  // v1m, 48x32 frames -> direct resize to 32x32
  EXPECT_EQ(s.frames.sizes(), (std::vector<int64_t>{5, 3, 32, 32}));
  EXPECT_EQ(s.labels.sizes(), (std::vector<int64_t>{5, 32, 32}));
  // Colour labels went through the palette: ids 0 and 3/7 only.
  const auto ids = std::get<0>(at::_unique(s.labels));
  EXPECT_TENSOR_EQ(at::tensor({0L, 3L, 7L}), ids);
  // The direct resize of the label map equals the Pillow-nearest resize of the index map.
  const cv::Mat mask = combo::testing::test_mask(4, 0, 32, 48);
  cv::Mat idmap(32, 48, CV_8UC1, cv::Scalar(0));
  idmap.setTo(cv::Scalar(3), mask);
  const cv::Mat want = combo::data::pil_resize_nearest(idmap, 32, 32);
  EXPECT_TENSOR_EQ(combo::io::mat_to_chw(want).squeeze(0).to(at::kLong), s.labels[0]);
}

TEST_F(AvsbenchAvss, BadInputClassOutOfRangeAndCorruptJpeg) {
  TempDir dir;
  const fs::path root = dir.path() / "AVSBench_semantic";
  combo::testing::write_avss_tree(root, 32, /*processed=*/true);
  const fs::path lab = root / "v2/usv2/processed_labels_semantic/4.png";
  cv::Mat m = combo::io::read_label_map(lab.string());
  m.at<uint8_t>(0, 0) = 90;
  combo::io::write_png(lab.string(), m);
  AvsDataset ds(opts(DatasetKind::kAVSS, root, "test"));
  combo::data::Rng rng(0);
  auto msg = error_of([&] { ds.load(2, rng); });
  EXPECT_NE(msg.find("processed_labels_semantic/4.png"), std::string::npos) << msg;
  EXPECT_NE(msg.find("class 90"), std::string::npos) << msg;
  const fs::path jpg = root / "v1m/usv1m/processed_frames/2.jpg";
  std::string bytes = combo::testing::read_bytes_for_test(jpg);
  bytes.resize(bytes.size() / 2);
  std::ofstream(jpg, std::ios::binary) << bytes;
  msg = error_of([&] { ds.load(1, rng); });
  EXPECT_NE(msg.find("processed_frames/2.jpg"), std::string::npos) << msg;
}

TEST(AvsbenchPalette, MatchesTheSpecTable) {
  const auto pal = combo::data::avss_palette(71);
  ASSERT_EQ(pal.size(), 71u);
  EXPECT_EQ(pal[0], (std::array<uint8_t, 3>{0, 0, 0}));
  EXPECT_EQ(pal[1], (std::array<uint8_t, 3>{128, 0, 0}));
  EXPECT_EQ(pal[9], (std::array<uint8_t, 3>{192, 0, 0}));
  EXPECT_EQ(pal[22], (std::array<uint8_t, 3>{0, 192, 128}));
  EXPECT_EQ(pal[64], (std::array<uint8_t, 3>{32, 0, 0}));
  EXPECT_EQ(pal[70], (std::array<uint8_t, 3>{32, 128, 128}));
  cv::Mat rgb(1, 3, CV_8UC3);
  rgb.at<cv::Vec3b>(0, 0) = {64, 128, 0};   // bus = 10
  rgb.at<cv::Vec3b>(0, 1) = {1, 2, 3};      // no palette colour -> background
  rgb.at<cv::Vec3b>(0, 2) = {160, 0, 128};  // wolf = 69
  const cv::Mat ids = combo::data::avss_color_to_labels(rgb);
  EXPECT_EQ(ids.at<uint8_t>(0, 0), 10);
  EXPECT_EQ(ids.at<uint8_t>(0, 1), 0);
  EXPECT_EQ(ids.at<uint8_t>(0, 2), 69);
}

}  // namespace
