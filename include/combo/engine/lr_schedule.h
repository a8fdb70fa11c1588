#pragma once
/// Learning-rate schedules (detectron2 `LR_SCHEDULER_NAME`; COMBO_SPEC 8.1).
///
/// The schedule is a pure function of the iteration, so resuming needs only the iteration and
/// the groups' base lrs (both in the checkpoint). Iteration t (0-based) trains with
/// lr_g = base_lr_g * factor(t), which is what detectron2's scheduler has set when step t runs.
#include <cstdint>
#include <string>
#include <vector>

namespace torch::optim {
class Optimizer;
}

namespace combo::engine {

struct Config;

struct LrScheduleOptions {
  std::string name = "poly";  ///< poly (WarmupPolyLR) | constant (warmup, then 1)
  int64_t max_iter = 90000;
  double power = 0.9;
  int64_t warmup_iters = 0;
  double warmup_factor = 1.0;  ///< factor at t = 0, rising linearly to 1 at warmup_iters
  /// WarmupPolyLR's constant_ending: once warmup is over and (1 - t/max_iter)^power falls below
  /// this, the factor stays at this value (0 = off, the COMBO setting).
  double constant_ending = 0.0;
};

/// `solver.lr_scheduler`, `poly_power`, `warmup_*`, `max_iter`; throws combo::Error naming the
/// key for an unknown schedule or a non-positive max_iter.
LrScheduleOptions lr_schedule_options_from_config(const Config& config);

/// detectron2's WarmupPolyLR / WarmupConstant (linear warmup).
class LrSchedule {
 public:
  explicit LrSchedule(LrScheduleOptions options);

  /// warmup(t) * (1 - t / max_iter)^power for poly, warmup(t) for constant.
  double factor(int64_t iteration) const;

  /// Sets the lr of every group g of `optimizer` to base_lrs[g] * factor(iteration).
  /// base_lrs must hold one value per group (combo::Error otherwise).
  void apply(torch::optim::Optimizer& optimizer, const std::vector<double>& base_lrs,
             int64_t iteration) const;

  const LrScheduleOptions& options() const { return options_; }

 private:
  LrScheduleOptions options_;
};

}  // namespace combo::engine
