#include "combo/nn/ms_deform_attn.h"

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <cmath>
#include <limits>

#include "combo/core/check.h"
#include "combo/nn/init.h"

namespace combo::nn {

namespace {

// Validates the shapes shared by both implementations; returns (N, S, M, D, Lq, L, P).
struct CoreDims {
  int64_t n, s, m, d, lq, l, p;
};

CoreDims check_core_inputs(const char* fn, const at::Tensor& value,
                           const SpatialShapes& spatial_shapes,
                           const at::Tensor& sampling_locations,
                           const at::Tensor& attention_weights) {
  COMBO_CHECK(value.defined() && value.dim() == 4, fn,
              ": expected value [N, S, n_heads, d_head], got shape ",
              value.defined() ? value.sizes() : at::IntArrayRef{});
  COMBO_CHECK(sampling_locations.defined() && sampling_locations.dim() == 6 &&
                  sampling_locations.size(5) == 2,
              fn,
              ": expected sampling_locations [N, Lq, n_heads, n_levels, n_points, 2], got shape ",
              sampling_locations.defined() ? sampling_locations.sizes() : at::IntArrayRef{});
  const CoreDims dims{value.size(0),
                      value.size(1),
                      value.size(2),
                      value.size(3),
                      sampling_locations.size(1),
                      sampling_locations.size(3),
                      sampling_locations.size(4)};
  COMBO_CHECK(sampling_locations.size(0) == dims.n && sampling_locations.size(2) == dims.m, fn,
              ": sampling_locations ", sampling_locations.sizes(),
              " does not match value [N, S, n_heads, d_head] = ", value.sizes());
  COMBO_CHECK(attention_weights.defined() &&
                  attention_weights.sizes() == sampling_locations.sizes().slice(0, 5),
              fn, ": expected attention_weights ", sampling_locations.sizes().slice(0, 5), ", got ",
              attention_weights.defined() ? attention_weights.sizes() : at::IntArrayRef{});
  COMBO_CHECK(static_cast<int64_t>(spatial_shapes.size()) == dims.l, fn, ": expected ", dims.l,
              " spatial shapes (n_levels of sampling_locations), got ", spatial_shapes.size());
  int64_t total = 0;
  for (const auto& [h, w] : spatial_shapes) {
    COMBO_CHECK(h > 0 && w > 0, fn, ": empty level ", h, "x", w);
    total += h * w;
  }
  COMBO_CHECK(total == dims.s, fn, ": the spatial shapes cover ", total,
              " tokens but value has S = ", dims.s);
  return dims;
}

// Bilinear taps of one sampling location, as grid_sampler_2d computes them (align_corners
// false, zero padding): pixel coordinate = (grid + 1) * size / 2 - 0.5 with grid = 2 * loc - 1.
template <typename scalar_t>
struct Taps {
  int64_t x0, y0;
  scalar_t fx, fy;  // fractional parts
  bool valid[4];    // nw, ne, sw, se inside the map
  scalar_t weight[4];
  int64_t offset[4];  // pixel index y * W + x of each tap
  bool finite;

