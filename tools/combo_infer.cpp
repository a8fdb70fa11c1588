// combo-infer: any video file with sound -> frames (AVSBench rule or a given rate) -> Maskiges
// from a proposer -> COMBO -> mask PNGs, overlay PNGs, an overlay MP4 with the original audio
// and a JSON summary.
#include <c10/core/InferenceMode.h>
#include <torch/torch.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cmath>
#include <filesystem>

#include "combo/audio/log_mel.h"
#include "combo/core/check.h"
#include "combo/core/env.h"
#include "combo/core/state_dict.h"
#include "combo/engine/build_model.h"
#include "combo/engine/config.h"
#include "combo/engine/device_setup.h"
#include "combo/engine/logging.h"
#include "combo/engine/report.h"
#include "combo/engine/tool.h"
#include "combo/io/audio_reader.h"
#include "combo/io/image.h"
#include "combo/io/video.h"
#include "combo/maskige/encode.h"
#include "combo/maskige/proposer.h"

namespace fs = std::filesystem;

int main(int argc, char** argv) {
  combo::engine::prefer_passive_openmp(argc, argv);
  CLI::App app{"combo-infer: segment the sounding objects of any video with sound"};
  std::string config_file, weights, video, out_dir, proposer_kind = "builtin", proposer_model;
  std::vector<std::string> overrides;
  double rate = 0.0;
  int64_t max_frames = 0, clip = 5;
  bool allow_silent = false;
  app.add_option("--config", config_file, "YAML config of the model")->required();
  app.add_option("--weights", weights, "model weights (default: model.weights)");
  app.add_option("--video", video, "input video (any format FFmpeg reads)")->required();
  app.add_option("--out", out_dir, "output folder")->required();
  app.add_option("--rate", rate,
                 "frames per second to segment (default: the AVSBench rule, one frame per second "
                 "at 15/16 s)");
  app.add_option("--max-frames", max_frames, "segment at most this many frames (0 = all)");
  app.add_option("--clip", clip, "frames per model call (COMBO trains on 5-frame clips)")
      ->check(CLI::PositiveNumber);
  app.add_option("--proposer", proposer_kind, "Maskige proposer: builtin | torchscript")
      ->check(CLI::IsMember({"builtin", "torchscript"}));
  app.add_option("--proposer-model", proposer_model, "TorchScript mask proposer file");
  app.add_flag("--allow-silent", allow_silent,
               "accept a video without an audio track (the model then hears silence)");
  app.add_option("overrides", overrides, "key.path=value overrides");
  CLI11_PARSE(app, argc, argv);

  return combo::engine::run_tool([&] {
    auto cfg = combo::engine::load_config(config_file, overrides);
    fs::create_directories(out_dir);
    combo::engine::setup_logging(out_dir);
    combo::setup_runtime(static_cast<int>(cfg.runtime.threads),
                         static_cast<uint64_t>(std::max<int64_t>(cfg.runtime.seed, 0)));
    const auto t0 = std::chrono::steady_clock::now();

    // 1. The video and its sound.
    const auto info = combo::io::probe_video(video);
    COMBO_CHECK(info.has_audio || allow_silent, "video '", video,
                "' has no audio track: COMBO segments what is heard; pass --allow-silent to "
                "segment it with silence as the audio");
    combo::io::FrameSelection sel;
    const int64_t size = cfg.data.image_size;
    sel.width = size;
    sel.height = size;
    const int64_t seconds = std::max<int64_t>(1, static_cast<int64_t>(std::floor(info.duration)));
    if (rate > 0) {
      sel.mode = combo::io::FrameSelection::Mode::kRate;
      sel.rate = rate;
    } else {
      sel.mode = combo::io::FrameSelection::Mode::kAvsbench;
      sel.count = seconds;
    }
    auto decoded = combo::io::read_video_frames(video, sel);
    if (max_frames > 0 && static_cast<int64_t>(decoded.frames.size()) > max_frames) {
      decoded.frames.resize(max_frames);
      decoded.timestamps.resize(max_frames);
      decoded.frame_index.resize(max_frames);
    }
    const int64_t t = static_cast<int64_t>(decoded.frames.size());
    COMBO_CHECK(t > 0, "no frame could be read from '", video, "'");

    // One VGGish example per frame: the 0.96 s window that holds the frame's time.
    at::Tensor audio16k, examples;
    if (info.has_audio) {
      audio16k = combo::io::load_audio_16k_mono(video);
      examples = combo::audio::waveform_to_examples(audio16k, combo::audio::kVggishSampleRate);
    }
    at::Tensor log_mel = at::empty({t, 1, 96, 64});
    const double silence = std::log(combo::audio::kLogOffset);
    for (int64_t k = 0; k < t; ++k) {
      const int64_t e = static_cast<int64_t>(std::floor(decoded.timestamps[k] / 0.96));
      if (examples.defined() && examples.size(0) > 0) {
        log_mel[k].copy_(examples[std::min<int64_t>(e, examples.size(0) - 1)]);
      } else {
        log_mel[k].fill_(silence);
      }
    }

    // 2. Maskiges.
    std::vector<at::Tensor> frames, maskiges;
    if (cfg.model.pre_sam.enabled) {
      auto proposer = combo::maskige::make_proposer(proposer_kind, proposer_model);
      for (int64_t k = 0; k < t; ++k) {
        const auto masks = proposer->propose(decoded.frames[k]);
        maskiges.push_back(combo::maskige::encode_maskige(masks).permute({2, 0, 1}).contiguous());
      }
    }
    for (const auto& f : decoded.frames) frames.push_back(combo::io::mat_to_chw(f));
    const double prep_s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

    // 3. The model, clip by clip.
    if (!weights.empty()) cfg.model.weights.clear();
    cfg.model.backbone.weights.clear();
    cfg.model.audio.weights.clear();
    auto model = combo::engine::build_model(cfg);
    if (!weights.empty()) combo::engine::load_model_weights(*model, weights);
    COMBO_CHECK(!weights.empty() || !cfg.model.weights.empty(),
                "no weights: give --weights or set model.weights");
    const at::Device device = combo::engine::setup_device(cfg).device;
    model->to(device);
    model->eval();
    const bool semantic = cfg.model.num_classes > 2;
    const auto t1 = std::chrono::steady_clock::now();
    std::vector<at::Tensor> masks;
    {
      c10::InferenceMode guard;
      for (int64_t s = 0; s < t; s += clip) {
        const int64_t e = std::min(t, s + clip);
        combo::model::ComboInputs in;
        in.images =
            at::stack(std::vector<at::Tensor>(frames.begin() + s, frames.begin() + e)).to(device);
        if (!maskiges.empty())
          in.maskiges =
              at::stack(std::vector<at::Tensor>(maskiges.begin() + s, maskiges.begin() + e))
                  .to(device);
        in.log_mel = log_mel.slice(0, s, e).to(device);
        in.frames_per_video = {e - s};
        const auto pred = model->predict(in);
        for (int64_t k = 0; k < e - s; ++k) masks.push_back(pred.masks[k].cpu());
      }
    }
    const double model_s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();

    // 4. Outputs.
    nlohmann::json summary;
    std::vector<cv::Mat> overlays;
    for (int64_t k = 0; k < t; ++k) {
      const std::string name = std::to_string(k) + ".png";
      combo::io::write_png((fs::path(out_dir) / "masks" / name).string(),
                           combo::engine::mask_image(masks[k], semantic));
      cv::Mat o = combo::engine::overlay_prediction(frames[k], masks[k], semantic);
      combo::io::write_png((fs::path(out_dir) / "overlays" / name).string(), o);
      if (!maskiges.empty())
        combo::io::write_png((fs::path(out_dir) / "maskiges" / name).string(),
                             combo::io::chw_to_mat(maskiges[k]));
      overlays.push_back(o);
      nlohmann::json fj;
      fj["frame"] = k;
      fj["video_frame_index"] = decoded.frame_index[k];
      fj["time"] = decoded.timestamps[k];
      if (semantic) {
        const auto ids = std::get<0>(at::_unique(masks[k]));
        std::vector<int64_t> classes;
        for (int64_t i = 0; i < ids.numel(); ++i)
          if (ids[i].item<int64_t>() != 0) classes.push_back(ids[i].item<int64_t>());
        fj["classes"] = classes;
      }
      fj["foreground_fraction"] = masks[k].ne(0).to(at::kFloat).mean().item<double>();
      summary["frames"].push_back(fj);
    }
    combo::io::VideoWriterOptions vo;
    vo.fps = rate > 0 ? rate : 1.0;
    vo.audio_sample_rate = combo::audio::kVggishSampleRate;
    const std::string mp4 = (fs::path(out_dir) / "overlay.mp4").string();
    combo::io::write_video(mp4, overlays,
                           audio16k.defined() ? audio16k.to(at::kFloat) : at::Tensor(), vo);
    summary["video"] = video;
    summary["duration_s"] = info.duration;
    summary["fps"] = info.fps;
    summary["has_audio"] = info.has_audio;
    summary["frame_rule"] = rate > 0 ? "rate" : "avsbench";
    summary["num_frames"] = t;
    summary["config"] = config_file;
    summary["weights"] = weights.empty() ? cfg.model.weights : weights;
    summary["proposer"] = cfg.model.pre_sam.enabled ? proposer_kind : "none";
    summary["semantic"] = semantic;
    summary["commit"] = combo::engine::build_commit();
    summary["seconds"] = {{"frames_audio_maskige", prep_s}, {"model", model_s}};
    summary["outputs"] = {{"masks", "masks/<frame>.png"},
                          {"overlays", "overlays/<frame>.png"},
                          {"video", "overlay.mp4"}};
    combo::write_file_atomic((fs::path(out_dir) / "summary.json").string(), summary.dump(2) + "\n");
    std::cout << "segmented " << t << " frames of " << video << " in " << prep_s + model_s
              << " s; wrote " << out_dir << "/{masks,overlays}/, overlay.mp4, summary.json\n";
    return 0;
  });
}
