#pragma once
/// The device step every tool shares: runtime.device ("auto" by default) resolved to a device,
/// runtime.tf32 applied, the device logged.
#include <c10/core/Device.h>

#include "combo/core/device.h"
#include "combo/engine/config.h"

namespace combo::engine {

struct DeviceSetup {
  c10::Device device = c10::Device(c10::kCPU);
  DeviceInfo info;
};

/// Resolves config.runtime.device (auto -> the first CUDA device when there is one, else the
/// CPU; an absent CUDA device is an error naming the key), writes the resolved device back into
/// config.runtime.device (so the run folder's config.yaml records it), applies runtime.tf32 and
/// logs the device, its name and memory.
DeviceSetup setup_device(Config& config);

}  // namespace combo::engine
