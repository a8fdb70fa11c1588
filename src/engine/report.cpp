#include "combo/engine/report.h"

#include <ATen/ATen.h>

#include <filesystem>
#include <vector>

#include "combo/core/check.h"
#include "combo/core/env.h"
#include "combo/data/dataset.h"
#include "combo/engine/evaluation.h"

#if defined(COMBO_WITH_MEDIA)
#include <opencv2/imgproc.hpp>

#include "combo/data/avsbench.h"
#include "combo/io/audio_reader.h"
#include "combo/io/image.h"
#include "combo/io/video.h"
#endif

namespace combo::engine {

#if defined(COMBO_WITH_MEDIA)

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

#endif  // COMBO_WITH_MEDIA

PredictionPictures::PredictionPictures(PictureOptions options,
                                       std::shared_ptr<const data::Dataset> dataset)
    : options_(std::move(options)), dataset_(std::move(dataset)) {
#if !defined(COMBO_WITH_MEDIA)
  COMBO_CHECK(!enabled(),
              "overlay pictures and videos (--overlays, --videos) are not available: this build "
              "lacks the media stack (OpenCV, FFmpeg; configured with COMBO_WITH_MEDIA=OFF)");
#endif
}

void PredictionPictures::write(const VideoPrediction& v) const {
  if (!enabled()) return;
#if defined(COMBO_WITH_MEDIA)
  namespace fs = std::filesystem;
  std::vector<cv::Mat> frames;
  for (int64_t k = 0; k < v.frames.size(0); ++k) {
    cv::Mat o = overlay_prediction(v.frames[k], v.masks[k], options_.semantic);
    if (options_.overlays)
      io::write_png(
          (fs::path(options_.out_dir) / "overlays" / v.video_id / (std::to_string(k) + ".png"))
              .string(),
          o);
    frames.push_back(o);
  }
  if (options_.videos) {
    const std::string wav = dataset_ ? dataset_->audio_file(v.index) : std::string();
    at::Tensor audio;
    if (!wav.empty() && fs::exists(wav)) audio = io::load_audio_16k_mono(wav).to(at::kFloat);
    // One frame per second, as the AVSBench frames are sampled.
    io::VideoWriterOptions vo;
    vo.fps = 1.0;
    vo.audio_sample_rate = 16000;
    io::write_video((fs::path(options_.out_dir) / "videos" / (v.video_id + ".mp4")).string(),
                    frames, audio, vo);
  }
#else
  (void)v;
#endif
}

std::string build_commit() { return runtime_info().git_commit; }

}  // namespace combo::engine
