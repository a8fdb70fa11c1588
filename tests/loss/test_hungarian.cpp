#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <numeric>
#include <random>
#include <set>

#include "combo/core/check.h"
#include "combo/loss/hungarian.h"
#include "testing/testing.h"

using combo::loss::Assignment;
using combo::loss::assignment_cost;
using combo::loss::linear_sum_assignment;

namespace {

// Enumerates every injective map from the smaller side to the larger one; returns the best
// cost, the best assignment as (row, col) pairs sorted by row, and whether the optimum is unique.
struct BruteForce {
  double best = std::numeric_limits<double>::infinity();
  std::vector<std::pair<int64_t, int64_t>> best_pairs;
  int optimal_count = 0;
};

BruteForce brute_force(const std::vector<double>& cost, int64_t rows, int64_t cols) {
  BruteForce out;
  const bool by_rows = rows <= cols;
  const int64_t small = by_rows ? rows : cols;
  const int64_t large = by_rows ? cols : rows;
  std::vector<int64_t> pick(small);
  std::vector<bool> used(large, false);
  std::function<void(int64_t, double)> rec = [&](int64_t k, double acc) {
    if (k == small) {
      if (acc < out.best - 1e-9) {
        out.best = acc;
        out.optimal_count = 1;
        out.best_pairs.clear();
        for (int64_t s = 0; s < small; ++s) {
          out.best_pairs.emplace_back(by_rows ? s : pick[s], by_rows ? pick[s] : s);
        }
        std::sort(out.best_pairs.begin(), out.best_pairs.end());
      } else if (std::abs(acc - out.best) <= 1e-9) {
        ++out.optimal_count;
      }
      return;
    }
    for (int64_t l = 0; l < large; ++l) {
      if (used[l]) continue;
      used[l] = true;
      pick[k] = l;
      const int64_t r = by_rows ? k : l;
      const int64_t c = by_rows ? l : k;
      rec(k + 1, acc + cost[r * cols + c]);
      used[l] = false;
    }
  };
  rec(0, 0.0);
  if (small == 0) out.best = 0.0;
  return out;
}

// Checks the scipy output contract: min(R, C) pairs, rows ascending and distinct, cols distinct.
void expect_valid(const Assignment& a, int64_t rows, int64_t cols) {
  ASSERT_EQ(a.rows.size(), a.cols.size());
  ASSERT_EQ(static_cast<int64_t>(a.rows.size()), std::min(rows, cols));
  EXPECT_TRUE(std::is_sorted(a.rows.begin(), a.rows.end()));
  EXPECT_EQ(std::set<int64_t>(a.rows.begin(), a.rows.end()).size(), a.rows.size());
  EXPECT_EQ(std::set<int64_t>(a.cols.begin(), a.cols.end()).size(), a.cols.size());
  for (size_t k = 0; k < a.rows.size(); ++k) {
    EXPECT_GE(a.rows[k], 0);
    EXPECT_LT(a.rows[k], rows);
    EXPECT_GE(a.cols[k], 0);
    EXPECT_LT(a.cols[k], cols);
  }
}

// Textbook O(n^2 m) Hungarian algorithm with potentials (rows <= cols), written independently of
// the solver under test; returns the optimal cost.
double reference_cost(const std::vector<double>& cost, int64_t rows, int64_t cols) {
  if (rows > cols) {
    std::vector<double> t(cost.size());
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) t[c * rows + r] = cost[r * cols + c];
    return reference_cost(t, cols, rows);
  }
  const double inf = std::numeric_limits<double>::infinity();
  std::vector<double> u(rows + 1, 0), v(cols + 1, 0);
  std::vector<int64_t> p(cols + 1, 0), way(cols + 1, 0);
  for (int64_t i = 1; i <= rows; ++i) {
    p[0] = i;
    int64_t j0 = 0;
    std::vector<double> minv(cols + 1, inf);
    std::vector<bool> used(cols + 1, false);
    do {
      used[j0] = true;
      const int64_t i0 = p[j0];
      double delta = inf;
      int64_t j1 = 0;
      for (int64_t j = 1; j <= cols; ++j) {
        if (used[j]) continue;
        const double cur = cost[(i0 - 1) * cols + (j - 1)] - u[i0] - v[j];
        if (cur < minv[j]) {
          minv[j] = cur;
          way[j] = j0;
        }
        if (minv[j] < delta) {
          delta = minv[j];
          j1 = j;
        }
      }
      for (int64_t j = 0; j <= cols; ++j) {
        if (used[j]) {
          u[p[j]] += delta;
          v[j] -= delta;
        } else {
          minv[j] -= delta;
        }
      }
      j0 = j1;
    } while (p[j0] != 0);
    do {
      const int64_t j1 = way[j0];
      p[j0] = p[j1];
      j0 = j1;
    } while (j0 != 0);
  }
  double total = 0;
  for (int64_t j = 1; j <= cols; ++j)
    if (p[j] != 0) total += cost[(p[j] - 1) * cols + (j - 1)];
  return total;
}

}  // namespace

