#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <sys/wait.h>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <array>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "combo/audio/log_mel.h"
#include "combo/core/check.h"
#include "combo/data/synthetic.h"
#include "combo/io/audio_reader.h"
#include "combo/io/pkl_reader.h"
#include "testing/testing.h"

namespace {

namespace fs = std::filesystem;
using combo::data::SynthOptions;

SynthOptions tiny(const std::string& dataset, const fs::path& out) {
  SynthOptions o;
  o.dataset = dataset;
  o.out = out.string();
  o.train_videos = 2;
  o.val_videos = 1;
  o.test_videos = 1;
  o.size = 64;
  o.num_classes = 3;
  o.seed = 7;
  o.write_raw_videos = false;
  return o;
}

std::string slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

// Every regular file under root, by relative path, with its bytes.
std::map<std::string, std::string> tree(const fs::path& root) {
  std::map<std::string, std::string> files;
  for (const auto& e : fs::recursive_directory_iterator(root))
    if (e.is_regular_file()) files[fs::relative(e.path(), root).string()] = slurp(e.path());
  return files;
}

std::set<std::string> keys(const std::map<std::string, std::string>& m) {
  std::set<std::string> k;
  for (const auto& [name, bytes] : m) k.insert(name);
  return k;
}

std::vector<std::vector<std::string>> read_csv(const fs::path& p, std::string* header) {
  std::istringstream in(slurp(p));
  std::string line;
  std::getline(in, line);
  *header = line;
  std::vector<std::vector<std::string>> rows;
  while (std::getline(in, line)) {
    std::vector<std::string> cells;
    std::stringstream ss(line);
    std::string cell;
    while (std::getline(ss, cell, ',')) cells.push_back(cell);
    rows.push_back(cells);
  }
  return rows;
}

cv::Mat read_raw(const fs::path& p) {
  cv::Mat m = cv::imread(p.string(), cv::IMREAD_UNCHANGED);
  EXPECT_FALSE(m.empty()) << p;
  return m;
}

// Union of the sounding objects' masks (0/255) of a rendered video's frame.
cv::Mat sounding_union(const combo::data::SynthVideo& v, size_t t, bool* has_silent) {
  cv::Mat u = cv::Mat::zeros(v.frames[t].rows, v.frames[t].cols, CV_8UC1);
  *has_silent = false;
  for (const auto& o : v.objects) {
    if (o.sounding) u.setTo(255, o.masks[t]);
    if (!o.sounding && cv::countNonZero(o.masks[t]) > 0) *has_silent = true;
  }
  return u;
}

cv::Mat all_objects(const combo::data::SynthVideo& v, size_t t) {
  cv::Mat u = cv::Mat::zeros(v.frames[t].rows, v.frames[t].cols, CV_8UC1);
  for (const auto& o : v.objects) u.setTo(255, o.masks[t]);
  return u;
}

bool same(const cv::Mat& a, const cv::Mat& b) {
  return a.size() == b.size() && a.type() == b.type() && cv::norm(a, b, cv::NORM_INF) == 0;
}

std::set<int> values(const cv::Mat& m) {
  std::set<int> v;
  for (int y = 0; y < m.rows; ++y)
    for (int x = 0; x < m.cols; ++x) v.insert(m.at<uint8_t>(y, x));
  return v;
}

// Frequency (Hz) of the largest magnitude of the real FFT of `x` at 16 kHz.
double dominant_frequency(const at::Tensor& x) {
  const at::Tensor mag = at::fft_rfft(x.to(at::kDouble)).abs();
  const int64_t bin = mag.argmax().item<int64_t>();
  return static_cast<double>(bin) * 16000.0 / static_cast<double>(x.numel());
}

at::Tensor to_tensor(const std::vector<float>& v) {
  return at::from_blob(const_cast<float*>(v.data()), {static_cast<int64_t>(v.size())}, at::kFloat)
      .clone();
}

}  // namespace

// ---------------------------------------------------------------------------------------------

