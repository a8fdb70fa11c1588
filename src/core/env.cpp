#include "combo/core/env.h"

#include <ATen/Parallel.h>
#include <torch/cuda.h>
#include <torch/torch.h>
#include <torch/version.h>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <climits>
#include <cstdlib>
#include <sstream>
#include <thread>

#include "combo/core/version.h"

namespace combo {

int hardware_threads() {
  unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(n);
}

int set_num_threads(int threads) {
  const int n = threads > 0 ? threads : hardware_threads();
  at::set_num_threads(n);
  return at::get_num_threads();
}

void seed_everything(uint64_t seed) {
  torch::manual_seed(seed);
  if (torch::cuda::is_available()) {
    torch::cuda::manual_seed_all(seed);
  }
  std::srand(static_cast<unsigned>(seed));
}

RuntimeInfo runtime_info() {
  RuntimeInfo info;
  info.combo_version = combo_version();
  info.git_commit = git_commit();
  info.torch_version = TORCH_VERSION;
  info.intra_op_threads = at::get_num_threads();
  info.inter_op_threads = at::get_num_interop_threads();
  info.hardware_threads = hardware_threads();
  info.cuda_available = torch::cuda::is_available();
  info.cuda_device_count = info.cuda_available ? static_cast<int>(torch::cuda::device_count()) : 0;
  info.device = info.cuda_available ? "cuda" : "cpu";
  return info;
}

bool tune_allocator() {
#if defined(__GLIBC__)
  // The user's own settings win (the MALLOC_*_ variables are read by glibc itself).
  if (std::getenv("MALLOC_MMAP_THRESHOLD_") != nullptr ||
      std::getenv("MALLOC_TRIM_THRESHOLD_") != nullptr ||
      std::getenv("COMBO_DEFAULT_MALLOC") != nullptr)
    return false;
  // glibc maps every block above its mmap threshold afresh and unmaps it on free; the threshold
  // moves with the largest block freed so far, so whether a step's mid-sized tensors (the
  // deformable encoder's, the decoder's) reuse heap pages or fault in new ones depends on what
  // ran before. Fixed at its maximum (32 MB), with the heap not trimmed below 2 GB of free top,
  // they reuse pages: on 2 cores the PVT-b0 variant's inference went from 1.73 to 1.43 s and its
  // training step from 5.76 to 4.96 s at the same peak RSS (combo-bench, see README "Speed").
  const bool ok = mallopt(M_MMAP_THRESHOLD, 32 << 20) == 1;
  return mallopt(M_TRIM_THRESHOLD, INT_MAX) == 1 && ok;
#else
  return false;
#endif
}

RuntimeInfo setup_runtime(int threads, uint64_t seed) {
  tune_allocator();
  set_num_threads(threads);
  seed_everything(seed);
  return runtime_info();
}

std::string RuntimeInfo::to_string() const {
  std::ostringstream os;
  os << "ComboAVS " << combo_version << " (commit " << git_commit << ")\n"
     << "LibTorch " << torch_version << ", device " << device
     << (cuda_available ? " (" + std::to_string(cuda_device_count) + " CUDA device(s))" : "")
     << "\n"
     << "threads: intra-op " << intra_op_threads << ", inter-op " << inter_op_threads << ", cores "
     << hardware_threads;
  return os.str();
}

std::string RuntimeInfo::to_json() const {
  std::ostringstream os;
  os << "{\"combo_version\":\"" << combo_version << "\",\"git_commit\":\"" << git_commit
     << "\",\"torch_version\":\"" << torch_version << "\",\"device\":\"" << device
     << "\",\"intra_op_threads\":" << intra_op_threads
     << ",\"inter_op_threads\":" << inter_op_threads << ",\"hardware_threads\":" << hardware_threads
     << ",\"cuda_available\":" << (cuda_available ? "true" : "false")
     << ",\"cuda_device_count\":" << cuda_device_count << "}";
  return os.str();
}

}  // namespace combo
