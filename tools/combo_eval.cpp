// combo-eval: evaluates a model on a split with the official metrics and writes metrics.json,
// a per-video CSV, overlay PNGs and (on request) overlay MP4s with the original audio.
#include <torch/torch.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <csignal>
#include <filesystem>
#include <fstream>

#include "combo/core/check.h"
#include "combo/core/env.h"
#include "combo/core/state_dict.h"
#include "combo/engine/build_model.h"
#include "combo/engine/config.h"
#include "combo/engine/data_setup.h"
#include "combo/engine/device_setup.h"
#include "combo/engine/evaluation.h"
#include "combo/engine/logging.h"
#include "combo/engine/report.h"
#include "combo/engine/tool.h"

namespace fs = std::filesystem;

namespace {

volatile std::sig_atomic_t g_stop = 0;
void on_signal(int) { g_stop = 1; }

struct Interrupted : std::runtime_error {
  Interrupted() : std::runtime_error("interrupted") {}
};

}  // namespace

int main(int argc, char** argv) {
  combo::engine::prefer_passive_openmp(argc, argv);
  CLI::App app{"combo-eval: official AVSBench metrics of a COMBO model on a split"};
  std::string config_file, weights, split, out_dir;
  std::vector<std::string> overrides;
  bool overlays = false, videos = false, overwrite = false;
  int64_t max_videos = -1, every = 10;
  app.add_option("--config", config_file, "YAML config")->required();
  app.add_option("--weights", weights,
                 "model weights: a converted COMBO checkpoint or a combo-train checkpoint "
                 "(default: model.weights, else <output_dir>/model_best.pth or model_final.pth)");
  app.add_option("--split", split, "split to evaluate (default: data.test_split)");
  app.add_option("--out", out_dir, "output folder (default: <output_dir>/eval_<split>)");
  app.add_flag("--overlays", overlays,
               "write an overlay PNG per frame (builds with the media stack)");
  app.add_flag("--videos", videos,
               "write an overlay MP4 per video with the original audio (builds with the media "
               "stack)");
  app.add_flag("--overwrite", overwrite,
               "replace the results of an earlier evaluation in the output folder (without it, a "
               "folder that holds metrics.json is refused)");
  app.add_option("--max-videos", max_videos, "stop after this many videos");
  app.add_option("--log-every", every, "progress line every N videos");
  app.add_option("overrides", overrides, "key.path=value overrides");
  CLI11_PARSE(app, argc, argv);

  return combo::engine::run_tool([&] {
    auto cfg = combo::engine::load_config(config_file, overrides);
    combo::engine::PictureOptions pictures_options;
    pictures_options.overlays = overlays;
    pictures_options.videos = videos;
    // Before any work: a build without the media stack says at once that it cannot draw.
    combo::engine::PredictionPictures(pictures_options, nullptr);
    if (split.empty()) split = cfg.data.test_split;
    if (out_dir.empty()) out_dir = (fs::path(cfg.output_dir) / ("eval_" + split)).string();
    // An evaluation never replaces another's results unless asked to.
    const fs::path previous = fs::path(out_dir) / "metrics.json";
    if (!overwrite && fs::exists(previous)) {
      std::string of;
      try {
        of = nlohmann::json::parse(std::ifstream(previous)).value("checkpoint", "");
      } catch (const std::exception&) {
      }
      COMBO_FAIL("'", out_dir, "' already holds the results of an evaluation",
                 of.empty() ? std::string() : " of " + of,
                 ": give --out <another folder>, or --overwrite to replace them");
    }
    fs::create_directories(out_dir);
    combo::engine::setup_logging(out_dir);
    combo::setup_runtime(static_cast<int>(cfg.runtime.threads),
                         static_cast<uint64_t>(std::max<int64_t>(cfg.runtime.seed, 0)));

    // Weights: explicit, then the config, then the training run's best/final checkpoint.
    if (weights.empty()) weights = cfg.model.weights;
    if (weights.empty()) {
      for (const char* name : {"model_best.pth", "model_final.pth"}) {
        const fs::path p = fs::path(cfg.output_dir) / name;
        if (fs::exists(p)) {
          weights = p.string();
          break;
        }
      }
    }
    COMBO_CHECK(!weights.empty(), "no weights: give --weights, set model.weights, or train into ",
                cfg.output_dir, " first");
    cfg.model.weights.clear();
    cfg.model.backbone.weights.clear();
    cfg.model.audio.weights.clear();
    auto model = combo::engine::build_model(cfg);
    combo::engine::load_model_weights(*model, weights);
    const at::Device device = combo::engine::setup_device(cfg).device;
    model->to(device);

    const auto kind = combo::loss::parse_dataset_kind(cfg.data.dataset);
    const bool semantic = kind == combo::loss::DatasetKind::kAVSS;
    auto dataset = combo::engine::build_dataset(cfg, split, /*train=*/false);
    combo::data::DataLoader loader(dataset, combo::engine::eval_loader_options(cfg));
    auto evaluator = combo::engine::make_evaluator(cfg);
    spdlog::info("evaluating {} videos of {} split '{}' from {} with {} (protocol {})",
                 dataset->size(), cfg.data.dataset, split, dataset->describe(), weights,
                 evaluator->protocol());

    std::signal(SIGINT, on_signal);
    std::signal(SIGTERM, on_signal);
    combo::engine::EvaluationOptions eo;
    eo.device = device;
    eo.log_every = every;
    eo.max_videos = max_videos;
    pictures_options.out_dir = out_dir;
    pictures_options.semantic = semantic;
    const combo::engine::PredictionPictures pictures(pictures_options, dataset);
    eo.on_video = [&](const combo::engine::VideoPrediction& v) {
      pictures.write(v);
      if (g_stop) throw Interrupted();
    };
    int64_t n = 0;
    bool partial = false;
    std::string stop_reason;
    try {
      n = combo::engine::run_evaluation(*model, loader, *evaluator, kind, eo);
    } catch (const Interrupted&) {
      partial = true;
      stop_reason = "interrupted by a signal";
    } catch (const std::exception& e) {
      partial = true;
      stop_reason = e.what();
    }
    const auto state = evaluator->state();
    n = static_cast<int64_t>(state.video_ids.size());
    if (n == 0) COMBO_FAIL("no video was evaluated", stop_reason.empty() ? "" : ": " + stop_reason);
    const auto result = evaluator->evaluate();
    nlohmann::json j;
    j["dataset"] = cfg.data.dataset;
    j["split"] = split;
    j["protocol"] = result.protocol;
    j["checkpoint"] = weights;
    j["config"] = config_file;
    j["commit"] = combo::engine::build_commit();
    j["videos_evaluated"] = n;
    j["videos_in_split"] = dataset->size();
    j["partial"] = partial || n < dataset->size();
    if (!stop_reason.empty()) j["stopped_because"] = stop_reason;
    for (const auto& [k, v] : result.metrics) j["metrics"][k] = v;
    combo::write_file_atomic((fs::path(out_dir) / "metrics.json").string(), j.dump(2) + "\n");
    combo::write_file_atomic((fs::path(out_dir) / "videos.csv").string(),
                             combo::metrics::videos_csv(result));
    std::cout << cfg.data.dataset << " " << split << " (" << n << " videos, protocol "
              << result.protocol << "):";
    for (const auto& [k, v] : result.metrics) std::cout << " " << k << "=" << v;
    std::cout << "\nwrote " << out_dir << "/metrics.json and videos.csv\n";
    if (partial) {
      std::cerr << "error: evaluation stopped after " << n << " videos: " << stop_reason
                << " (partial metrics written)\n";
      return 1;
    }
    return 0;
  });
}