  Taps(scalar_t loc_x, scalar_t loc_y, int64_t h, int64_t w) {
    const scalar_t gx = loc_x * 2 - 1;
    const scalar_t gy = loc_y * 2 - 1;
    const scalar_t x = (gx + 1) * (static_cast<scalar_t>(w) / 2) - static_cast<scalar_t>(0.5);
    const scalar_t y = (gy + 1) * (static_cast<scalar_t>(h) / 2) - static_cast<scalar_t>(0.5);
    // NaN or infinite locations have no taps; the kernels turn them into NaN results, as
    // grid_sampler_2d does.
    finite = std::isfinite(x) && std::isfinite(y);
    const scalar_t xf = finite ? std::floor(x) : scalar_t(0);
    const scalar_t yf = finite ? std::floor(y) : scalar_t(0);
    fx = finite ? x - xf : scalar_t(0);
    fy = finite ? y - yf : scalar_t(0);
    // Locations far outside the map give floors beyond int64; clamp them to "outside".
    const scalar_t big = static_cast<scalar_t>(w + h + 4);
    x0 = static_cast<int64_t>(std::max(std::min(xf, big), -big));
    y0 = static_cast<int64_t>(std::max(std::min(yf, big), -big));
    weight[0] = (1 - fx) * (1 - fy);
    weight[1] = fx * (1 - fy);
    weight[2] = (1 - fx) * fy;
    weight[3] = fx * fy;
    const bool x0_in = x0 >= 0 && x0 < w, x1_in = x0 + 1 >= 0 && x0 + 1 < w;
    const bool y0_in = y0 >= 0 && y0 < h, y1_in = y0 + 1 >= 0 && y0 + 1 < h;
    valid[0] = finite && x0_in && y0_in;
    valid[1] = finite && x1_in && y0_in;
    valid[2] = finite && x0_in && y1_in;
    valid[3] = finite && x1_in && y1_in;
    offset[0] = y0 * w + x0;
    offset[1] = offset[0] + 1;
    offset[2] = offset[0] + w;
    offset[3] = offset[2] + 1;
  }
};

template <typename scalar_t>
void fused_forward_kernel(const at::Tensor& value, const SpatialShapes& shapes,
                          const std::vector<int64_t>& starts, const at::Tensor& loc,
                          const at::Tensor& attn, at::Tensor& out, const CoreDims& dm) {
  const scalar_t* value_ptr = value.data_ptr<scalar_t>();
  const scalar_t* loc_ptr = loc.data_ptr<scalar_t>();
  const scalar_t* attn_ptr = attn.data_ptr<scalar_t>();
  scalar_t* out_ptr = out.data_ptr<scalar_t>();
  const int64_t pixel_stride = dm.m * dm.d;
  at::parallel_for(0, dm.n * dm.lq, 16, [&](int64_t begin, int64_t end) {
    for (int64_t nq = begin; nq < end; ++nq) {
      const int64_t n = nq / dm.lq;
      for (int64_t m = 0; m < dm.m; ++m) {
        scalar_t* o = out_ptr + (nq * dm.m + m) * dm.d;
        std::fill(o, o + dm.d, scalar_t(0));
        const int64_t sample0 = (nq * dm.m + m) * dm.l * dm.p;
        for (int64_t l = 0; l < dm.l; ++l) {
          const int64_t h = shapes[l].first, w = shapes[l].second;
          const scalar_t* v_level = value_ptr + ((n * dm.s + starts[l]) * dm.m + m) * dm.d;
          for (int64_t p = 0; p < dm.p; ++p) {
            const int64_t sample = sample0 + l * dm.p + p;
            const scalar_t a = attn_ptr[sample];
            const Taps<scalar_t> taps(loc_ptr[2 * sample], loc_ptr[2 * sample + 1], h, w);
            if (!taps.finite) std::fill(o, o + dm.d, std::numeric_limits<scalar_t>::quiet_NaN());
            for (int t = 0; t < 4; ++t) {
              if (!taps.valid[t]) continue;
              const scalar_t c = a * taps.weight[t];
              const scalar_t* v = v_level + taps.offset[t] * pixel_stride;
              for (int64_t k = 0; k < dm.d; ++k) o[k] += c * v[k];
            }
          }
        }
      }
    }
  });
}

template <typename scalar_t>
void fused_backward_kernel(const at::Tensor& value, const SpatialShapes& shapes,
                           const std::vector<int64_t>& starts, const at::Tensor& loc,
                           const at::Tensor& attn, const at::Tensor& grad_out,
                           at::Tensor& grad_value, at::Tensor& grad_loc, at::Tensor& grad_attn,
                           const CoreDims& dm) {
  const scalar_t* value_ptr = value.data_ptr<scalar_t>();
  const scalar_t* loc_ptr = loc.data_ptr<scalar_t>();
  const scalar_t* attn_ptr = attn.data_ptr<scalar_t>();
  const scalar_t* go_ptr = grad_out.data_ptr<scalar_t>();
  scalar_t* gv_ptr = grad_value.data_ptr<scalar_t>();
  scalar_t* gl_ptr = grad_loc.data_ptr<scalar_t>();
  scalar_t* ga_ptr = grad_attn.data_ptr<scalar_t>();
  const int64_t pixel_stride = dm.m * dm.d;
  // One task per (batch, head): the value gradient of a head is written by that task only, so
  // the scatter needs no atomics.
  at::parallel_for(0, dm.n * dm.m, 1, [&](int64_t begin, int64_t end) {
    for (int64_t nm = begin; nm < end; ++nm) {
      const int64_t n = nm / dm.m, m = nm % dm.m;
      for (int64_t q = 0; q < dm.lq; ++q) {
        const int64_t nqm = (n * dm.lq + q) * dm.m + m;
        const scalar_t* go = go_ptr + nqm * dm.d;
        for (int64_t l = 0; l < dm.l; ++l) {
          const int64_t h = shapes[l].first, w = shapes[l].second;
          const int64_t level_offset = ((n * dm.s + starts[l]) * dm.m + m) * dm.d;
          const scalar_t* v_level = value_ptr + level_offset;
          scalar_t* gv_level = gv_ptr + level_offset;
          for (int64_t p = 0; p < dm.p; ++p) {
            const int64_t sample = (nqm * dm.l + l) * dm.p + p;
            const scalar_t a = attn_ptr[sample];
            const Taps<scalar_t> taps(loc_ptr[2 * sample], loc_ptr[2 * sample + 1], h, w);
            // d(tap weight)/dx and /dy for nw, ne, sw, se.
            const scalar_t dwx[4] = {-(1 - taps.fy), 1 - taps.fy, -taps.fy, taps.fy};
            const scalar_t dwy[4] = {-(1 - taps.fx), -taps.fx, 1 - taps.fx, taps.fx};
            scalar_t g_attn = 0, g_x = 0, g_y = 0;
            for (int t = 0; t < 4; ++t) {
              if (!taps.valid[t]) continue;
              const scalar_t* v = v_level + taps.offset[t] * pixel_stride;
              scalar_t* gv = gv_level + taps.offset[t] * pixel_stride;
              const scalar_t c = a * taps.weight[t];
              scalar_t dot = 0;
              for (int64_t k = 0; k < dm.d; ++k) {
                dot += go[k] * v[k];
                gv[k] += c * go[k];
              }
              g_attn += taps.weight[t] * dot;
              g_x += dwx[t] * dot;
              g_y += dwy[t] * dot;
            }
            if (!taps.finite) g_attn = g_x = g_y = std::numeric_limits<scalar_t>::quiet_NaN();
            ga_ptr[sample] = g_attn;
            // pixel x = loc_x * W - 0.5, so d/dloc_x = W (and H for y).
            gl_ptr[2 * sample] = a * g_x * static_cast<scalar_t>(w);
            gl_ptr[2 * sample + 1] = a * g_y * static_cast<scalar_t>(h);
          }
        }
      }
    }
  });
}

SpatialShapes shapes_from_flat(const std::vector<int64_t>& flat) {
  SpatialShapes shapes;
  for (size_t i = 0; i + 1 < flat.size(); i += 2) shapes.emplace_back(flat[i], flat[i + 1]);
  return shapes;
}

class MSDeformAttnFunction : public torch::autograd::Function<MSDeformAttnFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& value,
                            const at::Tensor& sampling_locations,
                            const at::Tensor& attention_weights,
                            const std::vector<int64_t>& flat_shapes) {
    const auto shapes = shapes_from_flat(flat_shapes);
    const auto v = value.contiguous();
    const auto loc = sampling_locations.contiguous();
    const auto attn = attention_weights.contiguous();
    const auto dm = check_core_inputs("ms_deform_attn_fused", v, shapes, loc, attn);
    const auto starts = level_start_index(shapes);
    auto out = at::empty({dm.n, dm.lq, dm.m * dm.d}, v.options());
    AT_DISPATCH_FLOATING_TYPES(v.scalar_type(), "ms_deform_attn_fused_forward", [&] {
      fused_forward_kernel<scalar_t>(v, shapes, starts, loc, attn, out, dm);
    });
    ctx->save_for_backward({v, loc, attn});
    ctx->saved_data["shapes"] = flat_shapes;
    return out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const auto& v = saved[0];
    const auto& loc = saved[1];
    const auto& attn = saved[2];
    const auto shapes = shapes_from_flat(ctx->saved_data["shapes"].toIntVector());
    const auto dm = check_core_inputs("ms_deform_attn_fused backward", v, shapes, loc, attn);
    const auto starts = level_start_index(shapes);
    const auto grad_out = grad_outputs[0].contiguous();
    auto grad_value = at::zeros_like(v);
    auto grad_loc = at::empty_like(loc);
    auto grad_attn = at::empty_like(attn);
    AT_DISPATCH_FLOATING_TYPES(v.scalar_type(), "ms_deform_attn_fused_backward", [&] {
      fused_backward_kernel<scalar_t>(v, shapes, starts, loc, attn, grad_out, grad_value, grad_loc,
                                      grad_attn, dm);
    });
    return {grad_value, grad_loc, grad_attn, at::Tensor()};
  }
};

}  // namespace

