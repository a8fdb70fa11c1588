#pragma once
/// S4 / MS3 binary metrics of AVSBench (AVSBENCH_SPEC 3.1-3.2, 3.4; COMBO_SPEC 11.1): the mask IoU
/// ("J") with the empty-ground-truth rule and the F-measure over 255 float32 thresholds with
/// beta^2 = 0.3, both reproduced to the official float32 operation order.
#include <ATen/core/Tensor.h>

#include <array>
#include <cstdint>

namespace combo::metrics {

/// What a binary prediction tensor holds: logits (the AVSBench functions apply a sigmoid) or
/// foreground probabilities (COMBO's copies, fed softmax(sem_seg)[:, 1]).
enum class BinaryInput { kLogits, kProbabilities };

/// Number of F-measure thresholds (`pr_num`).
constexpr int64_t kNumFmeasureThresholds = 255;

/// The bits of `torch.linspace(0, 1 - 1e-10, 255)` in float32 (PyTorch 1.13 CPU), AVSBENCH_SPEC
/// Appendix A: float32(k/254) except 26 entries one ulp lower.
extern const std::array<uint32_t, kNumFmeasureThresholds> kFmeasureThresholdBits;

/// The 255 thresholds as a float32 CPU tensor [255].
at::Tensor fmeasure_thresholds();

/// Foreground probabilities in float32: sigmoid(pred) for logits, pred itself otherwise.
/// pred: [N, H, W] -> [N, H, W] float32.
at::Tensor foreground_probabilities(const at::Tensor& pred, BinaryInput input);

/// Per-frame IoU of (prob > 0.5) against target in float32 [N]; a frame with empty target scores
/// #(pixels predicted and labelled background) / (H*W). probs, target: [N, H, W], target in {0,1}.
at::Tensor frame_mask_iou(const at::Tensor& probs, const at::Tensor& target, double eps = 1e-7);

/// AVSBench `mask_iou`: Σ_i iou_i / N as a float32 scalar tensor. pred, target: [N, H, W].
at::Tensor mask_iou(const at::Tensor& pred, const at::Tensor& target,
                    BinaryInput input = BinaryInput::kLogits, double eps = 1e-7);

/// Per-frame F-measure curves [N, 255] float32 (F_k = 1.3 P R / (0.3 P + R), NaN -> 0) and which
/// frames have a non-empty target [N] bool (rows of empty frames are zero and must be skipped).
struct FrameFmeasure {
  at::Tensor curves;
  at::Tensor nonempty;
};

/// The per-frame curves of `Eval_Fmeasure`. probs, target: [N, H, W].
FrameFmeasure frame_fmeasure_curves(const at::Tensor& probs, const at::Tensor& target);

/// Max over thresholds of the curve averaged (float32, in row order) over the rows with
/// nonempty = true; 0 when there is none. curves [N, 255], nonempty [N].
double fmeasure_from_curves(const at::Tensor& curves, const at::Tensor& nonempty);

/// AVSBench `Eval_Fmeasure(pred, gt, pr_num=255)` over one batch of frames. pred, gt: [N, H, W].
double eval_fmeasure(const at::Tensor& pred, const at::Tensor& gt,
                     BinaryInput input = BinaryInput::kLogits);

}  // namespace combo::metrics
