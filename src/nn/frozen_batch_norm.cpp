#include "combo/nn/frozen_batch_norm.h"

#include <torch/torch.h>

#include "combo/core/check.h"

namespace combo::nn {

FrozenBatchNorm2dImpl::FrozenBatchNorm2dImpl(const FrozenBatchNorm2dOptions& options_)
    : options(options_) {
  reset();
}

void FrozenBatchNorm2dImpl::reset() {
  COMBO_CHECK(options.num_features() > 0, "FrozenBatchNorm2d: num_features must be positive, got ",
              options.num_features());
  const int64_t c = options.num_features();
  weight = register_buffer("weight", torch::ones({c}));
  bias = register_buffer("bias", torch::zeros({c}));
  running_mean = register_buffer("running_mean", torch::zeros({c}));
  // 1 - eps makes the default module the exact identity.
  running_var = register_buffer("running_var", torch::ones({c}) - options.eps());
}

void FrozenBatchNorm2dImpl::pretty_print(std::ostream& stream) const {
  stream << "combo::nn::FrozenBatchNorm2d(" << options.num_features() << ", eps=" << options.eps()
         << ")";
}

std::pair<at::Tensor, at::Tensor> FrozenBatchNorm2dImpl::scale_and_shift() const {
  at::Tensor scale = weight * (running_var + options.eps()).rsqrt();
  at::Tensor shift = bias - running_mean * scale;
  return {scale, shift};
}

at::Tensor FrozenBatchNorm2dImpl::forward(const at::Tensor& x) const {
  COMBO_CHECK(x.dim() >= 2 && x.size(1) == options.num_features(),
              "FrozenBatchNorm2d: expected [N, ", options.num_features(), ", ...], got shape ",
              x.sizes());
  auto [scale, shift] = scale_and_shift();
  std::vector<int64_t> shape(static_cast<size_t>(x.dim()), 1);
  shape[1] = options.num_features();
  // One fused pass; the statistics are constants, so gradients reach x only.
  return at::addcmul(shift.to(x.scalar_type()).view(shape), x,
                     scale.to(x.scalar_type()).view(shape));
}

}  // namespace combo::nn
