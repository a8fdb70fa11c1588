#pragma once
/// COMBO's masked-attention transformer decoder (official `MultiScaleMaskedTransformerDecoder`,
/// `models/modeling/transformer_decoder/transformer_decoder.py`, COMBO_SPEC 6): Mask2Former's
/// decoder with audio added to the learnable queries.
#include <ATen/core/Tensor.h>
#include <torch/arg.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <string>
#include <vector>

#include "combo/nn/attention.h"

namespace combo::model {

/// Which audio row each query receives (COMBO_SPEC 6.3 step 3).
enum class AudioQueryLayout {
  /// The official `A.repeat(1, Q, 1).reshape(Q, N, C)`: query q of frame n gets the audio of
  /// frame floor((q*N + n) / Q), which mixes frames (and videos in a batch). The released
  /// checkpoints were trained with it.
  kOfficial,
  /// Each frame's queries get that frame's own audio (the evident intent).
  kPerFrame,
};

/// How the audio enters the queries (`QUERIES_FUSE_TYPE`).
enum class QueriesFuseType {
  kAdd,     ///< "add" (every config): queries = query_feat + audio.
  kConcat,  ///< "dim": queries = concat(query_feat [hidden - audio_out_dim], audio).
  kAll,     ///< "all": queries = audio (no `query_feat`).
  kNone,    ///< "none": the audio is not used.
};

/// "official" / "per_frame".
AudioQueryLayout audio_query_layout_from_string(const std::string& name);
std::string to_string(AudioQueryLayout layout);
/// "add", "dim", "all", "none".
QueriesFuseType queries_fuse_type_from_string(const std::string& name);
std::string to_string(QueriesFuseType type);

/// Maps audio [N, 1, A] to the per-query audio [Q, N, A] (sequence-first) with `layout`.
at::Tensor audio_for_queries(const at::Tensor& audio, int64_t num_queries, AudioQueryLayout layout);

struct TransformerDecoderOptions {
  /// num_classes: real classes C (2 for S4/MS3, 71 for AVSS); `class_embed` has C + 1 outputs.
  explicit TransformerDecoderOptions(int64_t num_classes) : num_classes_(num_classes) {}
  TORCH_ARG(int64_t, num_classes);
  /// Channels of the multi-scale maps; a 1x1 `input_proj.{i}` conv exists only when it differs
  /// from hidden_dim or enforce_input_proj is set.
  TORCH_ARG(int64_t, in_channels) = 256;
  TORCH_ARG(int64_t, hidden_dim) = 256;
  TORCH_ARG(int64_t, num_queries) = 100;
  TORCH_ARG(int64_t, nheads) = 8;
  TORCH_ARG(int64_t, dim_feedforward) = 2048;
  /// The config's DEC_LAYERS: the decoder has dec_layers - 1 layers (one prediction more than
  /// layers, the first from the learnable queries), i.e. 9 for the COMBO configs.
  TORCH_ARG(int64_t, dec_layers) = 10;
  TORCH_ARG(bool, pre_norm) = false;
  TORCH_ARG(int64_t, mask_dim) = 256;
  TORCH_ARG(int64_t, num_feature_levels) = 3;
  TORCH_ARG(bool, enforce_input_proj) = false;
  TORCH_ARG(QueriesFuseType, queries_fuse_type) = QueriesFuseType::kAdd;
  /// Width of the audio vector (`AUDIO_OUT_DIM`); must equal hidden_dim for "add" and "all".
  TORCH_ARG(int64_t, audio_out_dim) = 256;
  TORCH_ARG(AudioQueryLayout, audio_query_layout) = AudioQueryLayout::kOfficial;
  /// Compute and return the num_layers intermediate predictions (needed by the losses). Off (for
  /// inference), aux_outputs and middles_attn_mask stay empty and the intermediate predictions
  /// only produce their attention masks, from the mask embeddings times the mask features resized
  /// to the level (equal to resizing the full-resolution masks, as the official code does, up to
  /// float rounding; a mask bit can then differ only where a resized logit is ~0). pred_logits
  /// and pred_masks are computed as with aux_outputs on.
  TORCH_ARG(bool, aux_outputs) = true;
};

/// Post-norm (or pre-norm) cross-attention layer: `multihead_attn`, `norm`. No dropout (the
/// official decoder builds its layers with dropout 0).
class CrossAttentionLayerImpl : public torch::nn::Cloneable<CrossAttentionLayerImpl> {
 public:
  CrossAttentionLayerImpl(int64_t d_model, int64_t nhead, bool normalize_before);
  void reset() override;
  /// tgt [Q, N, E]; memory_key = memory + pos and memory [S, N, E]; query_pos [Q, N, E] or
  /// [Q, 1, E]; attn_mask bool [N, nhead or 1, Q, S] or undefined. Returns [Q, N, E].
  at::Tensor forward(const at::Tensor& tgt, const at::Tensor& memory_key, const at::Tensor& memory,
                     const at::Tensor& query_pos, const at::Tensor& attn_mask);

