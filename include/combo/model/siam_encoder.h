#pragma once
/// Siam-Encoder Module (COMBO_SPEC 2.1): the Maskige encoder's features weight themselves per
/// channel and are added to the RGB encoder's features, level by level.
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include "combo/backbone/backbone.h"

namespace combo::model {

struct ChannelWeightedBlockOptions {
  explicit ChannelWeightedBlockOptions(int64_t channels) : channels_(channels) {}
  TORCH_ARG(int64_t, channels);
  /// Hidden width is channels / reduction (official: 16).
  TORCH_ARG(int64_t, reduction) = 16;
};

/// alpha = sigmoid(fc2(relu(fc1(GAP(m))))): [N, C, H, W] -> [N, C, 1, 1]. Children `fc1`, `fc2`
/// (official keys `scale_factor_module.{l}.fc1/fc2`), PyTorch's default Linear initialisation.
class ChannelWeightedBlockImpl : public torch::nn::Cloneable<ChannelWeightedBlockImpl> {
 public:
  explicit ChannelWeightedBlockImpl(const ChannelWeightedBlockOptions& options);
  void reset() override;
  at::Tensor forward(const at::Tensor& maskige_features);

  ChannelWeightedBlockOptions options;
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
};
TORCH_MODULE(ChannelWeightedBlock);

/// One block per level, in the order of backbone::feature_names() ("res2".."res5").
torch::nn::ModuleList make_channel_weighted_blocks(const backbone::FeatureShapes& shapes);

/// F_l + alpha_l(M_l) * M_l for every level l (the fused maps replace nothing in the encoders:
/// fusion happens after both encoders have run). `blocks` from make_channel_weighted_blocks.
backbone::FeatureMap siam_fuse(const backbone::FeatureMap& rgb, const backbone::FeatureMap& maskige,
                               torch::nn::ModuleList& blocks);

}  // namespace combo::model
