#include "combo/loss/hungarian.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "combo/core/check.h"

namespace combo::loss {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// Dual-feasible shortest augmenting path solver for a matrix with rows <= cols. The state is
// kept across rows so that each augmentation is one Dijkstra-like search over the columns.
class AugmentingPathSolver {
 public:
  AugmentingPathSolver(const std::vector<double>& cost, int64_t rows, int64_t cols)
      : cost_(cost),
        rows_(rows),
        cols_(cols),
        u_(rows, 0.0),
        v_(cols, 0.0),
        shortest_(cols, kInf),
        path_(cols, -1),
        col4row_(rows, -1),
        row4col_(cols, -1),
        row_seen_(rows, false),
        col_done_(cols, false),
        remaining_(cols, 0) {}

  std::vector<int64_t> solve() {
    for (int64_t cur = 0; cur < rows_; ++cur) {
      double min_val = 0.0;
      const int64_t sink = find_path(cur, &min_val);
      COMBO_CHECK(sink >= 0, "linear_sum_assignment: cost matrix is infeasible");
      update_duals(cur, min_val);
      // Flip the alternating path back to the start row.
      int64_t j = sink;
      while (true) {
        const int64_t i = path_[j];
        row4col_[j] = i;
        std::swap(col4row_[i], j);
        if (i == cur) break;
      }
    }
    return col4row_;
  }

 private:
  // Returns the free column that ends the shortest alternating path from row `start`.
  int64_t find_path(int64_t start, double* min_val_out) {
    double min_val = 0.0;
    int64_t num_remaining = cols_;
    // Columns are scanned in reverse so that ties resolve like scipy (a constant matrix gives
    // the identity assignment).
    for (int64_t k = 0; k < cols_; ++k) remaining_[k] = cols_ - k - 1;
    std::fill(row_seen_.begin(), row_seen_.end(), false);
    std::fill(col_done_.begin(), col_done_.end(), false);
    std::fill(shortest_.begin(), shortest_.end(), kInf);
    int64_t i = start;
    int64_t sink = -1;
    while (sink == -1) {
      int64_t best = -1;
      double lowest = kInf;
      row_seen_[i] = true;
      const double* row = cost_.data() + i * cols_;
      for (int64_t k = 0; k < num_remaining; ++k) {
        const int64_t j = remaining_[k];
        const double reduced = min_val + row[j] - u_[i] - v_[j];
        if (reduced < shortest_[j]) {
          path_[j] = i;
          shortest_[j] = reduced;
        }
        // Among equal distances prefer a free column: it ends the search sooner.
        if (shortest_[j] < lowest || (shortest_[j] == lowest && row4col_[j] == -1)) {
          lowest = shortest_[j];
          best = k;
        }
      }
      min_val = lowest;
      if (min_val == kInf || best < 0) return -1;
      const int64_t j = remaining_[best];
      if (row4col_[j] == -1) {
        sink = j;
      } else {
        i = row4col_[j];
      }
      col_done_[j] = true;
      remaining_[best] = remaining_[--num_remaining];
    }
    *min_val_out = min_val;
    return sink;
  }

  void update_duals(int64_t cur, double min_val) {
    u_[cur] += min_val;
    for (int64_t i = 0; i < rows_; ++i) {
      if (row_seen_[i] && i != cur) u_[i] += min_val - shortest_[col4row_[i]];
    }
    for (int64_t j = 0; j < cols_; ++j) {
      if (col_done_[j]) v_[j] -= min_val - shortest_[j];
    }
  }

  const std::vector<double>& cost_;
  int64_t rows_;
  int64_t cols_;
  std::vector<double> u_, v_, shortest_;
  std::vector<int64_t> path_, col4row_, row4col_;
  std::vector<bool> row_seen_, col_done_;
  std::vector<int64_t> remaining_;
};

}  // namespace

Assignment linear_sum_assignment(const std::vector<double>& cost, int64_t num_rows,
                                 int64_t num_cols) {
  COMBO_CHECK(num_rows >= 0 && num_cols >= 0, "linear_sum_assignment: negative shape ", num_rows,
              "x", num_cols);
  COMBO_CHECK(static_cast<int64_t>(cost.size()) == num_rows * num_cols,
              "linear_sum_assignment: expected ", num_rows * num_cols, " entries for a ", num_rows,
              "x", num_cols, " matrix, got ", cost.size());
  for (int64_t r = 0; r < num_rows; ++r) {
    for (int64_t c = 0; c < num_cols; ++c) {
      const double x = cost[r * num_cols + c];
      COMBO_CHECK(std::isfinite(x), "linear_sum_assignment: cost[", r, "][", c, "] = ", x, " in a ",
                  num_rows, "x", num_cols, " matrix; expected finite costs (NaN and inf ",
                  "are not allowed)");
    }
  }
  Assignment out;
  if (num_rows == 0 || num_cols == 0) return out;

  const bool transpose = num_cols < num_rows;
  if (!transpose) {
    auto col4row = AugmentingPathSolver(cost, num_rows, num_cols).solve();
    out.rows.resize(num_rows);
    std::iota(out.rows.begin(), out.rows.end(), 0);
    out.cols = std::move(col4row);
    return out;
  }
  // More rows than columns: solve the transpose, then sort the pairs by original row.
  std::vector<double> t(cost.size());
  for (int64_t r = 0; r < num_rows; ++r) {
    for (int64_t c = 0; c < num_cols; ++c) t[c * num_rows + r] = cost[r * num_cols + c];
  }
  const auto row4col = AugmentingPathSolver(t, num_cols, num_rows).solve();
  std::vector<int64_t> order(num_cols);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(),
            [&](int64_t a, int64_t b) { return row4col[a] < row4col[b]; });
  for (int64_t c : order) {
    out.rows.push_back(row4col[c]);
    out.cols.push_back(c);
  }
  return out;
}

Assignment linear_sum_assignment(const at::Tensor& cost) {
  COMBO_CHECK(cost.dim() == 2, "linear_sum_assignment: expected a 2-D cost matrix, got shape ",
              cost.sizes());
  COMBO_CHECK(at::isFloatingType(cost.scalar_type()),
              "linear_sum_assignment: expected a floating-point cost matrix, got ",
              cost.scalar_type());
  auto c = cost.detach().to(torch::kCPU, torch::kFloat64).contiguous();
  std::vector<double> values(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
  return linear_sum_assignment(values, c.size(0), c.size(1));
}

double assignment_cost(const std::vector<double>& cost, int64_t num_cols, const Assignment& a) {
  double total = 0.0;
  for (size_t k = 0; k < a.rows.size(); ++k) total += cost[a.rows[k] * num_cols + a.cols[k]];
  return total;
}

}  // namespace combo::loss
