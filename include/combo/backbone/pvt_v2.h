#pragma once
/// PVT-v2 (Wang et al., "PVT v2: Improved Baselines with Pyramid Vision Transformer"), as the
/// official `PyramidVisionTransformerV2` of COMBO's `models/modeling/backbone/pvtv2.py` with
/// `linear=False`, drop rate 0 and attention-drop 0, without the classification head.
/// Parameter names equal the official checkpoint keys (`patch_embed1.proj.weight`,
/// `block1.0.attn.q.weight`, `block1.0.mlp.dwconv.dwconv.weight`, `norm1.weight`, ...).
///
/// Tokens are kept as [B, L, C] with L = H·W in row-major order; that memory is also the
/// channels-last layout of [B, C, H, W], so the convolutions read it without copies.
#include <ATen/core/Tensor.h>
#include <torch/arg.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>

#include <string>
#include <vector>

#include "combo/backbone/backbone.h"

namespace combo::backbone {

/// Hyper-parameters of PyramidVisionTransformerV2 (one entry per stage in the vectors).
struct PvtV2Options {
  /// Defaults: PVT-v2-b0.
  PvtV2Options() = default;

  /// The official variants "b0" .. "b5" (also accepted with the "pvt_v2_" prefix). Unknown
  /// names throw combo::Error.
  static PvtV2Options variant(const std::string& name);

  TORCH_ARG(std::vector<int64_t>, embed_dims) = {32, 64, 160, 256};
  TORCH_ARG(std::vector<int64_t>, num_heads) = {1, 2, 5, 8};
  /// Hidden width of each MLP = int(dim * mlp_ratio).
  TORCH_ARG(std::vector<double>, mlp_ratios) = {8, 8, 4, 4};
  TORCH_ARG(std::vector<int64_t>, depths) = {2, 2, 2, 2};
  /// Spatial-reduction ratio of the keys/values per stage (1 = none, no `sr`/`norm` layers).
  TORCH_ARG(std::vector<int64_t>, sr_ratios) = {8, 4, 2, 1};
  TORCH_ARG(int64_t, in_chans) = 3;
  TORCH_ARG(bool, qkv_bias) = true;
  /// Stochastic depth of the last block; block k of all K gets rate * k / (K - 1).
  TORCH_ARG(double, drop_path_rate) = 0.1;
};

/// Overlapping patch embedding: Conv2d(k, stride, padding k/2) + LayerNorm (eps 1e-5).
struct OverlapPatchEmbedOptions {
  OverlapPatchEmbedOptions(int64_t in_chans, int64_t embed_dim, int64_t patch_size, int64_t stride)
      : in_chans_(in_chans), embed_dim_(embed_dim), patch_size_(patch_size), stride_(stride) {}
  TORCH_ARG(int64_t, in_chans);
  TORCH_ARG(int64_t, embed_dim);
  TORCH_ARG(int64_t, patch_size);
  TORCH_ARG(int64_t, stride);
};

class OverlapPatchEmbedImpl : public torch::nn::Cloneable<OverlapPatchEmbedImpl> {
 public:
  explicit OverlapPatchEmbedImpl(const OverlapPatchEmbedOptions& options_);
  void reset() override;
  /// x [B, C_in, H_in, W_in] (any memory format) -> tokens [B, H·W, embed_dim]; sets *h, *w.
  at::Tensor forward(const at::Tensor& x, int64_t* h, int64_t* w);

  OverlapPatchEmbedOptions options;
  torch::nn::Conv2d proj{nullptr};
  torch::nn::LayerNorm norm{nullptr};
};
TORCH_MODULE(OverlapPatchEmbed);

struct PvtAttentionOptions {
  PvtAttentionOptions(int64_t dim, int64_t num_heads) : dim_(dim), num_heads_(num_heads) {}
  TORCH_ARG(int64_t, dim);
  TORCH_ARG(int64_t, num_heads);
  TORCH_ARG(bool, qkv_bias) = true;
  TORCH_ARG(int64_t, sr_ratio) = 1;
};

/// Spatial-reduction attention: keys/values come from the tokens reduced by a
/// Conv2d(k = stride = sr_ratio) + LayerNorm (eps 1e-5) when sr_ratio > 1.
class PvtAttentionImpl : public torch::nn::Cloneable<PvtAttentionImpl> {
 public:
  explicit PvtAttentionImpl(const PvtAttentionOptions& options_);
  void reset() override;
  /// x [B, H·W, dim] -> [B, H·W, dim].
  at::Tensor forward(const at::Tensor& x, int64_t h, int64_t w);

  PvtAttentionOptions options;
  torch::nn::Linear q{nullptr};
  torch::nn::Linear kv{nullptr};
  torch::nn::Linear proj{nullptr};
  torch::nn::Conv2d sr{nullptr};       ///< only when sr_ratio > 1
  torch::nn::LayerNorm norm{nullptr};  ///< only when sr_ratio > 1
};
TORCH_MODULE(PvtAttention);

/// Depth-wise 3x3 convolution on the token grid; the official class wraps the Conv2d in a
/// module whose child is also named `dwconv` (key `mlp.dwconv.dwconv.weight`).
class DWConvImpl : public torch::nn::Cloneable<DWConvImpl> {
 public:
  explicit DWConvImpl(int64_t dim);
  void reset() override;
  /// x [B, H·W, dim] -> [B, H·W, dim].
  at::Tensor forward(const at::Tensor& x, int64_t h, int64_t w);

