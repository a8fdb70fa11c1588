#pragma once
/// Multi-head attention with the parameter layout and semantics of PyTorch's
/// `nn.MultiheadAttention` (sequence-first, packed `in_proj_weight`, bias on, no bias_k/bias_v, no
/// zero-attention), as used by the Mask2Former/COMBO transformer decoder (COMBO_SPEC 6, 14.3).
#include <ATen/core/Tensor.h>
#include <torch/arg.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <cstdint>

namespace combo::nn {

struct MultiheadAttentionOptions {
  MultiheadAttentionOptions(int64_t embed_dim, int64_t num_heads)
      : embed_dim_(embed_dim), num_heads_(num_heads) {}
  TORCH_ARG(int64_t, embed_dim);
  TORCH_ARG(int64_t, num_heads);
  /// Dropout on the attention weights, applied in training only.
  TORCH_ARG(double, dropout) = 0.0;
};

/// Parameters (state-dict keys as in PyTorch): `in_proj_weight` [3E, E] (rows q | k | v),
/// `in_proj_bias` [3E], `out_proj.weight` [E, E], `out_proj.bias` [E]. Initialised as PyTorch does:
/// xavier-uniform `in_proj_weight`, zero biases, default Linear init of `out_proj.weight`.
class MultiheadAttentionImpl : public torch::nn::Cloneable<MultiheadAttentionImpl> {
 public:
  explicit MultiheadAttentionImpl(MultiheadAttentionOptions options);

  void reset() override;

  /// query [L, N, E], key [S, N, E], value [S, N, E] (sequence-first). `attn_mask` (optional):
  /// bool (true = the key is not attended to) or float (added to the scores), shaped [L, S],
  /// [N*num_heads, L, S] (PyTorch's layout, batch index n*num_heads + h) or [N, num_heads or 1,
  /// L, S]. A row that masks every key gives NaN, as in PyTorch; callers clear such rows first.
  /// The scores are (q / sqrt(head_dim)) . k, softmax over S. Returns [L, N, E].
  at::Tensor forward(const at::Tensor& query, const at::Tensor& key, const at::Tensor& value,
                     const at::Tensor& attn_mask = {});

  MultiheadAttentionOptions options;
  at::Tensor in_proj_weight;
  at::Tensor in_proj_bias;
  torch::nn::Linear out_proj{nullptr};
};
TORCH_MODULE(MultiheadAttention);

}  // namespace combo::nn
