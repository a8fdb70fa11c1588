#pragma once
/// Exact linear-sum assignment for rectangular cost matrices, equivalent to
/// `scipy.optimize.linear_sum_assignment` (COMBO_SPEC 7.4, 14 item 7).
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

namespace combo::loss {

/// A minimum-cost matching of min(rows, cols) pairs: `rows` ascending, `cols[k]` the column
/// assigned to `rows[k]` (the layout scipy returns).
struct Assignment {
  std::vector<int64_t> rows;
  std::vector<int64_t> cols;
};

/// Solves the assignment for a row-major `num_rows` x `num_cols` cost matrix with the shortest
/// augmenting path algorithm (Jonker-Volgenant / Crouse 2016, the method scipy uses, including
/// its tie-breaking: constant matrices give the identity). Every row is matched when
/// rows <= cols, every column otherwise; an empty dimension gives an empty assignment.
/// Entries must be finite: NaN and +/-inf throw combo::Error naming the entry.
Assignment linear_sum_assignment(const std::vector<double>& cost, int64_t num_rows,
                                 int64_t num_cols);

/// Same for a 2-D tensor [R, C] of any floating dtype on any device (copied to the CPU in float64).
Assignment linear_sum_assignment(const at::Tensor& cost);

/// Sum of the matched entries of a row-major cost matrix.
double assignment_cost(const std::vector<double>& cost, int64_t num_cols, const Assignment& a);

}  // namespace combo::loss
