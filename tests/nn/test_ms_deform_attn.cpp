#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <functional>
#include <limits>

#include "combo/nn/init.h"
#include "combo/nn/ms_deform_attn.h"
#include "testing/testing.h"

namespace {

using combo::nn::SpatialShapes;

class MSDeformAttnTest : public combo::testing::SeededTest {};

// Independent scalar evaluation of COMBO_SPEC 5.3 in double precision: pixel coordinate
// loc * size - 0.5, four bilinear taps, taps outside the map contribute 0.
at::Tensor naive_ms_deform_attn(const at::Tensor& value_in, const SpatialShapes& shapes,
                                const at::Tensor& loc_in, const at::Tensor& attn_in) {
  const auto value = value_in.to(torch::kFloat64).contiguous();
  const auto loc = loc_in.to(torch::kFloat64).contiguous();
  const auto attn = attn_in.to(torch::kFloat64).contiguous();
  const int64_t N = value.size(0), M = value.size(2), D = value.size(3);
  const int64_t Lq = loc.size(1), L = loc.size(3), P = loc.size(4);
  auto out = torch::zeros({N, Lq, M * D}, torch::kFloat64);
  auto v = value.accessor<double, 4>();
  auto lc = loc.accessor<double, 6>();
  auto a = attn.accessor<double, 5>();
  auto o = out.accessor<double, 3>();
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t q = 0; q < Lq; ++q) {
      for (int64_t m = 0; m < M; ++m) {
        int64_t start = 0;
        for (int64_t l = 0; l < L; ++l) {
          const int64_t H = shapes[l].first, W = shapes[l].second;
          for (int64_t p = 0; p < P; ++p) {
            const double x = lc[n][q][m][l][p][0] * W - 0.5;
            const double y = lc[n][q][m][l][p][1] * H - 0.5;
            const double x0 = std::floor(x), y0 = std::floor(y);
            for (int dy = 0; dy < 2; ++dy) {
              for (int dx = 0; dx < 2; ++dx) {
                const double xi = x0 + dx, yi = y0 + dy;
                if (xi < 0 || xi >= W || yi < 0 || yi >= H) continue;
                const double wx = dx ? x - x0 : 1 - (x - x0);
                const double wy = dy ? y - y0 : 1 - (y - y0);
                const int64_t s = start + static_cast<int64_t>(yi) * W + static_cast<int64_t>(xi);
                for (int64_t d = 0; d < D; ++d) {
                  o[n][q][m * D + d] += a[n][q][m][l][p] * wx * wy * v[n][s][m][d];
                }
              }
            }
          }
          start += H * W;
        }
      }
    }
  }
  return out;
}

struct CoreInputs {
  SpatialShapes shapes;
  at::Tensor value, loc, attn;
};

// Random inputs; locations in [-0.3, 1.3] so that some fall partly or wholly outside the maps.
CoreInputs random_inputs(torch::Dtype dtype, int64_t N = 2, int64_t Lq = 5, int64_t M = 2,
                         int64_t D = 3, int64_t P = 3) {
  CoreInputs in;
  in.shapes = {{4, 5}, {2, 3}, {1, 1}};
  int64_t S = 0;
  for (const auto& [h, w] : in.shapes) S += h * w;
  const auto L = static_cast<int64_t>(in.shapes.size());
  const auto opts = torch::TensorOptions().dtype(dtype);
  in.value = torch::randn({N, S, M, D}, opts);
  in.loc = torch::rand({N, Lq, M, L, P, 2}, opts) * 1.6 - 0.3;
  in.attn = torch::softmax(torch::randn({N, Lq, M, L * P}, opts), -1).view({N, Lq, M, L, P});
  return in;
}

