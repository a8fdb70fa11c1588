#include "combo/loss/mask_losses.h"

#include <torch/torch.h>

#include "combo/core/check.h"

namespace combo::loss {
namespace {

void check_pointwise(const char* what, const at::Tensor& logits, const at::Tensor& targets) {
  COMBO_CHECK(logits.dim() == 2, what, ": expected logits [M, P], got shape ", logits.sizes());
  COMBO_CHECK(logits.sizes() == targets.sizes(), what, ": logits ", logits.sizes(), " and targets ",
              targets.sizes(), " differ in shape");
}

void check_pairwise(const char* what, const at::Tensor& logits, const at::Tensor& targets) {
  COMBO_CHECK(logits.dim() == 2 && targets.dim() == 2, what,
              ": expected logits [Q, P] and targets [K, P], got ", logits.sizes(), " and ",
              targets.sizes());
  COMBO_CHECK(logits.size(1) == targets.size(1), what, ": logits have ", logits.size(1),
              " points, targets ", targets.size(1));
}

}  // namespace

at::Tensor sigmoid_ce_loss(const at::Tensor& logits, const at::Tensor& targets, double num_masks) {
  check_pointwise("sigmoid_ce_loss", logits, targets);
  auto loss = at::binary_cross_entropy_with_logits(logits, targets.to(logits.scalar_type()), {}, {},
                                                   at::Reduction::None);
  return loss.mean(1).sum() / num_masks;
}

at::Tensor dice_loss(const at::Tensor& logits, const at::Tensor& targets, double num_masks) {
  check_pointwise("dice_loss", logits, targets);
  auto p = logits.sigmoid();
  auto t = targets.to(logits.scalar_type());
  auto numerator = 2 * (p * t).sum(-1);
  auto denominator = p.sum(-1) + t.sum(-1);
  auto loss = 1 - (numerator + 1) / (denominator + 1);
  return loss.sum() / num_masks;
}

at::Tensor batch_sigmoid_ce_cost(const at::Tensor& logits, const at::Tensor& targets) {
  check_pairwise("batch_sigmoid_ce_cost", logits, targets);
  auto t = targets.to(logits.scalar_type());
  const int64_t points = logits.size(1);
  // BCE(x, 1) = softplus(-x) and BCE(x, 0) = softplus(x) = softplus(-x) + x, so the official
  // pos @ t^T + neg @ (1 - t)^T equals rowsum(pos) + x @ (1 - t)^T: one elementwise pass and
  // one product instead of two BCE evaluations and two products.
  auto pos = at::softplus(-logits);
  auto loss = pos.sum(1, /*keepdim=*/true) + at::matmul(logits, (1 - t).t());
  return loss / static_cast<double>(points);
}

at::Tensor batch_dice_cost(const at::Tensor& logits, const at::Tensor& targets) {
  check_pairwise("batch_dice_cost", logits, targets);
  auto p = logits.sigmoid();
  auto t = targets.to(logits.scalar_type());
  auto numerator = 2 * at::matmul(p, t.t());
  auto denominator = p.sum(-1).unsqueeze(1) + t.sum(-1).unsqueeze(0);
  return 1 - (numerator + 1) / (denominator + 1);
}

}  // namespace combo::loss