TEST(SynthContent, ClassNamesAndPalette) {
  const auto names = combo::data::synth_class_names(4);
  EXPECT_EQ(names, (std::vector<std::string>{"accordion", "airplane", "axe", "baby"}));
  EXPECT_EQ(combo::data::synth_class_names(70).back(), "woman");
  EXPECT_THROW(combo::data::synth_class_names(1), combo::Error);
  EXPECT_THROW(combo::data::synth_class_names(71), combo::Error);
  using C = std::array<uint8_t, 3>;
  // AVSBENCH_SPEC 4.2.
  EXPECT_EQ(combo::data::avss_palette_color(0), (C{0, 0, 0}));
  EXPECT_EQ(combo::data::avss_palette_color(1), (C{128, 0, 0}));
  EXPECT_EQ(combo::data::avss_palette_color(7), (C{128, 128, 128}));
  EXPECT_EQ(combo::data::avss_palette_color(8), (C{64, 0, 0}));
  EXPECT_EQ(combo::data::avss_palette_color(35), (C{128, 128, 64}));
  EXPECT_EQ(combo::data::avss_palette_color(64), (C{32, 0, 0}));
  EXPECT_EQ(combo::data::avss_palette_color(70), (C{32, 128, 128}));
  std::set<C> distinct;
  for (int i = 0; i <= 70; ++i) distinct.insert(combo::data::avss_palette_color(i));
  EXPECT_EQ(distinct.size(), 71u);
}