// Puts locations on the borders of the maps and on pixel centres: x, y in {0, 1, 0.5/size,
// 1 - 0.5/size, -0.5/size, 1 + 0.5/size} (exact corners, centres of border pixels, half a pixel
// outside), cycling over all samples.
void put_on_borders(CoreInputs& in) {
  auto loc = in.loc.to(torch::kFloat64).contiguous();
  auto acc = loc.accessor<double, 6>();
  int64_t k = 0;
  for (int64_t n = 0; n < loc.size(0); ++n) {
    for (int64_t q = 0; q < loc.size(1); ++q) {
      for (int64_t m = 0; m < loc.size(2); ++m) {
        for (int64_t l = 0; l < loc.size(3); ++l) {
          for (int64_t p = 0; p < loc.size(4); ++p, ++k) {
            const double sizes[2] = {static_cast<double>(in.shapes[l].second),
                                     static_cast<double>(in.shapes[l].first)};
            for (int c = 0; c < 2; ++c) {
              const double s = sizes[c];
              const double choices[6] = {0.0, 1.0, 0.5 / s, 1.0 - 0.5 / s, -0.5 / s, 1.0 + 0.5 / s};
              acc[n][q][m][l][p][c] = choices[(k + 2 * c) % 6];
            }
          }
        }
      }
    }
  }
  in.loc = loc.to(in.loc.scalar_type());
}

TEST_F(MSDeformAttnTest, CoreMatchesNaiveBilinearLoopInDouble) {
  auto in = random_inputs(torch::kFloat64);
  const auto got = combo::nn::ms_deform_attn_core(in.value, in.shapes, in.loc, in.attn);
  ASSERT_EQ(got.sizes(), (std::vector<int64_t>{2, 5, 6}));
  EXPECT_TENSOR_NEAR_ABS(naive_ms_deform_attn(in.value, in.shapes, in.loc, in.attn), got, 1e-12);
}

TEST_F(MSDeformAttnTest, CoreMatchesNaiveLoopOnBordersAndPixelCentres) {
  for (auto dtype : {torch::kFloat64, torch::kFloat32}) {
    auto in = random_inputs(dtype);
    put_on_borders(in);
    const auto got = combo::nn::ms_deform_attn_core(in.value, in.shapes, in.loc, in.attn);
    EXPECT_EQ(got.scalar_type(), dtype);
    EXPECT_TENSOR_NEAR_ABS(naive_ms_deform_attn(in.value, in.shapes, in.loc, in.attn),
                           got.to(torch::kFloat64), dtype == torch::kFloat64 ? 1e-12 : 1e-5);
  }
}

TEST_F(MSDeformAttnTest, CoreIsZeroForLocationsOutsideEveryMap) {
  auto in = random_inputs(torch::kFloat32);
  // One full pixel beyond each side: every tap is outside.
  in.loc = torch::where(torch::rand_like(in.loc) < 0.5, torch::full_like(in.loc, -1.01),
                        torch::full_like(in.loc, 2.01));
  const auto got = combo::nn::ms_deform_attn_core(in.value, in.shapes, in.loc, in.attn);
  EXPECT_EQ(got.abs().max().item<double>(), 0.0);
}

// Far-away locations sample nothing; NaN locations poison their query and head (grid_sample
// semantics), in both implementations.
TEST_F(MSDeformAttnTest, FarAndNonFiniteLocations) {
  auto in = random_inputs(torch::kFloat32);  // N 2, Lq 5, M 2, D 3
  {
    torch::NoGradGuard no_grad;
    in.loc.select(1, 0).fill_(1e30);
    in.loc.select(1, 2).fill_(-1e30);
    in.loc[0][1][0][1][2][0] = std::numeric_limits<float>::quiet_NaN();
  }
  for (bool fused : {false, true}) {
    const auto out = fused ? combo::nn::ms_deform_attn_fused(in.value, in.shapes, in.loc, in.attn)
                           : combo::nn::ms_deform_attn_core(in.value, in.shapes, in.loc, in.attn);
    const char* name = fused ? "fused" : "reference";
    EXPECT_EQ(out.select(1, 0).abs().max().item<double>(), 0.0) << name;
    EXPECT_EQ(out.select(1, 2).abs().max().item<double>(), 0.0) << name;
    EXPECT_TRUE(out[0][1].narrow(0, 0, 3).isnan().all().item<bool>()) << name;
    EXPECT_EQ(out.isnan().sum().item<int64_t>(), 3) << name;
  }
}