  int64_t d_model;
  int64_t nhead;
  bool normalize_before;
  combo::nn::MultiheadAttention multihead_attn{nullptr};
  torch::nn::LayerNorm norm{nullptr};
};
TORCH_MODULE(CrossAttentionLayer);

/// Self-attention layer of the queries: `self_attn`, `norm`.
class SelfAttentionLayerImpl : public torch::nn::Cloneable<SelfAttentionLayerImpl> {
 public:
  SelfAttentionLayerImpl(int64_t d_model, int64_t nhead, bool normalize_before);
  void reset() override;
  /// tgt [Q, N, E], query_pos [Q, N or 1, E]. Returns [Q, N, E].
  at::Tensor forward(const at::Tensor& tgt, const at::Tensor& query_pos);

  int64_t d_model;
  int64_t nhead;
  bool normalize_before;
  combo::nn::MultiheadAttention self_attn{nullptr};
  torch::nn::LayerNorm norm{nullptr};
};
TORCH_MODULE(SelfAttentionLayer);

/// FFN layer: `linear1` (d_model -> dim_feedforward), ReLU, `linear2`, `norm`.
class FFNLayerImpl : public torch::nn::Cloneable<FFNLayerImpl> {
 public:
  FFNLayerImpl(int64_t d_model, int64_t dim_feedforward, bool normalize_before);
  void reset() override;
  /// tgt [..., E] -> [..., E].
  at::Tensor forward(const at::Tensor& tgt);

  int64_t d_model;
  int64_t dim_feedforward;
  bool normalize_before;
  torch::nn::Linear linear1{nullptr};
  torch::nn::Linear linear2{nullptr};
  torch::nn::LayerNorm norm{nullptr};
};
TORCH_MODULE(FFNLayer);

/// Official `MLP` (`mask_embed`): `layers.{0..n-1}` Linear, ReLU between them.
class MaskEmbedMlpImpl : public torch::nn::Cloneable<MaskEmbedMlpImpl> {
 public:
  MaskEmbedMlpImpl(int64_t input_dim, int64_t hidden_dim, int64_t output_dim, int64_t num_layers);
  void reset() override;
  at::Tensor forward(const at::Tensor& x);

