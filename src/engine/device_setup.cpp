#include "combo/engine/device_setup.h"

#include <spdlog/spdlog.h>

namespace combo::engine {

DeviceSetup setup_device(Config& config) {
  DeviceSetup s;
  const std::string requested = config.runtime.device;
  s.device = resolve_device(requested, "runtime.device");
  config.runtime.device = s.device.str();
  set_tf32(config.runtime.tf32, "runtime.tf32");
  s.info = describe_device(s.device);
  spdlog::info("device: {}{}{}", s.info.to_string(),
               requested == s.device.str() ? "" : " (runtime.device=" + requested + ")",
               s.device.is_cuda() ? ", tf32 " + config.runtime.tf32 : "");
  return s;
}

}  // namespace combo::engine
