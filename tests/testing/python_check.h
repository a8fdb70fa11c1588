#pragma once
/// Tests that cross-check with Python (torch, tensorboard) skip visibly, with the reason printed,
/// where /usr/bin/python3 lacks the module; they never pass without having run the check.
/// Header-only, so only the tests that include it depend on it.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <string>

namespace combo::testing {

/// True when /usr/bin/python3 imports `module` (e.g. "torch"); otherwise `why` says what is
/// missing and `hint` (how to install it) is appended.
inline bool python_imports(const std::string& module, const std::string& hint, std::string* why) {
  if (!std::filesystem::exists("/usr/bin/python3")) {
    *why = "/usr/bin/python3 is not installed";
    return false;
  }
  const std::string cmd = "/usr/bin/python3 -c 'import " + module + "' > /dev/null 2>&1";
  if (std::system(cmd.c_str()) != 0) {
    *why = "/usr/bin/python3 cannot import " + module + (hint.empty() ? "" : " (" + hint + ")");
    return false;
  }
  return true;
}

}  // namespace combo::testing

/// Skips the current test, printing why, unless /usr/bin/python3 imports `module`.
#define COMBO_PYTHON_MODULE_OR_SKIP(module, hint)                            \
  do {                                                                       \
    std::string why_python_;                                                 \
    if (!::combo::testing::python_imports((module), (hint), &why_python_)) { \
      std::cout << "[ SKIP REASON ] " << why_python_ << std::endl;           \
      GTEST_SKIP() << why_python_;                                           \
    }                                                                        \
  } while (false)