  int64_t input_dim;
  int64_t hidden_dim;
  int64_t output_dim;
  int64_t num_layers;
  torch::nn::ModuleList layers{nullptr};
};
TORCH_MODULE(MaskEmbedMlp);

/// One prediction of the decoder.
struct DecoderPrediction {
  at::Tensor pred_logits;  ///< [N, Q, C + 1]
  at::Tensor pred_masks;   ///< [N, Q, H, W] (the mask features' size)
};

struct TransformerDecoderOutput {
  at::Tensor pred_logits;  ///< [N, Q, C + 1], after the last layer
  at::Tensor pred_masks;   ///< [N, Q, H, W]
  /// num_layers predictions: index 0 from the learnable queries, index i after layer i - 1.
  /// Empty when TransformerDecoderOptions::aux_outputs is off.
  std::vector<DecoderPrediction> aux_outputs;
  /// num_layers mask-logit maps [N, Q, H*W] for the consistency loss: predictions 0..num_layers-1
  /// (the last prediction is excluded). Views of aux_outputs[i].pred_masks; empty when
  /// aux_outputs is off.
  std::vector<at::Tensor> middles_attn_mask;
  /// Only with TransformerDecoderHooks::return_attn_masks: the attention masks of predictions
  /// 0..num_layers in the official layout bool [N*nheads, Q, h_l*w_l] (true = blocked), before
  /// fully blocked rows are cleared; mask i is used by layer i (the last one by none).
  std::vector<at::Tensor> attn_masks;
};

/// Test hooks (not needed in normal use).
struct TransformerDecoderHooks {
  /// Fill TransformerDecoderOutput::attn_masks.
  bool return_attn_masks = false;
  /// When not empty: the masks used by layers 0..num_layers-1 instead of the computed ones, bool
  /// [N*nheads, Q, h_l*w_l] as in `attn_masks` (at least num_layers entries). Fully blocked rows
  /// are still cleared.
  std::vector<at::Tensor> attn_masks;
};

/// The decoder. Parameters (official keys): per layer i `transformer_self_attention_layers.{i}`,
/// `transformer_cross_attention_layers.{i}`, `transformer_ffn_layers.{i}`; `decoder_norm`,
/// `query_feat` [Q, hidden] (not for "all"; [Q, hidden - audio_out_dim] for "dim"),
/// `query_embed` [Q, hidden], `level_embed` [levels, hidden], `class_embed` [C + 1, hidden],
/// `mask_embed.layers.{0,1,2}`, and `input_proj.{i}` only when a projection is needed.
/// Init (official): attention and FFN weights xavier-uniform, attention biases 0, FFN biases and
/// the heads' Linear layers PyTorch defaults, embeddings N(0, 1), input projections
/// c2_xavier_fill.
class MultiScaleMaskedTransformerDecoderImpl
    : public torch::nn::Cloneable<MultiScaleMaskedTransformerDecoderImpl> {
 public:
  explicit MultiScaleMaskedTransformerDecoderImpl(TransformerDecoderOptions options);
  void reset() override;

  /// x: num_feature_levels maps [N, in_channels, h_l, w_l], low to high resolution (COMBO:
  /// 7x7, 14x14, 28x28); mask_features [N, mask_dim, H, W]; audio [N, 1, audio_out_dim] (unused
  /// and may be undefined with "none"). Layer i attends to level i mod num_feature_levels, with
  /// the mask of the previous prediction resized to that level (sigmoid < 0.5 = blocked).
  TransformerDecoderOutput forward(const std::vector<at::Tensor>& x,
                                   const at::Tensor& mask_features, const at::Tensor& audio,
                                   const TransformerDecoderHooks& hooks = {});

  void pretty_print(std::ostream& stream) const override;

  /// Number of decoder layers (dec_layers - 1).
  int64_t num_layers() const { return options.dec_layers() - 1; }

  TransformerDecoderOptions options;
  torch::nn::ModuleList transformer_self_attention_layers{nullptr};
  torch::nn::ModuleList transformer_cross_attention_layers{nullptr};
  torch::nn::ModuleList transformer_ffn_layers{nullptr};
  torch::nn::LayerNorm decoder_norm{nullptr};
  torch::nn::Embedding query_feat{nullptr};
  torch::nn::Embedding query_embed{nullptr};
  torch::nn::Embedding level_embed{nullptr};
  torch::nn::ModuleList input_proj{nullptr};
  torch::nn::Linear class_embed{nullptr};
  MaskEmbedMlp mask_embed{nullptr};

 private:
  struct Heads {
    at::Tensor logits;     // [N, Q, C + 1]
    at::Tensor masks;      // [N, Q, H, W]
    at::Tensor attn_mask;  // bool [N, 1, Q, h*w], undefined when not asked for
  };
  Heads forward_prediction_heads(const at::Tensor& output, const at::Tensor& mask_features,
                                 at::IntArrayRef attn_mask_size, bool want_attn_mask);
  at::Tensor initial_queries(const at::Tensor& audio, int64_t n);

  std::vector<std::shared_ptr<SelfAttentionLayerImpl>> self_layers_;
  std::vector<std::shared_ptr<CrossAttentionLayerImpl>> cross_layers_;
  std::vector<std::shared_ptr<FFNLayerImpl>> ffn_layers_;
};
TORCH_MODULE(MultiScaleMaskedTransformerDecoder);

}  // namespace combo::model