std::vector<int64_t> level_start_index(const SpatialShapes& spatial_shapes) {
  std::vector<int64_t> starts;
  int64_t start = 0;
  for (const auto& [h, w] : spatial_shapes) {
    starts.push_back(start);
    start += h * w;
  }
  return starts;
}

at::Tensor ms_deform_attn_core(const at::Tensor& value, const SpatialShapes& spatial_shapes,
                               const at::Tensor& sampling_locations,
                               const at::Tensor& attention_weights) {
  const auto dm = check_core_inputs("ms_deform_attn_core", value, spatial_shapes,
                                    sampling_locations, attention_weights);
  const auto grids = sampling_locations * 2 - 1;
  std::vector<at::Tensor> sampled;
  sampled.reserve(dm.l);
  int64_t start = 0;
  for (int64_t l = 0; l < dm.l; ++l) {
    const auto [h, w] = spatial_shapes[l];
    // [N, H*W, M, D] -> [N, M*D, H*W] -> [N*M, D, H, W]
    const auto value_l =
        value.narrow(1, start, h * w).flatten(2).transpose(1, 2).reshape({dm.n * dm.m, dm.d, h, w});
    // [N, Lq, M, P, 2] -> [N, M, Lq, P, 2] -> [N*M, Lq, P, 2]
    const auto grid_l = grids.select(3, l).transpose(1, 2).flatten(0, 1);
    sampled.push_back(at::grid_sampler_2d(value_l, grid_l, /*interpolation_mode=*/0,
                                          /*padding_mode=*/0, /*align_corners=*/false));
    start += h * w;
  }
  // [N, Lq, M, L, P] -> [N, M, Lq, L, P] -> [N*M, 1, Lq, L*P]
  const auto weights =
      attention_weights.transpose(1, 2).reshape({dm.n * dm.m, 1, dm.lq, dm.l * dm.p});
  const auto out =
      (at::stack(sampled, -2).flatten(-2) * weights).sum(-1).view({dm.n, dm.m * dm.d, dm.lq});
  return out.transpose(1, 2).contiguous();
}

