#pragma once
// Tiny COMBO models, criteria and an in-memory batch source for the training-engine tests.
#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <utility>

#include "combo/engine/trainer.h"
#include "combo/loss/criterion.h"
#include "combo/model/combo.h"

namespace combo::train_test {

inline model::ComboModelOptions tiny_model_options() {
  return model::ComboModelOptions()
      .backbone("pvt_v2_b0")
      .num_queries(4)
      .dec_layers(2)
      .enc_layers(1)
      .dec_dim_feedforward(32)
      .enc_dim_feedforward(32);
}

inline model::ComboModel tiny_model() { return model::ComboModel(tiny_model_options()); }

inline loss::SetCriterion tiny_criterion() {
  // Videos of 2 frames: the official grouping of the consistency loss in groups of 2.
  return loss::SetCriterion(loss::SetCriterionOptions(2).num_points(16).consistency(
      loss::ConsistencyOptions().group_size(2)));
}

/// Batch b is a pure function of b (its own generator), so a source restarted at a position
/// replays exactly the batches a continuous run saw. S4 layout: 2 videos x 2 frames, 64 x 64.
class MemoryBatchSource : public engine::BatchSource {
 public:
  explicit MemoryBatchSource(std::pair<int64_t, int64_t> start = {0, 0},
                             int64_t batches_per_epoch = 5)
      : epoch_(start.first), batch_(start.second), per_epoch_(batches_per_epoch) {}

  engine::TrainBatch next() override {
    auto b = make(epoch_ * per_epoch_ + batch_);
    if (++batch_ == per_epoch_) {
      batch_ = 0;
      ++epoch_;
    }
    ++served_;
    return b;
  }
  std::pair<int64_t, int64_t> position() const override { return {epoch_, batch_}; }
  int64_t served() const { return served_; }

  static engine::TrainBatch make(int64_t index, int64_t size = 64) {
    auto gen = at::detail::createCPUGenerator(1000 + index);
    engine::TrainBatch b;
    const int64_t videos = 2, frames = 2, n = videos * frames;
    b.inputs.images = torch::randint(0, 256, {n, 3, size, size}, gen, torch::kFloat32);
    b.inputs.maskiges = torch::randint(0, 256, {n, 3, size, size}, gen, torch::kFloat32);
    b.inputs.log_mel = torch::randn({n, 1, 96, 64}, gen);
    b.inputs.frames_per_video.assign(videos, frames);
    b.layout.frames_per_video = b.inputs.frames_per_video;
    b.layout.supervised_rows =
        loss::supervised_rows(loss::DatasetKind::kS4, b.layout.frames_per_video);
    for (size_t k = 0; k < b.layout.supervised_rows.size(); ++k) {
      auto map = torch::randint(0, 2, {size / 8, size / 8}, gen, torch::kLong)
                     .repeat_interleave(8, 0)
                     .repeat_interleave(8, 1);
      auto labels = std::get<0>(at::_unique(map.flatten(), /*sorted=*/true));
      b.targets.push_back({labels, map.unsqueeze(0) == labels.view({-1, 1, 1})});
    }
    return b;
  }

 private:
  int64_t epoch_, batch_, per_epoch_;
  int64_t served_ = 0;
};

}  // namespace combo::train_test
