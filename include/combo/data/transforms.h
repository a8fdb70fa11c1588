#pragma once
/// Clip-consistent training transforms (COMBO_SPEC 8.2, detectron2 semantics): ONE geometric
/// draw per video, applied to every frame, every Maskige and every ground-truth map of that
/// video; photometric jitter (ColorAugSSD) drawn anew for every image. Plus the AVSS
/// resize/crop rules of the official loaders (AVSBENCH_SPEC 2.3, COMBO_SPEC 10.5) and a port
/// of Pillow's BILINEAR/NEAREST resampling they rely on.
///
/// Images are OpenCV matrices: CV_8UC3 in RGB order; label maps CV_8UC1.
#include <opencv2/core/mat.hpp>

#include <cstdint>
#include <vector>

#include "combo/data/dataset.h"
#include "combo/data/random.h"

namespace combo::data {

/// One video's geometric draw.
struct ClipGeometry {
  int64_t src_h = 0, src_w = 0;        ///< input size
  int64_t resize_h = 0, resize_w = 0;  ///< after ResizeShortestEdge (== src when no resize)
  int64_t crop_y = 0, crop_x = 0;      ///< top-left of the crop in the resized image
  int64_t crop_h = 0, crop_w = 0;      ///< crop size (== resized size when no crop)
  bool flip = false;                   ///< horizontal flip after the crop
  int64_t pad_h = 0, pad_w = 0;        ///< final size after padding (== crop size when none)
};

/// The detectron2 pipeline of the S4/MS3 configs: ResizeShortestEdge(choice) -> RandomCrop
/// (absolute) -> ColorAugSSD -> RandomFlip(horizontal) -> pad to pad_size.
class ClipAugmentation {
 public:
  explicit ClipAugmentation(AugmentOptions options = {});

  /// Draws the geometry of one video from its frame size. Order of draws: short side (index
  /// into short_sides, uniform_int; none when the list is empty), crop offset (y then x,
  /// uniform_int over [0, H - crop_h] and [0, W - crop_w]; none when crop_size <= 0), flip
  /// (bernoulli(flip_prob), always drawn). The resized size is detectron2's
  /// ResizeShortestEdge.get_output_shape (round half up: int(x + 0.5)).
  ClipGeometry draw(int64_t height, int64_t width, Rng& rng) const;

  /// Geometry on a frame or a Maskige (any 8-bit image, 1 to 4 channels): Pillow-exact
  /// BILINEAR resize (detectron2's ResizeTransform resizes uint8 images with PIL; only the crop
  /// window is computed), crop, flip, pad bottom/right with image_pad_value (or crop to
  /// pad_h x pad_w when larger, as the official negative padding). Returns [pad_h, pad_w].
  cv::Mat apply_image(const cv::Mat& rgb, const ClipGeometry& g) const;
  /// Geometry on a label map: Pillow NEAREST resize (as pil_resize_nearest), crop, flip, pad
  /// with label_pad_value.
  cv::Mat apply_labels(const cv::Mat& labels, const ClipGeometry& g) const;
  /// ColorAugSSD (color_aug_ssd) with its own draws from rng, in place, RGB in and out; does
  /// nothing and draws nothing when options().color_jitter is false. CV_8UC3 only.
  void color_jitter(cv::Mat& rgb, Rng& rng) const;

  const AugmentOptions& options() const { return options_; }

 private:
  AugmentOptions options_;
};

/// detectron2 ColorAugSSD on one RGB image (COMBO_SPEC 8.2): to BGR; brightness +U(-32,32)
/// with p 0.5; then with p 0.5 contrast, saturation, hue, else saturation, hue, contrast, each
/// with p 0.5 (contrast/saturation x U(0.5,1.5), hue shift U{-18..18} mod 180 in OpenCV HSV);
/// clip to uint8; back to RGB. In place.
/// Each step computes in float32 as detectron2 (x * alpha + beta, clip to [0, 255], truncate).
/// Order of draws: brightness coin (bernoulli 0.5), its delta uniform(-32, 32) if it fired;
/// order coin (true: contrast, saturation, hue; false: saturation, hue, contrast); then per
/// step in that order its coin and, if it fired, its value (contrast and saturation
/// uniform(0.5, 1.5), hue uniform_int(-18, 18)).
void color_aug_ssd(cv::Mat& rgb, Rng& rng);

/// Pillow-exact resampling (port of Pillow 9 Resample.c, fixed-point, with antialiasing when
/// shrinking; byte-identical to Pillow 9.4's Image.resize(BILINEAR)), for the official AVSS
/// loaders and detectron2's ResizeTransform. 8-bit images with 1 to 4 channels (each channel
/// independently, as Pillow's L and RGB); [out_h, out_w].
cv::Mat pil_resize_bilinear(const cv::Mat& image, int64_t out_w, int64_t out_h);
/// Pillow NEAREST: destination x takes source floor(x_o) where x_o starts at 0.5 * src / dst and
/// is accumulated in double by src / dst per pixel (Pillow's ImagingScaleAffine), per axis.
/// This is floor((x + 0.5) * src / dst) up to the accumulated rounding, which moves about one
/// size pair in five by a pixel somewhere; the accumulation is what Pillow computes.
cv::Mat pil_resize_nearest(const cv::Mat& image, int64_t out_w, int64_t out_h);

/// AVSS geometry rules (AVSBENCH_SPEC 2.3, COMBO_SPEC 10.5).
enum class AvssResize {
  kNone,          ///< frames already 224 (COMBO's processed_frames)
  kCropResize,    ///< train: short side to `size` (long = int(long*size/short)), centre crop
                  ///< with offset round-half-even((L - size) / 2)
  kDirectResize,  ///< val/test: resize to size x size (aspect not kept)
};
/// Applies the rule to a frame (Pillow bilinear) or, with `labels` true, to a label map or a
/// Maskige (Pillow nearest). Always returns a new matrix (kNone: a copy).
cv::Mat avss_resize(const cv::Mat& image, AvssResize rule, int64_t size, bool labels);

}  // namespace combo::data
