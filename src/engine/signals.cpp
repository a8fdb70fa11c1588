#include "combo/engine/signals.h"

#include <ATen/ATen.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <iomanip>
#include <sstream>

#include "combo/core/check.h"

namespace combo::engine {
namespace {

std::atomic<int> g_requested{0};
static_assert(std::atomic<int>::is_always_lock_free, "signal flag must be lock-free");

extern "C" void combo_record_signal(int signal) { g_requested.store(signal); }

void install(int signal, struct sigaction* old) {
  struct sigaction sa {};
  sa.sa_handler = combo_record_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  COMBO_CHECK(::sigaction(signal, &sa, old) == 0, "SignalGuard: sigaction(", signal,
              ") failed: ", std::strerror(errno));
}

}  // namespace

SignalGuard::SignalGuard() {
  install(SIGINT, &old_int_);
  install(SIGTERM, &old_term_);
}

SignalGuard::~SignalGuard() {
  ::sigaction(SIGINT, &old_int_, nullptr);
  ::sigaction(SIGTERM, &old_term_, nullptr);
}

int SignalGuard::requested() { return g_requested.load(); }

void SignalGuard::clear() { g_requested.store(0); }

bool all_finite(const TensorDict& losses) {
  // One reading from the device for all the losses (not one per loss).
  std::vector<at::Tensor> sums;
  sums.reserve(losses.size());
  for (const auto& [k, v] : losses) sums.push_back(v.detach().to(at::kDouble).sum());
  if (sums.empty()) return true;
  return at::isfinite(at::stack(sums)).all().item<bool>();
}

std::string format_losses(const TensorDict& losses) {
  std::ostringstream os;
  os << std::setprecision(6);
  bool first = true;
  for (const auto& [k, v] : losses) {
    os << (first ? "" : ", ") << k << "=";
    auto t = v.detach().to(at::kCPU, at::kDouble);
    if (t.numel() == 1)
      os << t.item<double>();
    else
      os << "[" << t.numel() << " values, sum " << t.sum().item<double>() << "]";
    first = false;
  }
  return os.str();
}

void check_finite_losses(const TensorDict& losses, int64_t iteration) {
  if (all_finite(losses)) return;
  std::string bad;
  for (const auto& [k, v] : losses)
    if (!std::isfinite(v.detach().to(at::kCPU, at::kDouble).sum().item<double>()))
      bad += (bad.empty() ? "" : ", ") + k;
  COMBO_FAIL("non-finite loss at iteration ", iteration, " (", bad,
             "); losses: ", format_losses(losses));
}

}  // namespace combo::engine
