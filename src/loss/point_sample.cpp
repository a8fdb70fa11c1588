#include "combo/loss/point_sample.h"

#include <torch/torch.h>

#include "combo/core/check.h"

namespace combo::loss {

at::Tensor point_sample(const at::Tensor& input, const at::Tensor& coords) {
  COMBO_CHECK(input.dim() == 4, "point_sample: expected input [N, C, H, W], got shape ",
              input.sizes());
  COMBO_CHECK(coords.dim() == 3 && coords.size(2) == 2,
              "point_sample: expected coords [N, P, 2], got shape ", coords.sizes());
  COMBO_CHECK(coords.size(0) == input.size(0), "point_sample: input has ", input.size(0),
              " maps but coords has ", coords.size(0), " point sets");
  auto grid = (2.0 * coords.to(input.scalar_type()) - 1.0).unsqueeze(2);  // [N, P, 1, 2]
  // interpolation 0 = bilinear, padding 0 = zeros.
  auto out = at::grid_sampler_2d(input, grid, /*interpolation_mode=*/0, /*padding_mode=*/0,
                                 /*align_corners=*/false);
  return out.squeeze(3);
}

at::Tensor get_uncertain_point_coords_with_randomness(const at::Tensor& logits, int64_t num_points,
                                                      double oversample_ratio,
                                                      double importance_sample_ratio,
                                                      c10::optional<at::Generator> generator) {
  COMBO_CHECK(logits.dim() == 4 && logits.size(1) == 1,
              "get_uncertain_point_coords_with_randomness: expected logits [R, 1, H, W], got ",
              logits.sizes());
  COMBO_CHECK(num_points > 0, "get_uncertain_point_coords_with_randomness: num_points must be ",
              "positive, got ", num_points);
  COMBO_CHECK(oversample_ratio >= 1.0,
              "get_uncertain_point_coords_with_randomness: oversample_ratio must be >= 1, got ",
              oversample_ratio);
  COMBO_CHECK(importance_sample_ratio >= 0.0 && importance_sample_ratio <= 1.0,
              "get_uncertain_point_coords_with_randomness: importance_sample_ratio must be in ",
              "[0, 1], got ", importance_sample_ratio);
  at::NoGradGuard no_grad;
  const int64_t boxes = logits.size(0);
  // Truncation as Python's int().
  const auto num_sampled = static_cast<int64_t>(static_cast<double>(num_points) * oversample_ratio);
  const auto num_uncertain =
      static_cast<int64_t>(importance_sample_ratio * static_cast<double>(num_points));
  const int64_t num_random = num_points - num_uncertain;
  const auto options = at::TensorOptions().dtype(at::kFloat).device(logits.device());
  auto coords = at::rand({boxes, num_sampled, 2}, generator, options);
  auto sampled = point_sample(logits, coords);                      // [R, 1, n]
  auto uncertainty = -sampled.select(1, 0).abs();                   // [R, n]
  auto idx = std::get<1>(at::topk(uncertainty, num_uncertain, 1));  // [R, k]
  auto shift = num_sampled * at::arange(boxes, options.dtype(at::kLong));
  idx = idx + shift.unsqueeze(1);
  auto picked =
      coords.view({-1, 2}).index_select(0, idx.reshape(-1)).view({boxes, num_uncertain, 2});
  if (num_random > 0) {
    picked = at::cat({picked, at::rand({boxes, num_random, 2}, generator, options)}, 1);
  }
  return picked;
}

RandomPointSource::RandomPointSource(c10::optional<at::Generator> generator)
    : generator_(std::move(generator)) {}

at::Tensor RandomPointSource::matcher_points(int64_t num_points, const at::Device& device) {
  return at::rand({1, num_points, 2}, generator_,
                  at::TensorOptions().dtype(at::kFloat).device(device));
}

at::Tensor RandomPointSource::mask_loss_points(const at::Tensor& logits, int64_t num_points,
                                               double oversample_ratio,
                                               double importance_sample_ratio) {
  return get_uncertain_point_coords_with_randomness(logits, num_points, oversample_ratio,
                                                    importance_sample_ratio, generator_);
}

ReplayPointSource::ReplayPointSource(std::vector<at::Tensor> matcher_coords,
                                     std::vector<at::Tensor> mask_loss_coords)
    : matcher_(std::move(matcher_coords)), mask_loss_(std::move(mask_loss_coords)) {}

at::Tensor ReplayPointSource::matcher_points(int64_t num_points, const at::Device& device) {
  COMBO_CHECK(next_matcher_ < matcher_.size(), "ReplayPointSource: matcher call ", next_matcher_,
              " requested, but only ", matcher_.size(), " matcher point sets were recorded");
  const auto& c = matcher_[next_matcher_];
  COMBO_CHECK(c.dim() == 3 && c.size(0) == 1 && c.size(1) == num_points && c.size(2) == 2,
              "ReplayPointSource: matcher call ", next_matcher_, " expected [1, ", num_points,
              ", 2], recorded ", c.sizes());
  ++next_matcher_;
  return c.to(device, at::kFloat);
}

at::Tensor ReplayPointSource::mask_loss_points(const at::Tensor& logits, int64_t num_points,
                                               double /*oversample_ratio*/,
                                               double /*importance_sample_ratio*/) {
  COMBO_CHECK(next_mask_loss_ < mask_loss_.size(), "ReplayPointSource: loss_masks call ",
              next_mask_loss_, " requested, but only ", mask_loss_.size(),
              " mask-loss point sets were recorded");
  const auto& c = mask_loss_[next_mask_loss_];
  COMBO_CHECK(
      c.dim() == 3 && c.size(0) == logits.size(0) && c.size(1) == num_points && c.size(2) == 2,
      "ReplayPointSource: loss_masks call ", next_mask_loss_, " expected [", logits.size(0), ", ",
      num_points, ", 2] (matched masks, points, xy), recorded ", c.sizes());
  ++next_mask_loss_;
  return c.to(logits.device(), at::kFloat);
}

RecordingPointSource::RecordingPointSource(std::shared_ptr<PointSource> inner)
    : inner_(std::move(inner)) {
  COMBO_CHECK(inner_ != nullptr, "RecordingPointSource: no inner point source");
}

at::Tensor RecordingPointSource::matcher_points(int64_t num_points, const at::Device& device) {
  auto c = inner_->matcher_points(num_points, device);
  matcher_.push_back(c.clone());
  return c;
}

at::Tensor RecordingPointSource::mask_loss_points(const at::Tensor& logits, int64_t num_points,
                                                  double oversample_ratio,
                                                  double importance_sample_ratio) {
  auto c = inner_->mask_loss_points(logits, num_points, oversample_ratio, importance_sample_ratio);
  mask_loss_.push_back(c.clone());
  return c;
}

}  // namespace combo::loss
