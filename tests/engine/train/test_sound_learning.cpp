// Training learns from the sound. The in-memory synthetic S4 task (data.source = synthetic) shows
// objects of different sound classes in every clip and annotates the one whose sound plays: the
// picture alone cannot tell which object to segment. A tiny COMBO is trained twice from the same
// seed through the engine (config -> build_model/criterion -> DataLoader -> Trainer), once with
// the sound and once with every clip's audio silenced (data.silence_audio), and both are evaluated
// on held-out clips (the val split, other draws) with the official S4 metric. The run with the
// sound must learn (its loss falls) and beat the silenced run by a clear margin.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <numeric>
#include <string>
#include <vector>

#include "combo/core/check.h"
#include "combo/core/env.h"
#include "combo/data/loader.h"
#include "combo/engine/build_model.h"
#include "combo/engine/config.h"
#include "combo/engine/data_setup.h"
#include "combo/engine/evaluation.h"
#include "combo/engine/loader_source.h"
#include "combo/engine/trainer.h"
#include "testing/testing.h"

namespace {

namespace fs = std::filesystem;
using namespace combo;

// The task and the model. Two sound classes drawn flat (one colour per class) and large at 32 px,
// so every clip shows one object of each class, one of them sounding: what is seen says which
// pixels are objects, only the sound says which object is annotated. One frame per clip (the
// S4 training frame), so every iteration is a supervised image; 128 training clips (drawn in
// memory), so the runs generalise rather than memorise clips. The model is COMBO's architecture
// at its smallest (PVT-v2-b0, 64-wide decoders, 4 queries, one decoder layer, no Maskige branch)
// with what training from scratch needs (configs/demo/demo.yaml): He-initialised VGGish with its
// embeddings cached, a narrow audio MLP, one audio query per frame and a higher learning rate;
// the Bilateral-Fusion layer scale starts at 1 instead of 1e-4, so the fusion passes the sound
// from the first step (with 1e-4 and 150-200 steps, 2 of 4 seeds had not yet learnt to use it).
// Measured (seeds 0-2, 2 cores): held-out mIoU 0.86-0.90 with the sound, 0.29-0.44 silenced.
engine::Config sound_task_config(const fs::path& out, bool silence, int64_t seed) {
  auto cfg =
      engine::load_config((combo::testing::source_dir() / "configs/_base_/avs_s4.yaml").string());
  auto& m = cfg.model;
  m.backbone.name = "pvt_v2_b0";
  m.backbone.weights = "";
  m.pre_sam.enabled = false;
  m.audio.weights = "";
  m.audio.init = "he";
  m.audio.cache = true;
  m.audio.mlp_dim = 64;
  m.pixel_decoder.conv_dim = 64;
  m.pixel_decoder.mask_dim = 64;
  m.pixel_decoder.enc_layers = 1;
  m.pixel_decoder.dim_feedforward = 64;
  m.decoder.num_queries = 4;
  m.decoder.hidden_dim = 64;
  m.decoder.dim_feedforward = 64;
  m.decoder.dec_layers = 2;
  m.decoder.audio_query_layout = "per_frame";
  m.fusion.layer_scale_init = 1.0;
  cfg.loss.train_num_points = 256;
  cfg.loss.consistency.type = "none";
  cfg.data.source = "synthetic";
  cfg.data.num_workers = 1;
  cfg.data.image_size = 32;
  cfg.data.silence_audio = silence;
  cfg.data.synthetic.train_videos = 128;
  cfg.data.synthetic.eval_videos = 32;
  cfg.data.synthetic.frames = 1;
  cfg.data.synthetic.classes = 2;
  cfg.data.synthetic.style = "flat";
  cfg.data.synthetic.object_scale = 2.0;
  cfg.data.synthetic.seed = seed;
  cfg.solver.base_lr = 2e-3;
  cfg.solver.backbone_multiplier = 1.0;
  cfg.solver.warmup_iters = 10;
  cfg.solver.max_iter = 250;
  cfg.solver.ims_per_batch = 4;
  cfg.solver.checkpoint_period = 0;
  cfg.solver.log_period = 1000000;
  cfg.test.eval_period = 0;
  cfg.test.batch_size = 4;
  cfg.runtime.seed = seed;
  cfg.output_dir = out.string();
  return cfg;
}

struct RunResult {
  double first_loss = 0;  ///< mean total loss of the first 10 iterations
  double last_loss = 0;   ///< mean total loss of the last 10 iterations
  double miou = 0;        ///< held-out clips
  double f = 0;
  double seconds = 0;
};

RunResult train_and_evaluate(const engine::Config& cfg) {
  const auto begin = std::chrono::steady_clock::now();
  torch::manual_seed(static_cast<uint64_t>(cfg.runtime.seed));
  const auto kind = loss::parse_dataset_kind(cfg.data.dataset);
  auto model = engine::build_model(cfg);
  auto criterion = engine::build_criterion(cfg);
  auto options = engine::trainer_options_from_config(cfg);
  options.console = false;
  options.jsonl = false;
  options.tensorboard = false;
  options.handle_signals = false;
  engine::Trainer trainer(model, criterion, options);
  std::vector<double> losses;
  trainer.set_after_step([&](int64_t, const TensorDict& l) {
    double total = 0;
    for (const auto& kv : l) total += kv.second.item<double>();
    losses.push_back(total);
  });
  auto train_set = engine::build_dataset(cfg, cfg.data.train_split, /*train=*/true);
  data::DataLoader loader(train_set, engine::train_loader_options(cfg));
  engine::LoaderSource source(loader, kind);
  trainer.run(source);

  auto val_set = engine::build_dataset(cfg, cfg.data.val_split, /*train=*/false);
  data::DataLoader val_loader(val_set, engine::eval_loader_options(cfg));
  auto evaluator = engine::make_evaluator(cfg);
  engine::run_evaluation(*model, val_loader, *evaluator, kind);
  const auto r = evaluator->evaluate();

  RunResult out;
  const size_t n = std::min<size_t>(10, losses.size());
  out.first_loss = std::accumulate(losses.begin(), losses.begin() + n, 0.0) / n;
  out.last_loss = std::accumulate(losses.end() - n, losses.end(), 0.0) / n;
  out.miou = r.metrics.at("mIoU");
  out.f = r.metrics.at("F");
  out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - begin).count();
  return out;
}

}  // namespace

// COMBO_SOUND_TEST_SEED=<n> runs it with another seed (model, training and data).
TEST(TrainingIntegration, LearnsFromTheSound) {
  const int64_t seed =
      std::getenv("COMBO_SOUND_TEST_SEED") ? std::atoll(std::getenv("COMBO_SOUND_TEST_SEED")) : 0;
  combo::testing::TempDir dir;
  const auto heard = train_and_evaluate(sound_task_config(dir.path() / "sound", false, seed));
  const auto silent = train_and_evaluate(sound_task_config(dir.path() / "silent", true, seed));
  for (const auto& [name, r] : std::vector<std::pair<std::string, RunResult>>{
           {"with sound", heard}, {"silenced", silent}}) {
    std::cout << "[ INFO ] " << name << ": loss " << r.first_loss << " -> " << r.last_loss
              << ", held-out mIoU " << r.miou << ", F " << r.f << " (" << r.seconds << " s)"
              << std::endl;
  }
  EXPECT_LT(heard.last_loss, 0.7 * heard.first_loss);
  EXPECT_GT(heard.miou, 0.6);
  EXPECT_GT(heard.miou, silent.miou + 0.15) << "the run with the sound did not use it";
}