bool ms_deform_attn_fused_supports(const at::Tensor& value) {
  return value.defined() && value.device().is_cpu() &&
         (value.scalar_type() == at::kFloat || value.scalar_type() == at::kDouble);
}

at::Tensor ms_deform_attn_fused(const at::Tensor& value, const SpatialShapes& spatial_shapes,
                                const at::Tensor& sampling_locations,
                                const at::Tensor& attention_weights) {
  if (!ms_deform_attn_fused_supports(value) ||
      sampling_locations.scalar_type() != value.scalar_type() ||
      attention_weights.scalar_type() != value.scalar_type() ||
      !sampling_locations.device().is_cpu() || !attention_weights.device().is_cpu()) {
    return ms_deform_attn_core(value, spatial_shapes, sampling_locations, attention_weights);
  }
  check_core_inputs("ms_deform_attn_fused", value, spatial_shapes, sampling_locations,
                    attention_weights);
  std::vector<int64_t> flat;
  for (const auto& [h, w] : spatial_shapes) {
    flat.push_back(h);
    flat.push_back(w);
  }
  return MSDeformAttnFunction::apply(value, sampling_locations, attention_weights, flat);
}

MSDeformAttnImpl::MSDeformAttnImpl(const MSDeformAttnOptions& options_) : options(options_) {
  reset();
}

void MSDeformAttnImpl::reset() {
  const int64_t c = options.d_model(), m = options.n_heads(), l = options.n_levels(),
                p = options.n_points();
  COMBO_CHECK(c > 0 && m > 0 && l > 0 && p > 0,
              "MSDeformAttn: d_model, n_heads, n_levels and n_points must be positive, got ", c,
              ", ", m, ", ", l, ", ", p);
  COMBO_CHECK(c % m == 0, "MSDeformAttn: d_model must be divisible by n_heads, got d_model ", c,
              " and n_heads ", m);
  sampling_offsets = register_module("sampling_offsets", torch::nn::Linear(c, m * l * p * 2));
  attention_weights = register_module("attention_weights", torch::nn::Linear(c, m * l * p));
  value_proj = register_module("value_proj", torch::nn::Linear(c, c));
  output_proj = register_module("output_proj", torch::nn::Linear(c, c));
  reset_parameters();
}

