#include "combo/data/transforms.h"

#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>
#include <vector>

#include "combo/core/check.h"

namespace combo::data {

namespace {

void check_u8(const cv::Mat& image, const char* what) {
  COMBO_CHECK(!image.empty(), what, ": empty image");
  COMBO_CHECK(image.depth() == CV_8U && image.channels() >= 1 && image.channels() <= 4, what,
              ": expected an 8-bit image with 1 to 4 channels, got type ", image.type());
}

// ---------------------------------------------------------------------------------------------
// Pillow 9 Resample.c, BILINEAR filter, 8 bits per channel, box = the whole image.

constexpr int kPrecisionBits = 32 - 8 - 2;

double bilinear_filter(double x) {
  if (x < 0.0) {
    x = -x;
  }
  if (x < 1.0) {
    return 1.0 - x;
  }
  return 0.0;
}

inline uint8_t clip8(int in) {
  // Pillow's lookup table maps in >> PRECISION_BITS through a clamp to [0, 255].
  const int v = in >> kPrecisionBits;
  return static_cast<uint8_t>(v < 0 ? 0 : (v > 255 ? 255 : v));
}

// Per output position: first source index, number of taps, then ksize fixed-point weights.
struct Coeffs {
  int ksize = 0;
  std::vector<int> bounds;  // [out_size * 2]: xmin, count
  std::vector<int32_t> kk;  // [out_size * ksize]
};

// precompute_coeffs + normalize_coeffs_8bpc, with the same double arithmetic in the same order,
// so the rounding of every weight equals Pillow's.
Coeffs precompute_coeffs(int in_size, float in0, float in1, int out_size) {
  constexpr double kSupport = 1.0;  // BILINEAR
  double scale = static_cast<double>(in1 - in0) / out_size;
  double filterscale = scale;
  if (filterscale < 1.0) {
    filterscale = 1.0;
  }
  const double support = kSupport * filterscale;
  Coeffs c;
  c.ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
  c.bounds.resize(static_cast<size_t>(out_size) * 2);
  c.kk.assign(static_cast<size_t>(out_size) * c.ksize, 0);
  std::vector<double> k(c.ksize);
  for (int xx = 0; xx < out_size; ++xx) {
    const double center = in0 + (xx + 0.5) * scale;
    double ww = 0.0;
    const double ss = 1.0 / filterscale;
    int xmin = static_cast<int>(center - support + 0.5);
    if (xmin < 0) {
      xmin = 0;
    }
    int xmax = static_cast<int>(center + support + 0.5);
    if (xmax > in_size) {
      xmax = in_size;
    }
    xmax -= xmin;
    int x = 0;
    for (; x < xmax; ++x) {
      const double w = bilinear_filter((x + xmin - center + 0.5) * ss);
      k[x] = w;
      ww += w;
    }
    for (x = 0; x < xmax; ++x) {
      if (ww != 0.0) {
        k[x] /= ww;
      }
    }
    for (; x < c.ksize; ++x) {
      k[x] = 0.0;
    }
    int32_t* out = &c.kk[static_cast<size_t>(xx) * c.ksize];
    for (x = 0; x < c.ksize; ++x) {
      out[x] = k[x] < 0 ? static_cast<int32_t>(-0.5 + k[x] * (1 << kPrecisionBits))
                        : static_cast<int32_t>(0.5 + k[x] * (1 << kPrecisionBits));
    }
    c.bounds[xx * 2 + 0] = xmin;
    c.bounds[xx * 2 + 1] = xmax;
  }
  return c;
}

// ImagingResampleHorizontal_8bpc over source rows [row0, row0 + rows), output columns
// [col0, col1). Each output pixel depends only on its own coefficients, so a sub-range gives
// the same bytes as Pillow's full pass.
cv::Mat resample_horizontal(const cv::Mat& in, int row0, int rows, const Coeffs& c, int col0,
                            int col1) {
  const int cn = in.channels();
  // The intermediate image lives in a per-thread buffer: allocating (up to 300 kB for a
  // 448-row window) and freeing it per frame makes glibc map and trim fresh pages each time,
  // which cost more than the resampling itself on the loader threads.
  thread_local std::vector<uint8_t> scratch;
  const size_t need = static_cast<size_t>(rows) * (col1 - col0) * cn;
  if (scratch.size() < need) {
    scratch.resize(need);
  }
  cv::Mat out(rows, col1 - col0, in.type(), scratch.data());
  for (int yy = 0; yy < rows; ++yy) {
    const uint8_t* src = in.ptr<uint8_t>(row0 + yy);
    uint8_t* dst = out.ptr<uint8_t>(yy);
    for (int xx = col0; xx < col1; ++xx) {
      const int xmin = c.bounds[xx * 2 + 0];
      const int xmax = c.bounds[xx * 2 + 1];
      const int32_t* k = &c.kk[static_cast<size_t>(xx) * c.ksize];
      const uint8_t* s = src + static_cast<ptrdiff_t>(xmin) * cn;
      uint8_t* d = dst + static_cast<ptrdiff_t>(xx - col0) * cn;
      if (cn == 3) {
        int ss0 = 1 << (kPrecisionBits - 1), ss1 = ss0, ss2 = ss0;
        for (int x = 0; x < xmax; ++x) {
          ss0 += s[x * 3 + 0] * k[x];
          ss1 += s[x * 3 + 1] * k[x];
          ss2 += s[x * 3 + 2] * k[x];
        }
        d[0] = clip8(ss0);
        d[1] = clip8(ss1);
        d[2] = clip8(ss2);
      } else {
        for (int ch = 0; ch < cn; ++ch) {
          int ss = 1 << (kPrecisionBits - 1);
          for (int x = 0; x < xmax; ++x) {
            ss += s[x * cn + ch] * k[x];
          }
          d[ch] = clip8(ss);
        }
      }
    }
  }
  return out;
}

// ImagingResampleVertical_8bpc for output rows [row0, row1); `bounds` are relative to the first
// row of `in`. Accumulates whole rows so the inner loop vectorises; the sums are the same
// integers as Pillow's per-pixel loop.
cv::Mat resample_vertical(const cv::Mat& in, const Coeffs& c, int bounds_shift, int row0,
                          int row1) {
  const int n = in.cols * in.channels();
  cv::Mat out(row1 - row0, in.cols, in.type());
  std::vector<int32_t> acc(n);
  for (int yy = row0; yy < row1; ++yy) {
    const int ymin = c.bounds[yy * 2 + 0] - bounds_shift;
    const int ymax = c.bounds[yy * 2 + 1];
    const int32_t* k = &c.kk[static_cast<size_t>(yy) * c.ksize];
    std::fill(acc.begin(), acc.end(), 1 << (kPrecisionBits - 1));
    for (int y = 0; y < ymax; ++y) {
      const uint8_t* src = in.ptr<uint8_t>(ymin + y);
      const int32_t w = k[y];
      int32_t* a = acc.data();
      for (int i = 0; i < n; ++i) {
        a[i] += src[i] * w;
      }
    }
    uint8_t* dst = out.ptr<uint8_t>(yy - row0);
    for (int i = 0; i < n; ++i) {
      dst[i] = clip8(acc[i]);
    }
  }
  return out;
}

// Pillow's ImagingResampleInner for the whole-image box, evaluated only on the output window
// `roi` (the caller's crop): the bytes equal those of the full resize followed by the crop.
cv::Mat pil_bilinear_window(const cv::Mat& image, int out_w, int out_h, const cv::Rect& roi) {
  const int in_w = image.cols;
  const int in_h = image.rows;
  const bool need_horizontal = out_w != in_w;
  const bool need_vertical = out_h != in_h;
  const Coeffs vert = precompute_coeffs(in_h, 0.0f, static_cast<float>(in_h), out_h);

  // Source rows the window needs (Pillow: ybox_first / ybox_last over every output row).
  int row_first = roi.y;
  int row_last = roi.y + roi.height;
  if (need_vertical) {
    row_first = std::numeric_limits<int>::max();
    row_last = 0;
    for (int yy = roi.y; yy < roi.y + roi.height; ++yy) {
      row_first = std::min(row_first, vert.bounds[yy * 2]);
      row_last = std::max(row_last, vert.bounds[yy * 2] + vert.bounds[yy * 2 + 1]);
    }
  }

  cv::Mat temp;
  if (need_horizontal) {
    const Coeffs horiz = precompute_coeffs(in_w, 0.0f, static_cast<float>(in_w), out_w);
    temp = resample_horizontal(image, row_first, row_last - row_first, horiz, roi.x,
                               roi.x + roi.width);
  } else {
    temp = image(cv::Range(row_first, row_last), cv::Range(roi.x, roi.x + roi.width));
  }
  if (need_vertical) {
    return resample_vertical(temp, vert, row_first, roi.y, roi.y + roi.height);
  }
  return temp.clone();
}

// Pillow NEAREST goes through ImagingScaleAffine: the source coordinate starts at half a step
// and is accumulated in double, then truncated. The accumulation (not the exact product
// (x + 0.5) * src / dst) is what matches Pillow: checked against Pillow 9.4 on 16,250 size
// pairs, the exact formula was off by a pixel somewhere for 3,156 of them, this for none.
std::vector<int> nearest_index(int src, int dst, int first, int count) {
  const double a = static_cast<double>(src) / dst;
  double xo = a * 0.5;
  std::vector<int> index(count);
  for (int x = 0; x < first + count; ++x) {
    if (x >= first) {
      const int xin = xo < 0.0 ? -1 : static_cast<int>(xo);
      index[x - first] = std::clamp(xin, 0, src - 1);
    }
    xo += a;
  }
  return index;
}

cv::Mat pil_nearest_window(const cv::Mat& image, int out_w, int out_h, const cv::Rect& roi) {
  const std::vector<int> xs = nearest_index(image.cols, out_w, roi.x, roi.width);
  const std::vector<int> ys = nearest_index(image.rows, out_h, roi.y, roi.height);
  const size_t px = image.elemSize();
  cv::Mat out(roi.height, roi.width, image.type());
  for (int y = 0; y < roi.height; ++y) {
    const uint8_t* src = image.ptr<uint8_t>(ys[y]);
    uint8_t* dst = out.ptr<uint8_t>(y);
    if (px == 1) {
      for (int x = 0; x < roi.width; ++x) {
        dst[x] = src[xs[x]];
      }
    } else {
      for (int x = 0; x < roi.width; ++x) {
        std::copy_n(src + xs[x] * px, px, dst + x * px);
      }
    }
  }
  return out;
}

void check_size(int64_t w, int64_t h, const char* what) {
  COMBO_CHECK(w > 0 && h > 0 && w <= (1 << 20) && h <= (1 << 20), what,
              ": output size must be positive (and at most 2^20), got ", w, "x", h);
}

// Resize (Pillow bilinear or nearest), crop, flip, pad: the geometry shared by frames,
// Maskiges and label maps. Only the crop window of the resized image is computed.
cv::Mat apply_geometry(const cv::Mat& image, const ClipGeometry& g, bool nearest, uint8_t pad_value,
                       const char* what) {
  check_u8(image, what);
  COMBO_CHECK(image.rows == g.src_h && image.cols == g.src_w, what, ": the geometry was drawn for ",
              g.src_h, "x", g.src_w, " (HxW), got an image of ", image.rows, "x", image.cols);
  COMBO_CHECK(g.resize_h > 0 && g.resize_w > 0 && g.crop_y >= 0 && g.crop_x >= 0 && g.crop_h > 0 &&
                  g.crop_w > 0 && g.crop_y + g.crop_h <= g.resize_h &&
                  g.crop_x + g.crop_w <= g.resize_w && g.pad_h > 0 && g.pad_w > 0,
              what, ": inconsistent geometry (resize ", g.resize_h, "x", g.resize_w, ", crop ",
              g.crop_h, "x", g.crop_w, " at y ", g.crop_y, " x ", g.crop_x, ", pad ", g.pad_h, "x",
              g.pad_w, ")");
  // The official negative padding crops a larger image to the pad size from the top-left of the
  // *flipped* crop; restricting the window before the flip must therefore take the right-hand
  // columns when flipping.
  const int keep_h = static_cast<int>(std::min(g.crop_h, g.pad_h));
  const int keep_w = static_cast<int>(std::min(g.crop_w, g.pad_w));
  const int win_x = static_cast<int>(g.flip ? g.crop_x + g.crop_w - keep_w : g.crop_x);
  const cv::Rect roi(win_x, static_cast<int>(g.crop_y), keep_w, keep_h);

  cv::Mat out;
  if (g.resize_h == g.src_h && g.resize_w == g.src_w) {
    out = image(roi).clone();
  } else if (nearest) {
    out =
        pil_nearest_window(image, static_cast<int>(g.resize_w), static_cast<int>(g.resize_h), roi);
  } else {
    out =
        pil_bilinear_window(image, static_cast<int>(g.resize_w), static_cast<int>(g.resize_h), roi);
  }
  if (g.flip) {
    cv::flip(out, out, 1);
  }
  if (keep_h < g.pad_h || keep_w < g.pad_w) {
    cv::Mat padded;
    cv::copyMakeBorder(out, padded, 0, static_cast<int>(g.pad_h) - keep_h, 0,
                       static_cast<int>(g.pad_w) - keep_w, cv::BORDER_CONSTANT,
                       cv::Scalar::all(pad_value));
    out = padded;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// ColorAugSSD pieces. detectron2 works on float32 (img.astype(np.float32) * alpha + beta, where
// NumPy casts the Python float to float32), clips to [0, 255] and truncates to uint8.

void convert_beta(cv::Mat& img, float beta) {
  uint8_t lut[256];
  for (int v = 0; v < 256; ++v) {
    const float y = std::clamp(static_cast<float>(v) + beta, 0.0f, 255.0f);
    lut[v] = static_cast<uint8_t>(y);
  }
  const cv::Mat table(1, 256, CV_8U, lut);
  cv::LUT(img, table, img);
}

void convert_alpha_lut(uint8_t lut[256], float alpha) {
  for (int v = 0; v < 256; ++v) {
    const float y = std::clamp(static_cast<float>(v) * alpha, 0.0f, 255.0f);
    lut[v] = static_cast<uint8_t>(y);
  }
}

void contrast(cv::Mat& img, float alpha) {
  uint8_t lut[256];
  convert_alpha_lut(lut, alpha);
  const cv::Mat table(1, 256, CV_8U, lut);
  cv::LUT(img, table, img);
}

// OpenCV's RGB2HSV on RGB bytes is BGR2HSV on the swapped bytes (the same code with the blue
// index moved), so the jitter stays in RGB order and saves the two channel swaps.
void saturation(cv::Mat& img, float alpha) {
  uint8_t lut[256];
  convert_alpha_lut(lut, alpha);
  // Per-thread HSV buffer, for the same reason as the resampling scratch.
  thread_local cv::Mat hsv;
  cv::cvtColor(img, hsv, cv::COLOR_RGB2HSV);
  for (int y = 0; y < hsv.rows; ++y) {
    uint8_t* p = hsv.ptr<uint8_t>(y);
    for (int x = 0; x < hsv.cols; ++x) {
      p[x * 3 + 1] = lut[p[x * 3 + 1]];
    }
  }
  cv::cvtColor(hsv, img, cv::COLOR_HSV2RGB);
}

void hue(cv::Mat& img, int delta) {
  thread_local cv::Mat hsv;
  cv::cvtColor(img, hsv, cv::COLOR_RGB2HSV);
  for (int y = 0; y < hsv.rows; ++y) {
    uint8_t* p = hsv.ptr<uint8_t>(y);
    for (int x = 0; x < hsv.cols; ++x) {
      // Python's % is non-negative; OpenCV 8-bit hue lies in [0, 180).
      int h = (static_cast<int>(p[x * 3]) + delta) % 180;
      p[x * 3] = static_cast<uint8_t>(h < 0 ? h + 180 : h);
    }
  }
  cv::cvtColor(hsv, img, cv::COLOR_HSV2RGB);
}

}  // namespace

// ---------------------------------------------------------------------------------------------

void color_aug_ssd(cv::Mat& rgb, Rng& rng) {
  COMBO_CHECK(!rgb.empty() && rgb.type() == CV_8UC3,
              "color_aug_ssd: expected a CV_8UC3 RGB image, got type ", rgb.type(), " (", rgb.rows,
              "x", rgb.cols, ")");
  constexpr double kBrightnessDelta = 32.0;
  constexpr double kContrastLow = 0.5, kContrastHigh = 1.5;
  constexpr double kSaturationLow = 0.5, kSaturationHigh = 1.5;
  constexpr int64_t kHueDelta = 18;

  if (bernoulli(rng, 0.5)) {
    convert_beta(rgb, static_cast<float>(uniform(rng, -kBrightnessDelta, kBrightnessDelta)));
  }
  auto do_contrast = [&] {
    if (bernoulli(rng, 0.5)) {
      contrast(rgb, static_cast<float>(uniform(rng, kContrastLow, kContrastHigh)));
    }
  };
  auto do_saturation = [&] {
    if (bernoulli(rng, 0.5)) {
      saturation(rgb, static_cast<float>(uniform(rng, kSaturationLow, kSaturationHigh)));
    }
  };
  auto do_hue = [&] {
    if (bernoulli(rng, 0.5)) {
      hue(rgb, static_cast<int>(uniform_int(rng, -kHueDelta, kHueDelta)));
    }
  };
  if (bernoulli(rng, 0.5)) {
    do_contrast();
    do_saturation();
    do_hue();
  } else {
    do_saturation();
    do_hue();
    do_contrast();
  }
}

ClipAugmentation::ClipAugmentation(AugmentOptions options) : options_(std::move(options)) {
  for (int64_t s : options_.short_sides) {
    COMBO_CHECK(s > 0, "ClipAugmentation: short_sides must be positive, got ", s);
  }
  COMBO_CHECK(options_.flip_prob >= 0.0 && options_.flip_prob <= 1.0,
              "ClipAugmentation: flip_prob must lie in [0, 1], got ", options_.flip_prob);
}

ClipGeometry ClipAugmentation::draw(int64_t height, int64_t width, Rng& rng) const {
  COMBO_CHECK(height > 0 && width > 0, "ClipAugmentation::draw: bad frame size ", height, "x",
              width);
  ClipGeometry g;
  g.src_h = height;
  g.src_w = width;
  g.resize_h = height;
  g.resize_w = width;

  const auto& sides = options_.short_sides;
  if (!sides.empty()) {
    const int64_t idx = uniform_int(rng, 0, static_cast<int64_t>(sides.size()) - 1);
    // detectron2 ResizeShortestEdge.get_output_shape, float for float.
    const double h = static_cast<double>(height);
    const double w = static_cast<double>(width);
    const double size = static_cast<double>(sides[idx]);
    const double scale = size / std::min(h, w);
    double newh = 0.0, neww = 0.0;
    if (h < w) {
      newh = size;
      neww = scale * w;
    } else {
      newh = scale * h;
      neww = size;
    }
    if (options_.max_size > 0 && std::max(newh, neww) > static_cast<double>(options_.max_size)) {
      const double s = static_cast<double>(options_.max_size) / std::max(newh, neww);
      newh = newh * s;
      neww = neww * s;
    }
    g.resize_w = std::max<int64_t>(1, static_cast<int64_t>(neww + 0.5));
    g.resize_h = std::max<int64_t>(1, static_cast<int64_t>(newh + 0.5));
  }

  g.crop_h = g.resize_h;
  g.crop_w = g.resize_w;
  if (options_.crop_size > 0) {
    g.crop_h = std::min(options_.crop_size, g.resize_h);
    g.crop_w = std::min(options_.crop_size, g.resize_w);
    g.crop_y = uniform_int(rng, 0, g.resize_h - g.crop_h);
    g.crop_x = uniform_int(rng, 0, g.resize_w - g.crop_w);
  }

  g.flip = bernoulli(rng, options_.flip_prob);

  g.pad_h = options_.pad_size > 0 ? options_.pad_size : g.crop_h;
  g.pad_w = options_.pad_size > 0 ? options_.pad_size : g.crop_w;
  return g;
}

cv::Mat ClipAugmentation::apply_image(const cv::Mat& rgb, const ClipGeometry& g) const {
  return apply_geometry(rgb, g, /*nearest=*/false, options_.image_pad_value,
                        "ClipAugmentation::apply_image");
}

cv::Mat ClipAugmentation::apply_labels(const cv::Mat& labels, const ClipGeometry& g) const {
  return apply_geometry(labels, g, /*nearest=*/true, options_.label_pad_value,
                        "ClipAugmentation::apply_labels");
}

void ClipAugmentation::color_jitter(cv::Mat& rgb, Rng& rng) const {
  if (options_.color_jitter) {
    color_aug_ssd(rgb, rng);
  }
}

cv::Mat pil_resize_bilinear(const cv::Mat& image, int64_t out_w, int64_t out_h) {
  check_u8(image, "pil_resize_bilinear");
  check_size(out_w, out_h, "pil_resize_bilinear");
  const int w = static_cast<int>(out_w), h = static_cast<int>(out_h);
  return pil_bilinear_window(image, w, h, cv::Rect(0, 0, w, h));
}

cv::Mat pil_resize_nearest(const cv::Mat& image, int64_t out_w, int64_t out_h) {
  check_u8(image, "pil_resize_nearest");
  check_size(out_w, out_h, "pil_resize_nearest");
  const int w = static_cast<int>(out_w), h = static_cast<int>(out_h);
  return pil_nearest_window(image, w, h, cv::Rect(0, 0, w, h));
}

namespace {
// Python 3 round(d / 2) for an integer d >= 0: halves go to the even neighbour.
int64_t round_half_even_half(int64_t d) {
  const int64_t q = d / 2;
  if (d % 2 == 0) {
    return q;
  }
  return q % 2 == 0 ? q : q + 1;
}
}  // namespace

cv::Mat avss_resize(const cv::Mat& image, AvssResize rule, int64_t size, bool labels) {
  check_u8(image, "avss_resize");
  switch (rule) {
    case AvssResize::kNone:
      return image.clone();
    case AvssResize::kDirectResize:
      check_size(size, size, "avss_resize");
      return labels ? pil_resize_nearest(image, size, size)
                    : pil_resize_bilinear(image, size, size);
    case AvssResize::kCropResize: {
      check_size(size, size, "avss_resize");
      const int64_t w = image.cols, h = image.rows;
      int64_t ow = 0, oh = 0;
      // crop_resize_img: int(1.0 * w * oh / h), evaluated left to right in double.
      if (w > h) {
        oh = size;
        ow = static_cast<int64_t>(1.0 * static_cast<double>(w) * static_cast<double>(oh) /
                                  static_cast<double>(h));
      } else {
        ow = size;
        oh = static_cast<int64_t>(1.0 * static_cast<double>(h) * static_cast<double>(ow) /
                                  static_cast<double>(w));
      }
      const int64_t x1 = round_half_even_half(ow - size);
      const int64_t y1 = round_half_even_half(oh - size);
      const cv::Rect roi(static_cast<int>(x1), static_cast<int>(y1), static_cast<int>(size),
                         static_cast<int>(size));
      if (ow == w && oh == h) {
        return image(roi).clone();
      }
      return labels ? pil_nearest_window(image, static_cast<int>(ow), static_cast<int>(oh), roi)
                    : pil_bilinear_window(image, static_cast<int>(ow), static_cast<int>(oh), roi);
    }
  }
  COMBO_FAIL("avss_resize: unknown rule ", static_cast<int>(rule));
}

}  // namespace combo::data
