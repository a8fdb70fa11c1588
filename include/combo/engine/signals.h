#pragma once
/// Fault handling for training: a clean stop on SIGINT/SIGTERM and the non-finite-loss check.
#include <csignal>
#include <cstdint>

#include "combo/core/state_dict.h"

namespace combo::engine {

/// Installs SIGINT and SIGTERM handlers that only record the signal (async-signal-safe: one
/// lock-free atomic store); the trainer polls requested() after each step, writes a checkpoint
/// and returns. The previous handlers are restored when the guard dies. Guards nest: the
/// innermost one is active, the flag is process-wide.
class SignalGuard {
 public:
  SignalGuard();
  ~SignalGuard();
  SignalGuard(const SignalGuard&) = delete;
  SignalGuard& operator=(const SignalGuard&) = delete;

  /// The signal received since the last clear() (SIGINT or SIGTERM), 0 if none.
  static int requested();
  /// Forgets a received signal.
  static void clear();

 private:
  struct sigaction old_int_ {};
  struct sigaction old_term_ {};
};

/// True when every loss in `losses` is finite (reads the values, so it synchronises with the
/// device).
bool all_finite(const TensorDict& losses);

/// "loss_ce=0.69, loss_mask=nan, ..." in key order.
std::string format_losses(const TensorDict& losses);

/// Throws combo::Error "non-finite loss at iteration <it>: <every loss=value>" unless every loss
/// is finite (detectron2 raises FloatingPointError with the loss dict the same way).
void check_finite_losses(const TensorDict& losses, int64_t iteration);

}  // namespace combo::engine
