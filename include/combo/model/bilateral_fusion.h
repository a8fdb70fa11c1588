#pragma once
/// COMBO's Bilateral-Fusion Module (BFM; official `AVFuse`,
/// `models/modeling/fusion_module/AVFuse.py` and `utils/fuse_helper.py`, COMBO_SPEC 4).
///
/// Placement. The module fuses one visual map with one audio vector per frame; where it is called
/// is the meta-architecture's decision. "late" fusion (every released config): the pixel
/// decoder's stride-4 mask features [N, 256, H/4, W/4] with `visual_dim` 256. "early" fusion
/// (`FUSION_STEP "early"`, unused by the configs): a backbone level, e.g. res2, with `visual_dim`
/// equal to that level's channels. The official code accepts a list of levels, but its
/// `level_embed` has a single row, so only one level ever ran; this module takes one map.
#include <ATen/core/Tensor.h>
#include <torch/arg.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/container/parameterlist.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <string>
#include <vector>

namespace combo::model {

/// The official fusion types (`MODEL.FUSE_CONFIG.TYPE`).
enum class FusionType {
  /// "MHA-B": bidirectional attention; visual and audio outputs both fused (COMBO_SPEC 4.3).
  kBidirectional,
  /// "MHA-S": single direction, the visual tokens attend to the audio token (`AttentionA2I`);
  /// the audio passes through unchanged.
  kVisualToAudio,
  /// "MHA-S-Audio": the bidirectional block, of which only the audio output is kept.
  kAudioOnly,
  /// "MHA-None": only the level embedding is added to the visual map; audio unchanged.
  kNone,
};

/// Parses "MHA-B" / "bidirectional", "MHA-S" / "visual_to_audio", "MHA-S-Audio" / "audio_only",
/// "MHA-None" / "none". Throws combo::Error naming the accepted values otherwise.
FusionType fusion_type_from_string(const std::string& name);
/// "bidirectional", "visual_to_audio", "audio_only" or "none".
std::string to_string(FusionType type);

struct BilateralFusionOptions {
  BilateralFusionOptions() = default;
  explicit BilateralFusionOptions(FusionType type) : type_(type) {}
  TORCH_ARG(FusionType, type) = FusionType::kBidirectional;
  /// Channels of the visual map (`FUSED_BACKBONE_DIM`); also the attention width (embed_dim) and
  /// twice the sine-encoding features per axis. Must be even and divisible by num_heads.
  TORCH_ARG(int64_t, visual_dim) = 256;
  /// Width of the audio vector (`AUDIO_DIM`, the VGGish embedding).
  TORCH_ARG(int64_t, audio_dim) = 128;
  TORCH_ARG(int64_t, num_heads) = 8;
  /// Dropout on the attention weights (training only).
  TORCH_ARG(double, dropout) = 0.1;
  /// Initial value of the layer-scale vectors (official `init_values`).
  TORCH_ARG(double, layer_scale_init) = 1e-4;
};

/// Official `BiMultiHeadAttention`: projections of the bidirectional block. Which projections
/// exist depends on whether the visual output is kept: the audio-only type does not create
/// `values_a_proj` and `out_v_proj`.
class BiMultiHeadAttentionImpl : public torch::nn::Cloneable<BiMultiHeadAttentionImpl> {
 public:
  BiMultiHeadAttentionImpl(int64_t v_dim, int64_t a_dim, int64_t embed_dim, bool visual_output);
  void reset() override;

  int64_t v_dim;
  int64_t a_dim;
  int64_t embed_dim;
  bool visual_output;
  torch::nn::Linear v_proj{nullptr};         ///< [embed, v_dim]: visual queries
  torch::nn::Linear a_proj{nullptr};         ///< [embed, a_dim]: audio key
  torch::nn::Linear values_v_proj{nullptr};  ///< [embed, v_dim]: visual values (audio update)
  torch::nn::Linear values_a_proj{nullptr};  ///< [embed, a_dim]: audio value (visual update)
  torch::nn::Linear out_v_proj{nullptr};     ///< [v_dim, embed]
  torch::nn::Linear out_a_proj{nullptr};     ///< [a_dim, embed]
};
TORCH_MODULE(BiMultiHeadAttention);

/// Official `BiAttentionBlock` with one level: pre-LayerNorms `layer_norm_v_list.0`,
/// `layer_norm_a_list.0`, the attention `attn_list.0`, layer scales `gamma_v_list.0` [v_dim]
/// (only when the visual output is kept) and `gamma_a` [a_dim].
class BiAttentionBlockImpl : public torch::nn::Cloneable<BiAttentionBlockImpl> {
 public:
  BiAttentionBlockImpl(int64_t v_dim, int64_t a_dim, int64_t num_heads, double layer_scale_init,
                       bool visual_output);
  void reset() override;