TEST_F(MSDeformAttnTest, CoreGradientsMatchCentralFiniteDifferences) {
  auto in = random_inputs(torch::kFloat64, /*N=*/1, /*Lq=*/3, /*M=*/2, /*D=*/2, /*P=*/2);
  // A fixed random projection of the output makes a scalar loss with no symmetric cancellation.
  const auto proj = torch::randn({1, 3, 4}, torch::kFloat64);
  auto loss_of = [&](const at::Tensor& v, const at::Tensor& l, const at::Tensor& a) {
    return (combo::nn::ms_deform_attn_core(v, in.shapes, l, a) * proj).sum();
  };
  auto value = in.value.clone().requires_grad_(true);
  auto loc = in.loc.clone().requires_grad_(true);
  auto attn = in.attn.clone().requires_grad_(true);
  loss_of(value, loc, attn).backward();

  const double eps = 1e-6;
  auto check = [&](const at::Tensor& base, const at::Tensor& grad,
                   const std::function<double(const at::Tensor&)>& f, const char* what) {
    auto flat = base.detach().clone().view(-1);
    auto g = grad.view(-1);
    for (int64_t i = 0; i < flat.numel(); ++i) {
      auto plus = flat.clone(), minus = flat.clone();
      plus[i] += eps;
      minus[i] -= eps;
      const double fd = (f(plus.view(base.sizes())) - f(minus.view(base.sizes()))) / (2 * eps);
      EXPECT_NEAR(g[i].item<double>(), fd, 1e-6) << what << " element " << i;
    }
  };
  torch::NoGradGuard no_grad;
  check(
      in.value, value.grad(),
      [&](const at::Tensor& v) { return loss_of(v, in.loc, in.attn).item<double>(); }, "value");
  check(
      in.loc, loc.grad(),
      [&](const at::Tensor& l) { return loss_of(in.value, l, in.attn).item<double>(); },
      "sampling_locations");
  check(
      in.attn, attn.grad(),
      [&](const at::Tensor& a) { return loss_of(in.value, in.loc, a).item<double>(); },
      "attention_weights");
}

// Forward and all three gradients of the fused kernel against the grid-sampler reference.
void expect_fused_matches_reference(const CoreInputs& in, double tol) {
  auto run = [&](bool fused) {
    auto value = in.value.clone().requires_grad_(true);
    auto loc = in.loc.clone().requires_grad_(true);
    auto attn = in.attn.clone().requires_grad_(true);
    auto out = fused ? combo::nn::ms_deform_attn_fused(value, in.shapes, loc, attn)
                     : combo::nn::ms_deform_attn_core(value, in.shapes, loc, attn);
    torch::manual_seed(3);
    const auto proj = torch::randn(out.sizes(), out.options());
    (out * proj).sum().backward();
    return std::vector<at::Tensor>{out.detach(), value.grad(), loc.grad(), attn.grad()};
  };
  const auto ref = run(false);
  const auto got = run(true);
  const char* names[4] = {"output", "grad value", "grad sampling_locations",
                          "grad attention_weights"};
  for (int i = 0; i < 4; ++i) {
    EXPECT_TRUE(combo::testing::tensors_near_rel(ref[i], got[i], tol)) << names[i];
  }
}

TEST_F(MSDeformAttnTest, FusedKernelMatchesReferenceInDouble) {
  EXPECT_TRUE(combo::nn::ms_deform_attn_fused_supports(torch::zeros({1}, torch::kFloat64)));
  expect_fused_matches_reference(random_inputs(torch::kFloat64, 3, 17, 4, 8, 4), 1e-12);
}

