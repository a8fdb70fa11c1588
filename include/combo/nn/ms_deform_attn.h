#pragma once
/// Multi-scale deformable attention (Deformable DETR's `MSDeformAttn`, COMBO_SPEC 5.3): every query
/// attends to n_points learned sampling locations around its reference point on each of n_levels
/// feature maps, per head, with softmax weights over the n_levels * n_points samples.
#include <ATen/core/Tensor.h>
#include <torch/arg.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <ostream>
#include <utility>
#include <vector>

namespace combo::nn {

/// (H_l, W_l) of each level, in the order the levels are concatenated in the flattened input.
using SpatialShapes = std::vector<std::pair<int64_t, int64_t>>;

/// Offset of each level's first token in the flattened input: [0, H_0 W_0, H_0 W_0 + H_1 W_1, ...].
std::vector<int64_t> level_start_index(const SpatialShapes& spatial_shapes);

/// Reference implementation (the official `ms_deform_attn_core_pytorch`): per level, the value
/// map of each head is sampled with `grid_sampler_2d` (bilinear, zero padding, align_corners
/// false, grid = 2 * location - 1), then the samples are weighted and summed. Autograd-capable
/// (value, sampling_locations and attention_weights), any floating dtype and device.
///   value [N, S, n_heads, d_head] with S = sum_l H_l W_l (levels concatenated in order),
///   sampling_locations [N, Lq, n_heads, n_levels, n_points, 2] (normalised x, y in [0, 1] for
///     points inside the map; (0, 0) is the top-left corner of the top-left pixel),
///   attention_weights [N, Lq, n_heads, n_levels, n_points]
///   -> [N, Lq, n_heads * d_head].
at::Tensor ms_deform_attn_core(const at::Tensor& value, const SpatialShapes& spatial_shapes,
                               const at::Tensor& sampling_locations,
                               const at::Tensor& attention_weights);

/// The same computation as ms_deform_attn_core with a fused CPU kernel (one pass over the
/// samples, no intermediate [N*heads, d_head, Lq, n_points] tensors) and a hand-written backward
/// for all three inputs (first derivatives only: the backward itself is not differentiable).
/// float32 / float64 CPU tensors only; other inputs go to ms_deform_attn_core.
at::Tensor ms_deform_attn_fused(const at::Tensor& value, const SpatialShapes& spatial_shapes,
                                const at::Tensor& sampling_locations,
                                const at::Tensor& attention_weights);

/// True when ms_deform_attn_fused runs its own kernel for these inputs (CPU, float32/float64).
bool ms_deform_attn_fused_supports(const at::Tensor& value);

struct MSDeformAttnOptions {
  TORCH_ARG(int64_t, d_model) = 256;
  TORCH_ARG(int64_t, n_levels) = 4;
  TORCH_ARG(int64_t, n_heads) = 8;
  TORCH_ARG(int64_t, n_points) = 4;
  /// Sample with ms_deform_attn_fused where it supports the inputs (same result up to float
  /// rounding, faster on CPU); false always uses the grid-sampler reference.
  TORCH_ARG(bool, fused_kernel) = true;
};

/// The attention module. Children (official names): `sampling_offsets` Linear(d_model ->
/// n_heads * n_levels * n_points * 2), `attention_weights` Linear(d_model -> n_heads * n_levels *
/// n_points), `value_proj` and `output_proj` Linear(d_model, d_model). reset() applies the
/// official initialisation: sampling_offsets weight 0 and bias = head h's direction (cos, sin)
/// of 2 pi h / n_heads divided by its largest absolute component, times (p + 1) for point p, on
/// every level; attention_weights 0; value_proj / output_proj xavier-uniform with bias 0.
class MSDeformAttnImpl : public torch::nn::Cloneable<MSDeformAttnImpl> {
 public:
  explicit MSDeformAttnImpl(const MSDeformAttnOptions& options = {});
  void reset() override;
  /// Re-applies the official initialisation to the existing parameters (in place).
  void reset_parameters();
  void pretty_print(std::ostream& stream) const override;

  /// query [N, Lq, d_model]; reference_points [N or 1, Lq, n_levels, 2] (normalised x, y);
  /// input_flatten [N, S, d_model] (levels concatenated, S = sum_l H_l W_l); spatial_shapes and
  /// level_start_index describe the levels of input_flatten -> [N, Lq, d_model].
  /// Sampling location = reference point + offset / (W_l, H_l): offsets are in level pixels.
  at::Tensor forward(const at::Tensor& query, const at::Tensor& reference_points,
                     const at::Tensor& input_flatten, const SpatialShapes& spatial_shapes,
                     const std::vector<int64_t>& level_start_index);

  MSDeformAttnOptions options;
  torch::nn::Linear sampling_offsets{nullptr};
  torch::nn::Linear attention_weights{nullptr};
  torch::nn::Linear value_proj{nullptr};
  torch::nn::Linear output_proj{nullptr};
};
TORCH_MODULE(MSDeformAttn);

}  // namespace combo::nn
