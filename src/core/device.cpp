#include "combo/core/device.h"

#include <ATen/Context.h>
#include <torch/cuda.h>

#include <sstream>

#include "combo/core/check.h"

#if defined(COMBO_WITH_CUDA)
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#include <cuda_runtime_api.h>
#endif

namespace combo {

bool built_with_cuda() {
#if defined(COMBO_WITH_CUDA)
  return true;
#else
  return false;
#endif
}

bool cuda_available() { return torch::cuda::is_available(); }

c10::Device resolve_device(const std::string& spec, const std::string& what) {
  if (spec == "auto") {
    return cuda_available() ? c10::Device(c10::kCUDA, 0) : c10::Device(c10::kCPU);
  }
  c10::Device device(c10::kCPU);
  try {
    device = c10::Device(spec);
  } catch (const std::exception&) {
    throw Error(what + ": '" + spec + "' is not a device (auto | cpu | cuda | cuda:N)");
  }
  if (device.is_cpu()) return device;
  COMBO_CHECK(device.is_cuda(), what, ": '", spec,
              "' is not supported (auto | cpu | cuda | cuda:N)");
  if (!built_with_cuda()) {
    throw Error(what + "=" + spec +
                ": this build's LibTorch has no CUDA (a CPU-only LibTorch); build against a CUDA "
                "LibTorch or use runtime.device=cpu");
  }
  const int64_t count = cuda_available() ? static_cast<int64_t>(torch::cuda::device_count()) : 0;
  COMBO_CHECK(count > 0, what, "=", spec,
              ": no CUDA device is usable (driver missing, CUDA_VISIBLE_DEVICES empty, or no GPU); "
              "use runtime.device=cpu or auto");
  if (!device.has_index()) device = c10::Device(c10::kCUDA, 0);
  COMBO_CHECK(device.index() < count, what, "=", spec, ": only ", count, " CUDA device(s)");
  return device;
}

std::string DeviceInfo::to_string() const {
  std::ostringstream s;
  s << device << " (" << name;
  if (total_memory > 0) {
    s << ", " << (static_cast<double>(total_memory) / (1 << 30)) << " GiB, compute capability "
      << capability_major << "." << capability_minor << ", " << multiprocessors
      << " multiprocessors";
  }
  if (!cuda_runtime.empty()) s << ", CUDA " << cuda_runtime;
  s << ")";
  return s.str();
}

namespace {
std::string json_string(const std::string& v) {
  std::string out = "\"";
  for (char c : v) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out += c;
    }
  }
  return out + "\"";
}
}  // namespace

std::string DeviceInfo::to_json() const {
  std::ostringstream s;
  s << "{\"device\": " << json_string(device) << ", \"name\": " << json_string(name)
    << ", \"total_memory\": " << total_memory << ", \"compute_capability\": "
    << json_string(std::to_string(capability_major) + "." + std::to_string(capability_minor))
    << ", \"multiprocessors\": " << multiprocessors
    << ", \"cuda_runtime\": " << json_string(cuda_runtime) << "}";
  return s.str();
}

DeviceInfo describe_device(const c10::Device& device) {
  DeviceInfo info;
  info.device = device.str();
  info.name = "cpu";
#if defined(COMBO_WITH_CUDA)
  info.cuda_runtime =
      std::to_string(CUDART_VERSION / 1000) + "." + std::to_string((CUDART_VERSION % 1000) / 10);
  if (device.is_cuda()) {
    const cudaDeviceProp* p =
        at::cuda::getDeviceProperties(device.index() < 0 ? 0 : device.index());
    info.name = p->name;
    info.total_memory = static_cast<int64_t>(p->totalGlobalMem);
    info.capability_major = p->major;
    info.capability_minor = p->minor;
    info.multiprocessors = p->multiProcessorCount;
  }
#endif
  return info;
}

void set_tf32(const std::string& policy, const std::string& what) {
  COMBO_CHECK(policy == "default" || policy == "on" || policy == "off", what, ": '", policy,
              "' is not one of default | on | off");
  if (policy == "default") return;
  const bool on = policy == "on";
  at::globalContext().setAllowTF32CuBLAS(on);
  at::globalContext().setAllowTF32CuDNN(on);
}

GpuMemory gpu_memory(const c10::Device& device) {
  GpuMemory m;
#if defined(COMBO_WITH_CUDA)
  if (device.is_cuda()) {
    namespace alloc = c10::cuda::CUDACachingAllocator;
    const auto idx = device.index() < 0 ? c10::cuda::current_device() : device.index();
    const auto stats = alloc::getDeviceStats(idx);
    // StatType::AGGREGATE is the first entry of each StatArray in every LibTorch version (the
    // enum moved from c10::cuda::CUDACachingAllocator to c10::CachingDeviceAllocator in 2.x).
    constexpr size_t agg = 0;
    m.allocated = stats.allocated_bytes[agg].current;
    m.reserved = stats.reserved_bytes[agg].current;
    m.peak_allocated = stats.allocated_bytes[agg].peak;
    m.peak_reserved = stats.reserved_bytes[agg].peak;
  }
#endif
  (void)device;
  return m;
}

void reset_peak_gpu_memory(const c10::Device& device) {
#if defined(COMBO_WITH_CUDA)
  if (device.is_cuda()) {
    c10::cuda::CUDACachingAllocator::resetPeakStats(device.index() < 0 ? c10::cuda::current_device()
                                                                       : device.index());
  }
#endif
  (void)device;
}

void synchronize(const c10::Device& device) {
#if defined(COMBO_WITH_CUDA)
  if (device.is_cuda()) {
    c10::cuda::device_synchronize();
    return;
  }
#endif
  (void)device;
}

}  // namespace combo
