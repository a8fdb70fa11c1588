#include "combo/core/autocast.h"

#include <ATen/autocast_mode.h>
#include <torch/version.h>

#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
#define COMBO_AUTOCAST_PER_DEVICE 1
#else
#define COMBO_AUTOCAST_PER_DEVICE 0
#endif

namespace combo {

AutocastState AutocastState::current() {
  AutocastState s;
#if COMBO_AUTOCAST_PER_DEVICE
  s.cuda_enabled = at::autocast::is_autocast_enabled(at::kCUDA);
  s.cpu_enabled = at::autocast::is_autocast_enabled(at::kCPU);
  s.cuda_dtype = at::autocast::get_autocast_dtype(at::kCUDA);
  s.cpu_dtype = at::autocast::get_autocast_dtype(at::kCPU);
#else
  s.cuda_enabled = at::autocast::is_enabled();
  s.cpu_enabled = at::autocast::is_cpu_enabled();
  s.cuda_dtype = at::autocast::get_autocast_gpu_dtype();
  s.cpu_dtype = at::autocast::get_autocast_cpu_dtype();
#endif
  return s;
}

void AutocastState::apply() const {
#if COMBO_AUTOCAST_PER_DEVICE
  at::autocast::set_autocast_enabled(at::kCUDA, cuda_enabled);
  at::autocast::set_autocast_enabled(at::kCPU, cpu_enabled);
  at::autocast::set_autocast_dtype(at::kCUDA, cuda_dtype);
  at::autocast::set_autocast_dtype(at::kCPU, cpu_dtype);
#else
  at::autocast::set_enabled(cuda_enabled);
  at::autocast::set_cpu_enabled(cpu_enabled);
  at::autocast::set_autocast_gpu_dtype(cuda_dtype);
  at::autocast::set_autocast_cpu_dtype(cpu_dtype);
#endif
}

AutocastScope::AutocastScope(const AutocastState& state) : previous_(AutocastState::current()) {
  state.apply();
  at::autocast::increment_nesting();
}

AutocastScope::~AutocastScope() {
  // As torch.autocast.__exit__: the cast cache lives as long as the outermost region.
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  previous_.apply();
}

}  // namespace combo