TEST_F(MSDeformAttnTest, FusedKernelMatchesReferenceInFloat) {
  EXPECT_TRUE(combo::nn::ms_deform_attn_fused_supports(torch::zeros({1})));
  expect_fused_matches_reference(random_inputs(torch::kFloat32, 2, 40, 8, 32, 4), 1e-5);
}

TEST_F(MSDeformAttnTest, FusedKernelMatchesReferenceOnBorders) {
  auto in = random_inputs(torch::kFloat64, 2, 11, 3, 5, 3);
  put_on_borders(in);
  const auto ref = combo::nn::ms_deform_attn_core(in.value, in.shapes, in.loc, in.attn);
  const auto got = combo::nn::ms_deform_attn_fused(in.value, in.shapes, in.loc, in.attn);
  EXPECT_TENSOR_NEAR_ABS(ref, got, 1e-12);
  EXPECT_TENSOR_NEAR_ABS(naive_ms_deform_attn(in.value, in.shapes, in.loc, in.attn), got, 1e-12);
}

TEST_F(MSDeformAttnTest, FusedKernelAcceptsNonContiguousInputs) {
  auto in = random_inputs(torch::kFloat32);
  const auto value_t = in.value.transpose(2, 3).contiguous().transpose(2, 3);
  ASSERT_FALSE(value_t.is_contiguous());
  const auto ref = combo::nn::ms_deform_attn_core(in.value, in.shapes, in.loc, in.attn);
  const auto got = combo::nn::ms_deform_attn_fused(value_t, in.shapes, in.loc, in.attn);
  EXPECT_TENSOR_NEAR_ABS(ref, got, 1e-6);
}

TEST_F(MSDeformAttnTest, CoreRejectsInconsistentShapes) {
  auto in = random_inputs(torch::kFloat32);
  SpatialShapes wrong = {{4, 5}, {2, 3}, {2, 1}};
  try {
    combo::nn::ms_deform_attn_core(in.value, wrong, in.loc, in.attn);
    FAIL() << "expected an error";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("cover 28 tokens but value has S = 27"), std::string::npos)
        << e.what();
  }
  EXPECT_THROW(
      combo::nn::ms_deform_attn_fused(in.value, in.shapes, in.loc, in.attn.narrow(4, 0, 2)),
      std::exception);
}

TEST_F(MSDeformAttnTest, LevelStartIndexIsTheCumulativeTokenCount) {
  EXPECT_EQ(combo::nn::level_start_index({{7, 7}, {14, 14}, {28, 28}}),
            (std::vector<int64_t>{0, 49, 245}));
  EXPECT_EQ(combo::nn::level_start_index({{3, 4}, {6, 8}}), (std::vector<int64_t>{0, 12}));
}

TEST_F(MSDeformAttnTest, OfficialInitialisation) {
  const int64_t C = 64, M = 8, L = 3, P = 4;
  combo::nn::MSDeformAttn attn(
      combo::nn::MSDeformAttnOptions().d_model(C).n_heads(M).n_levels(L).n_points(P));
  EXPECT_EQ(attn->sampling_offsets->weight.abs().max().item<double>(), 0.0);
  EXPECT_EQ(attn->attention_weights->weight.abs().max().item<double>(), 0.0);
  EXPECT_EQ(attn->attention_weights->bias.abs().max().item<double>(), 0.0);
  EXPECT_EQ(attn->value_proj->bias.abs().max().item<double>(), 0.0);
  EXPECT_EQ(attn->output_proj->bias.abs().max().item<double>(), 0.0);
  const double bound = std::sqrt(6.0 / (C + C));
  for (const auto& w : {attn->value_proj->weight, attn->output_proj->weight}) {
    EXPECT_LE(w.abs().max().item<double>(), bound);
    EXPECT_GT(w.abs().max().item<double>(), 0.9 * bound);
    EXPECT_NEAR(w.std().item<double>(), bound / std::sqrt(3.0), 0.1 * bound);
  }
  auto bias = attn->sampling_offsets->bias.to(torch::kFloat64);
  ASSERT_EQ(bias.numel(), M * L * P * 2);
  auto b = bias.accessor<double, 1>();
  for (int64_t h = 0; h < M; ++h) {
    const double theta = 2.0 * M_PI * h / M;
    const double norm = std::max(std::abs(std::cos(theta)), std::abs(std::sin(theta)));
    for (int64_t l = 0; l < L; ++l) {
      for (int64_t p = 0; p < P; ++p) {
        const int64_t i = ((h * L + l) * P + p) * 2;
        EXPECT_NEAR(b[i], std::cos(theta) / norm * (p + 1), 1e-6 * (p + 1))
            << "head " << h << " point " << p;
        EXPECT_NEAR(b[i + 1], std::sin(theta) / norm * (p + 1), 1e-6 * (p + 1))
            << "head " << h << " point " << p;
      }
    }
  }
}

