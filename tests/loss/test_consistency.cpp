#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <functional>

#include "combo/core/check.h"
#include "combo/loss/consistency.h"
#include "testing/testing.h"

using combo::loss::adjacent_cosine_distance;
using combo::loss::adjacent_pair_rows;
using combo::loss::consistency_loss;
using combo::loss::ConsistencyGrouping;
using combo::loss::ConsistencyOptions;
using combo::loss::ConsistencyType;

namespace {

class ConsistencyTest : public combo::testing::SeededTest {};

// 1 - cos with the CosineEmbeddingLoss epsilon, as scalar double loops.
double distance(const at::Tensor& a, const at::Tensor& b) {
  auto x = a.to(torch::kFloat64).contiguous().view(-1);
  auto y = b.to(torch::kFloat64).contiguous().view(-1);
  auto xa = x.accessor<double, 1>();
  auto ya = y.accessor<double, 1>();
  double dot = 0, xx = 0, yy = 0;
  for (int64_t i = 0; i < x.numel(); ++i) {
    dot += xa[i] * ya[i];
    xx += xa[i] * xa[i];
    yy += ya[i] * ya[i];
  }
  return 1.0 - dot / std::sqrt((xx + 1e-12) * (yy + 1e-12));
}

// Central finite differences of f at x (double), compared with autograd.
void expect_gradient_matches(const std::function<at::Tensor(const at::Tensor&)>& f,
                             const at::Tensor& x0) {
  auto x = x0.clone().requires_grad_(true);
  f(x).backward();
  auto analytic = x.grad().clone();
  const auto numeric = combo::testing::numeric_gradient(f, x0);
  EXPECT_TENSOR_NEAR_ABS(numeric, analytic, 1e-7);
}

}  // namespace

TEST_F(ConsistencyTest, PairRowsFollowTheGrouping) {
  using V = std::vector<int64_t>;
  // Official: consecutive groups of 5 rows, whatever the videos.
  EXPECT_EQ(adjacent_pair_rows(ConsistencyGrouping::kOfficial, {10}), (V{0, 1, 2, 3, 5, 6, 7, 8}));
  EXPECT_EQ(adjacent_pair_rows(ConsistencyGrouping::kPerVideo, {10}),
            (V{0, 1, 2, 3, 4, 5, 6, 7, 8}));
  EXPECT_EQ(adjacent_pair_rows(ConsistencyGrouping::kPerVideo, {5, 10, 1, 2}),
            (V{0, 1, 2, 3, 5, 6, 7, 8, 9, 10, 11, 12, 13, 16}));
  EXPECT_EQ(adjacent_pair_rows(ConsistencyGrouping::kOfficial, {5, 5}),
            adjacent_pair_rows(ConsistencyGrouping::kPerVideo, {5, 5}));
}

TEST_F(ConsistencyTest, OfficialGroupingNeedsMultiplesOfFive) {
  try {
    adjacent_pair_rows(ConsistencyGrouping::kOfficial, {5, 3});
    FAIL() << "expected an error";
  } catch (const combo::Error& e) {
    EXPECT_NE(std::string(e.what()).find("8 frames"), std::string::npos) << e.what();
  }
  EXPECT_THROW(adjacent_pair_rows(ConsistencyGrouping::kPerVideo, {5, 0}), combo::Error);
}

TEST_F(ConsistencyTest, DistanceEqualsScalarFormula) {
  auto m = torch::randn({10, 4, 6});
  auto d = adjacent_cosine_distance(m, {10}, ConsistencyGrouping::kOfficial);
  ASSERT_EQ(d.numel(), 8);
  const std::vector<int64_t> rows = {0, 1, 2, 3, 5, 6, 7, 8};
  for (size_t k = 0; k < rows.size(); ++k)
    EXPECT_NEAR(d[k].item<double>(), distance(m[rows[k]], m[rows[k] + 1]), 1e-6);
}

TEST_F(ConsistencyTest, AdaptiveAndFixedLossesAreMeansOverPairs) {
  auto m = torch::randn({15, 3, 8});
  const std::vector<int64_t> videos = {5, 5, 5};
  double adaptive = 0, fixed = 0;
  int pairs = 0;
  for (int64_t r = 0; r + 1 < 15; ++r) {
    if ((r + 1) % 5 == 0) continue;
    const double d = distance(m[r], m[r + 1]);
    adaptive += d * std::exp(-d);
    fixed += d;
    ++pairs;
  }
  auto opts = ConsistencyOptions();
  EXPECT_NEAR(consistency_loss(m, videos, opts).item<double>(), adaptive / pairs, 1e-6);
  EXPECT_NEAR(consistency_loss(m, videos, opts.type(ConsistencyType::kFixed)).item<double>(),
              fixed / pairs, 1e-6);
  EXPECT_THROW(consistency_loss(m, videos, opts.type(ConsistencyType::kNone)), combo::Error);
}

