#pragma once
/// Point sampling of mask logits and masks (PointRend / Mask2Former `point_sample` and
/// `get_uncertain_point_coords_with_randomness`, COMBO_SPEC 7.4-7.5), and the sources of the
/// random point sets the matcher and the mask losses consume.
#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>

#include <cstdint>
#include <memory>
#include <vector>

namespace combo::loss {

/// Bilinear samples of `input` [N, C, H, W] at `coords` [N, P, 2] (x, y in [0, 1], x along W):
/// grid_sample(input, 2*coords - 1, bilinear, zeros padding, align_corners=false).
/// Returns [N, C, P]. Differentiable in `input`. `coords` is cast to input's dtype.
at::Tensor point_sample(const at::Tensor& input, const at::Tensor& coords);

/// PointRend's importance sampling, exactly as detectron2 does it (no gradient):
/// draws `int(num_points * oversample_ratio)` uniform points per mask (one at::rand call of
/// [R, n, 2] on `generator`, the default generator if none), samples `logits` [R, 1, H, W] there,
/// keeps the `int(importance_sample_ratio * num_points)` points of highest uncertainty -|logit|
/// (top-k), then appends the rest as fresh uniform points (a second at::rand call of
/// [R, rest, 2], skipped when rest = 0). Points are float32 whatever logits' dtype (as
/// torch.rand draws them), so the random stream is the same. Returns float32 [R, num_points, 2]
/// on logits' device.
at::Tensor get_uncertain_point_coords_with_randomness(
    const at::Tensor& logits, int64_t num_points, double oversample_ratio,
    double importance_sample_ratio, c10::optional<at::Generator> generator = c10::nullopt);

/// Where the criterion gets its random point sets. The criterion asks, in this order, for each
/// prediction (final first, then aux 0..8): one `matcher_points` per supervised frame (also for
/// frames without targets), then one `mask_loss_points` for the matched masks of all frames.
class PointSource {
 public:
  virtual ~PointSource() = default;
  /// The uniform point set of one matcher call on one frame: float32 [1, num_points, 2] in
  /// [0, 1) on `device`.
  virtual at::Tensor matcher_points(int64_t num_points, const at::Device& device) = 0;
  /// The point set of one `loss_masks` call for the matched mask logits [M, 1, h, w]
  /// (detached): float32 [M, num_points, 2] on logits' device.
  virtual at::Tensor mask_loss_points(const at::Tensor& logits, int64_t num_points,
                                      double oversample_ratio, double importance_sample_ratio) = 0;
};

/// The training default: at::rand on `generator` (the default generator of the tensors' device
/// when none, so torch::manual_seed makes runs repeatable) and
/// get_uncertain_point_coords_with_randomness, consuming random numbers as the official code.
class RandomPointSource : public PointSource {
 public:
  explicit RandomPointSource(c10::optional<at::Generator> generator = c10::nullopt);
  at::Tensor matcher_points(int64_t num_points, const at::Device& device) override;
  at::Tensor mask_loss_points(const at::Tensor& logits, int64_t num_points, double oversample_ratio,
                              double importance_sample_ratio) override;

 private:
  c10::optional<at::Generator> generator_;
};

/// Replays recorded point sets in order, e.g. the fixture's `train/matcher_coords`
/// ([1, P, 2] each) and `train/mask_loss_coords` ([M, P, 2] each). A request beyond the end of
/// a list or with a different shape throws combo::Error naming the list and the call number.
class ReplayPointSource : public PointSource {
 public:
  ReplayPointSource(std::vector<at::Tensor> matcher_coords,
                    std::vector<at::Tensor> mask_loss_coords);
  at::Tensor matcher_points(int64_t num_points, const at::Device& device) override;
  at::Tensor mask_loss_points(const at::Tensor& logits, int64_t num_points, double oversample_ratio,
                              double importance_sample_ratio) override;
  /// Number of recorded sets not consumed yet.
  size_t matcher_remaining() const { return matcher_.size() - next_matcher_; }
  size_t mask_loss_remaining() const { return mask_loss_.size() - next_mask_loss_; }

 private:
  std::vector<at::Tensor> matcher_;
  std::vector<at::Tensor> mask_loss_;
  size_t next_matcher_ = 0;
  size_t next_mask_loss_ = 0;
};

/// Passes every request to `inner` and keeps a copy of each answer, in order, so that a run can
/// be replayed with ReplayPointSource(matcher_coords(), mask_loss_coords()).
class RecordingPointSource : public PointSource {
 public:
  explicit RecordingPointSource(std::shared_ptr<PointSource> inner);
  at::Tensor matcher_points(int64_t num_points, const at::Device& device) override;
  at::Tensor mask_loss_points(const at::Tensor& logits, int64_t num_points, double oversample_ratio,
                              double importance_sample_ratio) override;
  const std::vector<at::Tensor>& matcher_coords() const { return matcher_; }
  const std::vector<at::Tensor>& mask_loss_coords() const { return mask_loss_; }

 private:
  std::shared_ptr<PointSource> inner_;
  std::vector<at::Tensor> matcher_;
  std::vector<at::Tensor> mask_loss_;
};

}  // namespace combo::loss
