#include "testing.h"

#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <sstream>

#include "combo/core/check.h"
#include "combo/core/device.h"
#include "combo/core/env.h"

namespace fs = std::filesystem;

namespace combo::testing {

void SeededTest::SetUp() { combo::seed_everything(0); }

at::Device test_device() {
  const char* env = std::getenv("COMBO_TEST_DEVICE");
  const std::string spec = env && *env ? env : "cpu";
  try {
    return at::Device(spec);
  } catch (const std::exception&) {
    COMBO_FAIL("COMBO_TEST_DEVICE='", spec, "' is not a device (cpu | cuda | cuda:N)");
  }
}

bool device_usable(const at::Device& device, std::string* reason) {
  if (device.is_cpu()) return true;
  if (!device.is_cuda()) {
    *reason = "device " + device.str() + " is not supported by the tests";
    return false;
  }
  if (!combo::built_with_cuda()) {
    *reason = "needs " + device.str() + " but this build's LibTorch has no CUDA";
    return false;
  }
  if (!combo::cuda_available()) {
    *reason = "needs " + device.str() + " but no CUDA device is usable here";
    return false;
  }
  if (device.has_index() && device.index() >= static_cast<int>(torch::cuda::device_count())) {
    *reason = "needs " + device.str() + " but there are only " +
              std::to_string(torch::cuda::device_count()) + " CUDA device(s)";
    return false;
  }
  return true;
}

double max_abs_diff(const at::Tensor& a, const at::Tensor& b) {
  if (a.numel() == 0 && b.numel() == 0) return 0.0;
  // On the CPU, so tensors of different devices (a GPU result against a fixture) compare.
  return (a.to(torch::kCPU, torch::kFloat64) - b.to(torch::kCPU, torch::kFloat64))
      .abs()
      .max()
      .item<double>();
}

double rel_error(const at::Tensor& ref, const at::Tensor& got) {
  if (ref.numel() == 0) return 0.0;
  const double scale =
      std::max(1.0, ref.to(torch::kCPU, torch::kFloat64).abs().max().item<double>());
  return max_abs_diff(ref, got) / scale;
}

namespace {
::testing::AssertionResult same_shape(const at::Tensor& ref, const at::Tensor& got) {
  if (!ref.defined() || !got.defined()) return ::testing::AssertionFailure() << "undefined tensor";
  if (!ref.sizes().equals(got.sizes()))
    return ::testing::AssertionFailure()
           << "shape mismatch: expected " << ref.sizes() << ", got " << got.sizes();
  return ::testing::AssertionSuccess();
}
}  // namespace

::testing::AssertionResult tensors_near_abs(const at::Tensor& ref, const at::Tensor& got,
                                            double tol) {
  auto s = same_shape(ref, got);
  if (!s) return s;
  const double d = max_abs_diff(ref, got);
  if (d <= tol) return ::testing::AssertionSuccess() << "max abs diff " << d;
  return ::testing::AssertionFailure() << "max abs diff " << d << " > " << tol;
}

::testing::AssertionResult tensors_near_rel(const at::Tensor& ref, const at::Tensor& got,
                                            double tol) {
  auto s = same_shape(ref, got);
  if (!s) return s;
  const double d = rel_error(ref, got);
  if (d <= tol) return ::testing::AssertionSuccess() << "rel error " << d;
  return ::testing::AssertionFailure()
         << "rel error " << d << " > " << tol << " (max abs diff " << max_abs_diff(ref, got) << ")";
}

::testing::AssertionResult tensors_equal(const at::Tensor& ref, const at::Tensor& got) {
  auto s = same_shape(ref, got);
  if (!s) return s;
  if (ref.scalar_type() != got.scalar_type())
    return ::testing::AssertionFailure()
           << "dtype mismatch: " << ref.scalar_type() << " vs " << got.scalar_type();
  if (torch::equal(ref.cpu(), got.cpu())) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "tensors differ, max abs diff " << max_abs_diff(ref, got);
}

at::Tensor numeric_gradient(const std::function<at::Tensor(const at::Tensor&)>& f,
                            const at::Tensor& x0, double h) {
  auto flat = x0.clone().view(-1);
  auto numeric = torch::zeros_like(flat);
  for (int64_t i = 0; i < flat.numel(); ++i) {
    const double keep = flat[i].item<double>();
    flat[i] = keep + h;
    const double up = f(flat.view(x0.sizes())).item<double>();
    flat[i] = keep - h;
    const double down = f(flat.view(x0.sizes())).item<double>();
    flat[i] = keep;
    numeric[i] = (up - down) / (2 * h);
  }
  return numeric.view(x0.sizes());
}

fs::path source_dir() { return fs::path(COMBO_SOURCE_DIR); }
fs::path binary_dir() { return fs::path(COMBO_BINARY_DIR); }

std::optional<fs::path> reference_dir() {
  fs::path dir;
  if (const char* env = std::getenv("COMBO_REFERENCE_DIR"); env && *env) {
    dir = env;
  } else {
    dir = source_dir().parent_path() / "shared" / "fixtures" / "reference";
  }
  if (fs::is_directory(dir)) return dir;
  return std::nullopt;
}

Fixture::Fixture(const fs::path& file) : path_(file), root_(combo::load_pickle_file(file)) {}

c10::IValue Fixture::value(const std::string& key_path) const {
  c10::IValue cur = root_;
  std::stringstream ss(key_path);
  std::string part;
  std::string walked;
  while (std::getline(ss, part, '/')) {
    COMBO_CHECK(cur.isGenericDict(), path_.string(), ": '", walked, "' is not a dict");
    auto dict = cur.toGenericDict();
    auto it = dict.find(c10::IValue(part));
    COMBO_CHECK(it != dict.end(), path_.string(), ": no key '", key_path, "' (missing '", part,
                "')");
    cur = it->value();
    walked += (walked.empty() ? "" : "/") + part;
  }
  return cur;
}

bool Fixture::has(const std::string& key_path) const {
  try {
    value(key_path);
    return true;
  } catch (const combo::Error&) {
    return false;
  }
}

at::Tensor Fixture::tensor(const std::string& key_path) const {
  auto v = value(key_path);
  COMBO_CHECK(v.isTensor(), path_.string(), ": '", key_path, "' is not a tensor");
  return v.toTensor();
}

int64_t Fixture::integer(const std::string& key_path) const {
  return tensor(key_path).item<int64_t>();
}

combo::TensorDict Fixture::tensors(const std::string& key_path) const {
  return combo::flatten_tensor_dict(value(key_path));
}

combo::TensorDict Fixture::state_dict() const {
  combo::TensorDict out = tensors("state_dict");
  if (has("state_dict_kron")) {
    for (const auto& kv : value("state_dict_kron").toGenericDict()) {
      auto ab = kv.value().toGenericDict();
      out[kv.key().toStringRef()] =
          torch::kron(ab.at("a").toTensor(), ab.at("b").toTensor()).contiguous();
    }
  }
  return out;
}

std::optional<Fixture> load_fixture(const std::string& name, std::string* reason) {
  auto dir = reference_dir();
  if (!dir) {
    *reason =
        "golden fixtures not found (set COMBO_REFERENCE_DIR or provide "
        "../shared/fixtures/reference); skipping parity test";
    return std::nullopt;
  }
  fs::path file = *dir / name;
  if (!fs::exists(file)) {
    *reason = "fixture " + file.string() + " not present; skipping parity test";
    return std::nullopt;
  }
  return Fixture(file);
}

TempDir::TempDir() {
  static std::atomic<int> counter{0};
  const auto stamp = std::chrono::steady_clock::now().time_since_epoch().count();
  path_ = fs::temp_directory_path() / ("combo_test_" + std::to_string(::getpid()) + "_" +
                                       std::to_string(stamp) + "_" + std::to_string(counter++));
  fs::create_directories(path_);
}

TempDir::~TempDir() {
  std::error_code ec;
  fs::remove_all(path_, ec);
}

CommandResult run_shell(const std::string& command) {
  CommandResult r;
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(popen((command + " 2>&1").c_str(), "r"), pclose);
  if (!pipe) return r;
  std::array<char, 4096> buf{};
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), pipe.get())) > 0) r.output.append(buf.data(), n);
  const int raw = pclose(pipe.release());
  r.status = WIFEXITED(raw) ? WEXITSTATUS(raw) : -1;
  return r;
}