TEST_F(MSDeformAttnTest, RegistersTheOfficialChildNames) {
  combo::nn::MSDeformAttn attn(combo::nn::MSDeformAttnOptions().n_levels(3));
  std::vector<std::string> names;
  for (const auto& item : attn->named_parameters()) names.push_back(item.key());
  EXPECT_EQ(names, (std::vector<std::string>{"sampling_offsets.weight", "sampling_offsets.bias",
                                             "attention_weights.weight", "attention_weights.bias",
                                             "value_proj.weight", "value_proj.bias",
                                             "output_proj.weight", "output_proj.bias"}));
  EXPECT_EQ(attn->sampling_offsets->weight.sizes(), (std::vector<int64_t>{192, 256}));
  EXPECT_EQ(attn->attention_weights->weight.sizes(), (std::vector<int64_t>{96, 256}));
}

// The module against an explicit composition: value projection, offsets divided by (W_l, H_l)
// per level, softmax over the level-point pairs of each head, naive sampling, output projection.
TEST_F(MSDeformAttnTest, ModuleForwardMatchesExplicitComposition) {
  const int64_t C = 16, M = 4, L = 2, P = 3, N = 2;
  const SpatialShapes shapes = {{3, 5}, {2, 2}};
  const int64_t S = 19, Lq = 6;
  for (bool fused : {false, true}) {
    torch::manual_seed(5);
    combo::nn::MSDeformAttn attn(
        combo::nn::MSDeformAttnOptions().d_model(C).n_heads(M).n_levels(L).n_points(P).fused_kernel(
            fused));
    {
      torch::NoGradGuard no_grad;
      for (auto& p : attn->parameters()) p.add_(torch::randn_like(p) * 0.3);
    }
    const auto query = torch::randn({N, Lq, C});
    const auto input = torch::randn({N, S, C});
    const auto ref = torch::rand({N, Lq, L, 2});
    const auto got = attn->forward(query, ref, input, shapes, combo::nn::level_start_index(shapes));
    ASSERT_EQ(got.sizes(), (std::vector<int64_t>{N, Lq, C}));

    torch::NoGradGuard no_grad;
    const auto value = torch::linear(input, attn->value_proj->weight, attn->value_proj->bias)
                           .view({N, S, M, C / M});
    auto offsets =
        torch::linear(query, attn->sampling_offsets->weight, attn->sampling_offsets->bias)
            .view({N, Lq, M, L, P, 2});
    auto logits =
        torch::linear(query, attn->attention_weights->weight, attn->attention_weights->bias)
            .view({N, Lq, M, L * P});
    auto weights = (logits - std::get<0>(logits.max(-1, true))).exp();
    weights = (weights / weights.sum(-1, true)).view({N, Lq, M, L, P});
    auto loc = torch::empty({N, Lq, M, L, P, 2});
    auto la = loc.accessor<float, 6>();
    auto oa = offsets.accessor<float, 6>();
    auto ra = ref.accessor<float, 4>();
    for (int64_t n = 0; n < N; ++n)
      for (int64_t q = 0; q < Lq; ++q)
        for (int64_t m = 0; m < M; ++m)
          for (int64_t l = 0; l < L; ++l)
            for (int64_t p = 0; p < P; ++p) {
              la[n][q][m][l][p][0] = ra[n][q][l][0] + oa[n][q][m][l][p][0] / shapes[l].second;
              la[n][q][m][l][p][1] = ra[n][q][l][1] + oa[n][q][m][l][p][1] / shapes[l].first;
            }
    const auto sampled = naive_ms_deform_attn(value, shapes, loc, weights).to(torch::kFloat32);
    const auto expected =
        torch::linear(sampled, attn->output_proj->weight, attn->output_proj->bias);
    EXPECT_TENSOR_NEAR_ABS(expected, got, 1e-5) << (fused ? "fused" : "reference");
  }
}

