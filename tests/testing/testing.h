#pragma once
/// Helpers shared by every ComboAVS test: seeding fixture, tensor closeness, golden fixtures,
/// temporary folders.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

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
#define COMBO_TEST_DEVICE_OR_SKIP(var)                                   \
  const at::Device var = ::combo::testing::test_device();                \
  {                                                                      \
    std::string var##_skip_reason;                                       \
    if (!::combo::testing::device_usable(var, &var##_skip_reason)) {     \
      std::cout << "[ SKIP REASON ] " << var##_skip_reason << std::endl; \
      GTEST_SKIP() << var##_skip_reason;                                 \
    }                                                                    \
  }

/// The first CUDA device, or a skip (printing why) where there is none: for tests of the
/// `cuda` label (test suites named *Cuda*), which need a GPU whatever COMBO_TEST_DEVICE says.
#define COMBO_CUDA_OR_SKIP(var)                                          \
  const at::Device var(at::kCUDA, 0);                                    \
  {                                                                      \
    std::string var##_skip_reason;                                       \
    if (!::combo::testing::device_usable(var, &var##_skip_reason)) {     \
      std::cout << "[ SKIP REASON ] " << var##_skip_reason << std::endl; \
      GTEST_SKIP() << var##_skip_reason;                                 \
    }                                                                    \
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

// ---------------------------------------------------------------------------------------------
// Parity bounds from the float32 error of the computation (issue 20, item 5).
//
// A fixture holds the official float32 result. Its distance from the exact result depends on
// the input (on odd-sized inputs ResNet-50's float32 input gradient is 0.5-3 % off its float64
// value: a near-tie of a max-pool window or a ReLU at ~0 that float32 rounding decides sends a
// whole gradient element elsewhere), so a fixed tolerance either measures float32 or hides
// bugs. Instead every parity test runs our model on the fixture's input in float64
// (module.to(kDouble), inputs in float64, same device) and in float32, with the default number of
// threads and with one thread as the official fixtures were made (official_threads: float32
// kernels, hence errors, depend on it), and measures over the elements
//   e32  = q(|ours32 - ours64|)   our float32 error on this input (the larger of the two runs),
//   eref = q(|ref - ours64|)      the official float32 error, if our float64 is right,
// where q is the (1 - outlier_fraction) quantile of the element-wise error (the max for tensors
// of fewer than 1 / outlier_fraction elements). It ignores the rare elements where float32
// decided a tie differently (which implementation flips which tie is chance: measured, our
// float32 grad of ResNet-50 on a 77x53 input is 0.2 % off in max, a PyTorch float32 run 3 %)
// and sees any error of the computation that reaches more than 0.1 % of the elements. Then
//   (b) eref <= max(floor, factor * e32)      the official result is as close to our float64
//        result as float32 allows: a wrong computation (a changed constant, a transposed weight,
//        a missing bias) moves ours64 away from ref while e32 stays at float32 rounding;
//   (a) e32 <= max(floor, own_factor * eref)  our float32 is as close to our float64 as the
//        official float32 is: a fault of our float32 path alone (a float32-only kernel, a lost
//        precision) fails here.
// factor = 4: the two float32 implementations differ in kernels, summation order and threads;
// their bulk errors were measured within a factor 0.4-2.5 of each other on every parity fixture
// (printed as [ INFO ] lines). own_factor = 8: our multi-threaded kernels round more than the
// official single-threaded run did (up to 2.7x measured). floor = 16 float32 ulps of the
// result's scale (16 * 2^-23 * max|ours64|): where both round almost exactly (e32 ~ 1 ulp) they
// may still differ by a few roundings. The max errors are printed, not bounded.
// floor_fraction (default 0) raises the floor to a fraction of the scale where the official
// float32 kernels are known to be less precise than anything our runs can measure; each use says
// why (ResNet-50's input gradient: backbone_parity.h).
struct Float32Budget {
  double factor = 4.0;
  double own_factor = 8.0;
  double floor_ulps = 16.0;
  double floor_fraction = 0.0;
  double outlier_fraction = 1e-3;
};

/// The measured errors of one compared result (see Float32Budget).
struct Float32Errors {
  double e32 = 0.0;        ///< q(|ours32 - ours64|)
  double eref = 0.0;       ///< q(|ref - ours64|)
  double max32 = 0.0;      ///< max|ours32 - ours64| (reported only)
  double max_ref = 0.0;    ///< max|ref - ours64| (reported only)
  double scale = 0.0;      ///< max|ours64|
  double bound_ref = 0.0;  ///< max(floor, factor * e32)
  double bound_32 = 0.0;   ///< max(floor, own_factor * eref)
};

Float32Errors float32_errors(const at::Tensor& ref, const at::Tensor& ours32,
                             const at::Tensor& ours64, const Float32Budget& budget = {});
Float32Errors float32_errors(const at::Tensor& ref, const std::vector<at::Tensor>& ours32,
                             const at::Tensor& ours64, const Float32Budget& budget = {});

/// Checks (a) and (b) of Float32Budget for one result named `what`, printing the measured
/// errors as an [ INFO ] line. Tensors may live on any device (compared on the CPU).
::testing::AssertionResult float32_parity(const std::string& what, const at::Tensor& ref,
                                          const at::Tensor& ours32, const at::Tensor& ours64,
                                          const Float32Budget& budget = {});
/// The same with our float32 result of several runs (see official_threads): e32 is the largest
/// error among them and (a) holds for each.
::testing::AssertionResult float32_parity(const std::string& what, const at::Tensor& ref,
                                          const std::vector<at::Tensor>& ours32,
                                          const at::Tensor& ours64,
                                          const Float32Budget& budget = {});

/// Runs `f` with one CPU thread, as the official fixtures were made, and restores the thread
/// count. Float32 results depend on it: ResNet-50's float32 input gradient on a 77x53 input is
/// 3 % (max) off its float64 value with one thread and 2e-3 with two (oneDNN's backward picks
/// other kernels), so the float32 error of a computation is measured at both.
template <class F>
auto official_threads(F&& f) {
  struct Restore {
    int n = at::get_num_threads();
    ~Restore() { at::set_num_threads(n); }
  } restore;
  at::set_num_threads(1);
  return f();
}

#define EXPECT_FLOAT32_PARITY(what, ref, ours32, ours64) \
  EXPECT_TRUE(::combo::testing::float32_parity((what), (ref), (ours32), (ours64)))
/// ours32 a braced list of float32 results: {default threads, official_threads}.
#define EXPECT_FLOAT32_PARITY_RUNS(what, ref, ours64, ...)    \
  EXPECT_TRUE(::combo::testing::float32_parity((what), (ref), \
                                               std::vector<at::Tensor>{__VA_ARGS__}, (ours64)))
#define EXPECT_FLOAT32_PARITY_BUDGET(what, ref, ours32, ours64, budget) \
  EXPECT_TRUE(::combo::testing::float32_parity((what), (ref), (ours32), (ours64), (budget)))

/// `t` detached, on `device`, in `dtype`, as a fresh leaf that requires grad when asked: the
/// same fixture input for the float32 and the float64 run.
at::Tensor parity_input(const at::Tensor& t, const at::Device& device, at::ScalarType dtype,
                        bool requires_grad = false);

/// Converts `module` to `dtype` for a float32 or float64 parity run and drops the gradients of
/// its parameters (kept in the other dtype they would not accumulate).
void parity_to(torch::nn::Module& module, at::ScalarType dtype);

}  // namespace combo::testing
