#include "combo/engine/report.h"

#include <ATen/ATen.h>
#include <opencv2/imgproc.hpp>

#include "combo/core/check.h"
#include "combo/core/env.h"
#include "combo/data/avsbench.h"
#include "combo/io/image.h"

namespace combo::engine {

cv::Mat mask_image(const at::Tensor& mask, bool semantic) {
  COMBO_CHECK(mask.dim() == 2, "mask_image: expected [H, W], got ", mask.sizes());
  at::Tensor m = semantic ? mask.clamp(0, 255).to(at::kByte) : mask.to(at::kByte).mul(255);
  return io::chw_to_mat(m.cpu());
}

cv::Mat overlay_prediction(const at::Tensor& frame, const at::Tensor& mask, bool semantic) {
  cv::Mat rgb = io::chw_to_mat(frame.to(at::kByte).cpu());
  const cv::Mat ids = mask_image(semantic ? mask : mask.to(at::kByte), /*semantic=*/true);
  COMBO_CHECK(ids.rows == rgb.rows && ids.cols == rgb.cols, "overlay: mask ", ids.cols, "x",
              ids.rows, " does not match the frame ", rgb.cols, "x", rgb.rows);
  static const auto palette = data::avss_palette(256);
  cv::Mat colour(rgb.size(), CV_8UC3, cv::Scalar(0, 0, 0));
  for (int y = 0; y < ids.rows; ++y) {
    const auto* p = ids.ptr<uint8_t>(y);
    auto* c = colour.ptr<cv::Vec3b>(y);
    for (int x = 0; x < ids.cols; ++x) {
      if (p[x] == 0) continue;
      if (!semantic) {
        c[x] = {255, 40, 40};
      } else {
        const auto& q = palette[p[x]];
        c[x] = {q[0], q[1], q[2]};
      }
    }
  }
  cv::Mat fg = ids != 0;
  cv::Mat blended;
  cv::addWeighted(rgb, 0.45, colour, 0.55, 0.0, blended);
  blended.copyTo(rgb, fg);
  // Outlines of each region.
  cv::Mat edges;
  cv::morphologyEx(ids, edges, cv::MORPH_GRADIENT, cv::Mat::ones(3, 3, CV_8U));
  edges = edges != 0;
  edges &= fg;
  colour.copyTo(rgb, edges);
  return rgb;
}

std::string build_commit() { return runtime_info().git_commit; }

}  // namespace combo::engine