TEST(HungarianTest, MatchesBruteForceOnThousandRandomMatrices) {
  std::mt19937_64 rng(1234);
  std::uniform_int_distribution<int64_t> dim(0, 8);
  std::uniform_int_distribution<int> small_int(0, 3);
  std::uniform_real_distribution<double> real(-5.0, 5.0);
  int exact_compared = 0, ties = 0, rect_tall = 0, rect_wide = 0;
  for (int trial = 0; trial < 1000; ++trial) {
    const int64_t rows = dim(rng), cols = dim(rng);
    const bool integer = trial % 2 == 0;  // integer costs in {0..3} create many ties
    std::vector<double> cost(rows * cols);
    for (auto& c : cost) c = integer ? small_int(rng) : real(rng);
    const auto a = linear_sum_assignment(cost, rows, cols);
    expect_valid(a, rows, cols);
    const auto bf = brute_force(cost, rows, cols);
    ASSERT_NEAR(assignment_cost(cost, cols, a), bf.best, 1e-9)
        << "trial " << trial << " (" << rows << "x" << cols << ")";
    rect_tall += rows > cols;
    rect_wide += rows < cols;
    if (bf.optimal_count == 1) {
      std::vector<std::pair<int64_t, int64_t>> got;
      for (size_t k = 0; k < a.rows.size(); ++k) got.emplace_back(a.rows[k], a.cols[k]);
      EXPECT_EQ(got, bf.best_pairs) << "trial " << trial;
      ++exact_compared;
    } else {
      ++ties;
    }
  }
  // The sample really covers ties, unique optima and both rectangular orientations.
  EXPECT_GT(exact_compared, 400);
  EXPECT_GT(ties, 100);
  EXPECT_GT(rect_tall, 300);
  EXPECT_GT(rect_wide, 300);
}

TEST(HungarianTest, SolvesHundredBySeventyOne) {
  std::mt19937_64 rng(7);
  std::uniform_real_distribution<double> u(1.0, 2.0);
  const int64_t rows = 100, cols = 71;
  // A planted assignment of zero cost among costs >= 1 is the unique optimum.
  std::vector<int64_t> planted_rows(rows);
  std::iota(planted_rows.begin(), planted_rows.end(), 0);
  std::shuffle(planted_rows.begin(), planted_rows.end(), rng);
  std::vector<double> cost(rows * cols);
  for (auto& c : cost) c = u(rng);
  for (int64_t c = 0; c < cols; ++c) cost[planted_rows[c] * cols + c] = 0.0;
  auto a = linear_sum_assignment(cost, rows, cols);
  expect_valid(a, rows, cols);
  EXPECT_DOUBLE_EQ(assignment_cost(cost, cols, a), 0.0);
  for (size_t k = 0; k < a.rows.size(); ++k) EXPECT_EQ(planted_rows[a.cols[k]], a.rows[k]);

  // A dense random matrix: the optimum equals an independent Hungarian implementation, and the
  // transposed problem has the same cost.
  for (auto& c : cost) c = u(rng);
  a = linear_sum_assignment(cost, rows, cols);
  expect_valid(a, rows, cols);
  const double ref = reference_cost(cost, rows, cols);
  EXPECT_NEAR(assignment_cost(cost, cols, a), ref, 1e-9);
  std::vector<double> t(cost.size());
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) t[c * rows + r] = cost[r * cols + c];
  const auto at = linear_sum_assignment(t, cols, rows);
  expect_valid(at, cols, rows);
  EXPECT_NEAR(assignment_cost(t, rows, at), ref, 1e-9);
}

