#pragma once
/// Devices: choosing one from a config string, describing it for logs and run folders, the
/// TF32 policy, and the CUDA caching allocator's memory figures. Everything here compiles
/// against a CPU-only LibTorch; the CUDA parts answer "no CUDA" there (COMBO_WITH_CUDA is defined
/// by CMake where the LibTorch has CUDA).
#include <c10/core/Device.h>

#include <cstdint>
#include <string>

namespace combo {

/// Whether this build's LibTorch has CUDA (compiled in, whether or not a GPU is present).
bool built_with_cuda();

/// Whether a CUDA device can be used now.
bool cuda_available();

/// "auto" -> cuda:0 when a CUDA device is usable, else cpu; "cpu"; "cuda" / "cuda:N". A CUDA
/// device that is not there is an error naming `what` (the config key), the device and why
/// (a CPU-only build, no device, or N out of range).
c10::Device resolve_device(const std::string& spec, const std::string& what = "runtime.device");

struct DeviceInfo {
  std::string device;        ///< "cpu" | "cuda:0"
  std::string name;          ///< CPU: "cpu"; CUDA: e.g. "NVIDIA H200"
  int64_t total_memory = 0;  ///< bytes (CUDA only)
  int capability_major = 0, capability_minor = 0;
  int multiprocessors = 0;
  std::string cuda_runtime;  ///< CUDA version LibTorch was built with ("" on CPU builds)
  std::string to_string() const;
  std::string to_json() const;
};
DeviceInfo describe_device(const c10::Device& device);

/// TF32 for float32 matrix products and convolutions on Ampere and newer GPUs:
/// "default" keeps LibTorch's defaults (cuDNN convolutions may use TF32, cuBLAS matrix products
/// do not: what the official PyTorch code ran with), "on" allows both, "off" allows neither
/// (parity tests). Anything else throws combo::Error naming `what`. No effect without CUDA.
void set_tf32(const std::string& policy, const std::string& what = "runtime.tf32");

/// The CUDA caching allocator's figures for one device (all 0 on the CPU or without CUDA).
struct GpuMemory {
  int64_t allocated = 0, reserved = 0;            ///< now
  int64_t peak_allocated = 0, peak_reserved = 0;  ///< since the last reset_peak_gpu_memory
};
GpuMemory gpu_memory(const c10::Device& device);
void reset_peak_gpu_memory(const c10::Device& device);

/// Waits for the device's queued work (no-op on the CPU).
void synchronize(const c10::Device& device);

}  // namespace combo
