#pragma once
/// The multi-scale deformable-attention pixel decoder of Mask2Former / COMBO
/// (`MSDeformAttnPixelDecoder`, COMBO_SPEC 5): input projections of res3..res5, six deformable
/// encoder layers over the three levels, one FPN level on res2 and the mask-feature projection.
#include <ATen/core/Tensor.h>
#include <torch/arg.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>

#include <map>
#include <ostream>
#include <string>
#include <vector>

#include "combo/nn/ms_deform_attn.h"

namespace combo::model {

/// Channels and stride of one input feature map (the same numbers a backbone reports).
struct PixelDecoderInputShape {
  int64_t channels = 0;
  int64_t stride = 0;
};
/// Input shapes by feature name ("res2".."res5").
using PixelDecoderInputShapes = std::map<std::string, PixelDecoderInputShape>;

struct Conv2dNormOptions {
  Conv2dNormOptions(int64_t in_channels, int64_t out_channels, int64_t kernel_size)
      : in_channels_(in_channels), out_channels_(out_channels), kernel_size_(kernel_size) {}
  TORCH_ARG(int64_t, in_channels);
  TORCH_ARG(int64_t, out_channels);
  TORCH_ARG(int64_t, kernel_size);
  TORCH_ARG(int64_t, padding) = 0;
  TORCH_ARG(bool, bias) = false;
  TORCH_ARG(int64_t, norm_groups) = 32;
  TORCH_ARG(bool, relu) = false;
};

/// detectron2's `Conv2d` with a norm child: y = [ReLU](GroupNorm(conv(x))). Keys: `weight`,
/// [`bias`], `norm.weight`, `norm.bias`. reset() applies c2_xavier_fill to the convolution.
class Conv2dNormImpl : public torch::nn::Cloneable<Conv2dNormImpl> {
 public:
  explicit Conv2dNormImpl(const Conv2dNormOptions& options);
  void reset() override;
  void pretty_print(std::ostream& stream) const override;
  /// x [N, in, H, W] -> [N, out, H, W] (stride 1).
  at::Tensor forward(const at::Tensor& x);

  Conv2dNormOptions options;
  at::Tensor weight;
  at::Tensor bias;
  torch::nn::GroupNorm norm{nullptr};
};
TORCH_MODULE(Conv2dNorm);

struct MSDeformAttnEncoderLayerOptions {
  TORCH_ARG(int64_t, d_model) = 256;
  TORCH_ARG(int64_t, dim_feedforward) = 1024;
  TORCH_ARG(double, dropout) = 0.1;
  TORCH_ARG(int64_t, n_levels) = 4;
  TORCH_ARG(int64_t, n_heads) = 8;
  TORCH_ARG(int64_t, n_points) = 4;
  TORCH_ARG(bool, fused_kernel) = true;
};

/// One post-norm deformable encoder layer (`MSDeformAttnTransformerEncoderLayer`, ReLU FFN):
///   src = norm1(src + dropout(self_attn(src + pos, ref, src)))
///   src = norm2(src + dropout(linear2(dropout(relu(linear1(src))))))
/// Children: `self_attn`, `norm1`, `linear1`, `linear2`, `norm2`. reset() leaves the PyTorch
/// default initialisation; the encoder applies the official one.
class MSDeformAttnEncoderLayerImpl : public torch::nn::Cloneable<MSDeformAttnEncoderLayerImpl> {
 public:
  explicit MSDeformAttnEncoderLayerImpl(const MSDeformAttnEncoderLayerOptions& options = {});
  void reset() override;

  /// src, pos [N, S, d_model] (pos may have batch 1); reference_points [N or 1, S, n_levels, 2]
  /// -> [N, S, d_model].
  at::Tensor forward(const at::Tensor& src, const at::Tensor& pos,
                     const at::Tensor& reference_points, const nn::SpatialShapes& spatial_shapes,
                     const std::vector<int64_t>& level_start_index);

  MSDeformAttnEncoderLayerOptions options;
  nn::MSDeformAttn self_attn{nullptr};
  torch::nn::LayerNorm norm1{nullptr};
  torch::nn::Linear linear1{nullptr};
  torch::nn::Linear linear2{nullptr};
  torch::nn::LayerNorm norm2{nullptr};
  torch::nn::Dropout dropout1{nullptr};
  torch::nn::Dropout dropout2{nullptr};
  torch::nn::Dropout dropout3{nullptr};
};
TORCH_MODULE(MSDeformAttnEncoderLayer);

/// The stack of encoder layers (`MSDeformAttnTransformerEncoder`), children `layers.{i}`.
class MSDeformAttnEncoderImpl : public torch::nn::Cloneable<MSDeformAttnEncoderImpl> {
 public:
  MSDeformAttnEncoderImpl(const MSDeformAttnEncoderLayerOptions& layer_options, int64_t num_layers);
  void reset() override;

  /// Reference points of every token of the flattened levels: the pixel centres
  /// ((x + 0.5) / W_l, (y + 0.5) / H_l) of its own level, repeated for every level (no padding,
  /// valid ratio 1) -> [1, S, n_levels, 2].
  static at::Tensor reference_points(const nn::SpatialShapes& spatial_shapes,
                                     const at::TensorOptions& options);

  /// src, pos [N, S, d_model] -> [N, S, d_model].
  at::Tensor forward(const at::Tensor& src, const at::Tensor& pos,
                     const nn::SpatialShapes& spatial_shapes,
                     const std::vector<int64_t>& level_start_index);