std::string tool_path(const std::string& name) { return (binary_dir() / "tools" / name).string(); }

namespace {
// The (1 - 1e-3) quantile of |a - b| over the elements: the max for fewer than 1000 elements.
double bulk_abs_diff(const at::Tensor& a, const at::Tensor& b, double fraction) {
  if (a.numel() == 0) return 0.0;
  const at::Tensor d =
      (a.detach().to(torch::kCPU, torch::kFloat64) - b.detach().to(torch::kCPU, torch::kFloat64))
          .abs()
          .flatten();
  const int64_t n = d.numel();
  const int64_t k = std::min<int64_t>(
      n, std::max<int64_t>(1, static_cast<int64_t>(std::ceil((1.0 - fraction) * n))));
  return std::get<0>(d.kthvalue(k)).item<double>();
}
}  // namespace

Float32Errors float32_errors(const at::Tensor& ref, const std::vector<at::Tensor>& ours32,
                             const at::Tensor& ours64, const Float32Budget& budget) {
  Float32Errors e;
  for (const auto& o : ours32) {
    e.e32 = std::max(e.e32, bulk_abs_diff(o, ours64, budget.outlier_fraction));
    e.max32 = std::max(e.max32, max_abs_diff(o, ours64));
  }
  e.eref = bulk_abs_diff(ref, ours64, budget.outlier_fraction);
  e.max_ref = max_abs_diff(ref, ours64);
  e.scale = ours64.numel() == 0 ? 0.0 : ours64.detach().abs().max().item<double>();
  const double floor =
      std::max(budget.floor_ulps * std::ldexp(1.0, -23), budget.floor_fraction) * e.scale;
  e.bound_ref = std::max(floor, budget.factor * e.e32);
  e.bound_32 = std::max(floor, budget.own_factor * e.eref);
  return e;
}

