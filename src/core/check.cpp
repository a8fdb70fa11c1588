#include "combo/core/check.h"

#include <cstring>

namespace combo::detail {

void throw_error(const char* file, int line, const std::string& message) {
  // Keep only the path below src/ so messages stay short and stable.
  const char* shown = std::strstr(file, "src/");
  throw Error(message + " [" + (shown ? shown : file) + ":" + std::to_string(line) + "]");
}

}  // namespace combo::detail
