#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "combo/core/check.h"
#include "combo/loss/point_sample.h"
#include "testing/testing.h"

using combo::loss::get_uncertain_point_coords_with_randomness;
using combo::loss::point_sample;
using combo::loss::RandomPointSource;
using combo::loss::RecordingPointSource;
using combo::loss::ReplayPointSource;

namespace {

// Bilinear interpolation with zero padding and align_corners = false, written out per point:
// pixel centres sit at (i + 0.5) / size in [0, 1] coordinates.
double bilinear(const at::Tensor& map, double x, double y) {
  const int64_t h = map.size(0), w = map.size(1);
  auto acc = map.accessor<double, 2>();
  const double px = x * w - 0.5, py = y * h - 0.5;
  const auto x0 = static_cast<int64_t>(std::floor(px)), y0 = static_cast<int64_t>(std::floor(py));
  const double fx = px - x0, fy = py - y0;
  auto at_or_zero = [&](int64_t yy, int64_t xx) {
    return (yy < 0 || yy >= h || xx < 0 || xx >= w) ? 0.0 : acc[yy][xx];
  };
  return (1 - fy) * ((1 - fx) * at_or_zero(y0, x0) + fx * at_or_zero(y0, x0 + 1)) +
         fy * ((1 - fx) * at_or_zero(y0 + 1, x0) + fx * at_or_zero(y0 + 1, x0 + 1));
}

class PointSampleTest : public combo::testing::SeededTest {};

}  // namespace

TEST_F(PointSampleTest, EqualsBilinearFormulaWithZeroPadding) {
  auto input = torch::randn({2, 3, 5, 7}, torch::kFloat64);
  auto coords = torch::rand({2, 40, 2}, torch::kFloat64);
  // Points on the border and outside the pixel-centre grid exercise the zero padding.
  coords[0][0] = torch::tensor({0.0, 0.0}, torch::kFloat64);
  coords[0][1] = torch::tensor({1.0, 1.0}, torch::kFloat64);
  coords[1][2] = torch::tensor({0.5 / 7, 0.5 / 5}, torch::kFloat64);
  auto out = point_sample(input, coords);
  ASSERT_EQ(out.sizes(), (std::vector<int64_t>{2, 3, 40}));
  auto c = coords.accessor<double, 3>();
  for (int64_t n = 0; n < 2; ++n)
    for (int64_t ch = 0; ch < 3; ++ch)
      for (int64_t p = 0; p < 40; ++p)
        EXPECT_NEAR(out[n][ch][p].item<double>(), bilinear(input[n][ch], c[n][p][0], c[n][p][1]),
                    1e-12);
  // The exact pixel centre returns the pixel; the image corner gets a quarter of the corner pixel.
  EXPECT_NEAR(out[1][0][2].item<double>(), input[1][0][0][0].item<double>(), 1e-12);
  EXPECT_NEAR(out[0][1][0].item<double>(), 0.25 * input[0][1][0][0].item<double>(), 1e-12);
}

TEST_F(PointSampleTest, IsDifferentiableInTheInput) {
  auto input = torch::randn({1, 1, 4, 4}, torch::kFloat64).requires_grad_(true);
  auto coords = torch::rand({1, 10, 2}, torch::kFloat64);
  point_sample(input, coords).sum().backward();
  // Each point spreads a total weight of at most 1 over the pixels.
  EXPECT_LE(input.grad().sum().item<double>(), 10.0 + 1e-9);
  EXPECT_GT(input.grad().abs().sum().item<double>(), 0.0);
}

TEST_F(PointSampleTest, HandlesEmptyBatchesAndRejectsBadShapes) {
  auto out = point_sample(torch::zeros({0, 1, 4, 4}), torch::zeros({0, 9, 2}));
  EXPECT_EQ(out.sizes(), (std::vector<int64_t>{0, 1, 9}));
  EXPECT_THROW(point_sample(torch::zeros({1, 4, 4}), torch::zeros({1, 9, 2})), combo::Error);
  EXPECT_THROW(point_sample(torch::zeros({1, 1, 4, 4}), torch::zeros({2, 9, 2})), combo::Error);
  EXPECT_THROW(point_sample(torch::zeros({1, 1, 4, 4}), torch::zeros({1, 9, 3})), combo::Error);
}

TEST_F(PointSampleTest, UncertainPointsFollowTheRandomStreamAndTopK) {
  const int64_t boxes = 3, num_points = 40;
  const double oversample = 3.0, importance = 0.75;
  auto logits = torch::randn({boxes, 1, 6, 6});
  auto gen = at::detail::createCPUGenerator(42);
  auto got =
      get_uncertain_point_coords_with_randomness(logits, num_points, oversample, importance, gen);
  ASSERT_EQ(got.sizes(), (std::vector<int64_t>{boxes, num_points, 2}));
  EXPECT_EQ(got.scalar_type(), torch::kFloat32);

  // Independent replay of the documented procedure with the same seed.
  auto gen2 = at::detail::createCPUGenerator(42);
  auto cand = at::rand({boxes, 120, 2}, gen2, torch::kFloat32);
  auto unc = -point_sample(logits, cand).squeeze(1).abs();  // [boxes, 120]
  for (int64_t b = 0; b < boxes; ++b) {
    auto sorted = std::get<0>(unc[b].sort(/*dim=*/0, /*descending=*/true));
    const double kth = sorted[29].item<double>();
    // The 30 importance points are candidates whose uncertainty is >= the 30th largest.
    auto picked_unc =
        -point_sample(logits.narrow(0, b, 1), got.narrow(0, b, 1).narrow(1, 0, 30)).abs().squeeze();
    EXPECT_TRUE((picked_unc >= kth - 1e-6).all().item<bool>()) << "box " << b;
  }
  auto rest = at::rand({boxes, 10, 2}, gen2, torch::kFloat32);
  EXPECT_TENSOR_EQ(rest, got.narrow(1, 30, 10).contiguous());
}

