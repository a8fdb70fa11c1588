#pragma once
/// What evaluation and inference leave behind for people: overlays (mask or class palette over
/// the frame), mask images, and JSON records with the provenance of every figure. Pictures need
/// the media stack (OpenCV, FFmpeg): in a build without it (COMBO_WITH_MEDIA off) asking for
/// them is an error saying so.
#include <ATen/core/Tensor.h>
#if defined(COMBO_WITH_MEDIA)
#include <opencv2/core/mat.hpp>
#endif

#include <map>
#include <memory>
#include <string>

namespace combo::data {
class Dataset;
}

namespace combo::engine {

struct VideoPrediction;

#if defined(COMBO_WITH_MEDIA)
/// The frame (uint8 [3, H, W] RGB) with the prediction drawn over it: S4/MS3 (`mask` bool
/// [H, W]) a translucent red fill with a solid outline; AVSS (`mask` int64 class ids [H, W]) the
/// AVSS palette colour of each non-background class, translucent, with outlines. RGB CV_8UC3.
cv::Mat overlay_prediction(const at::Tensor& frame, const at::Tensor& mask, bool semantic);

/// The prediction as an image: S4/MS3 0/255 single-channel; AVSS class ids single-channel.
cv::Mat mask_image(const at::Tensor& mask, bool semantic);
#endif

/// Evaluation pictures of every video (combo-eval --overlays / --videos): an overlay PNG per
/// frame under <out_dir>/overlays/<video>/, and an overlay MP4 per video with the dataset's
/// audio (when it has an audio file) under <out_dir>/videos/.
struct PictureOptions {
  std::string out_dir;
  bool overlays = false;
  bool videos = false;
  bool semantic = false;  ///< AVSS palette overlays
};
class PredictionPictures {
 public:
  /// Throws combo::Error when pictures are asked for in a build without the media stack.
  PredictionPictures(PictureOptions options, std::shared_ptr<const data::Dataset> dataset);
  /// Writes the pictures of one video (nothing when none were asked for).
  void write(const VideoPrediction& video) const;
  bool enabled() const { return options_.overlays || options_.videos; }

 private:
  PictureOptions options_;
  std::shared_ptr<const data::Dataset> dataset_;
};

/// The git commit ComboAVS was built from ("unknown" outside a checkout).
std::string build_commit();

}  // namespace combo::engine
