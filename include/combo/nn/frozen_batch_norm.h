#pragma once
/// Batch normalisation with fixed statistics and fixed affine parameters (detectron2's
/// `FrozenBatchNorm2d`): y = (x - running_mean) / sqrt(running_var + eps) * weight + bias.
#include <ATen/core/Tensor.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/pimpl.h>

#include <ostream>
#include <utility>

namespace combo::nn {

struct FrozenBatchNorm2dOptions {
  /* implicit */ FrozenBatchNorm2dOptions(int64_t num_features) : num_features_(num_features) {}
  TORCH_ARG(int64_t, num_features);
  TORCH_ARG(double, eps) = 1e-5;
};

/// Frozen batch norm over the channels of [N, C, H, W] (or [N, C, ...]) tensors. All four
/// tensors are buffers (`weight`, `bias`, `running_mean`, `running_var`), so optimisers never
/// see them and state dicts hold exactly these four keys (no `num_batches_tracked`). The
/// defaults make it the identity: weight 1, bias 0, mean 0, var 1 - eps (as detectron2).
class FrozenBatchNorm2dImpl : public torch::nn::Cloneable<FrozenBatchNorm2dImpl> {
 public:
  explicit FrozenBatchNorm2dImpl(const FrozenBatchNorm2dOptions& options);
  void reset() override;
  void pretty_print(std::ostream& stream) const override;

  /// x [N, C, ...] -> [N, C, ...] (same memory format as x).
  at::Tensor forward(const at::Tensor& x) const;

  /// The equivalent per-channel affine map y = x * scale + shift, each [C], in the buffers'
  /// dtype. Convolutions fold it into their weight and bias.
  std::pair<at::Tensor, at::Tensor> scale_and_shift() const;

  FrozenBatchNorm2dOptions options;
  at::Tensor weight;
  at::Tensor bias;
  at::Tensor running_mean;
  at::Tensor running_var;
};
TORCH_MODULE(FrozenBatchNorm2d);

}  // namespace combo::nn
