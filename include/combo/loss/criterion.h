#pragma once
/// The training objective of COMBO: Mask2Former's set criterion with deep supervision plus the
/// adaptive inter-frame consistency loss (COMBO_SPEC 7; official `SetCriterion` in
/// `models/modeling/criterion.py` / `criterion_ss.py`).
///
/// Parity with the official run (fixture `combo_full_pvt_b0.pt`, key `train/*`), once the full
/// model gives ModelOutputs for `inputs/*` in train mode:
///   - targets: make_targets(gt labels [N, H, W] with frame 0 of each video = gt_sem_seg[v][0],
///     has_gt, {T} * B, DatasetKind::kS4) (the trainer's path; the criterion pads them to the
///     padded image size of the outputs, as the official `prepare_targets`);
///   - points: ReplayPointSource(train/matcher_coords (20 x [1, P, 2]),
///     train/mask_loss_coords (10 x [M, P, 2])); the criterion consumes point sets in the official
///     order: for the final prediction one matcher set per supervised frame (frame order), then
///     one loss_masks set; then the same for aux predictions 0..8;
///   - SetCriterionOptions(num_classes).num_points(info/train_num_points), rest default;
///   - compare forward's dict with train/losses (rel 1e-4) and `matches_out` with
///     train/matcher_indices (10 x per-frame [2, K]: row 0 queries, row 1 targets).
/// tests/loss/test_criterion.cpp (CriterionParity) already checks that the recorded point sets fit
/// this consumption order.
#include <ATen/core/Tensor.h>
#include <torch/arg.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "combo/core/state_dict.h"
#include "combo/loss/consistency.h"
#include "combo/loss/matcher.h"
#include "combo/loss/point_sample.h"

namespace combo::loss {

/// What the decoder returns in training (COMBO_SPEC 6.3 step 7). N frames, Q queries.
struct ModelOutputs {
  /// [N, Q, C+1] class logits of the final prediction (last entry: no-object).
  at::Tensor pred_logits;
  /// [N, Q, h, w] mask logits of the final prediction (56 x 56 at 224 input).
  at::Tensor pred_masks;
  /// The earlier predictions (logits [N, Q, C+1], masks [N, Q, h, w]); 9 in COMBO, index 0 =
  /// prediction from the learnable queries.
  std::vector<std::pair<at::Tensor, at::Tensor>> aux;
  /// Intermediate mask logits for the consistency loss, [N, Q, h*w] each (9 in COMBO).
  std::vector<at::Tensor> middles;
  /// The canvas every mask prediction covers: the size of the normalised images after the
  /// padding to size_divisibility (official `images.tensor.shape[-2:]`, ComboOutputs
  /// padded_height/width). Required: the criterion zero-pads every target mask bottom/right to
  /// it before matching (official `prepare_targets`), so that a normalised point refers to the
  /// same image pixel in predictions and targets.
  int64_t image_height = 0;
  int64_t image_width = 0;
};

/// Official Mask2Former `prepare_targets`: the masks [K, H, W] zero-padded bottom/right to
/// [K, height, width] (float32 on the masks' device; returned as they are, converted to float,
/// when already that size). Throws when a mask is larger than the canvas.
at::Tensor pad_target_masks(const at::Tensor& masks, int64_t height, int64_t width);

/// Which training frames carry a ground truth (COMBO_SPEC 7.3).
enum class DatasetKind {
  kS4,    ///< frame 0 of each video (training split)
  kMS3,   ///< every frame
  kAVSS,  ///< frames whose gt_temporal_mask_flag is set
};

/// "s4" | "ms3" | "avss" (the `data.dataset` config values); anything else throws.
DatasetKind parse_dataset_kind(const std::string& name);

/// Rows of the flattened batch (videos in order, frames in order) that are supervised, ascending,
/// computed from this batch: kS4 the first row of each video, kMS3 every row, kAVSS the rows
/// where `gt_flags` (the videos' per-frame flags concatenated, [N], any numeric dtype) is
/// equal to 1 (as the official `gt_temporal_mask_flag == 1`). `gt_flags` is required for kAVSS and
/// ignored otherwise.
std::vector<int64_t> supervised_rows(DatasetKind kind, const std::vector<int64_t>& frames_per_video,
                                     const at::Tensor& gt_flags = {});

/// How the frames of a batch are organised.
struct BatchLayout {
  /// Frames of each video; their sum is N.
  std::vector<int64_t> frames_per_video;
  /// Rows of the N frames that have a FrameTarget, ascending (see supervised_rows).
  std::vector<int64_t> supervised_rows;
};

/// Targets of a batch and how its frames are organised (the trainer's input to the criterion).
struct BatchTargets {
  std::vector<FrameTarget> targets;  ///< targets[k] belongs to layout.supervised_rows[k]
  BatchLayout layout;
};

/// Training targets from the mapper's label maps (COMBO_SPEC 7.2-7.3): `labels` int64 [N, H, W]
/// (255 = ignore: padding, and frames without ground truth), `has_gt` bool [N], the frames of
/// each video. Supervised rows: kS4 with `train` the first frame of each video (the official S4
/// training split has one label file per video); otherwise every row with has_gt. Each supervised
/// frame gets one target per distinct label value (255 excluded, background included), masks
/// bool [K, H, W] at the label maps' size on their device; the criterion pads them to the
/// predictions' canvas. Throws when a supervised row has no ground truth.
BatchTargets make_targets(const at::Tensor& labels, const at::Tensor& has_gt,
                          const std::vector<int64_t>& frames_per_video, DatasetKind kind,
                          bool train = true);

struct SetCriterionOptions {
  /// Real classes: 2 for S4/MS3, 71 for AVSS (the logits have num_classes + 1 columns).
  /* implicit */ SetCriterionOptions(int64_t num_classes) : num_classes_(num_classes) {}
  TORCH_ARG(int64_t, num_classes);
  /// Loss weights; the matcher uses the same three as its costs (as every COMBO config).
  TORCH_ARG(double, class_weight) = 2.0;
  TORCH_ARG(double, mask_weight) = 5.0;
  TORCH_ARG(double, dice_weight) = 5.0;
  /// Weight of the no-object class in the cross-entropy (eos_coef).
  TORCH_ARG(double, no_object_weight) = 0.1;
  /// Also compute the losses of every aux prediction (suffix _i).
  TORCH_ARG(bool, deep_supervision) = true;
  /// Points for matching and for the mask losses (TRAIN_NUM_POINTS).
  TORCH_ARG(int64_t, num_points) = 12544;
  TORCH_ARG(double, oversample_ratio) = 3.0;
  TORCH_ARG(double, importance_sample_ratio) = 0.75;
  TORCH_ARG(ConsistencyOptions, consistency) = {};
};

/// Reduces the local target-mask count across processes and returns the average
/// (all_reduce(sum) / world_size in the official code). Identity when not distributed.
using NumMasksReducer = std::function<double(double)>;

/// Mask2Former's SetCriterion for COMBO. Holds the buffer `empty_weight` [C+1] = (1, ..., 1,
/// no_object_weight), registered under that name (official key `criterion.empty_weight` when
/// the full model registers this module as `criterion`).
class SetCriterionImpl : public torch::nn::Cloneable<SetCriterionImpl> {
 public:
  explicit SetCriterionImpl(SetCriterionOptions options);
  void reset() override;
  void pretty_print(std::ostream& stream) const override;

