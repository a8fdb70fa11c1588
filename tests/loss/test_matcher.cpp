#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <functional>

#include "combo/core/check.h"
#include "combo/loss/hungarian.h"
#include "combo/loss/matcher.h"
#include "combo/loss/point_sample.h"
#include "testing/testing.h"

using combo::loss::FrameTarget;
using combo::loss::HungarianMatcher;
using combo::loss::HungarianMatcherOptions;
using combo::loss::point_sample;
using combo::loss::RandomPointSource;
using combo::loss::ReplayPointSource;

namespace {

class MatcherTest : public combo::testing::SeededTest {};

double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

// The cost of one (query, target) pair from per-point values, in scalar double arithmetic.
double pair_cost(const std::vector<double>& prob, int64_t label, const std::vector<double>& x,
                 const std::vector<double>& t, const HungarianMatcherOptions& o) {
  double bce = 0, inter = 0, sum_p = 0, sum_t = 0;
  for (size_t p = 0; p < x.size(); ++p) {
    const double pos = std::log1p(std::exp(-x[p]));  // BCE(x, 1)
    const double neg = std::log1p(std::exp(x[p]));   // BCE(x, 0)
    bce += pos * t[p] + neg * (1 - t[p]);
    inter += sigmoid(x[p]) * t[p];
    sum_p += sigmoid(x[p]);
    sum_t += t[p];
  }
  bce /= static_cast<double>(x.size());
  const double dice = 1 - (2 * inter + 1) / (sum_p + sum_t + 1);
  return o.cost_mask() * bce + o.cost_class() * (-prob[label]) + o.cost_dice() * dice;
}

std::vector<double> to_vector(const at::Tensor& t) {
  auto c = t.to(torch::kFloat64).contiguous();
  return {c.data_ptr<double>(), c.data_ptr<double>() + c.numel()};
}

}  // namespace

TEST_F(MatcherTest, CostMatrixEqualsTheFormula) {
  const int64_t Q = 4, K = 3, P = 64;
  auto o = HungarianMatcherOptions().num_points(P);
  HungarianMatcher matcher(o);
  auto logits = torch::randn({Q, 5});
  auto masks = 3 * torch::randn({Q, 6, 6});
  FrameTarget target{torch::tensor({0L, 3L, 1L}), torch::rand({K, 12, 12}) > 0.5};
  auto coords = torch::rand({1, P, 2});
  auto cost = matcher.cost_matrix(logits, masks, target, coords);
  ASSERT_EQ(cost.sizes(), (std::vector<int64_t>{Q, K}));
  EXPECT_EQ(cost.scalar_type(), torch::kFloat32);
  auto prob = torch::softmax(logits.to(torch::kFloat64), -1);
  auto x = point_sample(masks.to(torch::kFloat64).unsqueeze(1), coords.expand({Q, P, 2}));
  auto t = point_sample(target.masks.to(torch::kFloat64).unsqueeze(1), coords.expand({K, P, 2}));
  for (int64_t q = 0; q < Q; ++q) {
    for (int64_t k = 0; k < K; ++k) {
      const double expected = pair_cost(to_vector(prob[q]), target.labels[k].item<int64_t>(),
                                        to_vector(x[q][0]), to_vector(t[k][0]), o);
      EXPECT_NEAR(cost[q][k].item<double>(), expected, 1e-4) << "q " << q << " k " << k;
    }
  }
}

TEST_F(MatcherTest, FindsThePlantedMatching) {
  // Queries 7 and 3 predict targets 0 and 1 perfectly (mask and class); the rest are noise.
  const int64_t Q = 10, C = 2;
  auto gt = torch::zeros({2, 32, 32});
  gt[0].narrow(0, 0, 16).fill_(1);   // top half, class 1
  gt[1].narrow(0, 16, 16).fill_(1);  // bottom half, class 0
  FrameTarget target{torch::tensor({1L, 0L}), gt};
  auto masks = 0.1 * torch::randn({1, Q, 8, 8});
  auto logits = 0.1 * torch::randn({1, Q, C + 1});
  masks[0][7] =
      torch::nn::functional::interpolate(
          gt[0].view({1, 1, 32, 32}),
          torch::nn::functional::InterpolateFuncOptions().size(std::vector<int64_t>{8, 8}))
              .view({8, 8}) *
          40 -
      20;
  masks[0][3] = -masks[0][7];
  logits[0][7][1] = 10;
  logits[0][3][0] = 10;
  RandomPointSource points;
  auto m = HungarianMatcher()(logits, masks, {target}, points);
  ASSERT_EQ(m.size(), 1u);
  EXPECT_TENSOR_EQ(m[0].queries, torch::tensor({3L, 7L}));
  EXPECT_TENSOR_EQ(m[0].targets, torch::tensor({1L, 0L}));
}