TEST_F(MSDeformAttnTest, ModuleGradientsAgreeBetweenKernels) {
  const SpatialShapes shapes = {{4, 6}, {2, 3}, {1, 2}};
  const int64_t S = 32, Lq = 10, C = 32;
  std::vector<std::vector<at::Tensor>> grads;
  for (bool fused : {false, true}) {
    torch::manual_seed(11);
    combo::nn::MSDeformAttn attn(
        combo::nn::MSDeformAttnOptions().d_model(C).n_heads(4).n_levels(3).fused_kernel(fused));
    const auto query = torch::randn({2, Lq, C}, torch::requires_grad());
    const auto input = torch::randn({2, S, C}, torch::requires_grad());
    const auto ref = torch::rand({1, Lq, 3, 2});
    attn->forward(query, ref, input, shapes, combo::nn::level_start_index(shapes))
        .pow(2)
        .mean()
        .backward();
    std::vector<at::Tensor> g = {query.grad(), input.grad()};
    for (const auto& p : attn->parameters()) {
      ASSERT_TRUE(p.grad().defined());
      g.push_back(p.grad());
    }
    grads.push_back(g);
  }
  for (size_t i = 0; i < grads[0].size(); ++i) {
    EXPECT_TRUE(combo::testing::tensors_near_rel(grads[0][i], grads[1][i], 1e-5)) << "tensor " << i;
  }
}

TEST_F(MSDeformAttnTest, ModuleRejectsWrongLevelStartIndex) {
  combo::nn::MSDeformAttn attn(combo::nn::MSDeformAttnOptions().d_model(8).n_heads(2).n_levels(2));
  const SpatialShapes shapes = {{2, 2}, {1, 1}};
  EXPECT_THROW(attn->forward(torch::randn({1, 5, 8}), torch::rand({1, 5, 2, 2}),
                             torch::randn({1, 5, 8}), shapes, {0, 3}),
               std::exception);
}

TEST_F(MSDeformAttnTest, C2XavierFillIsKaimingUniformWithUnitSlope) {
  torch::nn::Conv2d conv(torch::nn::Conv2dOptions(64, 128, 3).bias(true));
  combo::nn::c2_xavier_fill(conv);
  const double bound = std::sqrt(3.0 / (64 * 9));
  EXPECT_LE(conv->weight.abs().max().item<double>(), bound);
  EXPECT_GT(conv->weight.abs().max().item<double>(), 0.95 * bound);
  EXPECT_NEAR(conv->weight.std().item<double>(), bound / std::sqrt(3.0), 0.05 * bound);
  EXPECT_EQ(conv->bias.abs().max().item<double>(), 0.0);

  torch::nn::Linear linear(300, 100);
  combo::nn::xavier_uniform_fill(linear);
  const double xb = std::sqrt(6.0 / 400);
  EXPECT_LE(linear->weight.abs().max().item<double>(), xb);
  EXPECT_GT(linear->weight.abs().max().item<double>(), 0.95 * xb);
  EXPECT_EQ(linear->bias.abs().max().item<double>(), 0.0);
}

}  // namespace
