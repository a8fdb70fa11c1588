#include "combo/core/check.h"

namespace combo::detail {

void throw_error(const char* /*file*/, int /*line*/, const std::string& message) {
  // Messages are for users: they name the file, key or frame themselves, so no source location.
  throw Error(message);
}

}  // namespace combo::detail