TEST(HungarianTest, EmptyDimensionsGiveEmptyAssignments) {
  for (auto [r, c] : std::vector<std::pair<int64_t, int64_t>>{{5, 0}, {0, 5}, {0, 0}}) {
    auto a = linear_sum_assignment(std::vector<double>{}, r, c);
    EXPECT_TRUE(a.rows.empty());
    EXPECT_TRUE(a.cols.empty());
  }
  auto a = linear_sum_assignment(at::zeros({100, 0}));
  EXPECT_TRUE(a.rows.empty());
}

TEST(HungarianTest, TiesResolveLikeScipy) {
  // scipy.optimize.linear_sum_assignment returns the identity for constant matrices.
  for (auto [r, c] : std::vector<std::pair<int64_t, int64_t>>{{3, 3}, {2, 4}, {4, 2}}) {
    auto a = linear_sum_assignment(std::vector<double>(r * c, 1.5), r, c);
    const int64_t m = std::min(r, c);
    for (int64_t k = 0; k < m; ++k) {
      EXPECT_EQ(a.rows[k], k) << r << "x" << c;
      EXPECT_EQ(a.cols[k], k) << r << "x" << c;
    }
  }
}

TEST(HungarianTest, MoreRowsThanColumnsMatchesEveryColumn) {
  // 4 queries, 2 targets: the two cheapest distinct rows per column.
  std::vector<double> cost = {5, 5,  //
                              1, 9,  //
                              9, 9,  //
                              9, 2};
  auto a = linear_sum_assignment(cost, 4, 2);
  EXPECT_EQ(a.rows, (std::vector<int64_t>{1, 3}));
  EXPECT_EQ(a.cols, (std::vector<int64_t>{0, 1}));
}

TEST(HungarianTest, RejectsNonFiniteCosts) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  for (double bad : {nan, inf, -inf}) {
    std::vector<double> cost = {1, 2, 3, bad};
    try {
      linear_sum_assignment(cost, 2, 2);
      FAIL() << "expected an error for " << bad;
    } catch (const combo::Error& e) {
      EXPECT_NE(std::string(e.what()).find("cost[1][1]"), std::string::npos) << e.what();
    }
  }
  EXPECT_THROW(linear_sum_assignment(std::vector<double>{1, 2, 3}, 2, 2), combo::Error);
  EXPECT_THROW(linear_sum_assignment(at::zeros({2, 2, 2})), combo::Error);
}

TEST(HungarianTest, TensorOverloadAcceptsAnyFloatDtype) {
  auto cost = torch::tensor({{4.f, 1.f, 3.f}, {2.f, 0.f, 5.f}, {3.f, 2.f, 2.f}});
  for (auto dtype : {torch::kFloat32, torch::kFloat64}) {
    auto a = linear_sum_assignment(cost.to(dtype));
    EXPECT_EQ(a.rows, (std::vector<int64_t>{0, 1, 2}));
    EXPECT_EQ(a.cols, (std::vector<int64_t>{1, 0, 2}));
  }
}