TEST_F(MatcherTest, AgreesWithBruteForceOnItsCostMatrices) {
  const int64_t S = 3, Q = 6;
  auto logits = torch::randn({S, Q, 4});
  auto masks = torch::randn({S, Q, 5, 5});
  std::vector<FrameTarget> targets;
  for (int64_t s = 0; s < S; ++s) {
    const int64_t K = s + 1;
    targets.push_back({torch::randint(0, 3, {K}, torch::kLong), torch::rand({K, 10, 10}) > 0.5});
  }
  auto recorder = combo::loss::RecordingPointSource(std::make_shared<RandomPointSource>());
  HungarianMatcher matcher(HungarianMatcherOptions().num_points(100));
  auto matches = matcher(logits, masks, targets, recorder);
  ASSERT_EQ(recorder.matcher_coords().size(), static_cast<size_t>(S));
  for (int64_t s = 0; s < S; ++s) {
    auto cost = matcher.cost_matrix(logits[s], masks[s], targets[s], recorder.matcher_coords()[s])
                    .to(torch::kFloat64);
    const int64_t K = cost.size(1);
    ASSERT_EQ(matches[s].queries.numel(), K);
    // Brute force over ordered choices of K distinct queries.
    double best = 1e300;
    std::vector<int64_t> pick(K);
    std::function<void(int64_t, double, int64_t)> rec = [&](int64_t k, double acc, int64_t used) {
      if (k == K) {
        best = std::min(best, acc);
        return;
      }
      for (int64_t q = 0; q < Q; ++q) {
        if (used & (1 << q)) continue;
        rec(k + 1, acc + cost[q][k].item<double>(), used | (1 << q));
      }
    };
    rec(0, 0.0, 0);
    double got = 0;
    for (int64_t k = 0; k < K; ++k)
      got += cost[matches[s].queries[k].item<int64_t>()][matches[s].targets[k].item<int64_t>()]
                 .item<double>();
    EXPECT_NEAR(got, best, 1e-9) << "frame " << s;
  }
}

TEST_F(MatcherTest, EmptyTargetGivesEmptyMatchingAndStillDrawsPoints) {
  auto logits = torch::randn({2, 5, 3});
  auto masks = torch::randn({2, 5, 4, 4});
  std::vector<FrameTarget> targets = {{torch::zeros({0}, torch::kLong), torch::zeros({0, 8, 8})},
                                      {torch::tensor({1L}), torch::ones({1, 8, 8})}};
  ReplayPointSource replay({torch::rand({1, 20, 2}), torch::rand({1, 20, 2})}, {});
  auto m =
      HungarianMatcher(HungarianMatcherOptions().num_points(20))(logits, masks, targets, replay);
  EXPECT_EQ(replay.matcher_remaining(), 0u);
  EXPECT_EQ(m[0].queries.numel(), 0);
  EXPECT_EQ(m[0].targets.numel(), 0);
  EXPECT_EQ(m[1].queries.numel(), 1);
  EXPECT_EQ(m[0].queries.scalar_type(), torch::kLong);
}

TEST_F(MatcherTest, RunsWithoutGradientInFloat32) {
  auto logits = torch::randn({1, 4, 3}, torch::kFloat64).requires_grad_(true);
  auto masks = torch::randn({1, 4, 4, 4}, torch::kFloat64).requires_grad_(true);
  FrameTarget target{torch::tensor({0L, 1L}), torch::rand({2, 8, 8})};
  HungarianMatcher matcher(HungarianMatcherOptions().num_points(30));
  auto cost = matcher.cost_matrix(logits[0], masks[0], target, torch::rand({1, 30, 2}));
  EXPECT_FALSE(cost.requires_grad());
  EXPECT_EQ(cost.scalar_type(), torch::kFloat32);
}

TEST_F(MatcherTest, RejectsBadInputs) {
  HungarianMatcher matcher(HungarianMatcherOptions().num_points(10));
  RandomPointSource points;
  auto logits = torch::randn({1, 4, 3});
  auto masks = torch::randn({1, 4, 4, 4});
  // A label outside [0, C+1).
  EXPECT_THROW(matcher(logits, masks, {{torch::tensor({5L}), torch::ones({1, 8, 8})}}, points),
               combo::Error);
  // Target count differs from the frame count.
  EXPECT_THROW(matcher(logits, masks, {}, points), combo::Error);
  // NaN logits give NaN costs, which the assignment rejects naming the frame.
  try {
    matcher(logits * NAN, masks, {{torch::tensor({1L}), torch::ones({1, 8, 8})}}, points);
    FAIL() << "expected an error";
  } catch (const combo::Error& e) {
    EXPECT_NE(std::string(e.what()).find("frame 0"), std::string::npos) << e.what();
  }
}