  int64_t v_dim;
  int64_t a_dim;
  int64_t num_heads;
  double layer_scale_init;
  bool visual_output;
  torch::nn::ModuleList layer_norm_v_list{nullptr};
  torch::nn::ModuleList layer_norm_a_list{nullptr};
  torch::nn::ModuleList attn_list{nullptr};
  torch::nn::ParameterList gamma_v_list{nullptr};
  at::Tensor gamma_a;
};
TORCH_MODULE(BiAttentionBlock);

/// Official single-direction `MultiHeadAttention` of `AttentionA2I`, reduced to what can act
/// with one audio token: `v_proj` [embed, k_dim] and `out_proj` [q_dim, embed]. The official
/// `q_proj`/`k_proj` only feed a softmax over that single key, which is identically 1, so they
/// cannot influence the output or receive gradient and are not created.
class A2IMultiHeadAttentionImpl : public torch::nn::Cloneable<A2IMultiHeadAttentionImpl> {
 public:
  A2IMultiHeadAttentionImpl(int64_t q_dim, int64_t k_dim, int64_t embed_dim);
  void reset() override;

  int64_t q_dim;
  int64_t k_dim;
  int64_t embed_dim;
  torch::nn::Linear v_proj{nullptr};
  torch::nn::Linear out_proj{nullptr};
};
TORCH_MODULE(A2IMultiHeadAttention);

/// Official `AttentionA2I` with one level: `layer_norm_q_1_list.0` [q_dim],
/// `layer_norm_k_1_list.0` [k_dim], `attn_list.0`, `gamma_list.0` [q_dim].
class AttentionA2IImpl : public torch::nn::Cloneable<AttentionA2IImpl> {
 public:
  AttentionA2IImpl(int64_t q_dim, int64_t k_dim, int64_t num_heads, double layer_scale_init);
  void reset() override;

  int64_t q_dim;
  int64_t k_dim;
  int64_t num_heads;
  double layer_scale_init;
  torch::nn::ModuleList layer_norm_q_1_list{nullptr};
  torch::nn::ModuleList layer_norm_k_1_list{nullptr};
  torch::nn::ModuleList attn_list{nullptr};
  torch::nn::ParameterList gamma_list{nullptr};
};
TORCH_MODULE(AttentionA2I);

struct BilateralFusionOutput {
  at::Tensor visual;  ///< [N, visual_dim, H, W] (contiguous)
  at::Tensor audio;   ///< [N, 1, audio_dim]
};

/// The BFM. With X the visual map, a the audio, e = `level_embed` and LN the LayerNorms:
/// - bidirectional: visual = LN_v(X + e) + gamma_v * U_v, audio = LN_a(a) + gamma_a * U_a with
///   the bidirectional attention of COMBO_SPEC 4.3 (softmax over the spatial axis in both
///   directions, scores clamped to +-50000, sine encoding of the map added before `v_proj`,
///   `audio_pos` added before `a_proj`).
/// - visual_to_audio: visual = LN_q(X + e) + gamma * out_proj(w * v_proj(LN_k(a))), audio = a;
///   w = 1 (the attention weight of the single key) apart from dropout in training. No positional
///   embeddings.
/// - audio_only: visual = X + e, audio as in bidirectional. The official code meant to discard the
///   visual output, but its block writes the fused map into the dictionary it returns, so the
///   official "MHA-S-Audio" actually outputs the bidirectional visual map as well; use
///   kBidirectional for that behaviour.
/// - none: visual = X + e, audio = a.
///
/// State-dict keys (official): `level_embed.weight` [1, visual_dim] (every type);
/// `audio_pos.weight` [1, audio_dim] (bidirectional, audio_only); `b_attn.*` (bidirectional,
/// audio_only; see BiAttentionBlockImpl); `a2i_attn.*` (visual_to_audio; see AttentionA2IImpl).
/// Parameters a type does not use are not created (the official module creates `audio_pos` for
/// every type): `official_only_prefixes()` lists them, for loaders' ignore lists.
/// Init (official): projections xavier-uniform with zero bias, LayerNorms (1, 0), layer scales
/// `layer_scale_init`, embeddings N(0, 1).
class BilateralFusionImpl : public torch::nn::Cloneable<BilateralFusionImpl> {
 public:
  explicit BilateralFusionImpl(BilateralFusionOptions options = {});
  void reset() override;

  /// visual [N, visual_dim, H, W], audio [N, 1, audio_dim] -> fused {visual, audio}.
  BilateralFusionOutput forward(const at::Tensor& visual, const at::Tensor& audio);

  void pretty_print(std::ostream& stream) const override;

  /// Key prefixes that the official `AVFuse` of this type holds but this module does not create
  /// (for LoadOptions::ignore_prefixes).
  std::vector<std::string> official_only_prefixes() const;

  BilateralFusionOptions options;
  torch::nn::Embedding audio_pos{nullptr};
  torch::nn::Embedding level_embed{nullptr};
  BiAttentionBlock b_attn{nullptr};
  AttentionA2I a2i_attn{nullptr};

 private:
  BilateralFusionOutput forward_bidirectional(const at::Tensor& x, const at::Tensor& audio,
                                              bool visual_output);
  at::Tensor forward_visual_to_audio(const at::Tensor& x, const at::Tensor& audio);
};
TORCH_MODULE(BilateralFusion);

}  // namespace combo::model
