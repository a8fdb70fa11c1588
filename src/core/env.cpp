#include "combo/core/env.h"

#include <ATen/Parallel.h>
#include <torch/cuda.h>
#include <torch/torch.h>
#include <torch/version.h>

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

RuntimeInfo setup_runtime(int threads, uint64_t seed) {
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
