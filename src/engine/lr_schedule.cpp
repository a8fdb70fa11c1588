#include "combo/engine/lr_schedule.h"

#include <torch/optim/optimizer.h>

#include <cmath>

#include "combo/core/check.h"
#include "combo/engine/config.h"

namespace combo::engine {

LrScheduleOptions lr_schedule_options_from_config(const Config& config) {
  const auto& s = config.solver;
  COMBO_CHECK(s.lr_scheduler == "poly" || s.lr_scheduler == "constant",
              "solver.lr_scheduler: expected poly | constant, got '", s.lr_scheduler, "'");
  LrScheduleOptions o;
  o.name = s.lr_scheduler;
  o.max_iter = s.max_iter;
  o.power = s.poly_power;
  o.warmup_iters = s.warmup_iters;
  o.warmup_factor = s.warmup_factor;
  return o;
}

LrSchedule::LrSchedule(LrScheduleOptions options) : options_(std::move(options)) {
  COMBO_CHECK(options_.name == "poly" || options_.name == "constant",
              "LrSchedule: expected poly | constant, got '", options_.name, "'");
  COMBO_CHECK(options_.max_iter > 0, "LrSchedule: max_iter must be > 0, got ", options_.max_iter);
  COMBO_CHECK(options_.warmup_iters >= 0, "LrSchedule: warmup_iters must be >= 0, got ",
              options_.warmup_iters);
}

double LrSchedule::factor(int64_t iteration) const {
  // detectron2 _get_warmup_factor_at_iter, method "linear".
  double warmup = 1.0;
  if (iteration < options_.warmup_iters) {
    const double alpha = static_cast<double>(iteration) / options_.warmup_iters;
    warmup = options_.warmup_factor * (1.0 - alpha) + alpha;
  }
  if (options_.name == "constant") return warmup;
  const double poly =
      std::pow(1.0 - static_cast<double>(iteration) / options_.max_iter, options_.power);
  if (options_.constant_ending > 0 && warmup == 1.0 && poly < options_.constant_ending)
    return options_.constant_ending;
  return warmup * poly;
}

void LrSchedule::apply(torch::optim::Optimizer& optimizer, const std::vector<double>& base_lrs,
                       int64_t iteration) const {
  auto& groups = optimizer.param_groups();
  COMBO_CHECK(groups.size() == base_lrs.size(), "LrSchedule: the optimizer has ", groups.size(),
              " param groups but ", base_lrs.size(), " base lrs were given");
  const double f = factor(iteration);
  for (size_t g = 0; g < groups.size(); ++g) groups[g].options().set_lr(base_lrs[g] * f);
}

}  // namespace combo::engine
