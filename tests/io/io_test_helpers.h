#pragma once
/// Helpers shared by the tests of combo_io: Python availability, running commands, error text.
#include <gtest/gtest.h>

#include <filesystem>
#include <functional>
#include <string>

namespace combo::testing {

/// True when /usr/bin/python3 can import torch; otherwise `why` says what is missing.
bool python_torch_available(std::string* why);

/// Runs a shell command, capturing stdout and stderr together. Returns the exit status.
int run_command(const std::string& command, std::string* output);

/// The message of the combo::Error `fn` throws; records a failure when it throws nothing.
std::string error_message(const std::function<void()>& fn);

/// Whole file as bytes / writes bytes to a file.
std::string read_bytes(const std::filesystem::path& path);
void write_bytes(const std::filesystem::path& path, const std::string& bytes);

/// Single-quoted for /bin/sh.
std::string shell_quote(const std::string& s);

}  // namespace combo::testing

/// Skips the test with a printed reason unless /usr/bin/python3 has torch.
#define COMBO_REQUIRE_PYTHON_TORCH_OR_SKIP()                       \
  do {                                                             \
    std::string why_python_;                                       \
    if (!::combo::testing::python_torch_available(&why_python_)) { \
      std::cout << "[ SKIP REASON ] " << why_python_ << std::endl; \
      GTEST_SKIP() << why_python_;                                 \
    }                                                              \
  } while (false)