TEST(SynthContent, WavBytesArePcm16Mono) {
  const std::string b = combo::data::wav_bytes({0.0f, 1.0f, -1.0f, 0.5f, 2.0f}, 16000);
  ASSERT_EQ(b.size(), 44u + 10u);
  EXPECT_EQ(b.substr(0, 4), "RIFF");
  EXPECT_EQ(b.substr(8, 8), "WAVEfmt ");
  EXPECT_EQ(b.substr(36, 4), "data");
  auto u32 = [&](size_t at) {
    uint32_t v = 0;
    for (int i = 3; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(b[at + i]);
    return v;
  };
  auto s16 = [&](size_t at) {
    return static_cast<int16_t>(static_cast<uint8_t>(b[at]) |
                                (static_cast<uint8_t>(b[at + 1]) << 8));
  };
  EXPECT_EQ(u32(4), 36u + 10u);
  EXPECT_EQ(u32(16), 16u);
  EXPECT_EQ(s16(20), 1);       // PCM
  EXPECT_EQ(s16(22), 1);       // mono
  EXPECT_EQ(u32(24), 16000u);  // rate
  EXPECT_EQ(u32(28), 32000u);  // byte rate
  EXPECT_EQ(s16(34), 16);      // bits
  EXPECT_EQ(u32(40), 10u);
  EXPECT_EQ(s16(44), 0);
  EXPECT_EQ(s16(46), 32767);
  EXPECT_EQ(s16(48), -32767);
  EXPECT_EQ(s16(50), 16384);  // 0.5 * 32767 = 16383.5, rounded away from zero
  EXPECT_EQ(s16(52), 32767);  // clipped
}

TEST(SynthContent, ClassSoundsHaveTheirOwnDominantFrequency) {
  // Video i of train sounds class i % K first; S4 videos have exactly one sounding object.
  combo::testing::TempDir dir;
  SynthOptions o = tiny("s4", dir.path());
  o.size = 32;
  o.num_classes = 5;
  std::set<long> dominant;
  for (int64_t i = 0; i < 5; ++i) {
    const auto v = combo::data::synth_video(o, "train", i);
    int64_t sounding = -1;
    for (const auto& obj : v.objects)
      if (obj.sounding) sounding = obj.class_index;
    ASSERT_EQ(sounding, i);
    const double f = dominant_frequency(to_tensor(v.audio));
    const double f0 = combo::data::synth_class_fundamental(i, 5);
    EXPECT_NEAR(f, f0, 0.03 * f0) << "class " << i;
    dominant.insert(std::lround(f));
  }
  EXPECT_EQ(dominant.size(), 5u);
  // Fundamentals never coincide with another class's harmonics for few classes.
  for (int64_t a = 0; a < 4; ++a)
    for (int64_t b = a + 1; b < 4; ++b) {
      const double ratio =
          combo::data::synth_class_fundamental(b, 4) / combo::data::synth_class_fundamental(a, 4);
      EXPECT_GT(std::abs(ratio - std::round(ratio)), 0.05) << a << " " << b;
    }
}

TEST(SynthContent, SoundingObjectIsNotGivenAwayByPlaceSizeOrOrder) {
  combo::testing::TempDir dir;
  SynthOptions o = tiny("s4", dir.path());
  o.size = 32;
  o.num_classes = 4;
  std::set<size_t> draw_positions;
  int largest = 0, videos = 24;
  for (int64_t i = 0; i < videos; ++i) {
    const auto v = combo::data::synth_video(o, "val", i);
    ASSERT_GE(v.objects.size(), 2u);
    ASSERT_LE(v.objects.size(), 3u);
    std::set<int64_t> classes;
    size_t sounding_at = 0, biggest_at = 0;
    int count = 0, biggest = -1;
    for (size_t k = 0; k < v.objects.size(); ++k) {
      classes.insert(v.objects[k].class_index);
      if (v.objects[k].sounding) sounding_at = k, ++count;
      const int area = cv::countNonZero(v.objects[k].masks[0]);
      if (area > biggest) biggest = area, biggest_at = k;
    }
    EXPECT_EQ(count, 1);
    EXPECT_EQ(classes.size(), v.objects.size()) << "objects of one video have distinct classes";
    draw_positions.insert(sounding_at);
    largest += sounding_at == biggest_at;
  }
  EXPECT_GE(draw_positions.size(), 2u);
  EXPECT_GT(largest, 0);
  EXPECT_LT(largest, videos);
}

TEST(SynthContent, ObjectsMoveAndFramesDiffer) {
  combo::testing::TempDir dir;
  const auto v = combo::data::synth_video(tiny("ms3", dir.path()), "train", 0);
  ASSERT_EQ(v.frames.size(), 5u);
  for (size_t t = 1; t < v.frames.size(); ++t) {
    EXPECT_FALSE(same(v.frames[t - 1], v.frames[t]));
    EXPECT_FALSE(same(v.objects[0].masks[t - 1], v.objects[0].masks[t])) << t;
  }
  for (size_t t = 0; t < v.frames.size(); ++t) {
    EXPECT_GE(v.regions[t].size(), 1u);
    EXPECT_LE(v.regions[t].size(), 4u);
    // Objects and regions partition the frame.
    cv::Mat sum = cv::Mat::zeros(v.frames[t].rows, v.frames[t].cols, CV_8UC1);
    for (const auto& obj : v.objects) sum += obj.masks[t];
    for (const auto& r : v.regions[t]) sum += r;
    EXPECT_EQ(cv::countNonZero(sum != 1), 0);
  }
}

TEST(SynthContent, FlatStyleAndObjectScaleKeepTheSoundsAndPlan) {
  combo::testing::TempDir dir;
  SynthOptions textured = tiny("s4", dir.path());
  SynthOptions flat = textured;
  flat.style = "flat";
  SynthOptions large = flat;
  large.object_scale = 1.5;
  for (int64_t i = 0; i < 3; ++i) {
    const auto a = combo::data::synth_video(textured, "train", i);
    const auto b = combo::data::synth_video(flat, "train", i);
    EXPECT_EQ(a.audio, b.audio) << "the sounds do not depend on the style";
    ASSERT_EQ(a.objects.size(), b.objects.size());
    for (size_t k = 0; k < a.objects.size(); ++k) {
      EXPECT_EQ(a.objects[k].class_index, b.objects[k].class_index);
      EXPECT_EQ(a.objects[k].sounding, b.objects[k].sounding);
    }
    // Flat: every visible pixel of an object has one colour (per object and frame).
    for (size_t t = 0; t < b.frames.size(); ++t)
      for (const auto& obj : b.objects) {
        std::set<std::array<uint8_t, 3>> colours;
        for (int y = 0; y < obj.masks[t].rows; ++y)
          for (int x = 0; x < obj.masks[t].cols; ++x)
            if (obj.masks[t].at<uint8_t>(y, x)) {
              const auto p = b.frames[t].at<cv::Vec3b>(y, x);
              colours.insert({p[0], p[1], p[2]});
            }
        EXPECT_LE(colours.size(), 1u) << "video " << i << " frame " << t;
      }
    // Same shapes, places and motions: the visible masks are the same.
    for (size_t k = 0; k < a.objects.size(); ++k)
      EXPECT_TRUE(same(a.objects[k].masks[2], b.objects[k].masks[2])) << "video " << i;
    // Larger objects (placed anew, so the draws after them differ): more object pixels.
    const auto c = combo::data::synth_video(large, "train", i);
    int64_t area_b = 0, area_c = 0;
    for (const auto& o : b.objects) area_b += cv::countNonZero(o.masks[0]);
    for (const auto& o : c.objects) area_c += cv::countNonZero(o.masks[0]);
    EXPECT_GT(area_c, area_b) << "video " << i;
  }
  SynthOptions bad = textured;
  bad.style = "cartoon";
  bad.out = (dir.path() / "bad").string();
  EXPECT_THROW(combo::data::synthesize(bad), combo::Error);
}

// ---------------------------------------------------------------------------------------------

TEST(SynthS4, WritesTheExactLayout) {
  combo::testing::TempDir dir;
  const SynthOptions o = tiny("s4", dir.path());
  const auto report = combo::data::synthesize(o);
  EXPECT_EQ(report.root, dir.path().string());
  EXPECT_EQ(report.videos, 4);
  EXPECT_EQ(report.frames, 20);

  std::string header;
  const auto rows = read_csv(dir.path() / "s4_meta_data.csv", &header);
  EXPECT_EQ(header, "name,start,category,split");
  ASSERT_EQ(rows.size(), 4u);
  const std::vector<std::string> names = {"s4_train_0000", "s4_train_0001", "s4_val_0000",
                                          "s4_test_0000"};
  const auto classes = combo::data::synth_class_names(3);
  std::set<std::string> expected = {"s4_meta_data.csv"};
  for (size_t i = 0; i < rows.size(); ++i) {
    ASSERT_EQ(rows[i].size(), 4u);
    const auto& name = rows[i][0];
    const auto& cat = rows[i][2];
    const auto& split = rows[i][3];
    EXPECT_EQ(name, names[i]);
    EXPECT_EQ(rows[i][1], "0");
    EXPECT_NE(std::find(classes.begin(), classes.end(), cat), classes.end()) << cat;
    EXPECT_EQ(split, i < 2 ? "train" : (i == 2 ? "val" : "test"));
    const std::string rel = split + "/" + cat + "/" + name;
    for (int k = 1; k <= 5; ++k) {
      const std::string stem = name + "_" + std::to_string(k);
      expected.insert("s4_data/visual_frames/" + rel + "/" + stem + ".png");
      if (split != "train" || k == 1)
        expected.insert("s4_data/gt_masks/" + rel + "/" + stem + ".png");
      expected.insert("s4_data/pre_SAM_mask/" + rel + "/" + stem + "_mask_color.png");
    }
    expected.insert("s4_data/audio_wav/" + rel + ".wav");
  }
  EXPECT_EQ(keys(tree(dir.path())), expected);
  EXPECT_EQ(report.files, static_cast<int64_t>(expected.size()));
}

TEST(SynthS4, GroundTruthIsTheSoundingObject) {
  combo::testing::TempDir dir;
  const SynthOptions o = tiny("s4", dir.path());
  combo::data::synthesize(o);
  std::string header;
  const auto rows = read_csv(dir.path() / "s4_meta_data.csv", &header);
  const auto classes = combo::data::synth_class_names(3);
  for (const auto& row : rows) {
    const std::string split = row[3], name = row[0];
    const int64_t index = std::stoll(name.substr(name.rfind('_') + 1));
    const auto v = combo::data::synth_video(o, split, index);
    ASSERT_EQ(v.name, name);
    EXPECT_EQ(v.group, row[2]);
    int sounding = 0;
    for (const auto& obj : v.objects)
      if (obj.sounding) {
        ++sounding;
        EXPECT_EQ(classes[static_cast<size_t>(obj.class_index)], row[2]) << "category = sounder";
      }
    EXPECT_EQ(sounding, 1);
    const fs::path base = dir.path() / "s4_data";
    const fs::path rel = fs::path(split) / row[2] / name;
    for (size_t t = 0; t < 5; ++t) {
      const std::string stem = name + "_" + std::to_string(t + 1);
      const cv::Mat frame = read_raw(base / "visual_frames" / rel / (stem + ".png"));
      ASSERT_EQ(frame.type(), CV_8UC3);
      EXPECT_EQ(frame.rows, 64);
      EXPECT_EQ(frame.cols, 64);
      cv::Mat bgr;
      cv::cvtColor(v.frames[t], bgr, cv::COLOR_RGB2BGR);
      EXPECT_TRUE(same(frame, bgr)) << "frames are lossless RGB PNGs";
      const cv::Mat maskige = read_raw(base / "pre_SAM_mask" / rel / (stem + "_mask_color.png"));
      EXPECT_EQ(maskige.type(), CV_8UC3);
      EXPECT_EQ(maskige.size(), frame.size());
      const fs::path gt_path = base / "gt_masks" / rel / (stem + ".png");
      if (split == "train" && t > 0) {
        EXPECT_FALSE(fs::exists(gt_path));
        continue;
      }
      const cv::Mat gt = read_raw(gt_path);
      ASSERT_EQ(gt.type(), CV_8UC1) << gt_path;
      EXPECT_EQ(gt.size(), frame.size());
      for (int value : values(gt)) EXPECT_TRUE(value == 0 || value == 255) << value;
      bool has_silent = false;
      EXPECT_TRUE(same(gt, sounding_union(v, t, &has_silent)));
      EXPECT_TRUE(has_silent) << "a distractor is visible";
      const cv::Mat objects = all_objects(v, t);
      EXPECT_GT(cv::countNonZero(gt), 0);
      EXPECT_EQ(cv::countNonZero(gt & ~objects), 0) << "GT inside the objects";
      EXPECT_GT(cv::countNonZero(objects & ~gt), 0) << "GT a strict subset of the objects";
    }
  }
}

TEST(SynthS4, WavIs16kMonoFiveSecondsAtTheClassFrequency) {
  combo::testing::TempDir dir;
  SynthOptions o = tiny("s4", dir.path());
  o.train_videos = 3;
  o.val_videos = o.test_videos = 0;
  combo::data::synthesize(o);
  std::string header;
  std::set<long> freqs;
  for (const auto& row : read_csv(dir.path() / "s4_meta_data.csv", &header)) {
    const auto clip = combo::io::read_audio(
        (dir.path() / "s4_data/audio_wav" / row[3] / row[2] / (row[0] + ".wav")).string());
    EXPECT_EQ(clip.sample_rate, 16000);
    EXPECT_EQ(clip.channels, 1);
    ASSERT_EQ(clip.samples.size(-1), 5 * 16000);
    const auto classes = combo::data::synth_class_names(3);
    const int64_t c = std::find(classes.begin(), classes.end(), row[2]) - classes.begin();
    const double f0 = combo::data::synth_class_fundamental(c, 3);
    const double f = dominant_frequency(clip.samples.reshape({-1}));
    EXPECT_NEAR(f, f0, 0.03 * f0) << row[0];
    freqs.insert(std::lround(f));
  }
  EXPECT_EQ(freqs.size(), 3u) << "three videos, three classes, three dominant frequencies";
}

// ---------------------------------------------------------------------------------------------

TEST(SynthMs3, WritesTheExactLayoutAndUnionGroundTruth) {
  combo::testing::TempDir dir;
  const SynthOptions o = tiny("ms3", dir.path());
  const auto report = combo::data::synthesize(o);
  std::string header;
  const auto rows = read_csv(dir.path() / "ms3_meta_data.csv", &header);
  EXPECT_EQ(header, "name,split");
  ASSERT_EQ(rows.size(), 4u);
  std::set<std::string> expected = {"ms3_meta_data.csv"};
  for (size_t i = 0; i < rows.size(); ++i) {
    ASSERT_EQ(rows[i].size(), 2u);
    const std::string name = rows[i][0], split = rows[i][1];
    EXPECT_EQ(split, i < 2 ? "train" : (i == 2 ? "val" : "test"));
    EXPECT_EQ(name, "ms3_" + split + "_000" + std::to_string(i < 2 ? i : 0));
    for (int k = 1; k <= 5; ++k) {
      const std::string ks = std::to_string(k);
      expected.insert("ms3_data/visual_frames/" + name + "/" + name + ".mp4_" + ks + ".png");
      expected.insert("ms3_data/gt_masks/" + split + "/" + name + "/" + name + "_" + ks + ".png");
      expected.insert("ms3_data/pre_SAM_mask/" + name + "/" + name + ".mp4_" + ks +
                      "_mask_color.png");
    }
    expected.insert("ms3_data/audio_wav/" + split + "/" + name + ".wav");

    const auto v = combo::data::synth_video(o, split, i < 2 ? static_cast<int64_t>(i) : 0);
    int sounding = 0;
    for (const auto& obj : v.objects) sounding += obj.sounding;
    EXPECT_GE(sounding, 1);
    EXPECT_LE(sounding, 2);
    EXPECT_LT(sounding, static_cast<int>(v.objects.size())) << "at least one silent object";
    for (size_t t = 0; t < 5; ++t) {
      const cv::Mat gt = read_raw(dir.path() / "ms3_data/gt_masks" / split / name /
                                  (name + "_" + std::to_string(t + 1) + ".png"));
      ASSERT_EQ(gt.type(), CV_8UC1);
      bool has_silent = false;
      EXPECT_TRUE(same(gt, sounding_union(v, t, &has_silent)));
      EXPECT_GT(cv::countNonZero(gt), 0);
    }
  }
  EXPECT_EQ(keys(tree(dir.path())), expected);
  EXPECT_EQ(report.files, static_cast<int64_t>(expected.size()));
}

// ---------------------------------------------------------------------------------------------

TEST(SynthAvss, WritesTheExactLayoutLabelsAndMetadata) {
  combo::testing::TempDir dir;
  SynthOptions o = tiny("avss", dir.path());
  o.train_videos = 3;  // one each of v1s, v1m, v2
  const auto report = combo::data::synthesize(o);
  EXPECT_EQ(slurp(dir.path() / "label2idx.json"),
            "{\n  \"background\": 0,\n  \"accordion\": 1,\n  \"airplane\": 2,\n  \"axe\": 3\n}\n");
  std::string header;
  const auto rows = read_csv(dir.path() / "metadata.csv", &header);
  EXPECT_EQ(header, "vid,uid,s_min,s_sec,a_obj,split,label");
  ASSERT_EQ(rows.size(), 5u);
  const auto classes = combo::data::synth_class_names(3);
  std::set<std::string> expected = {"metadata.csv", "label2idx.json"};
  std::set<std::string> train_labels;
  int64_t frames = 0;
  for (size_t i = 0; i < rows.size(); ++i) {
    ASSERT_EQ(rows[i].size(), 7u);
    EXPECT_EQ(rows[i][0], std::to_string(i + 1));
    const std::string uid = rows[i][1], a_obj = rows[i][4], split = rows[i][5], label = rows[i][6];
    EXPECT_EQ(rows[i][2], "0");
    EXPECT_EQ(rows[i][3], "0");
    EXPECT_TRUE(label == "v1s" || label == "v1m" || label == "v2") << label;
    if (split == "train") train_labels.insert(label);
    const int64_t index = std::stoll(uid.substr(uid.rfind('_') + 1));
    const auto v = combo::data::synth_video(o, split, index);
    EXPECT_EQ(v.name, uid);
    EXPECT_EQ(v.group, label);
    const size_t n = label == "v2" ? 10 : 5;
    ASSERT_EQ(v.frames.size(), n);
    frames += static_cast<int64_t>(n);
    std::set<int> sounding_ids;
    std::string names;
    for (const auto& obj : v.objects)
      if (obj.sounding) {
        sounding_ids.insert(static_cast<int>(obj.class_index + 1));
        names += (names.empty() ? "" : "_") + classes[static_cast<size_t>(obj.class_index)];
      }
    EXPECT_EQ(a_obj, names);
    if (label == "v1s") {
      EXPECT_EQ(sounding_ids.size(), 1u);
    }

    const size_t labelled = (split == "train" && label == "v1s") ? 1 : n;
    const fs::path d = dir.path() / label / uid;
    for (size_t t = 0; t < n; ++t) {
      const std::string s = std::to_string(t);
      expected.insert(label + "/" + uid + "/frames/" + s + ".jpg");
      expected.insert(label + "/" + uid + "/processed_frames/" + s + ".jpg");
      expected.insert("pre_SAM_mask/AVSBench_semantic/" + label + "/" + uid + "/processed_frames/" +
                      s + "_mask_color.png");
      const cv::Mat frame = read_raw(d / "frames" / (s + ".jpg"));
      EXPECT_EQ(frame.cols, 96);
      EXPECT_EQ(frame.rows, 64);
      const cv::Mat processed = read_raw(d / "processed_frames" / (s + ".jpg"));
      EXPECT_EQ(processed.cols, 64);
      EXPECT_EQ(processed.rows, 64);
      const cv::Mat maskige = read_raw(dir.path() / "pre_SAM_mask/AVSBench_semantic" / label / uid /
                                       "processed_frames" / (s + "_mask_color.png"));
      EXPECT_EQ(maskige.type(), CV_8UC3);
      EXPECT_EQ(maskige.cols, 64);
      if (t >= labelled) continue;
      for (const char* sub : {"labels_rgb", "labels_semantic", "processed_labels_semantic"})
        expected.insert(label + "/" + uid + "/" + sub + "/" + s + ".png");
      const cv::Mat sem = read_raw(d / "labels_semantic" / (s + ".png"));
      ASSERT_EQ(sem.type(), CV_8UC1);
      EXPECT_EQ(sem.cols, 96);
      cv::Mat expected_sem = cv::Mat::zeros(64, 96, CV_8UC1);
      for (const auto& obj : v.objects)
        if (obj.sounding) expected_sem.setTo(static_cast<int>(obj.class_index + 1), obj.masks[t]);
      EXPECT_TRUE(same(sem, expected_sem));
      std::set<int> present = values(sem);
      present.erase(0);
      EXPECT_EQ(present, sounding_ids) << "every sounding class is visible, nothing else";
      const cv::Mat rgb = read_raw(d / "labels_rgb" / (s + ".png"));  // BGR
      ASSERT_EQ(rgb.type(), CV_8UC3);
      for (int y = 0; y < rgb.rows; ++y)
        for (int x = 0; x < rgb.cols; ++x) {
          const auto c = combo::data::avss_palette_color(sem.at<uint8_t>(y, x));
          const cv::Vec3b p = rgb.at<cv::Vec3b>(y, x);
          ASSERT_TRUE(p[2] == c[0] && p[1] == c[1] && p[0] == c[2]) << y << "," << x;
        }
      const cv::Mat psem = read_raw(d / "processed_labels_semantic" / (s + ".png"));
      ASSERT_EQ(psem.type(), CV_8UC1);
      EXPECT_EQ(psem.cols, 64);
      EXPECT_EQ(psem.rows, 64);
      if (split == "train") {
        // Short side is already 64: the centre crop, x in [16, 80).
        EXPECT_TRUE(same(psem, sem(cv::Rect(16, 0, 64, 64))));
      }
    }
    expected.insert(label + "/" + uid + "/audio.wav");
    const auto clip = combo::io::read_audio((d / "audio.wav").string());
    EXPECT_EQ(clip.sample_rate, 16000);
    EXPECT_EQ(clip.samples.size(-1), static_cast<int64_t>(n) * 16000) << "1 s per frame";
  }
  EXPECT_EQ(train_labels, (std::set<std::string>{"v1s", "v1m", "v2"}));
  EXPECT_EQ(keys(tree(dir.path())), expected);
  EXPECT_EQ(report.files, static_cast<int64_t>(expected.size()));
  EXPECT_EQ(report.frames, frames);
}

// ---------------------------------------------------------------------------------------------

TEST(SynthDeterminism, SameSeedSameBytesOtherSeedOtherBytes) {
  for (const std::string dataset : {"s4", "ms3", "avss"}) {
    combo::testing::TempDir a, b, c;
    SynthOptions o = tiny(dataset, a.path());
    o.train_videos = 1;
    o.write_raw_videos = dataset != "avss";
    combo::data::synthesize(o);
    o.out = b.path().string();
    o.threads = 3;  // parallel rendering must not change a byte
    combo::data::synthesize(o);
    o.out = c.path().string();
    o.threads = 1;
    o.seed = 8;
    combo::data::synthesize(o);
    const auto ta = tree(a.path()), tb = tree(b.path()), tc = tree(c.path());
    ASSERT_EQ(keys(ta), keys(tb)) << dataset;
    for (const auto& [name, bytes] : ta)
      EXPECT_TRUE(bytes == tb.at(name)) << dataset << " " << name;
    int differ = 0, common = 0;
    for (const auto& [name, bytes] : ta)
      if (tc.count(name)) ++common, differ += bytes != tc.at(name);
    EXPECT_GT(common, 0) << dataset;
    // Everything but the metadata (same names, maybe same categories) changes with the seed.
    EXPECT_GE(differ, common - 2) << dataset;
    if (dataset != "avss") {
      int mp4 = 0;
      for (const auto& [name, bytes] : ta)
        mp4 += name.size() > 4 && name.substr(name.size() - 4) == ".mp4";
      EXPECT_EQ(mp4, 3) << dataset;
    }
  }
}

TEST(SynthErrors, RefusesToOverwriteUnlessAskedAndChecksOptions) {
  combo::testing::TempDir dir;
  SynthOptions o = tiny("ms3", dir.path());
  o.train_videos = 1;
  o.val_videos = o.test_videos = 0;
  combo::data::synthesize(o);
  // A stale file of an earlier run is removed with overwrite, files of others are kept.
  const fs::path stale = dir.path() / "ms3_data/gt_masks/train/stale/stale_1.png";
  fs::create_directories(stale.parent_path());
  std::ofstream(stale) << "x";
  std::ofstream(dir.path() / "mine.txt") << "keep";
  try {
    combo::data::synthesize(o);
    ADD_FAILURE() << "expected an error";
  } catch (const combo::Error& e) {
    EXPECT_NE(std::string(e.what()).find("refusing to write over existing"), std::string::npos)
        << e.what();
    EXPECT_NE(std::string(e.what()).find("ms3_data"), std::string::npos) << e.what();
  }
  o.overwrite = true;
  combo::data::synthesize(o);
  EXPECT_FALSE(fs::exists(stale));
  EXPECT_TRUE(fs::exists(dir.path() / "mine.txt"));
  // No temporary file is left behind.
  for (const auto& e : fs::recursive_directory_iterator(dir.path()))
    EXPECT_EQ(e.path().string().find(".tmp."), std::string::npos) << e.path();

  SynthOptions bad = o;
  bad.num_classes = 1;
  EXPECT_THROW(combo::data::synthesize(bad), combo::Error);
  bad = o;
  bad.dataset = "s5";
  EXPECT_THROW(combo::data::synthesize(bad), combo::Error);
  bad = o;
  bad.out = "";
  EXPECT_THROW(combo::data::synthesize(bad), combo::Error);
  EXPECT_THROW(combo::data::synth_video(o, "training", 0), combo::Error);
}

TEST(SynthPkl, LogMelFilesMatchTheWavs) {
  combo::testing::TempDir dir;
  SynthOptions o = tiny("s4", dir.path());
  o.train_videos = 1;
  o.val_videos = o.test_videos = 0;
  o.write_pkl = true;
  combo::data::synthesize(o);
  const auto v = combo::data::synth_video(o, "train", 0);
  const fs::path pkl = dir.path() / "s4_data/audio_log_mel/train" / v.group / (v.name + ".pkl");
  const at::Tensor mel = combo::io::read_log_mel_pkl(pkl.string());
  ASSERT_EQ(mel.sizes(), (at::IntArrayRef{5, 1, 96, 64}));
  const auto clip = combo::io::read_audio(
      (dir.path() / "s4_data/audio_wav/train" / v.group / (v.name + ".wav")).string());
  const at::Tensor from_wav =
      combo::audio::waveform_to_examples(clip.samples.reshape({-1}).to(at::kDouble), 16000);
  // The pkl is computed before the 16-bit quantisation of the wav.
  EXPECT_TENSOR_NEAR_ABS(from_wav, mel, 0.05);
}

// ---------------------------------------------------------------------------------------------

namespace {

using Result = combo::testing::CommandResult;
using combo::testing::run_shell;

std::string tool() { return (combo::testing::binary_dir() / "tools" / "combo-synth").string(); }

}  // namespace

TEST(ComboSynthIntegration, ToolWritesWhatTheLibraryWrites) {
  combo::testing::TempDir a, b;
  const auto r = run_shell(tool() + " --dataset s4 --out " + a.path().string() +
                           " --train 1 --val 1 --test 1 --size 64 --classes 3 --seed 7");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("3 videos"), std::string::npos) << r.output;
  SynthOptions o = tiny("s4", b.path());
  o.train_videos = 1;
  o.write_raw_videos = true;
  combo::data::synthesize(o);
  const auto ta = tree(a.path()), tb = tree(b.path());
  ASSERT_EQ(keys(ta), keys(tb));
  for (const auto& [name, bytes] : ta) EXPECT_TRUE(bytes == tb.at(name)) << name;
  EXPECT_EQ(ta.count("s4_data/raw_videos/train/" + combo::data::synth_video(o, "train", 0).group +
                     "/s4_train_0000.mp4"),
            1u);
}

TEST(ComboSynthIntegration, NoRawVideosAndErrors) {
  combo::testing::TempDir dir;
  auto r = run_shell(tool() + " --dataset ms3 --out " + dir.path().string() +
                     " --train 1 --val 0 --test 0 --size 32 --no-raw-videos");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_FALSE(fs::exists(dir.path() / "ms3_data/raw_videos"));
  EXPECT_TRUE(fs::exists(dir.path() / "ms3_meta_data.csv"));
  r = run_shell(tool() + " --dataset ms3 --out " + dir.path().string() + " --train 1 --size 32");
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("error: "), std::string::npos) << r.output;
  r = run_shell(tool() + " --dataset s5 --out " + dir.path().string());
  EXPECT_NE(r.status, 0);
  r = run_shell(tool() + " --dataset s4 --out " + dir.path().string() + " --classes 71");
  EXPECT_NE(r.status, 0);
}
