#pragma once
/// AVSS (AVSBench-semantic) metrics: AVSBench `calc_color_miou_fscore` and the test-set reduction
/// (AVSBENCH_SPEC 3.3; COMBO_SPEC 11.2). Per-class IoU / F sums and presence counts accumulate
/// globally over frames; the reported figures are means over ALL classes (absent ones count 0).
#include <ATen/core/Tensor.h>

#include <cstdint>

namespace combo::metrics {

/// AVSS class count: 70 sounding categories + background (index 0).
constexpr int64_t kAvssNumClasses = 71;

/// What a semantic prediction tensor holds: class scores (softmax then argmax, as the official
/// code), probabilities (argmax directly) or class labels [F, H, W] (used as they are).
enum class SemanticInput { kLogits, kProbabilities, kLabels };

/// Per-class sums over frames, float32 [C] each, plus the per-frame official 4th return value
/// (mean of the frame's non-zero class IoUs) [F].
struct SemanticStats {
  at::Tensor ious_sum;
  at::Tensor fscores_sum;
  at::Tensor cls_count;
  at::Tensor frame_miou;
};

/// Predicted class per pixel, int64 [F, H, W]. pred: [F, C, H, W] (scores / probabilities) or
/// [F, H, W] (labels).
at::Tensor predicted_classes(const at::Tensor& pred, SemanticInput input);

/// AVSBench `calc_color_miou_fscore` on class labels. pred_labels, target: [F, H, W] integers;
/// target values outside [0, C) (the ignore label 255) are dropped from the label counts, but
/// the predictions at those pixels still count for the predicted class.
SemanticStats semantic_stats_from_labels(const at::Tensor& pred_labels, const at::Tensor& target,
                                         int64_t num_classes);

/// AVSBench `calc_color_miou_fscore(pred, target)`: pred [F, C, H, W] logits, target [F, H, W].
SemanticStats calc_color_miou_fscore(const at::Tensor& pred, const at::Tensor& target,
                                     SemanticInput input = SemanticInput::kLogits);

/// Final AVSS figures (float32 arithmetic, as AVSBench's AVSS test.py).
struct SemanticSummary {
  /// Mean over all C classes of Σiou / count (NaN -> 0).
  double miou = 0;
  /// Mean over all C classes of ΣF / count (NaN -> 0).
  double f_score = 0;
  /// The official `miou_noBg`: the same mean over the first C-1 classes, i.e. without the LAST
  /// class (70, `woman`), NOT without background.
  double miou_drop_last_class = 0;
  /// The official `F_score_noBg`, likewise without the last class.
  double f_score_drop_last_class = 0;
  /// Classes with cls_count > 0.
  int64_t num_classes_present = 0;
};

/// Reduces global sums to the reported figures. ious_sum, fscores_sum, cls_count: [C].
SemanticSummary summarize_semantic(const at::Tensor& ious_sum, const at::Tensor& fscores_sum,
                                   const at::Tensor& cls_count);

}  // namespace combo::metrics
