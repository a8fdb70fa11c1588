#pragma once
/// Hungarian matching of predicted masks to ground-truth masks, one frame at a time
/// (Mask2Former `HungarianMatcher`, COMBO_SPEC 7.4).
#include <ATen/core/Tensor.h>
#include <torch/arg.h>

#include <cstdint>
#include <vector>

#include "combo/loss/point_sample.h"

namespace combo::loss {

/// The ground truth of one supervised frame: one entry per distinct label value of the frame
/// (background included, COMBO_SPEC 7.2).
struct FrameTarget {
  /// int64 [K] class ids in [0, num_classes).
  at::Tensor labels;
  /// [K, H, W] binary masks at the input resolution, float or bool.
  at::Tensor masks;
};

/// The matching of one frame: `queries[k]` is matched to target `targets[k]`; int64 [M] CPU
/// tensors, M = min(Q, K), queries ascending (scipy's order).
struct MatchIndices {
  at::Tensor queries;
  at::Tensor targets;
};

struct HungarianMatcherOptions {
  TORCH_ARG(double, cost_class) = 2.0;
  TORCH_ARG(double, cost_mask) = 5.0;
  TORCH_ARG(double, cost_dice) = 5.0;
  /// Uniform points shared by every query and target of a frame (TRAIN_NUM_POINTS = 112^2).
  TORCH_ARG(int64_t, num_points) = 12544;
};

/// Per frame: C = cost_mask * BCE + cost_class * (-softmax(logits)[:, labels]) + cost_dice * dice,
/// the mask costs on one uniform point set (point_sample of the logits and of the full-resolution
/// targets), all in float32 without gradient; then an exact assignment on the CPU.
class HungarianMatcher {
 public:
  explicit HungarianMatcher(HungarianMatcherOptions options = {});

  /// The [Q, K] cost matrix of one frame (float32, logits' device) for the given points.
  /// logits [Q, C+1], mask_logits [Q, h, w], coords [1, P, 2].
  at::Tensor cost_matrix(const at::Tensor& logits, const at::Tensor& mask_logits,
                         const FrameTarget& target, const at::Tensor& coords) const;

  /// Matches each frame n of pred_logits [S, Q, C+1] / pred_masks [S, Q, h, w] to targets[n]
  /// (targets.size() == S). Asks `points` for one point set per frame, in frame order, also for
  /// frames with K = 0 (which get an empty matching), as the official code does.
  std::vector<MatchIndices> operator()(const at::Tensor& pred_logits, const at::Tensor& pred_masks,
                                       const std::vector<FrameTarget>& targets,
                                       PointSource& points) const;

  const HungarianMatcherOptions& options() const { return options_; }

 private:
  HungarianMatcherOptions options_;
};

}  // namespace combo::loss
