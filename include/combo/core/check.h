#pragma once
/// Error handling for ComboAVS.
///
/// `COMBO_CHECK(cond, parts...)` throws `combo::Error` with the concatenated parts and the source
/// location when `cond` is false. Use it for user input, files and configuration; messages say
/// what was expected and what arrived, e.g.
///   COMBO_CHECK(x.dim() == 4, "PixelDecoder: expected a 4-D map, got shape ", x.sizes());
/// Tools catch `std::exception` at the top, print `error: <what>` and exit non-zero.
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace combo {

/// The one exception type ComboAVS throws for bad input, files or configuration.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {
template <typename... Args>
std::string concat(Args&&... args) {
  std::ostringstream os;
  (os << ... << std::forward<Args>(args));
  return os.str();
}
[[noreturn]] void throw_error(const char* file, int line, const std::string& message);
}  // namespace detail

/// Builds a message from streamable parts.
template <typename... Args>
std::string str_cat(Args&&... args) {
  return detail::concat(std::forward<Args>(args)...);
}

}  // namespace combo

#define COMBO_CHECK(cond, ...)                                                  \
  do {                                                                          \
    if (!(cond)) {                                                              \
      ::combo::detail::throw_error(__FILE__, __LINE__,                          \
                                   ::combo::detail::concat("", ##__VA_ARGS__)); \
    }                                                                           \
  } while (false)

#define COMBO_FAIL(...) \
  ::combo::detail::throw_error(__FILE__, __LINE__, ::combo::detail::concat("", ##__VA_ARGS__))
