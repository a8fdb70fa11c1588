// combo-info: the runtime (LibTorch, device, threads, commit), the resolved config, and on
// request the model built from it: parameter counts per module and a timed pass on a synthetic
// clip.
#include <sys/resource.h>
#include <torch/torch.h>
#include <CLI/CLI.hpp>

#include <chrono>
#include <cstdlib>
#include <iostream>

#include "combo/core/env.h"
#include "combo/core/state_dict.h"
#include "combo/engine/build_model.h"
#include "combo/engine/config.h"
#include "combo/engine/tool.h"

namespace {

double peak_rss_gb() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_maxrss) / (1024.0 * 1024.0);
}

combo::model::ComboInputs synthetic_clip(int64_t videos, int64_t frames, int64_t size) {
  combo::model::ComboInputs in;
  const int64_t n = videos * frames;
  in.images = torch::randint(0, 256, {n, 3, size, size}, torch::kUInt8);
  in.maskiges = torch::randint(0, 256, {n, 3, size, size}, torch::kUInt8);
  in.log_mel = torch::randn({n, 1, 96, 64});
  in.frames_per_video.assign(videos, frames);
  return in;
}

}  // namespace

int main(int argc, char** argv) {
  combo::engine::prefer_passive_openmp(argc, argv);
  CLI::App app{"combo-info: runtime, resolved configuration and model summary of ComboAVS"};
  std::string config_file;
  std::string dump_path;
  std::vector<std::string> overrides;
  bool fields = false, show_model = false, quiet_config = false;
  std::string pass = "none";
  int64_t videos = 1, frames = 5, size = 224;
  app.add_option("--config", config_file, "YAML config (with _base_ inheritance)");
  app.add_option("--dump", dump_path, "write the resolved config as YAML to this file");
  app.add_flag("--fields", fields, "list every config key with its type and choices");
  app.add_flag("--model", show_model, "build the model from the config and print its summary");
  app.add_flag("--no-config", quiet_config, "do not print the resolved config");
  app.add_option("--pass", pass, "with --model: time a pass on a synthetic clip")
      ->check(CLI::IsMember({"none", "inference", "train"}));
  app.add_option("--videos", videos, "synthetic clip: videos")->check(CLI::PositiveNumber);
  app.add_option("--frames", frames, "synthetic clip: frames per video")
      ->check(CLI::PositiveNumber);
  app.add_option("--size", size, "synthetic clip: frame size")->check(CLI::PositiveNumber);
  app.add_option("overrides", overrides, "key.path=value overrides");
  CLI11_PARSE(app, argc, argv);

  return combo::engine::run_tool([&] {
    const combo::engine::Config cfg = combo::engine::load_config(config_file, overrides);
    combo::setup_runtime(static_cast<int>(cfg.runtime.threads),
                         static_cast<uint64_t>(std::max<int64_t>(cfg.runtime.seed, 0)));
    std::cout << combo::runtime_info().to_string() << ", OpenMP wait policy "
              << (std::getenv("OMP_WAIT_POLICY") ? std::getenv("OMP_WAIT_POLICY") : "default")
              << "\n\n";
    if (fields) {
      combo::engine::Config defaults;
      for (const auto& f : combo::engine::config_fields(defaults)) {
        std::cout << f.path << " (" << combo::engine::field_type_name(f.ref) << ")";
        if (!f.choices.empty()) {
          std::cout << " one of:";
          for (const auto& c : f.choices) std::cout << " " << c;
        }
        std::cout << "\n";
      }
      return 0;
    }
    const std::string yaml = combo::engine::dump_config(cfg);
    if (!quiet_config) std::cout << yaml << "\n";
    if (!dump_path.empty()) combo::write_file_atomic(dump_path, yaml);
    if (!show_model) return 0;

    auto model = combo::engine::build_model(cfg);
    std::cout << model->summary();
    if (pass == "none") return 0;
    auto in = synthetic_clip(videos, frames, size);
    using clock = std::chrono::steady_clock;
    const auto t0 = clock::now();
    if (pass == "inference") {
      model->eval();
      c10::InferenceMode guard;
      auto p = model->predict(in);
      std::cout << "inference: " << videos << " video(s) x " << frames << " frames at " << size
                << "x" << size << " -> scores " << p.scores.sizes();
    } else {
      model->train();
      auto out = model->forward(in);
      auto loss = out.decoder.pred_logits.square().mean() + out.decoder.pred_masks.square().mean();
      for (const auto& a : out.decoder.aux_outputs)
        loss = loss + a.pred_logits.square().mean() + a.pred_masks.square().mean();
      loss.backward();
      std::cout << "forward + backward (surrogate loss): " << videos << " video(s) x " << frames
                << " frames at " << size << "x" << size;
    }
    const double s = std::chrono::duration<double>(clock::now() - t0).count();
    std::cout << " in " << s << " s, peak RSS " << peak_rss_gb() << " GB\n";
    return 0;
  });
}