TEST_F(ConsistencyTest, IdenticalFramesCostNothing) {
  auto frame = torch::randn({1, 4, 9});
  auto m = frame.expand({10, 4, 9}).contiguous();
  EXPECT_NEAR(consistency_loss(m, {5, 5}, ConsistencyOptions()).item<double>(), 0.0, 1e-6);
  // Scaling a frame does not change the cosine.
  auto scaled = m.clone();
  scaled[3] *= 7.0;
  EXPECT_NEAR(consistency_loss(scaled, {5, 5}, ConsistencyOptions()).item<double>(), 0.0, 1e-6);
}

TEST_F(ConsistencyTest, OfficialAndPerVideoDifferOnTenFrameVideos) {
  auto m = torch::randn({20, 4, 6});
  auto official = ConsistencyOptions().grouping(ConsistencyGrouping::kOfficial);
  auto per_video = ConsistencyOptions().grouping(ConsistencyGrouping::kPerVideo);
  const double a = consistency_loss(m, {10, 10}, official).item<double>();
  const double b = consistency_loss(m, {10, 10}, per_video).item<double>();
  EXPECT_GT(std::abs(a - b), 1e-4);
  // per_video includes the pair (4, 5) of each video, the official grouping does not.
  auto d = adjacent_cosine_distance(m, {10, 10}, ConsistencyGrouping::kPerVideo);
  auto w = [](const at::Tensor& x) { return x * (-x).exp(); };
  std::vector<int64_t> keep;
  for (int64_t k = 0; k < 18; ++k)
    if (k != 4 && k != 13) keep.push_back(k);
  EXPECT_NEAR(a, w(d.index_select(0, torch::tensor(keep))).mean().item<double>(), 1e-6);
  EXPECT_NEAR(b, w(d).mean().item<double>(), 1e-6);

  auto m5 = torch::randn({20, 4, 6});
  EXPECT_EQ(consistency_loss(m5, {5, 5, 5, 5}, official).item<double>(),
            consistency_loss(m5, {5, 5, 5, 5}, per_video).item<double>());
}

TEST_F(ConsistencyTest, SingleFrameVideosGiveZeroAttachedToTheGraph) {
  auto m = torch::randn({3, 2, 4}).requires_grad_(true);
  auto loss =
      consistency_loss(m, {1, 1, 1}, ConsistencyOptions().grouping(ConsistencyGrouping::kPerVideo));
  EXPECT_EQ(loss.item<double>(), 0.0);
  loss.backward();
  EXPECT_EQ(m.grad().abs().sum().item<double>(), 0.0);
}

TEST_F(ConsistencyTest, GradientMatchesFiniteDifferences) {
  auto m = torch::randn({10, 2, 3}, torch::kFloat64);
  const std::vector<int64_t> videos = {5, 5};
  for (auto type : {ConsistencyType::kAdaptive, ConsistencyType::kFixed}) {
    for (auto grouping : {ConsistencyGrouping::kOfficial, ConsistencyGrouping::kPerVideo}) {
      auto opts = ConsistencyOptions().type(type).grouping(grouping);
      expect_gradient_matches(
          [&](const at::Tensor& x) { return consistency_loss(x, videos, opts); }, m);
    }
  }
  // Mixed video lengths.
  auto mixed = torch::randn({7, 2, 2}, torch::kFloat64);
  auto opts = ConsistencyOptions().grouping(ConsistencyGrouping::kPerVideo);
  expect_gradient_matches(
      [&](const at::Tensor& x) {
        return consistency_loss(x, {3, 4}, opts);
      },
      mixed);
}

TEST_F(ConsistencyTest, AdaptiveWeightIsNotDetached) {
  // d/dm [d e^{-d}] = (1 - d) e^{-d} d'(m); a detached weight would give e^{-d} d'(m).
  auto m = torch::randn({5, 2, 3}, torch::kFloat64).requires_grad_(true);
  consistency_loss(m, {5}, ConsistencyOptions()).backward();
  auto grad_adaptive = m.grad().clone();
  m.grad().zero_();
  auto d = adjacent_cosine_distance(m, {5}, ConsistencyGrouping::kOfficial);
  (d * (-d).detach().exp()).mean().backward();
  EXPECT_GT((grad_adaptive - m.grad()).abs().max().item<double>(), 1e-6);
}

TEST_F(ConsistencyTest, ParsesConfigNames) {
  EXPECT_EQ(combo::loss::parse_consistency_type("adaptive"), ConsistencyType::kAdaptive);
  EXPECT_EQ(combo::loss::parse_consistency_type("fixed"), ConsistencyType::kFixed);
  EXPECT_EQ(combo::loss::parse_consistency_type("none"), ConsistencyType::kNone);
  EXPECT_EQ(combo::loss::parse_consistency_grouping("official"), ConsistencyGrouping::kOfficial);
  EXPECT_EQ(combo::loss::parse_consistency_grouping("per_video"), ConsistencyGrouping::kPerVideo);
  EXPECT_THROW(combo::loss::parse_consistency_type("cosine"), combo::Error);
  EXPECT_THROW(combo::loss::parse_consistency_grouping("pervideo"), combo::Error);
}
