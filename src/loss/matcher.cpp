#include "combo/loss/matcher.h"

#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/torch.h>

#include "combo/core/check.h"
#include "combo/loss/hungarian.h"
#include "combo/loss/mask_losses.h"

namespace combo::loss {

HungarianMatcher::HungarianMatcher(HungarianMatcherOptions options) : options_(options) {
  COMBO_CHECK(options_.num_points() > 0, "HungarianMatcher: num_points must be positive, got ",
              options_.num_points());
}

at::Tensor HungarianMatcher::cost_matrix(const at::Tensor& logits, const at::Tensor& mask_logits,
                                         const FrameTarget& target,
                                         const at::Tensor& coords) const {
  at::NoGradGuard no_grad;
  // Mask costs in float32 as the official autocast(enabled=False) block.
  c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
  COMBO_CHECK(logits.dim() == 2, "HungarianMatcher: expected logits [Q, C+1], got ",
              logits.sizes());
  COMBO_CHECK(mask_logits.dim() == 3 && mask_logits.size(0) == logits.size(0),
              "HungarianMatcher: expected mask logits [", logits.size(0), ", h, w], got ",
              mask_logits.sizes());
  COMBO_CHECK(target.labels.dim() == 1 && target.masks.dim() == 3 &&
                  target.masks.size(0) == target.labels.size(0),
              "HungarianMatcher: expected labels [K] and masks [K, H, W], got ",
              target.labels.sizes(), " and ", target.masks.sizes());
  const int64_t num_queries = logits.size(0);
  const int64_t num_targets = target.labels.size(0);
  const auto f32 = at::TensorOptions().dtype(at::kFloat).device(logits.device());
  if (num_targets == 0) return at::zeros({num_queries, 0}, f32);
  auto labels = target.labels.to(logits.device(), at::kLong);
  const int64_t num_classes = logits.size(1);
  const int64_t max_label = labels.max().item<int64_t>();
  const int64_t min_label = labels.min().item<int64_t>();
  COMBO_CHECK(min_label >= 0 && max_label < num_classes,
              "HungarianMatcher: target labels must lie ", "in [0, ", num_classes, "), got [",
              min_label, ", ", max_label, "]");

  auto prob = logits.to(at::kFloat).softmax(-1);
  auto cost_class = -prob.index_select(1, labels);  // [Q, K]
  // Every query and target share the frame's point set: one grid_sample over the channels.
  auto c = coords.to(logits.device(), at::kFloat);
  auto out = point_sample(mask_logits.to(at::kFloat).unsqueeze(0), c).squeeze(0);  // [Q, P]
  auto tgt = point_sample(target.masks.to(logits.device(), at::kFloat).unsqueeze(0), c)
                 .squeeze(0);  // [K, P]
  auto cost_mask = batch_sigmoid_ce_cost(out, tgt);
  auto cost_dice = batch_dice_cost(out, tgt);
  return options_.cost_mask() * cost_mask + options_.cost_class() * cost_class +
         options_.cost_dice() * cost_dice;
}

std::vector<MatchIndices> HungarianMatcher::operator()(const at::Tensor& pred_logits,
                                                       const at::Tensor& pred_masks,
                                                       const std::vector<FrameTarget>& targets,
                                                       PointSource& points) const {
  at::NoGradGuard no_grad;
  COMBO_CHECK(pred_logits.dim() == 3, "HungarianMatcher: expected pred_logits [S, Q, C+1], got ",
              pred_logits.sizes());
  COMBO_CHECK(pred_masks.dim() == 4 && pred_masks.size(0) == pred_logits.size(0) &&
                  pred_masks.size(1) == pred_logits.size(1),
              "HungarianMatcher: expected pred_masks [", pred_logits.size(0), ", ",
              pred_logits.size(1), ", h, w], got ", pred_masks.sizes());
  COMBO_CHECK(static_cast<int64_t>(targets.size()) == pred_logits.size(0),
              "HungarianMatcher: ", pred_logits.size(0), " predicted frames but ", targets.size(),
              " targets");
  std::vector<MatchIndices> out;
  out.reserve(targets.size());
  const auto i64 = at::TensorOptions().dtype(at::kLong);
  for (size_t n = 0; n < targets.size(); ++n) {
    // The point set is drawn even when the frame has no target, to keep the random stream.
    auto coords = points.matcher_points(options_.num_points(), pred_masks.device());
    auto cost = cost_matrix(pred_logits[n], pred_masks[n], targets[n], coords);
    Assignment a;
    try {
      a = linear_sum_assignment(cost);
    } catch (const combo::Error& e) {
      COMBO_FAIL("HungarianMatcher: frame ", n, ": ", e.what());
    }
    MatchIndices m;
    m.queries = at::tensor(a.rows, i64);
    m.targets = at::tensor(a.cols, i64);
    out.push_back(std::move(m));
  }
  return out;
}

}  // namespace combo::loss
