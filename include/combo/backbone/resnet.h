#pragma once
/// ResNet in detectron2's layout, as COMBO's R50 configs build it with `build_resnet_backbone`:
/// basic stem (conv 7x7/2 + FrozenBN + ReLU + max-pool 3x3/2), bottleneck stages res2..res5 with
/// the stride in the 3x3 conv (STRIDE_IN_1X1 False), one group, width 64 per group, FrozenBN
/// everywhere, bias-free convolutions, a projection shortcut in the first block of each stage,
/// no dilation. Keys equal detectron2's (`stem.conv1.weight`, `stem.conv1.norm.running_mean`,
/// `res2.0.shortcut.weight`, `res2.0.conv1.norm.weight`, ...). Every convolution weight is
/// trainable (FREEZE_AT 0); the FrozenBN tensors are buffers.
#include <ATen/core/Tensor.h>
#include <torch/arg.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/pimpl.h>

#include <string>
#include <vector>

#include "combo/backbone/backbone.h"
#include "combo/nn/frozen_batch_norm.h"

namespace combo::backbone {

struct FrozenBNConv2dOptions {
  FrozenBNConv2dOptions(int64_t in_channels, int64_t out_channels, int64_t kernel_size)
      : in_channels_(in_channels), out_channels_(out_channels), kernel_size_(kernel_size) {}
  TORCH_ARG(int64_t, in_channels);
  TORCH_ARG(int64_t, out_channels);
  TORCH_ARG(int64_t, kernel_size);
  TORCH_ARG(int64_t, stride) = 1;
  TORCH_ARG(int64_t, padding) = 0;
};

/// detectron2's `Conv2d(..., bias=False, norm=FrozenBatchNorm2d)`: parameter `weight` and child
/// `norm`. The frozen affine map is folded into the convolution (weight * scale, bias = shift),
/// which equals conv followed by the norm and saves a pass over the output.
class FrozenBNConv2dImpl : public torch::nn::Cloneable<FrozenBNConv2dImpl> {
 public:
  explicit FrozenBNConv2dImpl(const FrozenBNConv2dOptions& options_);
  void reset() override;
  void pretty_print(std::ostream& stream) const override;
  /// x [N, in, H, W] -> norm(conv(x)) [N, out, H', W'] (memory format follows x).
  at::Tensor forward(const at::Tensor& x);

  FrozenBNConv2dOptions options;
  at::Tensor weight;  ///< [out, in, k, k]
  nn::FrozenBatchNorm2d norm{nullptr};
};
TORCH_MODULE(FrozenBNConv2d);

struct BottleneckBlockOptions {
  BottleneckBlockOptions(int64_t in_channels, int64_t bottleneck_channels, int64_t out_channels)
      : in_channels_(in_channels),
        bottleneck_channels_(bottleneck_channels),
        out_channels_(out_channels) {}
  TORCH_ARG(int64_t, in_channels);
  TORCH_ARG(int64_t, bottleneck_channels);
  TORCH_ARG(int64_t, out_channels);
  TORCH_ARG(int64_t, stride) = 1;
};

/// conv1 1x1 -> ReLU -> conv2 3x3/stride -> ReLU -> conv3 1x1, plus the input (through
/// `shortcut`, a 1x1/stride conv + FrozenBN, when in != out), then ReLU.
class BottleneckBlockImpl : public torch::nn::Cloneable<BottleneckBlockImpl> {
 public:
  explicit BottleneckBlockImpl(const BottleneckBlockOptions& options_);
  void reset() override;
  /// x [N, in, H, W] -> [N, out, H/stride, W/stride].
  at::Tensor forward(const at::Tensor& x);

  BottleneckBlockOptions options;
  FrozenBNConv2d shortcut{nullptr};  ///< only when in_channels != out_channels
  FrozenBNConv2d conv1{nullptr};
  FrozenBNConv2d conv2{nullptr};
  FrozenBNConv2d conv3{nullptr};
};
TORCH_MODULE(BottleneckBlock);

/// conv1 7x7/2 (padding 3) + FrozenBN + ReLU, then max-pool 3x3/2 (padding 1).
class BasicStemImpl : public torch::nn::Cloneable<BasicStemImpl> {
 public:
  BasicStemImpl(int64_t in_channels, int64_t out_channels);
  void reset() override;
  /// x [N, in, H, W] -> [N, out, H/4, W/4].
  at::Tensor forward(const at::Tensor& x);

  int64_t in_channels;
  int64_t out_channels;
  FrozenBNConv2d conv1{nullptr};
};
TORCH_MODULE(BasicStem);

struct ResNetOptions {
  /// 50 (blocks 3, 4, 6, 3), 101 (3, 4, 23, 3) or 152 (3, 8, 36, 3).
  TORCH_ARG(int64_t, depth) = 50;
  TORCH_ARG(int64_t, in_channels) = 3;
  TORCH_ARG(int64_t, stem_out_channels) = 64;
  /// Output channels of res2; each later stage doubles it (bottleneck = out / 4).
  TORCH_ARG(int64_t, res2_out_channels) = 256;
};

/// The encoder: stem, then res2..res5 (strides 4, 8, 16, 32; 256/512/1024/2048 channels for the
/// defaults). Runs channels-last internally (several times faster for the stem on CPU) and
/// returns contiguous NCHW maps.
class ResNetImpl : public ClonableBackbone<ResNetImpl> {
 public:
  explicit ResNetImpl(const ResNetOptions& options_ = {});
  void reset() override;
  void pretty_print(std::ostream& stream) const override;

  FeatureMap forward_features(const at::Tensor& x) override;
  FeatureShapes output_shapes() const override;
  /// Classifier (`fc.*`, `linear.*`, `stem.fc.*` after torchvision-to-detectron2 renaming) and
  /// BatchNorm `*.num_batches_tracked` keys.
  bool is_ignored_checkpoint_key(const std::string& key) const override;

  ResNetOptions options;
  BasicStem stem{nullptr};
  std::vector<torch::nn::ModuleList> stages;  ///< registered as res2..res5
};
TORCH_MODULE(ResNet);

/// Blocks per stage for a ResNet depth (50, 101, 152); other depths throw combo::Error.
std::vector<int64_t> resnet_blocks_per_stage(int64_t depth);

}  // namespace combo::backbone
