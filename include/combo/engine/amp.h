#pragma once
/// Mixed precision for training on CUDA (the official AVSS runs use detectron2's AMPTrainer:
/// fp16 autocast + GradScaler). The CPU always trains in fp32.
#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>

#include <cstdint>
#include <vector>

#include "combo/core/autocast.h"
#include "combo/core/state_dict.h"

namespace combo::engine {

/// Turns CUDA autocast on with `dtype` (kHalf or kBFloat16) for its lifetime and restores the
/// previous state after (combo::AutocastScope holds the version-specific calls).
class AutocastGuard {
 public:
  explicit AutocastGuard(at::ScalarType dtype);

 private:
  AutocastScope scope_;
};

/// "fp16" -> kHalf, "bf16" -> kBFloat16; anything else throws combo::Error naming solver.amp.dtype.
at::ScalarType amp_dtype_from_string(const std::string& name);

struct LossScalerOptions {
  double init_scale = 65536.0;  ///< 2^16, torch.cuda.amp.GradScaler's default
  double growth_factor = 2.0;
  double backoff_factor = 0.5;
  int64_t growth_interval = 2000;
};

/// A dynamic loss scaler (torch.cuda.amp.GradScaler): scale the loss, unscale the gradients
/// before clipping, skip the step when any gradient is inf/NaN, then update the scale. On CUDA it
/// uses at::_amp_foreach_non_finite_check_and_unscale_ and at::_amp_update_scale_; on the CPU
/// (tests) the same arithmetic in plain tensor ops.
class LossScaler {
 public:
  explicit LossScaler(LossScalerOptions options = {}, at::Device device = at::kCPU);

  /// loss * scale.
  at::Tensor scale(const at::Tensor& loss) const;
  /// Divides every defined gradient of `params` by the scale in place; returns true when any of
  /// them holds inf or NaN (the step must then be skipped).
  bool unscale(const std::vector<at::Tensor>& params);
  /// After the step (or the skip): backs off after an overflow, grows after growth_interval
  /// clean steps.
  void update();
  double scale_value() const;

  /// {"amp_scale", "amp_growth_tracker"} for checkpoints, and back.
  TensorDict state_dict() const;
  void load_state_dict(const TensorDict& dict);

 private:
  LossScalerOptions options_;
  at::Tensor scale_;           // float32 [1] on the device
  at::Tensor growth_tracker_;  // int32 [1] on the device
  at::Tensor found_inf_;       // float32 [1], set by unscale
};

}  // namespace combo::engine