  /// The loss dict of one batch, every entry a float32 scalar ALREADY MULTIPLIED by its weight,
  /// as the official MaskFormer.forward returns it (the trainer sums them):
  /// `loss_ce`, `loss_mask`, `loss_dice` for the final prediction; `loss_ce_i`, `loss_mask_i`,
  /// `loss_dice_i` for aux prediction i (deep supervision); `loss_cosine_i` for middles[i]
  /// (unless the consistency type is none).
  ///
  /// `targets[k]` is the ground truth of row `layout.supervised_rows[k]`, masks [K, H, W] with
  /// H <= outputs.image_height and W <= outputs.image_width; every mask is zero-padded to that
  /// canvas once (pad_target_masks, official `prepare_targets`) and the matcher and the mask
  /// losses sample the padded masks. CE, BCE and dice use
  /// the supervised rows only and are normalised by num_masks = max(1, reducer(Σ K)); the
  /// consistency loss uses all N rows. `points` supplies the random point sets (a
  /// RandomPointSource on the default generator when null). `matches_out`, when given, receives
  /// the matching of each prediction (final first, then aux 0..), one MatchIndices per
  /// supervised frame. Predictions are cast to float32 and autocast is off inside; everything
  /// stays on the predictions' device (the assignment itself runs on the CPU).
  TensorDict forward(const ModelOutputs& outputs, const std::vector<FrameTarget>& targets,
                     const BatchLayout& layout, PointSource* points = nullptr,
                     std::vector<std::vector<MatchIndices>>* matches_out = nullptr);

  /// Unweighted weighted-mean cross-entropy over all S*Q queries of pred_logits [S, Q, C+1];
  /// matched queries get their target's label, the others the no-object class C.
  at::Tensor loss_labels(const at::Tensor& pred_logits, const std::vector<FrameTarget>& targets,
                         const std::vector<MatchIndices>& matches) const;

  /// Unweighted {BCE, dice} of the matched masks of pred_masks [S, Q, h, w] against the
  /// float target masks [K_s, H, W] (zero-padded to the largest H and W when frames differ, as
  /// the official `nested_tensor_from_tensor_list`; forward hands it masks already padded to the
  /// image canvas, where this padding does nothing), on the
  /// point set `points` returns for the matched logits; both divided by num_masks.
  std::pair<at::Tensor, at::Tensor> loss_masks(const at::Tensor& pred_masks,
                                               const std::vector<at::Tensor>& target_masks,
                                               const std::vector<MatchIndices>& matches,
                                               double num_masks, PointSource& points) const;

  /// The weight of every key forward returns for outputs with `num_aux` aux predictions and as
  /// many middles (9 in COMBO): 39 keys with the default options.
  std::map<std::string, double> weight_dict(int64_t num_aux = 9) const;

  /// Installs the cross-process reduction of the target-mask count (nullptr = identity).
  void set_num_masks_reducer(NumMasksReducer reducer) { reducer_ = std::move(reducer); }

  SetCriterionOptions options;
  /// [C+1] class weights of the cross-entropy.
  at::Tensor empty_weight;

 private:
  HungarianMatcher matcher_;
  NumMasksReducer reducer_;
};

TORCH_MODULE(SetCriterion);

}  // namespace combo::loss
