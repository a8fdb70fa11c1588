#pragma once
/// Process-wide runtime setup: threads, seeds, and a description for run logs.
#include <cstdint>
#include <string>

namespace combo {

struct RuntimeInfo {
  std::string combo_version;
  std::string git_commit;
  std::string torch_version;  ///< e.g. "1.13.1"
  std::string device;         ///< "cpu" or "cuda:0 (<name>)"
  int intra_op_threads = 1;
  int inter_op_threads = 1;
  int hardware_threads = 1;
  bool cuda_available = false;
  int cuda_device_count = 0;
  /// One human-readable line per field.
  std::string to_string() const;
  /// A JSON object (no external dependency) for benchmark and metrics records.
  std::string to_json() const;
};

/// Number of hardware threads (cores) this process may use; at least 1.
int hardware_threads();

/// Sets the LibTorch intra-op thread count. `threads <= 0` means all cores (Debian's LibTorch
/// starts with 1). Returns the count in force.
int set_num_threads(int threads);

/// Seeds every RNG ComboAVS uses: LibTorch CPU and CUDA generators and std::rand.
void seed_everything(uint64_t seed);

/// Allocator settings (tune_allocator), threads, then seed; returns the description of the
/// runtime.
RuntimeInfo setup_runtime(int threads, uint64_t seed);

/// glibc only: fixes malloc's mmap threshold at 32 MB and its trim threshold at 2 GB (instead
/// of glibc's moving threshold), so tensors of a few MB reuse heap pages from step to step
/// instead of being mapped and faulted in again. Called by setup_runtime. Skipped (returns
/// false) when MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_ or COMBO_DEFAULT_MALLOC is set.
bool tune_allocator();

/// Describes the current runtime without changing it.
RuntimeInfo runtime_info();

}  // namespace combo
