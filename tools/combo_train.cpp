// combo-train: trains COMBO from a config (official recipe by default), with periodic
// checkpoints and validation, exact --resume, and a clean stop on SIGINT/SIGTERM.
#include <torch/torch.h>
#include <CLI/CLI.hpp>

#include <filesystem>
#include <random>
#include <thread>

#include "combo/core/check.h"
#include "combo/core/env.h"
#include "combo/core/state_dict.h"
#include "combo/data/loader.h"
#include "combo/engine/build_model.h"
#include "combo/engine/config.h"
#include "combo/engine/data_setup.h"
#include "combo/engine/device_setup.h"
#include "combo/engine/distributed.h"
#include "combo/engine/evaluation.h"
#include "combo/engine/loader_source.h"
#include "combo/engine/logging.h"
#include "combo/engine/tool.h"
#include "combo/engine/trainer.h"

namespace fs = std::filesystem;

int main(int argc, char** argv) {
  combo::engine::prefer_passive_openmp(argc, argv);
  CLI::App app{"combo-train: train COMBO on AVSBench (S4, MS3, AVSS)"};
  std::string config_file;
  std::vector<std::string> overrides;
  bool resume = false, no_eval = false;
  app.add_option("--config", config_file, "YAML config (with _base_ inheritance)")->required();
  app.add_flag("--resume", resume,
               "continue from <output_dir>/last_checkpoint (model, optimiser, schedule, RNG, "
               "loader position)");
  app.add_flag("--no-eval", no_eval, "no periodic validation");
  app.add_option("overrides", overrides, "key.path=value overrides");
  CLI11_PARSE(app, argc, argv);

  return combo::engine::run_tool([&] {
    auto cfg = combo::engine::load_config(config_file, overrides);
    // Several processes (torchrun / Slurm): one c10d process group, one device per local rank.
    const auto dist = combo::engine::dist_env_from_environment();
    const int rank = dist.rank;
    if (dist.distributed() && cfg.runtime.device == "auto" && combo::cuda_available())
      cfg.runtime.device = "cuda";
    at::Device device = combo::resolve_device(cfg.runtime.device);
    if (dist.distributed() && device.is_cuda()) {
      device = at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(dist.local_rank));
      cfg.runtime.device = device.str();
    }
    std::shared_ptr<combo::engine::ProcessGroup> group;
    if (dist.distributed()) {
      combo::engine::ProcessGroupOptions po;
      po.backend = cfg.runtime.dist_backend;
      po.timeout_seconds = cfg.runtime.dist_timeout;
      group = combo::engine::ProcessGroup::create(dist, device, po);
      // The cores of a node are shared by its processes.
      if (cfg.runtime.threads <= 0) {
        const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
        cfg.runtime.threads = std::max(1, cores / std::max(1, dist.local_world_size));
      }
    }
    if (cfg.runtime.seed < 0) {
      // A random seed is drawn once per run: a resumed run keeps the one its first part drew
      // (recorded in <output_dir>/config.yaml), so its remaining draws match an unbroken run.
      const fs::path previous = fs::path(cfg.output_dir) / "config.yaml";
      if (resume && fs::exists(previous)) {
        cfg.runtime.seed = combo::engine::load_config(previous.string(), {}).runtime.seed;
      }
      if (cfg.runtime.seed < 0) {
        cfg.runtime.seed = static_cast<int64_t>(std::random_device{}() & 0x7fffffff);
      }
      if (group) {  // rank 0's draw for every rank
        cfg.runtime.seed = static_cast<int64_t>(std::llround(group->all_reduce_sum(
            std::vector<double>{rank == 0 ? static_cast<double>(cfg.runtime.seed) : 0.0},
            "broadcast of the random seed")[0]));
      }
    }
    if (rank == 0) fs::create_directories(cfg.output_dir);
    if (group) group->barrier("barrier after creating the output folder");
    combo::engine::setup_logging(cfg.output_dir, rank);
    // Each rank draws its own random points and crops (the loader's order uses runtime.seed
    // itself, the same on every rank).
    const auto info = combo::setup_runtime(static_cast<int>(cfg.runtime.threads),
                                           static_cast<uint64_t>(cfg.runtime.seed + rank));
    spdlog::info("combo-train {} | {}", config_file, info.to_string());
    spdlog::info("seed {}", cfg.runtime.seed);
    const auto device_setup = combo::engine::setup_device(cfg);
    device = device_setup.device;
    if (group)
      spdlog::info("distributed: {}, backend {}, timeout {} s", dist.to_string(), group->backend(),
                   group->timeout_seconds());
    if (rank == 0) {
      const std::string yaml = combo::engine::dump_config(cfg);
      combo::write_file_atomic((fs::path(cfg.output_dir) / "config.yaml").string(), yaml);
      combo::write_file_atomic((fs::path(cfg.output_dir) / "env.json").string(),
                               info.to_json() + "\n");
      combo::write_file_atomic((fs::path(cfg.output_dir) / "device.json").string(),
                               device_setup.info.to_json() + "\n");
    }

    const auto kind = combo::loss::parse_dataset_kind(cfg.data.dataset);
    // Built from the same seed on every rank; set_distributed copies rank 0's weights anyway.
    auto model = combo::engine::build_model(cfg);
    model->to(device);
    auto criterion = combo::engine::build_criterion(cfg);
    criterion->to(device);
    spdlog::info("model:\n{}", model->summary());

    auto options = combo::engine::trainer_options_from_config(cfg);
    combo::engine::Trainer trainer(model, criterion, options);
    trainer.set_distributed(group);
    const auto start = trainer.resume_or_load(resume);
    if (start.resumed)
      spdlog::info("resuming from {} at iteration {} (loader epoch {}, batch {})", start.checkpoint,
                   start.start_iter, start.loader_position.first, start.loader_position.second);

    auto train_set = combo::engine::build_dataset(cfg, cfg.data.train_split, /*train=*/true);
    auto loader_options =
        combo::engine::train_loader_options(cfg, rank, group ? group->world_size() : 1);
    loader_options.start_epoch = start.loader_position.first;
    loader_options.start_batch = start.loader_position.second;
    combo::data::DataLoader loader(train_set, loader_options);
    spdlog::info("training on {} videos of {} '{}' from {} ({} batches of {} per epoch{})",
                 train_set->size(), cfg.data.dataset, cfg.data.train_split, train_set->describe(),
                 loader.batches_per_epoch(), loader_options.batch_videos,
                 group ? fmt::format(" on each of {} ranks", group->world_size()) : "");

    std::shared_ptr<const combo::data::Dataset> val_set;
    if (!no_eval && !cfg.data.val_split.empty()) {
      val_set = combo::engine::build_dataset(cfg, cfg.data.val_split, /*train=*/false);
      trainer.set_evaluator([&](int64_t iteration) {
        // Each rank evaluates its contiguous block of the split; the states are then merged.
        combo::data::DataLoader vl(val_set, combo::engine::eval_loader_options(
                                                cfg, rank, group ? group->world_size() : 1));
        auto evaluator = combo::engine::make_evaluator(cfg);
        combo::engine::EvaluationOptions eo;
        eo.device = device;
        combo::engine::run_evaluation(*model, vl, *evaluator, kind, eo);
        if (group) combo::engine::merge_across_ranks(*evaluator, *group);
        const auto r = evaluator->evaluate();
        // The videos evaluated (over every rank), not the split's size.
        const auto counted = r.metrics.find("num_videos");
        spdlog::info(
            "validation at iteration {} ({} videos, protocol {}): mIoU {:.4f}, F {:.4f}",
            iteration + 1,
            counted != r.metrics.end() ? static_cast<int64_t>(counted->second) : val_set->size(),
            r.protocol, r.metrics.at("mIoU"), r.metrics.at("F"));
        return std::map<std::string, double>{{"mIoU", r.metrics.at("mIoU")},
                                             {"F", r.metrics.at("F")}};
      });
    }

    combo::engine::LoaderSource source(loader, kind);
    const auto result = trainer.run(source, start.start_iter);
    if (loader.skipped() > 0)
      spdlog::warn("{} bad video(s) were skipped during training (data.skip_bad)",
                   loader.skipped());
    if (train_set->index_errors().size() > 0)
      spdlog::warn("{} bad video(s) were left out of the training index",
                   train_set->index_errors().size());
    if (result.status == combo::engine::TrainStatus::kInterrupted) {
      spdlog::warn("stopped by signal {} after iteration {}; checkpoint {}; continue with --resume",
                   result.signal, result.last_iteration + 1, result.checkpoint);
      return 0;
    }
    for (const auto& [k, v] : trainer.metrics()) spdlog::info("{} = {}", k, v);
    spdlog::info("training finished: {} iterations, final checkpoint {}", result.last_iteration + 1,
                 result.checkpoint);
    return 0;
  });
}
