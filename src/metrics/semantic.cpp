#include "combo/metrics/semantic.h"

#include <torch/torch.h>

#include "combo/core/check.h"

namespace combo::metrics {

at::Tensor predicted_classes(const at::Tensor& pred, SemanticInput input) {
  if (input == SemanticInput::kLabels) {
    COMBO_CHECK(pred.dim() == 3, "predicted_classes: expected labels [F, H, W], got shape ",
                pred.sizes());
    return pred.to(torch::kInt64);
  }
  COMBO_CHECK(pred.dim() == 4, "predicted_classes: expected scores [F, C, H, W], got shape ",
              pred.sizes());
  auto x = pred.to(torch::kFloat32);
  // Softmax before argmax as the official code: rounding can turn distinct logits into ties,
  // which then resolve to the lowest class index.
  if (input == SemanticInput::kLogits) x = torch::softmax(x, 1);
  return torch::argmax(x, 1);
}

SemanticStats semantic_stats_from_labels(const at::Tensor& pred_labels, const at::Tensor& target,
                                         int64_t num_classes) {
  COMBO_CHECK(pred_labels.dim() == 3, "calc_color_miou_fscore: expected labels [F, H, W], got ",
              pred_labels.sizes());
  COMBO_CHECK(pred_labels.sizes() == target.sizes(), "calc_color_miou_fscore: prediction shape ",
              pred_labels.sizes(), " differs from target shape ", target.sizes());
  COMBO_CHECK(num_classes > 0, "calc_color_miou_fscore: expected num_classes > 0, got ",
              num_classes);
  const int64_t frames = pred_labels.size(0);
  auto pred = pred_labels.to(torch::kInt64).cpu().reshape({frames, -1});
  auto lab = target.to(torch::kInt64).cpu().reshape({frames, -1});
  const int64_t max_pred = frames > 0 ? pred.max().item<int64_t>() : 0;
  const int64_t min_pred = frames > 0 ? pred.min().item<int64_t>() : 0;
  COMBO_CHECK(frames == 0 || (min_pred >= 0 && max_pred < num_classes),
              "calc_color_miou_fscore: predicted classes must lie in [0, ", num_classes,
              "), got range [", min_pred, ", ", max_pred, "]");

  auto opts = torch::TensorOptions().dtype(torch::kFloat32);
  SemanticStats stats{torch::zeros({num_classes}, opts), torch::zeros({num_classes}, opts),
                      torch::zeros({num_classes}, opts), torch::zeros({frames}, opts)};
  for (int64_t i = 0; i < frames; ++i) {
    auto p = pred[i];
    auto t = lab[i];
    auto valid = (t >= 0) & (t < num_classes);
    auto area_pred = torch::bincount(p, {}, num_classes).to(torch::kFloat32);
    auto area_lab = torch::bincount(t.masked_select(valid), {}, num_classes).to(torch::kFloat32);
    auto area_inter = torch::bincount(p.masked_select(p == t), {}, num_classes).to(torch::kFloat32);
    auto area_union = area_pred + area_lab - area_inter;
    auto iou = area_inter / (2.220446049250313e-16 + area_union);
    stats.ious_sum += iou;
    stats.cls_count += (area_union > 0).to(torch::kFloat32);
    auto precision = area_inter / area_pred;
    auto recall = area_inter / area_lab;
    auto f = 1.3 * precision * recall / (0.3 * precision + recall);
    f.masked_fill_(torch::isnan(f), 0.0);
    stats.fscores_sum += f;
    stats.frame_miou[i] = iou.sum() / (iou != 0).sum();
  }
  return stats;
}

SemanticStats calc_color_miou_fscore(const at::Tensor& pred, const at::Tensor& target,
                                     SemanticInput input) {
  COMBO_CHECK(input == SemanticInput::kLabels || pred.dim() == 4,
              "calc_color_miou_fscore: expected scores [F, C, H, W], got shape ", pred.sizes());
  const int64_t num_classes = input == SemanticInput::kLabels ? kAvssNumClasses : pred.size(1);
  return semantic_stats_from_labels(predicted_classes(pred, input), target, num_classes);
}

SemanticSummary summarize_semantic(const at::Tensor& ious_sum, const at::Tensor& fscores_sum,
                                   const at::Tensor& cls_count) {
  COMBO_CHECK(ious_sum.dim() == 1 && ious_sum.size(0) >= 2 &&
                  ious_sum.sizes() == fscores_sum.sizes() && ious_sum.sizes() == cls_count.sizes(),
              "summarize_semantic: expected three [C] tensors (C >= 2), got ", ious_sum.sizes(),
              ", ", fscores_sum.sizes(), ", ", cls_count.sizes());
  auto count = cls_count.to(torch::kFloat32);
  auto miou_c = torch::nan_to_num(ious_sum.to(torch::kFloat32) / count, 0.0);
  auto f_c = torch::nan_to_num(fscores_sum.to(torch::kFloat32) / count, 0.0);
  const int64_t c = miou_c.size(0);
  SemanticSummary s;
  s.miou = miou_c.mean().item<float>();
  s.f_score = f_c.mean().item<float>();
  s.miou_drop_last_class = miou_c.slice(0, 0, c - 1).mean().item<float>();
  s.f_score_drop_last_class = f_c.slice(0, 0, c - 1).mean().item<float>();
  s.num_classes_present = (count > 0).sum().item<int64_t>();
  return s;
}

}  // namespace combo::metrics
