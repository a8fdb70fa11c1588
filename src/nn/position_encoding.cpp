#include "combo/nn/position_encoding.h"

#include <torch/torch.h>

#include <cmath>

#include "combo/core/check.h"

namespace combo::nn {

at::Tensor sine_position_encoding(int64_t height, int64_t width, int64_t num_pos_feats,
                                  double temperature, const at::TensorOptions& options) {
  COMBO_CHECK(height > 0 && width > 0, "sine_position_encoding: empty map ", height, "x", width);
  COMBO_CHECK(num_pos_feats % 2 == 0, "sine_position_encoding: num_pos_feats must be even, got ",
              num_pos_feats);
  // Computed in float32 as the official module does (cumsum of ones, then the same divisions).
  const auto f32 = torch::TensorOptions().dtype(torch::kFloat32).device(options.device());
  const double scale = 2.0 * M_PI;
  const double eps = 1e-6;
  auto y = torch::arange(1, height + 1, f32);
  auto x = torch::arange(1, width + 1, f32);
  y = y / (static_cast<float>(height) + static_cast<float>(eps)) * static_cast<float>(scale);
  x = x / (static_cast<float>(width) + static_cast<float>(eps)) * static_cast<float>(scale);
  auto dim_t = torch::arange(num_pos_feats, f32);
  dim_t = torch::pow(static_cast<float>(temperature),
                     2 * torch::div(dim_t, 2, /*rounding_mode=*/"floor") / num_pos_feats);
  auto pos_y = y.unsqueeze(1) / dim_t;  // [H, F]
  auto pos_x = x.unsqueeze(1) / dim_t;  // [W, F]
  // Interleave sin of even channels with cos of odd channels, as torch.stack(...,
  // dim=3).flatten(3).
  auto interleave = [](const at::Tensor& p) {
    using torch::indexing::Slice;
    auto s = p.index({Slice(), Slice(0, torch::indexing::None, 2)}).sin();
    auto c = p.index({Slice(), Slice(1, torch::indexing::None, 2)}).cos();
    return torch::stack({s, c}, 2).flatten(1);
  };
  pos_y = interleave(pos_y);  // [H, F]
  pos_x = interleave(pos_x);  // [W, F]
  auto py = pos_y.t().unsqueeze(2).expand({num_pos_feats, height, width});
  auto px = pos_x.t().unsqueeze(1).expand({num_pos_feats, height, width});
  auto pos = torch::cat({py, px}, 0).unsqueeze(0);
  return options.has_dtype() ? pos.to(options.dtype()) : pos;
}

}  // namespace combo::nn
