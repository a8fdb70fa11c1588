#include "combo/core/check.h"
#include "combo/core/warn.h"

#include <iostream>
#include <mutex>

namespace combo {
namespace {
std::mutex g_warn_mutex;
std::function<void(const std::string&)>& handler() {
  static std::function<void(const std::string&)> h;
  return h;
}
}  // namespace

void warn(const std::string& message) {
  std::function<void(const std::string&)> h;
  {
    std::lock_guard<std::mutex> lock(g_warn_mutex);
    h = handler();
  }
  if (h)
    h(message);
  else
    std::cerr << "warning: " << message << std::endl;
}

std::function<void(const std::string&)> set_warning_handler(
    std::function<void(const std::string&)> h) {
  std::lock_guard<std::mutex> lock(g_warn_mutex);
  std::swap(handler(), h);
  return h;
}

}  // namespace combo

namespace combo::detail {

void throw_error(const char* /*file*/, int /*line*/, const std::string& message) {
  // Messages are for users: they name the file, key or frame themselves, so no source location.
  throw Error(message);
}

}  // namespace combo::detail
