#pragma once
/// Image files: PNG/JPEG (anything OpenCV's imgcodecs reads) to OpenCV matrices in RGB order,
/// single-channel label maps with their raw values, atomic PNG writing, and tensor views.
/// Every error names the file.
#include <ATen/core/Tensor.h>
#include <opencv2/core/mat.hpp>

#include <string>

namespace combo::io {

/// Reads a colour image as CV_8UC3 in RGB order (palette PNGs are expanded, grey images are
/// replicated, 16-bit images are scaled to 8 bits, alpha is dropped). Throws combo::Error naming
/// the file when it is missing, empty, truncated or not an image.
cv::Mat read_rgb(const std::string& path);

/// Reads a single-channel label map (CV_8UC1) with its raw stored values: 8-bit grey PNGs as
/// they are, 1-bit PNGs as 0/255 (as PIL's mode '1' -> 'L'). A 3-channel file whose channels are
/// equal is accepted as grey; any other colour file is an error naming the file.
cv::Mat read_label_map(const std::string& path);

/// Writes a PNG atomically (temporary file, then rename). `rgb`: CV_8UC3 in RGB order or
/// CV_8UC1. Throws combo::Error naming the file on failure.
void write_png(const std::string& path, const cv::Mat& image);

/// Writes a JPEG atomically (quality 0..100). `rgb`: CV_8UC3 in RGB order.
void write_jpeg(const std::string& path, const cv::Mat& rgb, int quality = 95);

/// HWC uint8 matrix (1 or 3 channels) -> uint8 tensor [C, H, W] (a copy).
at::Tensor mat_to_chw(const cv::Mat& image);

/// uint8 tensor [C, H, W] (C = 1 or 3) or [H, W] -> HWC uint8 matrix (a copy).
cv::Mat chw_to_mat(const at::Tensor& chw);

}  // namespace combo::io
