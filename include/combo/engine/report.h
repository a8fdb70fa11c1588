#pragma once
/// What evaluation and inference leave behind for people: overlays (mask or class palette over
/// the frame), mask images, and JSON records with the provenance of every figure.
#include <ATen/core/Tensor.h>
#include <opencv2/core/mat.hpp>

#include <map>
#include <string>

namespace combo::engine {

/// The frame (uint8 [3, H, W] RGB) with the prediction drawn over it: S4/MS3 (`mask` bool
/// [H, W]) a translucent red fill with a solid outline; AVSS (`mask` int64 class ids [H, W]) the
/// AVSS palette colour of each non-background class, translucent, with outlines. RGB CV_8UC3.
cv::Mat overlay_prediction(const at::Tensor& frame, const at::Tensor& mask, bool semantic);

/// The prediction as an image: S4/MS3 0/255 single-channel; AVSS class ids single-channel.
cv::Mat mask_image(const at::Tensor& mask, bool semantic);

/// The git commit ComboAVS was built from ("unknown" outside a checkout).
std::string build_commit();

}  // namespace combo::engine