  MSDeformAttnEncoderLayerOptions layer_options;
  int64_t num_layers;
  torch::nn::ModuleList layers{nullptr};
  /// Activation checkpointing of every layer (nn::checkpoint): while training, a layer keeps
  /// only its inputs for backward and runs again there (same results, less memory).
  bool checkpoint_layers = false;
};
TORCH_MODULE(MSDeformAttnEncoder);

/// The encoder with its level embeddings (`MSDeformAttnTransformerEncoderOnly`): children
/// `encoder`, parameter `level_embed` [n_levels, d_model]. reset() applies the official
/// initialisation: xavier-uniform on every parameter with >= 2 dims, then the MSDeformAttn
/// initialisation, then level_embed ~ N(0, 1).
class MSDeformAttnTransformerEncoderOnlyImpl
    : public torch::nn::Cloneable<MSDeformAttnTransformerEncoderOnlyImpl> {
 public:
  MSDeformAttnTransformerEncoderOnlyImpl(const MSDeformAttnEncoderLayerOptions& layer_options,
                                         int64_t num_layers);
  void reset() override;

  /// srcs and pos_embeds: one [N, d_model, H_l, W_l] map per level (pos_embeds may have batch
  /// 1) -> memory [N, S, d_model] with the levels flattened and concatenated in order.
  at::Tensor forward(const std::vector<at::Tensor>& srcs,
                     const std::vector<at::Tensor>& pos_embeds);

  MSDeformAttnEncoderLayerOptions layer_options;
  int64_t num_layers;
  at::Tensor level_embed;
  MSDeformAttnEncoder encoder{nullptr};
};
TORCH_MODULE(MSDeformAttnTransformerEncoderOnly);

struct MSDeformAttnPixelDecoderOptions {
  /* implicit */ MSDeformAttnPixelDecoderOptions(PixelDecoderInputShapes input_shape)
      : input_shape_(std::move(input_shape)) {}
  /// Every input map the decoder reads (res2..res5 in COMBO), with channels and strides.
  TORCH_ARG(PixelDecoderInputShapes, input_shape);
  TORCH_ARG(int64_t, conv_dim) = 256;
  TORCH_ARG(int64_t, mask_dim) = 256;
  /// GroupNorm groups of the input projections and the FPN convolutions (norm "GN").
  TORCH_ARG(int64_t, norm_groups) = 32;
  TORCH_ARG(double, transformer_dropout) = 0.0;
  TORCH_ARG(int64_t, transformer_nheads) = 8;
  TORCH_ARG(int64_t, transformer_dim_feedforward) = 1024;
  TORCH_ARG(int64_t, transformer_enc_layers) = 6;
  TORCH_ARG(int64_t, transformer_n_points) = 4;
  TORCH_ARG(std::vector<std::string>, transformer_in_features) = std::vector<std::string>{
      "res3", "res4", "res5"};
  TORCH_ARG(int64_t, common_stride) = 4;
  /// Use the fused CPU deformable-attention kernel (see nn::MSDeformAttnOptions::fused_kernel).
  TORCH_ARG(bool, fused_kernel) = true;
};

/// What the pixel decoder returns (the official `forward_features` triple).
struct PixelDecoderOutput {
  /// [N, mask_dim, H / common_stride, W / common_stride]
  at::Tensor mask_features;
  /// Encoder output at the lowest-resolution level [N, conv_dim, H/32, W/32] (unused by COMBO).
  at::Tensor transformer_encoder_features;
  /// The first three decoder levels, low to high resolution: [N, conv_dim, H/32, W/32],
  /// [N, conv_dim, H/16, W/16], [N, conv_dim, H/8, W/8] in COMBO.
  std::vector<at::Tensor> multi_scale_features;
};

/// `MSDeformAttnPixelDecoder`. Children (official names): `input_proj.{i}` = Sequential(Conv2d
/// 1x1 with bias, GroupNorm), i = 0 for the lowest-resolution transformer feature;
/// `transformer` (level_embed + encoder); `mask_features` Conv2d 1x1 with bias; per extra FPN
/// level k = 1.. (from the finest input upwards) `adapter_k` (Conv1x1 no bias + GN) and
/// `layer_k` (Conv3x3 no bias + GN + ReLU). Always computes in float32 (inputs are cast and
/// autocast is switched off inside, as the official `@autocast(enabled=False)`).
class MSDeformAttnPixelDecoderImpl : public torch::nn::Cloneable<MSDeformAttnPixelDecoderImpl> {
 public:
  explicit MSDeformAttnPixelDecoderImpl(const MSDeformAttnPixelDecoderOptions& options);
  void reset() override;
  void pretty_print(std::ostream& stream) const override;

  /// features: at least every map of options.input_shape by name, map k [N, C_k, H_k, W_k]
  /// (any floating dtype). Works for any map sizes.
  PixelDecoderOutput forward(const std::map<std::string, at::Tensor>& features);

  /// Input names sorted by stride (finest first), and the transformer inputs likewise.
  const std::vector<std::string>& in_features() const { return in_features_; }
  const std::vector<std::string>& transformer_in_features() const {
    return transformer_in_features_;
  }
  int64_t num_fpn_levels() const { return num_fpn_levels_; }

  MSDeformAttnPixelDecoderOptions options;
  torch::nn::ModuleList input_proj{nullptr};
  MSDeformAttnTransformerEncoderOnly transformer{nullptr};
  torch::nn::Conv2d mask_features{nullptr};

 private:
  std::vector<std::string> in_features_;
  std::vector<std::string> transformer_in_features_;
  int64_t num_fpn_levels_ = 0;
  // Top-down order (coarsest extra level first), as the official lateral_convs / output_convs.
  std::vector<Conv2dNorm> lateral_convs_;
  std::vector<Conv2dNorm> output_convs_;
};
TORCH_MODULE(MSDeformAttnPixelDecoder);

}  // namespace combo::model
