#pragma once
/// Helpers shared by every ComboAVS test: seeding fixture, tensor closeness, golden fixtures,
/// temporary folders.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <functional>
#include <optional>
#include <string>

#include "combo/core/state_dict.h"

namespace combo::testing {

/// Seeds every RNG with 0 and uses all cores; derive test fixtures from it.
class SeededTest : public ::testing::Test {
 protected:
  void SetUp() override;
};

/// max |a - b| (shapes must match; dtypes are compared in float64).
double max_abs_diff(const at::Tensor& a, const at::Tensor& b);
/// The fixtures' relative error: max|ref - got| / max(1, max|ref|).
double rel_error(const at::Tensor& ref, const at::Tensor& got);

::testing::AssertionResult tensors_near_abs(const at::Tensor& ref, const at::Tensor& got,
                                            double tol);
::testing::AssertionResult tensors_near_rel(const at::Tensor& ref, const at::Tensor& got,
                                            double tol);
::testing::AssertionResult tensors_equal(const at::Tensor& ref, const at::Tensor& got);

/// Central finite differences of the scalar function f at x0 (use float64), step h per element.
at::Tensor numeric_gradient(const std::function<at::Tensor(const at::Tensor&)>& f,
                            const at::Tensor& x0, double h = 1e-6);

#define EXPECT_TENSOR_NEAR_ABS(ref, got, tol) \
  EXPECT_TRUE(::combo::testing::tensors_near_abs((ref), (got), (tol)))
#define EXPECT_TENSOR_NEAR_REL(ref, got, tol) \
  EXPECT_TRUE(::combo::testing::tensors_near_rel((ref), (got), (tol)))
#define EXPECT_TENSOR_EQ(ref, got) EXPECT_TRUE(::combo::testing::tensors_equal((ref), (got)))

/// The golden-fixture folder: $COMBO_REFERENCE_DIR, else ../shared/fixtures/reference beside
/// the checkout. Empty when it does not exist.
std::optional<std::filesystem::path> reference_dir();

/// One golden fixture file (see shared/fixtures/reference/README.md). Paths use '/' to walk
/// nested dicts: fx.tensor("inputs/x").
class Fixture {
 public:
  explicit Fixture(const std::filesystem::path& file);
  const std::filesystem::path& path() const { return path_; }
  bool has(const std::string& key_path) const;
  c10::IValue value(const std::string& key_path) const;
  at::Tensor tensor(const std::string& key_path) const;
  int64_t integer(const std::string& key_path) const;
  /// Every tensor below a key path, flattened with '/' removed: names are the dict keys.
  combo::TensorDict tensors(const std::string& key_path) const;
  /// `state_dict` united with `state_dict_kron` (each {a, b} entry expanded with torch::kron).
  combo::TensorDict state_dict() const;

 private:
  std::filesystem::path path_;
  c10::IValue root_;
};

/// Loads <reference_dir>/<name>, or returns nullopt with `reason` set when it is absent.
std::optional<Fixture> load_fixture(const std::string& name, std::string* reason);

/// Skips the current test (printing why) unless the fixture exists; binds it to `var`.
#define COMBO_LOAD_FIXTURE_OR_SKIP(var, name)                                  \
  std::string var##_skip_reason;                                               \
  auto var##_opt = ::combo::testing::load_fixture((name), &var##_skip_reason); \
  if (!var##_opt) {                                                            \
    std::cout << "[ SKIP REASON ] " << var##_skip_reason << std::endl;         \
    GTEST_SKIP() << var##_skip_reason;                                         \
  }                                                                            \
  const ::combo::testing::Fixture& var = *var##_opt

/// The device the device-aware tests (the parity tests, the `cuda` tests) run on:
/// $COMBO_TEST_DEVICE (cpu | cuda | cuda:N), default cpu. Parity tests compare on the CPU after
/// running there; with a CUDA test device the test main turns TF32 off (full float32).
/// Throws combo::Error for a value that is no device.
at::Device test_device();

/// Whether `device` can run here; otherwise `reason` says why (a CPU-only LibTorch, no GPU).
bool device_usable(const at::Device& device, std::string* reason);

/// Skips the current test (printing why) unless test_device() can run here; binds it to `var`.
#define COMBO_TEST_DEVICE_OR_SKIP(var)                                           \
  const at::Device var = ::combo::testing::test_device();                        \
  {                                                                              \
    std::string var##_skip_reason;                                               \
    if (!::combo::testing::device_usable(var, &var##_skip_reason)) {             \
      std::cout << "[ SKIP REASON ] " << var##_skip_reason << std::endl;         \
      GTEST_SKIP() << var##_skip_reason;                                         \
    }                                                                            \
  }

/// The first CUDA device, or a skip (printing why) where there is none: for tests of the
/// `cuda` label (test suites named *Cuda*), which need a GPU whatever COMBO_TEST_DEVICE says.
#define COMBO_CUDA_OR_SKIP(var)                                                  \
  const at::Device var(at::kCUDA, 0);                                            \
  {                                                                              \
    std::string var##_skip_reason;                                               \
    if (!::combo::testing::device_usable(var, &var##_skip_reason)) {             \
      std::cout << "[ SKIP REASON ] " << var##_skip_reason << std::endl;         \
      GTEST_SKIP() << var##_skip_reason;                                         \
    }                                                                            \
  }

/// A fresh empty folder under the build tree, removed when the object dies.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

/// A shell command's exit status (-1 when it did not exit normally) and its stdout and stderr
/// together.
struct CommandResult {
  int status = -1;
  std::string output;
};

/// Runs `command` through /bin/sh with stderr folded into stdout.
CommandResult run_shell(const std::string& command);

/// A built executable of tools/: <build>/tools/<name>.
std::string tool_path(const std::string& name);

/// The project's source directory (for configs and scripts).
std::filesystem::path source_dir();
/// The build directory (for executables).
std::filesystem::path binary_dir();

}  // namespace combo::testing
