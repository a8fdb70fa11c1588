// Clip-consistent augmentation, ColorAugSSD, Pillow resampling and the AVSS resize rules.
// Expected Pillow numbers were produced once with Pillow 9.4 (Debian 12 python3-pil) from the
// same synthetic images (pattern() below) and pasted here; the tests need no Python.
#include <gtest/gtest.h>
#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <cstdint>
#include <set>
#include <utility>
#include <vector>

#include "combo/core/check.h"
#include "combo/data/transforms.h"

namespace combo::data {
namespace {

// v = (7x + 13y + 101c + (x*y) % 31 + ((x / 5) * (y / 3)) % 17 * 9) % 256: smooth ramps with
// texture, the same formula as the Python generator.
cv::Mat pattern(int h, int w, int c) {
  cv::Mat m(h, w, CV_8UC(c));
  for (int y = 0; y < h; ++y) {
    uint8_t* p = m.ptr<uint8_t>(y);
    for (int x = 0; x < w; ++x) {
      for (int ch = 0; ch < c; ++ch) {
        p[x * c + ch] = static_cast<uint8_t>(
            (x * 7 + y * 13 + ch * 101 + (x * y) % 31 + ((x / 5) * (y / 3)) % 17 * 9) % 256);
      }
    }
  }
  return m;
}

using Sums = std::pair<int64_t, int64_t>;

// (sum of bytes, sum of ((i % 9973) + 1) * byte_i over the HWC order): as the generator.
std::pair<int64_t, int64_t> checksum(const cv::Mat& m) {
  EXPECT_TRUE(m.isContinuous());
  const uint8_t* p = m.ptr<uint8_t>(0);
  const int64_t n = static_cast<int64_t>(m.total() * m.elemSize());
  int64_t s = 0, ws = 0;
  for (int64_t i = 0; i < n; ++i) {
    s += p[i];
    ws += ((i % 9973) + 1) * p[i];
  }
  return {s, ws};
}

std::vector<int> bytes(const cv::Mat& m) {
  std::vector<int> out;
  for (int y = 0; y < m.rows; ++y) {
    const uint8_t* p = m.ptr<uint8_t>(y);
    for (int i = 0; i < m.cols * m.channels(); ++i) {
      out.push_back(p[i]);
    }
  }
  return out;
}

bool same_bytes(const cv::Mat& a, const cv::Mat& b) {
  return a.size() == b.size() && a.type() == b.type() && bytes(a) == bytes(b);
}

cv::Mat tiny_grey() {
  const uint8_t v[] = {10, 200, 30, 40,  250, 0,   255, 128, 64, 32,
                       90, 17,  3,  180, 77,  255, 255, 0,   0,  5};
  return cv::Mat(4, 5, CV_8UC1, const_cast<uint8_t*>(v)).clone();
}

// ---------------------------------------------------------------------------------------------
// Random numbers

TEST(TransformsRng, UniformIsTheDocumentedFormula) {
  Rng a(5), b(5);
  for (int i = 0; i < 100; ++i) {
    const uint64_t raw = b();
    EXPECT_EQ(uniform(a, -2.0, 6.0), -2.0 + 8.0 * (static_cast<double>(raw >> 11) * 0x1.0p-53));
  }
}

TEST(TransformsRng, RangesAndEndpoints) {
  Rng rng(1);
  std::set<int64_t> seen;
  for (int i = 0; i < 2000; ++i) {
    const double u = uniform(rng, 0.5, 1.5);
    EXPECT_GE(u, 0.5);
    EXPECT_LT(u, 1.5);
    const int64_t k = uniform_int(rng, -18, 18);
    EXPECT_GE(k, -18);
    EXPECT_LE(k, 18);
    seen.insert(k);
  }
  EXPECT_EQ(seen.size(), 37u);  // both ends reached
  EXPECT_EQ(uniform_int(rng, 7, 7), 7);
  EXPECT_THROW(uniform_int(rng, 3, 2), combo::Error);
  for (int i = 0; i < 100; ++i) {
    EXPECT_FALSE(bernoulli(rng, 0.0));
    EXPECT_TRUE(bernoulli(rng, 1.0));
  }
  // One raw draw per call, whatever p is.
  Rng x(9), y(9);
  bernoulli(x, 0.0);
  bernoulli(x, 1.0);
  y();
  y();
  EXPECT_EQ(x(), y());
}

// ---------------------------------------------------------------------------------------------
// Geometry draw

TEST(TransformsDraw, DetectronOutputShapes) {
  AugmentOptions o;
  o.short_sides = {112};
  Rng rng(0);
  ClipGeometry g = ClipAugmentation(o).draw(240, 360, rng);
  EXPECT_EQ(g.resize_h, 112);
  EXPECT_EQ(g.resize_w, 168);
  // Crop clipped to the image height; the width range is still drawn.
  EXPECT_EQ(g.crop_h, 112);
  EXPECT_EQ(g.crop_w, 168);
  EXPECT_EQ(g.crop_y, 0);
  EXPECT_EQ(g.crop_x, 0);
  EXPECT_EQ(g.pad_h, 224);
  EXPECT_EQ(g.pad_w, 224);

  o.short_sides = {448};  // 448 x 4480 -> capped at 896: 89.6 -> 90
  g = ClipAugmentation(o).draw(100, 1000, rng);
  EXPECT_EQ(g.resize_h, 90);
  EXPECT_EQ(g.resize_w, 896);
  EXPECT_EQ(g.crop_h, 90);
  EXPECT_EQ(g.crop_w, 224);
  EXPECT_LE(g.crop_x, 896 - 224);

  o.max_size = 0;  // no cap
  g = ClipAugmentation(o).draw(100, 1000, rng);
  EXPECT_EQ(g.resize_h, 448);
  EXPECT_EQ(g.resize_w, 4480);

  // detectron2 rounds int(x + 0.5): 4.5 -> 5, in either orientation.
  o.short_sides = {3};
  o.crop_size = 0;
  o.pad_size = 0;
  g = ClipAugmentation(o).draw(4, 6, rng);
  EXPECT_EQ(g.resize_h, 3);
  EXPECT_EQ(g.resize_w, 5);
  g = ClipAugmentation(o).draw(6, 4, rng);
  EXPECT_EQ(g.resize_h, 5);
  EXPECT_EQ(g.resize_w, 3);
  // No crop, no pad: the geometry is the resized image.
  EXPECT_EQ(g.crop_h, 5);
  EXPECT_EQ(g.crop_w, 3);
  EXPECT_EQ(g.pad_h, 5);
  EXPECT_EQ(g.pad_w, 3);
}

TEST(TransformsDraw, NothingEnabledIsIdentityGeometry) {
  AugmentOptions o;
  o.short_sides.clear();
  o.crop_size = 0;
  o.pad_size = 0;
  o.flip_prob = 0.0;
  Rng rng(3);
  const ClipGeometry g = ClipAugmentation(o).draw(7, 9, rng);
  EXPECT_EQ(g.resize_h, 7);
  EXPECT_EQ(g.resize_w, 9);
  EXPECT_EQ(g.crop_h, 7);
  EXPECT_EQ(g.crop_w, 9);
  EXPECT_EQ(g.pad_h, 7);
  EXPECT_EQ(g.pad_w, 9);
  EXPECT_FALSE(g.flip);
  const cv::Mat img = pattern(7, 9, 3);
  EXPECT_TRUE(same_bytes(ClipAugmentation(o).apply_image(img, g), img));
}

TEST(TransformsDraw, DocumentedDrawOrder) {
  const AugmentOptions o;
  const ClipAugmentation aug(o);
  for (uint64_t seed = 0; seed < 50; ++seed) {
    Rng rng(seed), replay(seed);
    const ClipGeometry g = aug.draw(240, 360, rng);
    const int64_t s = o.short_sides[uniform_int(replay, 0, 15)];
    EXPECT_EQ(std::min(g.resize_h, g.resize_w), s);
    EXPECT_EQ(g.crop_y, uniform_int(replay, 0, g.resize_h - g.crop_h));
    EXPECT_EQ(g.crop_x, uniform_int(replay, 0, g.resize_w - g.crop_w));
    EXPECT_EQ(g.flip, bernoulli(replay, 0.5));
    EXPECT_EQ(rng(), replay());
  }
}

TEST(TransformsDraw, Statistics) {
  const AugmentOptions o;
  const ClipAugmentation aug(o);
  Rng rng(2024);
  std::set<int64_t> sides;
  int flips = 0;
  constexpr int kDraws = 4000;
  for (int i = 0; i < kDraws; ++i) {
    const ClipGeometry g = aug.draw(224, 224, rng);
    ASSERT_EQ(g.resize_h, g.resize_w);
    ASSERT_NE(std::find(o.short_sides.begin(), o.short_sides.end(), g.resize_h),
              o.short_sides.end());
    sides.insert(g.resize_h);
    ASSERT_EQ(g.crop_h, std::min<int64_t>(224, g.resize_h));
    ASSERT_GE(g.crop_y, 0);
    ASSERT_GE(g.crop_x, 0);
    ASSERT_LE(g.crop_y + g.crop_h, g.resize_h);
    ASSERT_LE(g.crop_x + g.crop_w, g.resize_w);
    ASSERT_EQ(g.pad_h, 224);
    flips += g.flip ? 1 : 0;
  }
  EXPECT_EQ(sides.size(), o.short_sides.size());
  // Binomial(4000, 0.5): sd 0.008, the bounds are 5 sd.
  EXPECT_NEAR(static_cast<double>(flips) / kDraws, 0.5, 0.04);
}

TEST(TransformsDraw, RejectsBadOptions) {
  AugmentOptions o;
  o.short_sides = {0};
  EXPECT_THROW(ClipAugmentation{o}, combo::Error);
  o = AugmentOptions{};
  o.flip_prob = 1.5;
  EXPECT_THROW(ClipAugmentation{o}, combo::Error);
  Rng rng(0);
  EXPECT_THROW(ClipAugmentation().draw(0, 5, rng), combo::Error);
}

// ---------------------------------------------------------------------------------------------
// Applying a geometry

ClipGeometry manual(int64_t h, int64_t w) {
  ClipGeometry g;
  g.src_h = g.resize_h = g.crop_h = g.pad_h = h;
  g.src_w = g.resize_w = g.crop_w = g.pad_w = w;
  return g;
}

TEST(TransformsApply, CropFlipPadExact) {
  // 4 x 5 label map, value 10 * row + col.
  cv::Mat labels(4, 5, CV_8UC1);
  for (int y = 0; y < 4; ++y) {
    for (int x = 0; x < 5; ++x) {
      labels.at<uint8_t>(y, x) = static_cast<uint8_t>(10 * y + x);
    }
  }
  ClipGeometry g = manual(4, 5);
  g.crop_y = 1;
  g.crop_x = 2;
  g.crop_h = 2;
  g.crop_w = 3;
  g.pad_h = 3;
  g.pad_w = 4;
  const ClipAugmentation aug;
  EXPECT_EQ(bytes(aug.apply_labels(labels, g)),
            (std::vector<int>{12, 13, 14, 255, 22, 23, 24, 255, 255, 255, 255, 255}));
  g.flip = true;
  EXPECT_EQ(bytes(aug.apply_labels(labels, g)),
            (std::vector<int>{14, 13, 12, 255, 24, 23, 22, 255, 255, 255, 255, 255}));

  // The same geometry on a 3-channel image: pad value 128 in every channel.
  cv::Mat rgb;
  cv::merge(std::vector<cv::Mat>{labels, labels + 100, labels + 200}, rgb);
  const cv::Mat out = aug.apply_image(rgb, g);
  ASSERT_EQ(out.type(), CV_8UC3);
  EXPECT_EQ(out.at<cv::Vec3b>(0, 0), cv::Vec3b(14, 114, 214));
  EXPECT_EQ(out.at<cv::Vec3b>(1, 2), cv::Vec3b(22, 122, 222));
  EXPECT_EQ(out.at<cv::Vec3b>(0, 3), cv::Vec3b(128, 128, 128));
  EXPECT_EQ(out.at<cv::Vec3b>(2, 0), cv::Vec3b(128, 128, 128));
}

TEST(TransformsApply, NegativePaddingCropsTheFlippedCrop) {
  cv::Mat labels(3, 4, CV_8UC1);
  for (int i = 0; i < 12; ++i) {
    labels.at<uint8_t>(i / 4, i % 4) = static_cast<uint8_t>(i);
  }
  ClipGeometry g = manual(3, 4);
  g.pad_h = 2;
  g.pad_w = 2;
  const ClipAugmentation aug;
  EXPECT_EQ(bytes(aug.apply_labels(labels, g)), (std::vector<int>{0, 1, 4, 5}));
  g.flip = true;  // flipped rows 3 2 1 0 / 7 6 5 4, then the top-left 2 x 2
  EXPECT_EQ(bytes(aug.apply_labels(labels, g)), (std::vector<int>{3, 2, 7, 6}));
  // Mixed: pad the height, crop the width.
  g.pad_h = 4;
  EXPECT_EQ(bytes(aug.apply_labels(labels, g)), (std::vector<int>{3, 2, 7, 6, 11, 10, 255, 255}));
}

TEST(TransformsApply, NearestUpscaleOfLabels) {
  const cv::Mat labels = (cv::Mat_<uint8_t>(2, 2) << 1, 2, 3, 4);
  ClipGeometry g = manual(2, 2);
  g.resize_h = g.crop_h = g.pad_h = 4;
  g.resize_w = g.crop_w = g.pad_w = 4;
  EXPECT_EQ(bytes(ClipAugmentation().apply_labels(labels, g)),
            (std::vector<int>{1, 1, 2, 2, 1, 1, 2, 2, 3, 3, 4, 4, 3, 3, 4, 4}));
}

// The crop window of a resize must equal the full Pillow resize followed by the crop, flip and
// padding (what detectron2 computes).
TEST(TransformsApply, WindowedResizeEqualsFullResizeThenCrop) {
  const ClipAugmentation aug;
  Rng rng(77);
  for (const auto& hw : std::vector<std::pair<int, int>>{{224, 224}, {240, 360}, {97, 61}}) {
    const cv::Mat img = pattern(hw.first, hw.second, 3);
    const cv::Mat lab = pattern(hw.first, hw.second, 1);
    for (int i = 0; i < 12; ++i) {
      const ClipGeometry g = aug.draw(hw.first, hw.second, rng);
      const cv::Rect crop(static_cast<int>(g.crop_x), static_cast<int>(g.crop_y),
                          static_cast<int>(g.crop_w), static_cast<int>(g.crop_h));
      auto reference = [&](const cv::Mat& full, uint8_t pad) {
        cv::Mat c = full(crop).clone();
        if (g.flip) cv::flip(c, c, 1);
        cv::Mat p(static_cast<int>(g.pad_h), static_cast<int>(g.pad_w), c.type(),
                  cv::Scalar::all(pad));
        const int h = std::min(c.rows, p.rows), w = std::min(c.cols, p.cols);
        c(cv::Rect(0, 0, w, h)).copyTo(p(cv::Rect(0, 0, w, h)));
        return p;
      };
      const cv::Mat ref_img = reference(pil_resize_bilinear(img, g.resize_w, g.resize_h), 128);
      const cv::Mat ref_lab = reference(pil_resize_nearest(lab, g.resize_w, g.resize_h), 255);
      ASSERT_TRUE(same_bytes(aug.apply_image(img, g), ref_img)) << "draw " << i;
      ASSERT_TRUE(same_bytes(aug.apply_labels(lab, g), ref_lab)) << "draw " << i;
    }
  }
}

// One draw, every image of the video: frame channel 0 and the label map stay aligned.
TEST(TransformsApply, GeometrySharedAcrossImages) {
  AugmentOptions o;
  o.short_sides = {240};  // the frame's own short side: no resampling, exact comparison
  const ClipAugmentation aug(o);
  const cv::Mat lab = pattern(240, 320, 1);
  cv::Mat frame;
  cv::merge(std::vector<cv::Mat>{lab, 255 - lab, lab / 2}, frame);
  Rng rng(11);
  int flipped = 0;
  for (int i = 0; i < 8; ++i) {
    const ClipGeometry g = aug.draw(240, 320, rng);
    flipped += g.flip;
    const cv::Mat f = aug.apply_image(frame, g);
    const cv::Mat m = aug.apply_image(frame, g);
    const cv::Mat l = aug.apply_labels(lab, g);
    ASSERT_EQ(f.size(), cv::Size(224, 224));
    ASSERT_EQ(l.size(), cv::Size(224, 224));
    EXPECT_TRUE(same_bytes(f, m));
    std::vector<cv::Mat> ch;
    cv::split(f, ch);
    EXPECT_TRUE(same_bytes(ch[0], l));
    EXPECT_EQ(
        l.at<uint8_t>(5, 7),
        lab.at<uint8_t>(static_cast<int>(g.crop_y) + 5,
                        static_cast<int>(g.flip ? g.crop_x + g.crop_w - 1 - 7 : g.crop_x + 7)));
  }
  EXPECT_GT(flipped, 0);
  EXPECT_LT(flipped, 8);
}

TEST(TransformsApply, RejectsMismatchedImage) {
  const ClipAugmentation aug;
  Rng rng(0);
  const ClipGeometry g = aug.draw(224, 224, rng);
  EXPECT_THROW(aug.apply_image(pattern(200, 224, 3), g), combo::Error);
  EXPECT_THROW(aug.apply_labels(cv::Mat(), g), combo::Error);
  EXPECT_THROW(aug.apply_image(cv::Mat(224, 224, CV_32FC3), g), combo::Error);
}

// A whole video through the pipeline: same seed, same bytes; another seed, other bytes.
std::vector<cv::Mat> run_video(uint64_t seed) {
  const ClipAugmentation aug;
  Rng rng(seed);
  const ClipGeometry g = aug.draw(224, 224, rng);
  std::vector<cv::Mat> out;
  for (int t = 0; t < 3; ++t) {
    cv::Mat f = aug.apply_image(pattern(224, 224, 3) + cv::Scalar::all(t), g);
    aug.color_jitter(f, rng);
    out.push_back(f);
    out.push_back(aug.apply_labels(pattern(224, 224, 1), g));
  }
  return out;
}

TEST(TransformsApply, Determinism) {
  const auto a = run_video(123), b = run_video(123), c = run_video(124);
  bool all_same = true, any_diff = false;
  for (size_t i = 0; i < a.size(); ++i) {
    all_same = all_same && same_bytes(a[i], b[i]);
    any_diff = any_diff || !same_bytes(a[i], c[i]);
  }
  EXPECT_TRUE(all_same);
  EXPECT_TRUE(any_diff);
}

// ---------------------------------------------------------------------------------------------
// ColorAugSSD against a literal transcription of detectron2's ColorAugSSDTransform (BGR, float32
// arithmetic, cv2 HSV), driven by a replay of the documented draw order.

struct JitterDraws {
  bool brightness = false;
  float delta = 0.0f;
  bool contrast_first = false;
  bool contrast = false;
  float contrast_alpha = 1.0f;
  bool saturation = false;
  float saturation_alpha = 1.0f;
  bool hue = false;
  int hue_delta = 0;
};

JitterDraws replay_jitter_from(Rng& rng) {
  JitterDraws d;
  d.brightness = bernoulli(rng, 0.5);
  if (d.brightness) d.delta = static_cast<float>(uniform(rng, -32.0, 32.0));
  d.contrast_first = bernoulli(rng, 0.5);
  auto contrast = [&] {
    d.contrast = bernoulli(rng, 0.5);
    if (d.contrast) d.contrast_alpha = static_cast<float>(uniform(rng, 0.5, 1.5));
  };
  auto saturation = [&] {
    d.saturation = bernoulli(rng, 0.5);
    if (d.saturation) d.saturation_alpha = static_cast<float>(uniform(rng, 0.5, 1.5));
  };
  auto hue = [&] {
    d.hue = bernoulli(rng, 0.5);
    if (d.hue) d.hue_delta = static_cast<int>(uniform_int(rng, -18, 18));
  };
  if (d.contrast_first) {
    contrast();
    saturation();
    hue();
  } else {
    saturation();
    hue();
    contrast();
  }
  return d;
}
JitterDraws replay_jitter(Rng rng) { return replay_jitter_from(rng); }

// convert(): img.astype(float32) * alpha + beta, clip, astype(uint8), one channel or all.
void ref_convert(cv::Mat& img, float alpha, float beta, int only_channel) {
  const int cn = img.channels();
  for (int y = 0; y < img.rows; ++y) {
    uint8_t* p = img.ptr<uint8_t>(y);
    for (int x = 0; x < img.cols; ++x) {
      for (int c = 0; c < cn; ++c) {
        if (only_channel >= 0 && c != only_channel) continue;
        float v = static_cast<float>(p[x * cn + c]);
        if (alpha != 1.0f) v = v * alpha;
        if (beta != 0.0f) v = v + beta;
        v = std::min(255.0f, std::max(0.0f, v));
        p[x * cn + c] = static_cast<uint8_t>(v);
      }
    }
  }
}

void ref_brightness(cv::Mat& bgr, float delta) { ref_convert(bgr, 1.0f, delta, -1); }
void ref_contrast(cv::Mat& bgr, float alpha) { ref_convert(bgr, alpha, 0.0f, -1); }
void ref_saturation(cv::Mat& bgr, float alpha) {
  cv::Mat hsv;
  cv::cvtColor(bgr, hsv, cv::COLOR_BGR2HSV);
  ref_convert(hsv, alpha, 0.0f, 1);
  cv::cvtColor(hsv, bgr, cv::COLOR_HSV2BGR);
}
void ref_hue(cv::Mat& bgr, int delta) {
  cv::Mat hsv;
  cv::cvtColor(bgr, hsv, cv::COLOR_BGR2HSV);
  for (int y = 0; y < hsv.rows; ++y) {
    for (int x = 0; x < hsv.cols; ++x) {
      uint8_t& h = hsv.at<cv::Vec3b>(y, x)[0];
      h = static_cast<uint8_t>(((h + delta) % 180 + 180) % 180);  // Python %
    }
  }
  cv::cvtColor(hsv, bgr, cv::COLOR_HSV2BGR);
}

cv::Mat ref_color_aug(const cv::Mat& rgb, const JitterDraws& d) {
  cv::Mat img;
  cv::cvtColor(rgb, img, cv::COLOR_RGB2BGR);
  if (d.brightness) ref_brightness(img, d.delta);
  auto contrast = [&] {
    if (d.contrast) ref_contrast(img, d.contrast_alpha);
  };
  auto saturation = [&] {
    if (d.saturation) ref_saturation(img, d.saturation_alpha);
  };
  auto hue = [&] {
    if (d.hue) ref_hue(img, d.hue_delta);
  };
  if (d.contrast_first) {
    contrast();
    saturation();
    hue();
  } else {
    saturation();
    hue();
    contrast();
  }
  cv::cvtColor(img, img, cv::COLOR_BGR2RGB);
  return img;
}

// A colourful test image: every hue, saturations and values from 0 to 255, and clipping.
cv::Mat colourful() {
  cv::Mat img = pattern(48, 64, 3);
  img.row(0).setTo(cv::Scalar(255, 255, 255));
  img.row(1).setTo(cv::Scalar(0, 0, 0));
  img.row(2).setTo(cv::Scalar(250, 10, 10));
  return img;
}

// First seed whose replayed draws satisfy `want`.
template <typename Pred>
uint64_t find_seed(Pred want) {
  for (uint64_t seed = 0; seed < 100000; ++seed) {
    if (want(replay_jitter(Rng(seed)))) return seed;
  }
  ADD_FAILURE() << "no seed found";
  return 0;
}

TEST(TransformsColor, AllCoinsFailLeavesImageUnchanged) {
  const uint64_t seed = find_seed(
      [](const JitterDraws& d) { return !d.brightness && !d.contrast && !d.saturation && !d.hue; });
  const cv::Mat img = colourful();
  cv::Mat out = img.clone();
  Rng rng(seed);
  color_aug_ssd(out, rng);
  EXPECT_TRUE(same_bytes(out, img));
}

TEST(TransformsColor, EachStepAloneMatchesReference) {
  const cv::Mat img = colourful();
  using Pick = bool (*)(const JitterDraws&);
  const std::vector<std::pair<const char*, Pick>> steps = {
      {"brightness",
       [](const JitterDraws& d) {
         return d.brightness && !d.contrast && !d.saturation && !d.hue && d.delta > 5.0f;
       }},
      {"brightness negative",
       [](const JitterDraws& d) {
         return d.brightness && !d.contrast && !d.saturation && !d.hue && d.delta < -5.0f;
       }},
      {"contrast",
       [](const JitterDraws& d) {
         return !d.brightness && d.contrast && !d.saturation && !d.hue && d.contrast_alpha > 1.2f;
       }},
      {"contrast low",
       [](const JitterDraws& d) {
         return !d.brightness && d.contrast && !d.saturation && !d.hue && d.contrast_alpha < 0.8f;
       }},
      {"saturation",
       [](const JitterDraws& d) {
         return !d.brightness && !d.contrast && d.saturation && !d.hue &&
                std::abs(d.saturation_alpha - 1.0f) > 0.2f;
       }},
      {"hue positive",
       [](const JitterDraws& d) {
         return !d.brightness && !d.contrast && !d.saturation && d.hue && d.hue_delta > 3;
       }},
      {"hue negative",
       [](const JitterDraws& d) {
         return !d.brightness && !d.contrast && !d.saturation && d.hue && d.hue_delta < -3;
       }},
  };
  for (const auto& [name, pick] : steps) {
    const uint64_t seed = find_seed(pick);
    const JitterDraws d = replay_jitter(Rng(seed));
    cv::Mat out = img.clone();
    Rng rng(seed);
    color_aug_ssd(out, rng);
    EXPECT_TRUE(same_bytes(out, ref_color_aug(img, d))) << name;
    EXPECT_FALSE(same_bytes(out, img)) << name << " changed nothing";
  }
}

TEST(TransformsColor, EveryDrawMatchesReferenceAndConsumesTheDocumentedDraws) {
  const cv::Mat img = colourful();
  int both_orders = 0;
  for (uint64_t seed = 0; seed < 64; ++seed) {
    const JitterDraws d = replay_jitter(Rng(seed));
    cv::Mat out = img.clone();
    Rng rng(seed);
    color_aug_ssd(out, rng);
    ASSERT_TRUE(same_bytes(out, ref_color_aug(img, d))) << "seed " << seed;
    // The jitter consumed exactly the documented draws.
    Rng replay(seed);
    replay_jitter_from(replay);
    EXPECT_EQ(rng(), replay()) << "seed " << seed;
    if (d.contrast && d.saturation && d.hue) both_orders |= d.contrast_first ? 1 : 2;
  }
  EXPECT_EQ(both_orders, 3);
}

TEST(TransformsColor, JitterIsPerImageAndOptional) {
  AugmentOptions o;
  const cv::Mat img = colourful();
  Rng rng(5);
  cv::Mat a = img.clone(), b = img.clone();
  ClipAugmentation(o).color_jitter(a, rng);
  ClipAugmentation(o).color_jitter(b, rng);
  EXPECT_FALSE(same_bytes(a, b));  // consecutive images get their own draws
  int changed = 0;
  for (int i = 0; i < 20; ++i) {
    cv::Mat c = img.clone();
    ClipAugmentation(o).color_jitter(c, rng);
    changed += !same_bytes(c, img);
  }
  EXPECT_GT(changed, 10);  // 15 of 16 draws change something
  o.color_jitter = false;
  cv::Mat c = img.clone();
  Rng before = rng;
  ClipAugmentation(o).color_jitter(c, rng);
  EXPECT_TRUE(same_bytes(c, img));
  EXPECT_EQ(rng(), before());  // disabled jitter draws nothing
  cv::Mat grey(4, 4, CV_8UC1, cv::Scalar(3));
  EXPECT_THROW(color_aug_ssd(grey, rng), combo::Error);
}

TEST(TransformsColor, LabelsUntouchedByJitter) {
  const ClipAugmentation aug;
  const cv::Mat lab = pattern(224, 224, 1);
  Rng rng(8);
  const ClipGeometry g = aug.draw(224, 224, rng);
  const cv::Mat before = aug.apply_labels(lab, g);
  for (int i = 0; i < 5; ++i) {
    cv::Mat f = aug.apply_image(pattern(224, 224, 3), g);
    aug.color_jitter(f, rng);
  }
  EXPECT_TRUE(same_bytes(aug.apply_labels(lab, g), before));
  EXPECT_TRUE(same_bytes(lab, pattern(224, 224, 1)));
}

// ---------------------------------------------------------------------------------------------
// Pillow resampling (values from Pillow 9.4)

TEST(TransformsPillow, BilinearTinyGrey) {
  const cv::Mat in = tiny_grey();
  const std::vector<std::pair<std::pair<int, int>, std::vector<int>>> cases = {
      {{3, 2}, {94, 97, 106, 150, 64, 60}},
      {{8, 7},
       {10,  93,  189, 83,  33,  39, 158, 250, 6,  100, 210, 113, 60,  49,  118, 172, 1,  111, 243,
        162, 103, 66,  54,  48,  45, 85,  132, 88, 83,  119, 84,  55,  102, 72,  32,  12, 54,  157,
        114, 72,  196, 185, 159, 54, 21,  60,  46, 31,  255, 255, 239, 80,  0,   0,   3,  5}},
      {{5, 2}, {17, 197, 68, 70, 132, 148, 153, 20, 86, 40}},
      {{3, 4}, {91, 70, 160, 109, 142, 46, 59, 45, 121, 255, 57, 3}},
      {{2, 1}, {111, 78}},
      {{13, 3}, {7,   24,  104, 184, 180, 120, 59, 55, 50,  68,  121, 174, 185,
                 45,  52,  87,  122, 120, 93,  66, 87, 109, 112, 86,  60,  55,
                 206, 204, 195, 187, 141, 71,  1,  21, 42,  50,  40,  29,  27}},
  };
  for (const auto& [wh, expected] : cases) {
    EXPECT_EQ(bytes(pil_resize_bilinear(in, wh.first, wh.second)), expected)
        << wh.first << "x" << wh.second;
  }
  EXPECT_TRUE(same_bytes(pil_resize_bilinear(in, 5, 4), in));
}

TEST(TransformsPillow, BilinearTinyRgb) {
  const cv::Mat in = pattern(5, 6, 3);
  EXPECT_EQ(bytes(pil_resize_bilinear(in, 4, 3)),
            (std::vector<int>{9,  110, 211, 18, 119, 220, 30, 131, 232, 40,  141, 242,
                              29, 130, 231, 42, 143, 206, 55, 156, 153, 69,  170, 72,
                              50, 151, 198, 66, 167, 48,  80, 181, 26,  101, 202, 47}));
  const std::vector<int> up = bytes(pil_resize_bilinear(in, 9, 7));
  ASSERT_EQ(up.size(), 189u);
  // First row, a middle row (row 3) and the last row of Pillow's 9 x 7 output.
  EXPECT_EQ(std::vector<int>(up.begin(), up.begin() + 27),
            (std::vector<int>{0,   101, 202, 4,   105, 206, 8,   109, 210, 13,  114, 215, 18, 119,
                              220, 22,  123, 224, 27,  128, 229, 32,  133, 234, 35,  136, 237}));
  EXPECT_EQ(std::vector<int>(up.begin() + 81, up.begin() + 108),
            (std::vector<int>{26,  127, 228, 31,  132, 233, 37, 138, 239, 42, 143, 244, 49, 150,
                              251, 55,  156, 214, 60,  161, 49, 67,  168, 13, 71,  172, 17}));
  EXPECT_EQ(std::vector<int>(up.begin() + 162, up.end()),
            (std::vector<int>{52, 153, 254, 58, 159, 132, 65, 166, 11,  72, 173, 18,  80, 181,
                              26, 87,  188, 33, 94,  195, 40, 106, 207, 52, 116, 217, 62}));
}

TEST(TransformsPillow, NearestTiny) {
  const cv::Mat in = tiny_grey();
  EXPECT_EQ(bytes(pil_resize_nearest(in, 3, 2)), (std::vector<int>{0, 128, 32, 255, 0, 5}));
  EXPECT_EQ(bytes(pil_resize_nearest(in, 8, 7)),
            (std::vector<int>{10,  10,  200, 30, 30,  40,  250, 250, 10,  10,  200, 30, 30,  40,
                              250, 250, 0,   0,  255, 128, 128, 64,  32,  32,  0,   0,  255, 128,
                              128, 64,  32,  32, 90,  90,  17,  3,   3,   180, 77,  77, 255, 255,
                              255, 0,   0,   0,  5,   5,   255, 255, 255, 0,   0,   0,  5,   5}));
  EXPECT_EQ(bytes(pil_resize_nearest(in, 11, 4)),
            (std::vector<int>{10,  10,  200, 200, 30,  30,  30,  40, 40, 250, 250, 0, 0, 255, 255,
                              128, 128, 128, 64,  64,  32,  32,  90, 90, 17,  17,  3, 3, 3,   180,
                              180, 77,  77,  255, 255, 255, 255, 0,  0,  0,   0,   0, 5, 5}));
}

TEST(TransformsPillow, LargerImagesMatchPillowChecksums) {
  struct Case {
    int h, w, c, out_w, out_h;
    std::pair<int64_t, int64_t> bilinear, nearest;
  };
  const std::vector<Case> cases = {
      {240, 360, 3, 336, 224, {28834367, 142385569465}, {28821781, 142345899766}},
      {240, 360, 3, 224, 224, {19220553, 95345934003}, {19217508, 95381700748}},
      {240, 360, 3, 134, 89, {4567996, 21201897294}, {4566208, 21163820322}},
      {240, 360, 3, 500, 333, {63775729, 317361479022}, {63800592, 317513551802}},
      {240, 360, 3, 360, 112, {15444728, 76295169872}, {15431640, 76219123861}},
      {224, 224, 1, 448, 448, {25717060, 127210002614}, {25666692, 126946186351}},
      {224, 224, 1, 134, 134, {2296092, 10388181071}, {2296915, 10397172540}},
      {224, 224, 1, 512, 512, {33532859, 165918716772}, {33525200, 165834389550}},
      {224, 224, 1, 283, 170, {6153035, 29859094265}, {6153418, 29828843805}},
  };
  for (const Case& k : cases) {
    const cv::Mat in = pattern(k.h, k.w, k.c);
    const cv::Mat b = pil_resize_bilinear(in, k.out_w, k.out_h);
    const cv::Mat n = pil_resize_nearest(in, k.out_w, k.out_h);
    ASSERT_EQ(b.size(), cv::Size(k.out_w, k.out_h));
    ASSERT_EQ(n.type(), in.type());
    EXPECT_EQ(checksum(b), k.bilinear) << k.w << "x" << k.h << " -> " << k.out_w << "x" << k.out_h;
    EXPECT_EQ(checksum(n), k.nearest) << k.w << "x" << k.h << " -> " << k.out_w << "x" << k.out_h;
  }
}

// Where the exact product floor((x + 0.5) * src / dst) and Pillow's accumulated coordinate
// differ, Pillow's wins: 2 -> 7 at x = 3 is exactly 1.0, accumulated just below 1 (Pillow: 0).
TEST(TransformsPillow, NearestFollowsPillowAccumulation) {
  const cv::Mat row = (cv::Mat_<uint8_t>(1, 2) << 0, 1);
  EXPECT_EQ(bytes(pil_resize_nearest(row, 7, 1)), (std::vector<int>{0, 0, 0, 0, 1, 1, 1}));
  const cv::Mat column = (cv::Mat_<uint8_t>(2, 1) << 0, 1);
  EXPECT_EQ(bytes(pil_resize_nearest(column, 1, 7)), (std::vector<int>{0, 0, 0, 0, 1, 1, 1}));
}

TEST(TransformsPillow, RejectsBadInput) {
  EXPECT_THROW(pil_resize_bilinear(cv::Mat(), 3, 3), combo::Error);
  EXPECT_THROW(pil_resize_bilinear(tiny_grey(), 0, 3), combo::Error);
  EXPECT_THROW(pil_resize_nearest(cv::Mat(3, 3, CV_16UC1), 3, 3), combo::Error);
}

// ---------------------------------------------------------------------------------------------
// AVSS rules

TEST(TransformsAvss, CropResizeSpecExample) {
  // 360 x 240 (W x H) -> 336 x 224 -> crop x in [56, 280).
  const cv::Mat in = pattern(240, 360, 3);
  const cv::Mat out = avss_resize(in, AvssResize::kCropResize, 224, false);
  ASSERT_EQ(out.size(), cv::Size(224, 224));
  EXPECT_TRUE(same_bytes(out, pil_resize_bilinear(in, 336, 224)(cv::Rect(56, 0, 224, 224))));
  EXPECT_EQ(checksum(out), Sums(19215786, 95342385141));
  const cv::Mat lab = avss_resize(in, AvssResize::kCropResize, 224, true);
  EXPECT_TRUE(same_bytes(lab, pil_resize_nearest(in, 336, 224)(cv::Rect(56, 0, 224, 224))));
  EXPECT_EQ(checksum(lab), Sums(19216488, 95365005023));
}

TEST(TransformsAvss, CropResizeMatchesPillow) {
  struct Case {
    int h, w;
    std::pair<int64_t, int64_t> bilinear, nearest;
  };
  const std::vector<Case> cases = {
      {360, 240, {19196223, 95088396776}, {19184577, 95028007851}},  // portrait, y1 = 56
      {229, 300, {19212298, 95305606053}, {19204613, 95251554695}},  // 293 wide, 34.5 -> 34
      {229, 302, {19212982, 95316394505}, {19204127, 95267645439}},  // 295 wide, 35.5 -> 36
  };
  for (const Case& k : cases) {
    const cv::Mat in = pattern(k.h, k.w, 3);
    EXPECT_EQ(checksum(avss_resize(in, AvssResize::kCropResize, 224, false)), k.bilinear)
        << k.w << "x" << k.h;
    EXPECT_EQ(checksum(avss_resize(in, AvssResize::kCropResize, 224, true)), k.nearest)
        << k.w << "x" << k.h;
  }
}

TEST(TransformsAvss, CentreCropRoundsHalfToEven) {
  // Short side already 224: no resampling, the crop offset alone. 249 - 224 = 25 -> 12.5 -> 12;
  // 251 - 224 = 27 -> 13.5 -> 14.
  for (const auto& [w, x1] : std::vector<std::pair<int, int>>{{249, 12}, {251, 14}, {250, 13}}) {
    const cv::Mat in = pattern(224, w, 3);
    EXPECT_TRUE(same_bytes(avss_resize(in, AvssResize::kCropResize, 224, false),
                           in(cv::Rect(x1, 0, 224, 224))))
        << w;
    EXPECT_TRUE(same_bytes(avss_resize(in, AvssResize::kCropResize, 224, true),
                           in(cv::Rect(x1, 0, 224, 224))))
        << w;
  }
  const cv::Mat tall = pattern(251, 224, 1);
  EXPECT_TRUE(same_bytes(avss_resize(tall, AvssResize::kCropResize, 224, true),
                         tall(cv::Rect(0, 14, 224, 224))));
}

TEST(TransformsAvss, DirectResizeAndNone) {
  const cv::Mat in = pattern(240, 360, 3);
  EXPECT_EQ(checksum(avss_resize(in, AvssResize::kDirectResize, 224, false)),
            Sums(19220553, 95345934003));
  EXPECT_EQ(checksum(avss_resize(in, AvssResize::kDirectResize, 224, true)),
            Sums(19217508, 95381700748));
  const cv::Mat same = avss_resize(in, AvssResize::kNone, 224, false);
  EXPECT_TRUE(same_bytes(same, in));
  EXPECT_NE(same.data, in.data);  // a copy: jittering it in place leaves the source alone
}

}  // namespace
}  // namespace combo::data
