#include "combo/engine/tool.h"

#include <c10/util/Exception.h>

#include <unistd.h>

#include <cstdlib>
#include <iostream>
#include <string>

namespace combo::engine {

int run_tool(const std::function<int()>& body) {
  try {
    return body();
  } catch (const c10::Error& e) {
    // LibTorch appends a C++ backtrace; the first line is the message.
    std::string msg = e.what();
    std::cerr << "error: " << msg.substr(0, msg.find('\n')) << std::endl;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << std::endl;
  }
  return 1;
}

void prefer_passive_openmp(int argc, char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") != nullptr) return;
  if (::setenv("OMP_WAIT_POLICY", "PASSIVE", 1) != 0) return;
  (void)argc;
  ::execv("/proc/self/exe", argv);
  // execv returns only on failure: carry on with the default policy.
}

}  // namespace combo::engine
