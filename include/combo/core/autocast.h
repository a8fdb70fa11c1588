#pragma once
/// Autocast (automatic mixed precision) state, in one place for every LibTorch version: 1.13 to
/// 2.3 have per-kind calls (at::autocast::is_enabled for CUDA, is_cpu_enabled, ...), 2.4+ has
/// per-device-type calls (is_autocast_enabled(device_type), ...).
#include <c10/core/ScalarType.h>

namespace combo {

/// The thread's autocast switches and dtypes for CUDA and the CPU.
struct AutocastState {
  bool cuda_enabled = false;
  bool cpu_enabled = false;
  at::ScalarType cuda_dtype = at::kHalf;
  at::ScalarType cpu_dtype = at::kBFloat16;

  /// This thread's state now.
  static AutocastState current();
  /// Makes it this thread's state.
  void apply() const;
  bool any() const { return cuda_enabled || cpu_enabled; }
};

/// Sets `state` for its lifetime and restores the previous state after; like torch.autocast it
/// counts the nesting and clears the autocast cast cache when the outermost region ends.
class AutocastScope {
 public:
  explicit AutocastScope(const AutocastState& state);
  ~AutocastScope();
  AutocastScope(const AutocastScope&) = delete;
  AutocastScope& operator=(const AutocastScope&) = delete;

 private:
  AutocastState previous_;
};

}  // namespace combo
