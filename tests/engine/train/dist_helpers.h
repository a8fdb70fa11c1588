#pragma once
// Data-parallel test set-up shared by the test (the single-process reference run) and
// combo_dist_worker (one rank): a tiny COMBO whose step does not depend on how the batch is
// split, fixed point sets, and a source that serves one rank's share of each global batch.
#include <torch/torch.h>

#include <memory>
#include <string>

#include "combo/engine/trainer.h"
#include "combo/loss/criterion.h"
#include "train_helpers.h"

namespace combo::train_test {

/// The same point set for every mask and call (seeded, [0, 1)^2), so the losses of a frame do
/// not depend on which other frames share the batch (random point sets are drawn per batch).
class FixedPointSource : public loss::PointSource {
 public:
  explicit FixedPointSource(int64_t max_points = 4096) {
    auto gen = at::detail::createCPUGenerator(4242);
    points_ = torch::rand({1, max_points, 2}, gen);
  }
  at::Tensor matcher_points(int64_t n, const at::Device& device) override {
    return points_.narrow(1, 0, n).to(device);
  }
  at::Tensor mask_loss_points(const at::Tensor& logits, int64_t n, double, double) override {
    return points_.narrow(1, 0, n).expand({logits.size(0), n, 2}).contiguous().to(logits.device());
  }

 private:
  at::Tensor points_;
};

/// tiny_model() whose step does not depend on how the batch is split: each frame's queries
/// get that frame's audio (the official layout mixes the audio of the batch's frames), and no
/// stochastic depth or fusion dropout (their random masks are drawn per batch, from each rank's
/// own generator).
inline model::ComboModel dist_model(uint64_t seed) {
  torch::manual_seed(seed);
  return model::ComboModel(tiny_model_options()
                               .audio_query_layout(model::AudioQueryLayout::kPerFrame)
                               .drop_path_rate(0.0)
                               .fusion_dropout(0.0));
}

/// Rank `rank` of `world` gets videos [rank * V / world, (rank + 1) * V / world) of each
/// MemoryBatchSource batch (V = 2 videos of 2 frames).
class ShardSource : public engine::BatchSource {
 public:
  ShardSource(int rank, int world) : rank_(rank), world_(world) {}
  engine::TrainBatch next() override {
    auto full = inner_.next();
    const int64_t videos = static_cast<int64_t>(full.inputs.frames_per_video.size());
    const int64_t per = videos / world_, first = rank_ * per, frames = 2;
    engine::TrainBatch b;
    auto rows = [&](const at::Tensor& t) { return t.narrow(0, first * frames, per * frames); };
    b.inputs.images = rows(full.inputs.images);
    b.inputs.maskiges = rows(full.inputs.maskiges);
    b.inputs.log_mel = rows(full.inputs.log_mel);
    b.inputs.frames_per_video.assign(per, frames);
    b.layout.frames_per_video = b.inputs.frames_per_video;
    b.layout.supervised_rows =
        loss::supervised_rows(loss::DatasetKind::kS4, b.layout.frames_per_video);
    // S4: one supervised frame per video, in video order.
    for (int64_t v = first; v < first + per; ++v) b.targets.push_back(full.targets[v]);
    return b;
  }
  std::pair<int64_t, int64_t> position() const override { return inner_.position(); }

 private:
  MemoryBatchSource inner_;
  int rank_, world_;
};

inline engine::TrainerOptions dist_trainer_options(const std::string& dir, int64_t steps) {
  engine::TrainerOptions o;
  o.output_dir = dir;
  o.max_iter = steps;
  o.checkpoint_period = 0;
  o.keep_last = 0;
  o.eval_period = 0;
  o.log_period = 1;
  o.console = false;
  o.tensorboard = false;
  o.handle_signals = false;
  o.config_text = "distributed test\n";
  o.min_free_bytes = 1;
  o.dist_bucket_bytes = 1 << 20;  // several buckets even for the tiny model
  return o;
}

}  // namespace combo::train_test
