#pragma once
/// VGGish (official `torchvggish` `VGG` with `make_layers()`, COMBO_SPEC 3.2, AVSBENCH_SPEC 2.6):
/// the frozen AudioSet audio encoder that turns one 0.96 s log-mel example into a 128-d vector.
#include <ATen/ATen.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/pimpl.h>

namespace combo::audio {

/// VGGish: `features` (six 3x3 convolutions with ReLU, four 2x2 max-pools) and `embeddings`
/// (FC 12288 -> 4096 -> 4096 -> 128, each followed by ReLU). State-dict keys are the official
/// ones: `features.{0,3,6,8,11,13}.{weight,bias}`, `embeddings.{0,2,4}.{weight,bias}`
/// (`vggish-10086976.pth`). No PCA post-processing (disabled in COMBO).
class VggishImpl : public torch::nn::Cloneable<VggishImpl> {
 public:
  VggishImpl();

  void reset() override;

  /// x: log-mel examples [N, 1, 96, 64] (time x mel). Returns embeddings [N, 128], >= 0.
  /// The convolution output [N, 512, 6, 4] is flattened in the TF NHWC order [N, 6, 4, 512].
  at::Tensor forward(const at::Tensor& x);

  /// Stops gradients to every parameter and switches to eval mode (COMBO keeps VGGish frozen and
  /// also runs it under no-grad).
  void freeze();

  torch::nn::Sequential features{nullptr};
  torch::nn::Sequential embeddings{nullptr};
};
TORCH_MODULE(Vggish);

}  // namespace combo::audio
