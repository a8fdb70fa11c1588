// The in-memory synthetic task (data.source = synthetic): determinism, shapes and annotation
// layout per dataset kind, the sound deciding the annotated object, Maskiges and log-mel, errors,
// and the dataset-source registry. Needs no media library.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "combo/audio/log_mel.h"
#include "combo/core/check.h"
#include "combo/data/dataset.h"
#include "combo/data/synthetic_dataset.h"
#include "combo/data/synthetic_scene.h"
#include "combo/engine/data_setup.h"
#include "testing/testing.h"

namespace {

using namespace combo::data;

DatasetOptions options(DatasetKind kind, const std::string& split, bool train, int64_t size = 32) {
  DatasetOptions o;
  o.kind = kind;
  o.split = split;
  o.train = train;
  o.image_size = size;
  o.synthetic.train_videos = 6;
  o.synthetic.eval_videos = 3;
  o.synthetic.seed = 3;
  o.synthetic.classes = 4;
  return o;
}

VideoSample load(const Dataset& ds, int64_t i) {
  Rng rng(0);
  return ds.load(i, rng);
}

bool same_sample(const VideoSample& a, const VideoSample& b) {
  return a.video_id == b.video_id && a.group == b.group && a.frames.equal(b.frames) &&
         a.maskiges.equal(b.maskiges) && a.log_mel.equal(b.log_mel) && a.labels.equal(b.labels) &&
         a.has_gt.equal(b.has_gt) && a.slots == b.slots;
}

std::vector<bool> flags(const at::Tensor& has_gt) {
  std::vector<bool> out;
  for (int64_t k = 0; k < has_gt.size(0); ++k) out.push_back(has_gt[k].item<bool>());
  return out;
}

double dominant_frequency(const std::vector<float>& audio) {
  const at::Tensor x = at::from_blob(const_cast<float*>(audio.data()),
                                     {static_cast<int64_t>(audio.size())}, at::kFloat)
                           .to(at::kDouble);
  const at::Tensor mag = at::fft_rfft(x).abs();
  return static_cast<double>(mag.argmax().item<int64_t>()) * 16000.0 /
         static_cast<double>(x.numel());
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const combo::Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(SyntheticDataset, SameVideoWhateverTheRunOrThreadAndNothingKept) {
  const auto o = options(DatasetKind::kMS3, "train", true);
  SyntheticDataset a(o), b(o);
  ASSERT_EQ(a.size(), 6);
  // Serial, in reverse order, on a second instance, and from four threads at once.
  std::vector<VideoSample> serial;
  for (int64_t i = 0; i < a.size(); ++i) serial.push_back(load(a, i));
  for (int64_t i = b.size(); i-- > 0;)
    EXPECT_TRUE(same_sample(serial[i], load(b, i))) << "video " << i;
  std::vector<VideoSample> threaded(serial.size());
  std::vector<std::thread> pool;
  for (int w = 0; w < 4; ++w)
    pool.emplace_back([&, w] {
      for (int64_t i = w; i < a.size(); i += 4) threaded[i] = load(a, i);
    });
  for (auto& t : pool) t.join();
  for (int64_t i = 0; i < a.size(); ++i)
    EXPECT_TRUE(same_sample(serial[i], threaded[i])) << "video " << i;
  // The rng handed to load() (augmentation in on-disk datasets) does not change the content.
  Rng other(12345);
  EXPECT_TRUE(same_sample(serial[2], a.load(2, other)));
  // Videos, splits and seeds differ.
  EXPECT_FALSE(serial[0].frames.equal(serial[1].frames));
  auto val = o;
  val.split = "val";
  val.train = false;
  SyntheticDataset v(val);
  EXPECT_EQ(v.size(), 3);
  EXPECT_FALSE(load(v, 0).frames.equal(serial[0].frames));
  auto test = val;
  test.split = "test";
  EXPECT_FALSE(load(SyntheticDataset(test), 0).frames.equal(load(v, 0).frames))
      << "val and test are drawn from their own seeds";
  auto reseeded = o;
  reseeded.synthetic.seed = 4;
  EXPECT_FALSE(load(SyntheticDataset(reseeded), 0).frames.equal(serial[0].frames));
}

TEST(SyntheticDataset, S4ShapesAndFirstFrameAnnotatedInTraining) {
  SyntheticDataset train(options(DatasetKind::kS4, "train", true, 48));
  EXPECT_EQ(train.kind(), DatasetKind::kS4);
  EXPECT_EQ(train.class_names(), (std::vector<std::string>{"background", "object"}));
  const auto s = load(train, 1);
  EXPECT_EQ(s.frames.sizes(), (std::vector<int64_t>{5, 3, 48, 48}));
  EXPECT_EQ(s.frames.scalar_type(), at::kByte);
  EXPECT_EQ(s.maskiges.sizes(), (std::vector<int64_t>{5, 3, 48, 48}));
  EXPECT_EQ(s.log_mel.sizes(), (std::vector<int64_t>{5, 1, 96, 64}));
  EXPECT_EQ(s.log_mel.scalar_type(), at::kFloat);
  EXPECT_EQ(s.labels.sizes(), (std::vector<int64_t>{5, 48, 48}));
  EXPECT_EQ(s.labels.scalar_type(), at::kLong);
  EXPECT_EQ(s.slots, 5);
  EXPECT_EQ(s.video_id, "s4_train_0001");
  EXPECT_EQ(train.video_id(1), s.video_id);
  EXPECT_EQ(flags(s.has_gt), (std::vector<bool>{true, false, false, false, false}));
  EXPECT_TRUE(s.labels.slice(0, 1).eq(255).all().item<bool>()) << "frames without ground truth";
  const auto v0 = s.labels[0];
  EXPECT_TRUE((v0.eq(0) | v0.eq(1)).all().item<bool>());
  EXPECT_GT(v0.eq(1).sum().item<int64_t>(), 0);
  SyntheticDataset test(options(DatasetKind::kS4, "test", false, 48));
  const auto t = load(test, 0);
  EXPECT_EQ(flags(t.has_gt), std::vector<bool>(5, true));
  EXPECT_TRUE((t.labels.eq(0) | t.labels.eq(1)).all().item<bool>());
  // Without the Maskige branch nothing is drawn for it.
  auto o = options(DatasetKind::kS4, "test", false, 48);
  o.load_maskige = false;
  EXPECT_FALSE(load(SyntheticDataset(o), 0).maskiges.defined());
  // data.synthetic.image_size wins over data.image_size; frames can be set.
  o.synthetic.image_size = 40;
  o.synthetic.frames = 3;
  const auto small = load(SyntheticDataset(o), 0);
  EXPECT_EQ(small.frames.sizes(), (std::vector<int64_t>{3, 3, 40, 40}));
  EXPECT_EQ(small.log_mel.size(0), 3);
}

TEST(SyntheticDataset, AvssClassIdsTenSlotsAndTheV1sRule) {
  SyntheticDataset train(options(DatasetKind::kAVSS, "train", true));
  ASSERT_EQ(train.class_names().size(), 71u);
  EXPECT_EQ(train.class_names()[0], "background");
  EXPECT_EQ(train.class_names()[1], "accordion");
  EXPECT_EQ(train.class_names()[70], "woman");
  std::set<std::string> groups;
  for (int64_t i = 0; i < train.size(); ++i) {
    const auto s = load(train, i);
    groups.insert(s.group);
    EXPECT_EQ(s.frames.sizes(), (std::vector<int64_t>{10, 3, 32, 32})) << s.video_id;
    EXPECT_EQ(s.labels.sizes(), (std::vector<int64_t>{10, 32, 32}));
    EXPECT_EQ(s.log_mel.sizes(), (std::vector<int64_t>{10, 1, 96, 64}));
    EXPECT_EQ(s.slots, 10);
    EXPECT_EQ(s.video_id.substr(0, s.group.size()), s.group);
    const auto f = flags(s.has_gt);
    if (s.group == "v1s") {
      EXPECT_TRUE(f[0]);
      EXPECT_EQ(std::count(f.begin(), f.end(), true), 1) << "train v1s: frame 0 only";
    } else {
      EXPECT_EQ(std::count(f.begin(), f.end(), true), 10) << s.group;
    }
    // Class ids: background 0, sounding object of class c -> c + 1 (c < 4 classes here).
    const auto annotated = s.labels.index({s.has_gt});
    EXPECT_TRUE((annotated.ge(0) & annotated.le(4)).all().item<bool>()) << s.video_id;
    EXPECT_GT(annotated.gt(0).sum().item<int64_t>(), 0) << s.video_id;
  }
  EXPECT_EQ(groups, (std::set<std::string>{"v1s", "v1m", "v2"}));
  // val/test: the wide scene resized (not cropped) to the square; every frame annotated.
  SyntheticDataset val(options(DatasetKind::kAVSS, "val", false));
  for (int64_t i = 0; i < val.size(); ++i) EXPECT_TRUE(load(val, i).has_gt.all().item<bool>());
}

TEST(SyntheticDataset, TheSoundDecidesWhichObjectIsAnnotated) {
  // Every labelled pixel belongs to a sounding object and every visible pixel of a sounding
  // object is labelled; silent objects in view stay background. The audio's dominant frequency
  // is the fundamental of a sounding object's class.
  auto o = options(DatasetKind::kMS3, "val", false);
  o.synthetic.eval_videos = 12;
  SyntheticDataset ds(o);
  int silent_in_view = 0;
  for (int64_t i = 0; i < ds.size(); ++i) {
    const auto s = load(ds, i);
    const SynthScene scene = synth_scene(ds.synth_options(), "val", i);
    at::Tensor sounding = at::zeros_like(s.labels, at::kBool);
    std::set<int64_t> sounding_classes;
    for (const auto& obj : scene.objects) {
      if (obj.sounding) {
        sounding |= obj.masks.to(at::kBool);
        sounding_classes.insert(obj.class_index);
      } else if (obj.masks.any().item<bool>()) {
        ++silent_in_view;
      }
    }
    EXPECT_TRUE(s.labels.eq(1).equal(sounding)) << s.video_id;
    const double f = dominant_frequency(scene.audio);
    bool matches = false;
    for (int64_t c : sounding_classes) {
      const double f0 = synth_class_fundamental(c, 4);
      matches = matches || std::abs(f - f0) < 0.03 * f0;
    }
    EXPECT_TRUE(matches) << s.video_id << ": dominant " << f << " Hz";
    // The log-mel is the VGGish front end of that waveform.
    const at::Tensor wave = at::from_blob(const_cast<float*>(scene.audio.data()),
                                          {static_cast<int64_t>(scene.audio.size())}, at::kFloat)
                                .to(at::kDouble);
    const at::Tensor mel = combo::audio::waveform_to_examples(wave, 16000).slice(0, 0, 5);
    EXPECT_TRUE(s.log_mel.equal(mel.to(at::kFloat))) << s.video_id;
  }
  EXPECT_GT(silent_in_view, 0) << "distractors must be visible for the test to mean anything";
}

TEST(SyntheticDataset, TrainingVideosCycleThroughTheSoundClasses) {
  // S4 video i of train sounds class i % K: the categories are balanced.
  SyntheticDataset ds(options(DatasetKind::kS4, "train", true));
  const auto names = synth_class_names(4);
  for (int64_t i = 0; i < ds.size(); ++i) EXPECT_EQ(load(ds, i).group, names[i % 4]) << i;
}

TEST(SyntheticDataset, MaskigesAreTheSceneMasksInAdeColours) {
  SyntheticDataset ds(options(DatasetKind::kS4, "val", false));
  const auto s = load(ds, 0);
  const SynthScene scene = synth_scene(ds.synth_options(), "val", 0);
  for (int64_t k = 0; k < 5; ++k)
    EXPECT_TRUE(s.maskiges[k].equal(synth_maskige(synth_frame_masks(scene, k)).permute({2, 0, 1})));
  // Frames are the scene's pixels (S4: no geometry).
  EXPECT_TRUE(s.frames.equal(scene.frames.permute({0, 3, 1, 2})));
}

TEST(SyntheticDataset, SilenceAblationAndBadOptionsNameTheKey) {
  auto o = options(DatasetKind::kS4, "val", false);
  o.silence_audio = true;
  const auto s = load(SyntheticDataset(o), 0);
  EXPECT_TRUE(s.log_mel.eq(static_cast<float>(std::log(0.01))).all().item<bool>());

  auto bad = options(DatasetKind::kS4, "dev", false);
  EXPECT_NE(error_of([&] { SyntheticDataset d(bad); }).find("split 'dev'"), std::string::npos);
  bad = options(DatasetKind::kS4, "val", false);
  bad.synthetic.eval_videos = 0;
  EXPECT_NE(error_of([&] { SyntheticDataset d(bad); }).find("data.synthetic.eval_videos"),
            std::string::npos);
  bad = options(DatasetKind::kAVSS, "val", false);
  bad.synthetic.frames = 11;
  EXPECT_NE(error_of([&] { SyntheticDataset d(bad); }).find("data.synthetic.frames"),
            std::string::npos);
  bad = options(DatasetKind::kS4, "val", false);
  bad.synthetic.classes = 1;
  EXPECT_NE(error_of([&] { SyntheticDataset d(bad); }).find("data.synthetic.classes"),
            std::string::npos);
  bad = options(DatasetKind::kS4, "val", false, 8);
  EXPECT_NE(error_of([&] { SyntheticDataset d(bad); }).find("image_size"), std::string::npos);
  SyntheticDataset ds(options(DatasetKind::kS4, "val", false));
  EXPECT_NE(error_of([&] { load(ds, 3); }).find("out of range"), std::string::npos);
}

TEST(DatasetSources, SyntheticAlwaysFilesOnlyWithTheMediaStack) {
  const auto o = options(DatasetKind::kS4, "train", true);
  const auto ds = make_dataset("synthetic", o);
  EXPECT_EQ(ds->size(), 6);
  EXPECT_NE(ds->describe().find("synthetic"), std::string::npos);
  EXPECT_NE(error_of([&] { make_dataset("tape", o); }).find("data.source 'tape'"),
            std::string::npos);
  combo::engine::Config cfg;
  cfg.data.source = "files";
  cfg.data.root = "/nonexistent/avsbench";
  const std::string msg = error_of([&] { combo::engine::build_dataset(cfg, "train", true); });
  if (combo::engine::has_media_stack()) {
    // The AVSBench readers are registered and look for the tree.
    const auto sources = dataset_sources();
    EXPECT_NE(std::find(sources.begin(), sources.end(), "files"), sources.end());
    EXPECT_NE(msg.find("/nonexistent/avsbench"), std::string::npos) << msg;
  } else {
    EXPECT_NE(msg.find("media stack"), std::string::npos) << msg;
    EXPECT_NE(msg.find("data.source=synthetic"), std::string::npos) << msg;
  }
  cfg.data.source = "synthetic";
  cfg.data.synthetic.eval_videos = 2;
  const auto test = combo::engine::build_dataset(cfg, "test", false);
  EXPECT_EQ(test->size(), 2);
  EXPECT_EQ(load(*test, 0).frames.size(2), 224) << "data.image_size when synthetic.image_size is 0";
}