void MSDeformAttnImpl::reset_parameters() {
  const int64_t m = options.n_heads(), l = options.n_levels(), p = options.n_points();
  torch::NoGradGuard no_grad;
  sampling_offsets->weight.zero_();
  const auto thetas = torch::arange(m, torch::kFloat32) * (2.0 * M_PI / static_cast<double>(m));
  auto grid = torch::stack({thetas.cos(), thetas.sin()}, -1);
  grid = (grid / std::get<0>(grid.abs().max(-1, /*keepdim=*/true)))
             .view({m, 1, 1, 2})
             .repeat({1, l, p, 1});
  for (int64_t i = 0; i < p; ++i) grid.select(2, i).mul_(static_cast<double>(i + 1));
  sampling_offsets->bias.copy_(grid.view(-1));
  attention_weights->weight.zero_();
  attention_weights->bias.zero_();
  xavier_uniform_fill(value_proj);
  xavier_uniform_fill(output_proj);
}

void MSDeformAttnImpl::pretty_print(std::ostream& stream) const {
  stream << "combo::nn::MSDeformAttn(d_model=" << options.d_model()
         << ", n_levels=" << options.n_levels() << ", n_heads=" << options.n_heads()
         << ", n_points=" << options.n_points()
         << ", fused_kernel=" << (options.fused_kernel() ? "true" : "false") << ")";
}

at::Tensor MSDeformAttnImpl::forward(const at::Tensor& query, const at::Tensor& reference_points,
                                     const at::Tensor& input_flatten,
                                     const SpatialShapes& spatial_shapes,
                                     const std::vector<int64_t>& start_index) {
  const int64_t c = options.d_model(), m = options.n_heads(), l = options.n_levels(),
                p = options.n_points();
  COMBO_CHECK(query.defined() && query.dim() == 3 && query.size(2) == c,
              "MSDeformAttn: expected query [N, Lq, ", c, "], got ",
              query.defined() ? query.sizes() : at::IntArrayRef{});
  const int64_t n = query.size(0), lq = query.size(1);
  COMBO_CHECK(input_flatten.defined() && input_flatten.dim() == 3 && input_flatten.size(0) == n &&
                  input_flatten.size(2) == c,
              "MSDeformAttn: expected input_flatten [", n, ", S, ", c, "], got ",
              input_flatten.defined() ? input_flatten.sizes() : at::IntArrayRef{});
  const int64_t s = input_flatten.size(1);
  COMBO_CHECK(static_cast<int64_t>(spatial_shapes.size()) == l, "MSDeformAttn: expected ", l,
              " spatial shapes (n_levels), got ", spatial_shapes.size());
  COMBO_CHECK(start_index == level_start_index(spatial_shapes), "MSDeformAttn: level_start_index ",
              at::IntArrayRef(start_index), " does not match the spatial shapes (expected ",
              at::IntArrayRef(level_start_index(spatial_shapes)), ")");
  COMBO_CHECK(reference_points.defined() && reference_points.dim() == 4 &&
                  (reference_points.size(0) == n || reference_points.size(0) == 1) &&
                  reference_points.size(1) == lq && reference_points.size(2) == l,
              "MSDeformAttn: expected reference_points [", n, " or 1, ", lq, ", ", l, ", 2], got ",
              reference_points.defined() ? reference_points.sizes() : at::IntArrayRef{});
  COMBO_CHECK(reference_points.size(3) == 2,
              "MSDeformAttn: only 2-d (x, y) reference points are supported, got last dim ",
              reference_points.size(3));

  // The core checks that the levels cover exactly S tokens.
  const auto value = value_proj->forward(input_flatten).view({n, s, m, c / m});
  const auto offsets = sampling_offsets->forward(query).view({n, lq, m, l, p, 2});
  const auto weights = torch::softmax(attention_weights->forward(query).view({n, lq, m, l * p}), -1)
                           .view({n, lq, m, l, p});
  std::vector<double> normalizer;
  for (const auto& [h, w] : spatial_shapes) {
    normalizer.push_back(static_cast<double>(w));
    normalizer.push_back(static_cast<double>(h));
  }
  const auto offset_normalizer =
      torch::tensor(normalizer, offsets.options()).view({1, 1, 1, l, 1, 2});
  const auto locations = reference_points.unsqueeze(2).unsqueeze(4).to(offsets.scalar_type()) +
                         offsets / offset_normalizer;
  const auto out = options.fused_kernel()
                       ? ms_deform_attn_fused(value, spatial_shapes, locations, weights)
                       : ms_deform_attn_core(value, spatial_shapes, locations, weights);
  return output_proj->forward(out);
}

}  // namespace combo::nn