TEST_F(PointSampleTest, UncertainPointsConcentrateOnTheDecisionBoundary) {
  // logit = 20 * (x - 0.5): the most uncertain points lie near the vertical line x = 0.5.
  auto x = (torch::arange(32, torch::kFloat32) + 0.5) / 32;
  auto logits = (20 * (x - 0.5)).view({1, 1, 1, 32}).expand({2, 1, 32, 32}).contiguous();
  auto got = get_uncertain_point_coords_with_randomness(logits, 400, 3.0, 0.75);
  auto dist = (got.narrow(1, 0, 300).select(2, 0) - 0.5).abs();
  EXPECT_LT(dist.max().item<double>(), 0.3);
  EXPECT_LT(dist.mean().item<double>(), 0.15);  // uniform points would give 0.25
}

TEST_F(PointSampleTest, AllUniformWhenImportanceIsZero) {
  auto logits = torch::randn({2, 1, 4, 4});
  auto gen = at::detail::createCPUGenerator(3);
  auto got = get_uncertain_point_coords_with_randomness(logits, 16, 2.0, 0.0, gen);
  auto gen2 = at::detail::createCPUGenerator(3);
  at::rand({2, 32, 2}, gen2, torch::kFloat32);  // the oversampled set is still drawn
  EXPECT_TENSOR_EQ(at::rand({2, 16, 2}, gen2, torch::kFloat32), got);
  EXPECT_THROW(get_uncertain_point_coords_with_randomness(logits, 16, 0.5, 0.5), combo::Error);
  EXPECT_THROW(get_uncertain_point_coords_with_randomness(logits, 16, 3.0, 1.5), combo::Error);
}

TEST_F(PointSampleTest, RandomSourceIsDeterministicGivenTheSeed) {
  RandomPointSource source;
  auto logits = torch::randn({2, 1, 8, 8});
  torch::manual_seed(11);
  auto a = source.matcher_points(50, torch::kCPU);
  auto b = source.mask_loss_points(logits, 50, 3.0, 0.75);
  torch::manual_seed(11);
  EXPECT_TENSOR_EQ(a, source.matcher_points(50, torch::kCPU));
  EXPECT_TENSOR_EQ(b, source.mask_loss_points(logits, 50, 3.0, 0.75));
  EXPECT_EQ(a.sizes(), (std::vector<int64_t>{1, 50, 2}));
  EXPECT_GE(a.min().item<float>(), 0.f);
  EXPECT_LT(a.max().item<float>(), 1.f);
}

TEST_F(PointSampleTest, RecordedPointsReplayInOrder) {
  auto recorder = RecordingPointSource(std::make_shared<RandomPointSource>());
  auto logits = torch::randn({3, 1, 8, 8});
  auto m0 = recorder.matcher_points(20, torch::kCPU);
  auto m1 = recorder.matcher_points(20, torch::kCPU);
  auto l0 = recorder.mask_loss_points(logits, 20, 3.0, 0.75);
  ReplayPointSource replay(recorder.matcher_coords(), recorder.mask_loss_coords());
  EXPECT_EQ(replay.matcher_remaining(), 2u);
  EXPECT_TENSOR_EQ(m0, replay.matcher_points(20, torch::kCPU));
  EXPECT_TENSOR_EQ(l0, replay.mask_loss_points(logits, 20, 3.0, 0.75));
  EXPECT_TENSOR_EQ(m1, replay.matcher_points(20, torch::kCPU));
  EXPECT_EQ(replay.matcher_remaining(), 0u);
  EXPECT_EQ(replay.mask_loss_remaining(), 0u);
  EXPECT_THROW(replay.matcher_points(20, torch::kCPU), combo::Error);
  EXPECT_THROW(replay.mask_loss_points(logits, 20, 3.0, 0.75), combo::Error);
}

TEST_F(PointSampleTest, ReplayRejectsPointSetsOfTheWrongShape) {
  ReplayPointSource replay({torch::rand({1, 10, 2})}, {torch::rand({2, 10, 2})});
  try {
    replay.matcher_points(12, torch::kCPU);
    FAIL() << "expected a shape error";
  } catch (const combo::Error& e) {
    EXPECT_NE(std::string(e.what()).find("matcher call 0"), std::string::npos) << e.what();
  }
  EXPECT_THROW(replay.mask_loss_points(torch::zeros({3, 1, 4, 4}), 10, 3.0, 0.75), combo::Error);
}
