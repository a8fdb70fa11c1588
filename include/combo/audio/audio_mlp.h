#pragma once
/// COMBO's audio projection (official `audio_mlp`, `models/modeling/misc/audio_transformation.py`,
/// COMBO_SPEC 3.3): maps the fused audio vector to the query width.
#include <ATen/ATen.h>
#include <torch/arg.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/pimpl.h>

#include <cstdint>

namespace combo::audio {

struct AudioMlpOptions {
  /// COMBO (late fusion, QUERIES_FUSE_TYPE "add"): 128 -> 4096 -> 4096 -> 256.
  AudioMlpOptions() = default;
  AudioMlpOptions(int64_t in_dim, int64_t middle_dim, int64_t out_dim)
      : in_dim_(in_dim), middle_dim_(middle_dim), out_dim_(out_dim) {}
  TORCH_ARG(int64_t, in_dim) = 128;
  TORCH_ARG(int64_t, middle_dim) = 4096;
  TORCH_ARG(int64_t, out_dim) = 256;
};

/// `embeddings.0` Linear(in, middle), ReLU, `embeddings.2` Linear(middle, middle), ReLU,
/// `embeddings.4` Linear(middle, out); no final activation; PyTorch's default Linear init.
class AudioMlpImpl : public torch::nn::Cloneable<AudioMlpImpl> {
 public:
  explicit AudioMlpImpl(AudioMlpOptions options = {});

  void reset() override;

  /// x: [..., in_dim] (COMBO: [frames, 1, 128]). Returns [..., out_dim].
  at::Tensor forward(const at::Tensor& x);

  AudioMlpOptions options;
  torch::nn::Sequential embeddings{nullptr};
};
TORCH_MODULE(AudioMlp);

}  // namespace combo::audio