  int64_t dim;
  torch::nn::Conv2d dwconv{nullptr};
};
TORCH_MODULE(DWConv);

/// fc1 -> depth-wise 3x3 conv -> GELU (exact erf) -> fc2.
class PvtMlpImpl : public torch::nn::Cloneable<PvtMlpImpl> {
 public:
  PvtMlpImpl(int64_t dim, int64_t hidden_dim);
  void reset() override;
  /// x [B, H·W, dim] -> [B, H·W, dim].
  at::Tensor forward(const at::Tensor& x, int64_t h, int64_t w);
  /// The rest after fc1: fc1's output [B, H·W, hidden_dim] -> [B, H·W, dim].
  at::Tensor forward_hidden(const at::Tensor& hidden, int64_t h, int64_t w);

  int64_t dim;
  int64_t hidden_dim;
  torch::nn::Linear fc1{nullptr};
  DWConv dwconv{nullptr};
  torch::nn::Linear fc2{nullptr};
};
TORCH_MODULE(PvtMlp);

struct PvtBlockOptions {
  PvtBlockOptions(int64_t dim, int64_t num_heads) : dim_(dim), num_heads_(num_heads) {}
  TORCH_ARG(int64_t, dim);
  TORCH_ARG(int64_t, num_heads);
  TORCH_ARG(double, mlp_ratio) = 4.0;
  TORCH_ARG(bool, qkv_bias) = true;
  TORCH_ARG(int64_t, sr_ratio) = 1;
  TORCH_ARG(double, drop_path) = 0.0;
};

/// Pre-norm transformer block: x += DropPath(Attn(LN1(x))); x += DropPath(MLP(LN2(x))), with
/// both LayerNorms at eps 1e-6. Drop path is active in training mode only.
class PvtBlockImpl : public torch::nn::Cloneable<PvtBlockImpl> {
 public:
  explicit PvtBlockImpl(const PvtBlockOptions& options_);
  void reset() override;
  /// x [B, H·W, dim] -> [B, H·W, dim].
  at::Tensor forward(const at::Tensor& x, int64_t h, int64_t w);

  PvtBlockOptions options;
  torch::nn::LayerNorm norm1{nullptr};
  PvtAttention attn{nullptr};
  torch::nn::LayerNorm norm2{nullptr};
  PvtMlp mlp{nullptr};
};
TORCH_MODULE(PvtBlock);

/// The four-stage encoder. Stage i: patch_embed{i} (7x7/4 for i = 1, 3x3/2 after), the blocks
/// block{i}.0 .., then norm{i} (eps 1e-6); its output is "res{i+1}" at stride 4·2^(i-1).
/// Any input size works (no positional embeddings); the keys/values of stage i need a token
/// grid of at least sr_ratio x sr_ratio.
class PvtV2Impl : public ClonableBackbone<PvtV2Impl> {
 public:
  explicit PvtV2Impl(const PvtV2Options& options_ = {});
  void reset() override;
  void pretty_print(std::ostream& stream) const override;

  FeatureMap forward_features(const at::Tensor& x) override;
  FeatureShapes output_shapes() const override;
  /// The ImageNet classifier `head.*` of the official files.
  bool is_ignored_checkpoint_key(const std::string& key) const override;

  PvtV2Options options;
  std::vector<OverlapPatchEmbed> patch_embeds;  ///< registered as patch_embed1..4
  std::vector<torch::nn::ModuleList> blocks;    ///< registered as block1..4
  std::vector<torch::nn::LayerNorm> norms;      ///< registered as norm1..4
};
TORCH_MODULE(PvtV2);

/// The per-block stochastic-depth rates: linspace(0, rate, total) (total >= 1).
std::vector<double> drop_path_rates(double rate, int64_t total);

/// Stochastic depth (per-sample): in training with p > 0, returns residual + branch * mask / (1
/// - p), mask ~ Bernoulli(1 - p) per sample (dim 0); else residual + branch. `branch` may be
/// overwritten (it must be a temporary of the caller).
at::Tensor add_drop_path(const at::Tensor& residual, at::Tensor branch, double p, bool training);

/// The tail of the PVT-v2 MLP, fc2(GELU(dwconv(hidden))), for hidden tokens [B, h·w, C]
/// (contiguous): `dw_weight` [C, 1, 3, 3] and `dw_bias` [C] of the depth-wise 3x3 convolution
/// (padding 1), `fc_weight` [out, C] and `fc_bias` [out] of fc2. Returns [B, h·w, out].
///
/// For training it keeps only `hidden` for the backward pass, where the convolution and the
/// GELU are run again (bit-identical results and gradients to the unfused ops, which would keep
/// the convolution output and the GELU output as well: two more [B, h·w, C] tensors per block).
/// fc(LayerNorm(x)) over the last dimension of x [B, L, C] (contiguous), with the LayerNorm's
/// `ln_weight`, `ln_bias` and `eps` and the Linear's `fc_weight` [out, C] and `fc_bias` [out].
/// For training it keeps x (which the LayerNorm keeps anyway) and its statistics, not the
/// normalised tensor, and normalises again in the backward pass: bit-identical results and
/// gradients to torch::nn::LayerNorm followed by the Linear, one [B, L, C] tensor less per use.
at::Tensor layer_norm_linear(const at::Tensor& x, const at::Tensor& ln_weight,
                             const at::Tensor& ln_bias, double eps, const at::Tensor& fc_weight,
                             const at::Tensor& fc_bias);

at::Tensor dwconv_gelu_linear(const at::Tensor& hidden, int64_t h, int64_t w,
                              const at::Tensor& dw_weight, const at::Tensor& dw_bias,
                              const at::Tensor& fc_weight, const at::Tensor& fc_bias);

}  // namespace combo::backbone
