#pragma once
/// Mask losses on sampled points and their matrix forms used as matching costs
/// (Mask2Former `sigmoid_ce_loss`, `dice_loss`, `batch_sigmoid_ce_loss`, `batch_dice_loss`;
/// COMBO_SPEC 7.4-7.5). They work in the inputs' dtype; callers cast to float32.
#include <ATen/core/Tensor.h>

namespace combo::loss {

/// Σ_m mean_p BCEWithLogits(logits[m, p], targets[m, p]) / num_masks, a scalar.
/// logits, targets: [M, P] (targets may be fractional).
at::Tensor sigmoid_ce_loss(const at::Tensor& logits, const at::Tensor& targets, double num_masks);

/// Σ_m [1 - (2 Σ_p σ(x)t + 1) / (Σ_p σ(x) + Σ_p t + 1)] / num_masks, a scalar. [M, P] inputs.
at::Tensor dice_loss(const at::Tensor& logits, const at::Tensor& targets, double num_masks);

/// Pairwise BCE cost: out[q, k] = mean_p BCE(logits[q, p], targets[k, p]), computed as
/// (pos @ targets^T + neg @ (1 - targets)^T) / P with pos = BCE(x, 1), neg = BCE(x, 0), which is
/// evaluated as (rowsum(pos) + logits @ (1 - targets)^T) / P since neg = pos + x.
/// logits [Q, P], targets [K, P] -> [Q, K].
at::Tensor batch_sigmoid_ce_cost(const at::Tensor& logits, const at::Tensor& targets);

/// Pairwise dice cost: out[q, k] = 1 - (2 σ(x_q)·t_k + 1) / (Σσ(x_q) + Σt_k + 1).
/// logits [Q, P], targets [K, P] -> [Q, K].
at::Tensor batch_dice_cost(const at::Tensor& logits, const at::Tensor& targets);

}  // namespace combo::loss