Float32Errors float32_errors(const at::Tensor& ref, const at::Tensor& ours32,
                             const at::Tensor& ours64, const Float32Budget& budget) {
  return float32_errors(ref, std::vector<at::Tensor>{ours32}, ours64, budget);
}

::testing::AssertionResult float32_parity(const std::string& what, const at::Tensor& ref,
                                          const std::vector<at::Tensor>& ours32,
                                          const at::Tensor& ours64, const Float32Budget& budget) {
  for (const auto& t : ours32) {
    auto s = same_shape(ref, t);
    if (!s) return s << " (" << what << ")";
  }
  auto s = same_shape(ref, ours64);
  if (!s) return s << " (" << what << ")";
  const Float32Errors e = float32_errors(ref, ours32, ours64, budget);
  const double scale = std::max(e.scale, 1e-300);
  std::ostringstream line;
  line << what << ": scale " << e.scale << "; float32 error (" << (1 - budget.outlier_fraction)
       << " quantile / max, of scale) ours " << e.e32 / scale << " / " << e.max32 / scale
       << ", official " << e.eref / scale << " / " << e.max_ref / scale;
  std::cout << "[ INFO ] " << line.str() << std::endl;
  if (!(e.eref <= e.bound_ref))
    return ::testing::AssertionFailure()
           << line.str() << ": |official - ours64| " << e.eref << " > max(floor, " << budget.factor
           << " x our float32 error) = " << e.bound_ref
           << " (the official result is further from our float64 result than float32 explains)";
  if (!(e.e32 <= e.bound_32))
    return ::testing::AssertionFailure()
           << line.str() << ": |ours32 - ours64| " << e.e32 << " > max(floor, " << budget.own_factor
           << " x the official float32 error) = " << e.bound_32
           << " (our float32 result is further from our float64 result than the official one)";
  return ::testing::AssertionSuccess() << line.str();
}

::testing::AssertionResult float32_parity(const std::string& what, const at::Tensor& ref,
                                          const at::Tensor& ours32, const at::Tensor& ours64,
                                          const Float32Budget& budget) {
  return float32_parity(what, ref, std::vector<at::Tensor>{ours32}, ours64, budget);
}

at::Tensor parity_input(const at::Tensor& t, const at::Device& device, at::ScalarType dtype,
                        bool requires_grad) {
  at::Tensor x = t.detach().to(device, dtype, /*non_blocking=*/false, /*copy=*/true);
  if (requires_grad) x.requires_grad_(true);
  return x;
}

void parity_to(torch::nn::Module& module, at::ScalarType dtype) {
  module.to(dtype);
  for (auto& p : module.parameters()) p.mutable_grad() = at::Tensor();
}

}  // namespace combo::testing
