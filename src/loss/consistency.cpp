#include "combo/loss/consistency.h"

#include <torch/torch.h>

#include <numeric>

#include "combo/core/check.h"

namespace combo::loss {
namespace {

constexpr double kEps = 1e-12;  // nn.CosineEmbeddingLoss

// d_r = 1 - cos(x_r, x_{r+1}) for every adjacent row pair r = 0..N-2 of x [N, L], with
// cos = <x_r, x_{r+1}> / sqrt((|x_r|^2 + eps)(|x_{r+1}|^2 + eps)). The backward pass is analytic:
// the gradient of row k mixes rows k-1, k and k+1 only, so it is applied as one tridiagonal
// [N, N] x [N, L] product instead of an elementwise autograd graph over the N x L logits
// (9 such graphs per batch made the backward pass several times slower than the forward).
class AdjacentCosineDistance : public torch::autograd::Function<AdjacentCosineDistance> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x) {
    const int64_t n = x.size(0);
    auto dot = (x.narrow(0, 0, n - 1) * x.narrow(0, 1, n - 1)).sum(1);  // [N-1]
    auto a = (x * x).sum(1) + kEps;                                     // [N]
    auto s = (a.narrow(0, 0, n - 1) * a.narrow(0, 1, n - 1)).sqrt();    // [N-1]
    auto cos = dot / s;
    ctx->save_for_backward({x, a, s, cos});
    return 1 - cos;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_out) {
    const auto saved = ctx->get_saved_variables();
    const auto& x = saved[0];
    const auto& a = saved[1];
    const auto& s = saved[2];
    const auto& cos = saved[3];
    const auto g = grad_out[0];  // dL/dd_r, [N-1]
    const int64_t n = x.size(0);
    // dd_r/dx_r = cos_r x_r / a_r - x_{r+1} / s_r and dd_r/dx_{r+1} = cos_r x_{r+1} / a_{r+1} -
    // x_r / s_r, so dL/dx = B x with B tridiagonal.
    auto b = at::zeros({n, n}, x.options());
    auto off = -g / s;
    b.diagonal(1).copy_(off);
    b.diagonal(-1).copy_(off);
    auto gc = g * cos;
    auto diag = at::zeros({n}, x.options());
    diag.narrow(0, 0, n - 1).add_(gc);
    diag.narrow(0, 1, n - 1).add_(gc);
    b.diagonal().copy_(diag / a);
    return {at::matmul(b, x)};
  }
};

}  // namespace

ConsistencyType parse_consistency_type(const std::string& name) {
  if (name == "adaptive") return ConsistencyType::kAdaptive;
  if (name == "fixed") return ConsistencyType::kFixed;
  if (name == "none") return ConsistencyType::kNone;
  COMBO_FAIL("consistency type: expected 'adaptive', 'fixed' or 'none', got '", name, "'");
}

ConsistencyGrouping parse_consistency_grouping(const std::string& name) {
  if (name == "official") return ConsistencyGrouping::kOfficial;
  if (name == "per_video") return ConsistencyGrouping::kPerVideo;
  COMBO_FAIL("consistency grouping: expected 'official' or 'per_video', got '", name, "'");
}

std::vector<int64_t> adjacent_pair_rows(ConsistencyGrouping grouping,
                                        const std::vector<int64_t>& frames_per_video,
                                        int64_t group_size) {
  for (size_t v = 0; v < frames_per_video.size(); ++v) {
    COMBO_CHECK(frames_per_video[v] > 0, "consistency loss: video ", v, " has ",
                frames_per_video[v], " frames; expected at least 1");
  }
  const int64_t n = std::accumulate(frames_per_video.begin(), frames_per_video.end(), int64_t{0});
  std::vector<int64_t> rows;
  if (grouping == ConsistencyGrouping::kOfficial) {
    COMBO_CHECK(group_size > 0, "consistency loss: group_size must be positive, got ", group_size);
    COMBO_CHECK(n % group_size == 0, "consistency loss (official grouping): the batch has ", n,
                " frames, not a multiple of the group size ", group_size,
                "; use grouping per_video for videos of other lengths");
    for (int64_t r = 0; r + 1 < n; ++r) {
      if ((r + 1) % group_size != 0) rows.push_back(r);
    }
    return rows;
  }
  int64_t start = 0;
  for (int64_t t : frames_per_video) {
    for (int64_t r = start; r + 1 < start + t; ++r) rows.push_back(r);
    start += t;
  }
  return rows;
}

at::Tensor adjacent_cosine_distance(const at::Tensor& middle,
                                    const std::vector<int64_t>& frames_per_video,
                                    ConsistencyGrouping grouping, int64_t group_size) {
  COMBO_CHECK(middle.dim() >= 2, "consistency loss: expected intermediate masks [N, ...], got ",
              middle.sizes());
  const int64_t n = std::accumulate(frames_per_video.begin(), frames_per_video.end(), int64_t{0});
  COMBO_CHECK(middle.size(0) == n, "consistency loss: intermediate masks have ", middle.size(0),
              " rows but the videos have ", n, " frames in total");
  const auto rows = adjacent_pair_rows(grouping, frames_per_video, group_size);
  if (rows.empty()) return at::zeros({0}, middle.options());
  auto d = AdjacentCosineDistance::apply(middle.reshape({n, -1}));
  return d.index_select(0, at::tensor(rows, at::kLong).to(middle.device()));
}

at::Tensor consistency_loss(const at::Tensor& middle, const std::vector<int64_t>& frames_per_video,
                            const ConsistencyOptions& options) {
  COMBO_CHECK(options.type() != ConsistencyType::kNone,
              "consistency_loss: called with type 'none'");
  auto d =
      adjacent_cosine_distance(middle, frames_per_video, options.grouping(), options.group_size());
  if (d.numel() == 0) return middle.sum() * 0;
  if (options.type() == ConsistencyType::kAdaptive) return (d * (-d).exp()).mean();
  return d.mean();
}

}  // namespace combo::loss
