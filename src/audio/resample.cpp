#include "combo/audio/resample.h"

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "combo/core/check.h"

namespace combo::audio {

namespace {

// resampy 0.4.2's `kaiser_best` filter (data/kaiser_best.npz): a Kaiser-windowed sinc, right wing
// only, 2^13 table entries per zero crossing over 50 zero crossings, beta 12.9846, roll-off
// 0.917347. These values were recovered by fitting the fixture's `resampled_16k`: with them the
// table below reproduces resampy's output to ~5e-16. (The older resampy 0.1/0.2 filter used 64
// zeros, precision 9, beta 14.769656459379492, roll-off 0.9475937167399596; it is 8e-3 away.)
constexpr int64_t kNumZeros = 50;
constexpr int64_t kNumTable = 8192;  // 2^precision, precision = 13
constexpr double kRolloff = 0.917347;
constexpr double kKaiserBeta = 12.9846;
constexpr double kPi = 3.141592653589793;  // numpy.pi

// resampy.filters.sinc_window(num_zeros, precision, window=scipy.signal.kaiser(beta), rolloff):
//   rolloff * sinc(rolloff * linspace(0, num_zeros, n + 1)) * kaiser(2n + 1, beta)[n:]
// with n = num_table * num_zeros; every step follows the NumPy/SciPy expression order.
std::vector<double> build_kaiser_best() {
  const int64_t n = kNumTable * kNumZeros;
  const double alpha = static_cast<double>(2 * n) / 2.0;  // scipy: (M - 1) / 2 for M = 2n + 1
  const double step = static_cast<double>(kNumZeros) / static_cast<double>(n);
  at::Tensor arg = at::empty({n + 1}, at::kDouble);
  double* a = arg.data_ptr<double>();
  for (int64_t m = 0; m <= n; ++m) {
    const double r = static_cast<double>(m) / alpha;
    a[m] = kKaiserBeta * std::sqrt(1.0 - r * r);
  }
  // at::i0 uses the same Cephes Chebyshev expansion as scipy.special.i0.
  const at::Tensor taper_num = at::i0(arg);
  const double taper_den = at::i0(at::scalar_tensor(kKaiserBeta, at::kDouble)).item<double>();
  const double* num = taper_num.data_ptr<double>();
  std::vector<double> window(static_cast<size_t>(n + 1));
  for (int64_t m = 0; m <= n; ++m) {
    const double t = m == n ? static_cast<double>(kNumZeros) : static_cast<double>(m) * step;
    // numpy.sinc replaces 0 by 1e-20 before dividing.
    const double x = kRolloff * t;
    const double y = kPi * (x == 0.0 ? 1.0e-20 : x);
    const double sinc = kRolloff * (std::sin(y) / y);
    const double taper = num[m] / taper_den;
    window[static_cast<size_t>(m)] = taper * sinc;
  }
  return window;
}

const std::vector<double>& kaiser_best() {
  static const std::vector<double> window = build_kaiser_best();
  return window;
}

}  // namespace

at::Tensor resample(const at::Tensor& x, int64_t sr_orig, int64_t sr_new) {
  COMBO_CHECK(sr_orig > 0, "resample: invalid sample rate sr_orig=", sr_orig);
  COMBO_CHECK(sr_new > 0, "resample: invalid sample rate sr_new=", sr_new);
  COMBO_CHECK(x.defined() && x.dim() == 1, "resample: expected a 1-D signal [T], got ",
              x.defined() ? c10::str(x.sizes()) : std::string("an undefined tensor"));
  COMBO_CHECK(at::isFloatingType(x.scalar_type()),
              "resample: expected a float32 or float64 signal, got ", x.scalar_type());
  const at::Tensor input = x.to(at::kCPU, at::kDouble).contiguous();
  if (sr_orig == sr_new) {
    return input.clone();
  }
  const int64_t n_orig = input.size(0);
  // resampy: int(len * float(sr_new) / float(sr_orig)), i.e. truncated.
  const auto n_out = static_cast<int64_t>(
      static_cast<double>(n_orig) * static_cast<double>(sr_new) / static_cast<double>(sr_orig));
  // resampy raises here; an empty result lets very short files reach the example padding.
  if (n_out < 1) {
    return at::empty({0}, at::kDouble);
  }

  const double sample_ratio = static_cast<double>(sr_new) / static_cast<double>(sr_orig);
  const std::vector<double>& base = kaiser_best();
  const int64_t nwin = static_cast<int64_t>(base.size());
  // resampy scales the window before differencing it; doing the same keeps every weight
  // bit-identical. Value and slope are interleaved so that a tap touches one cache line.
  std::vector<double> table(static_cast<size_t>(2 * nwin), 0.0);
  for (int64_t i = 0; i < nwin; ++i) {
    const double w = base[static_cast<size_t>(i)];
    table[static_cast<size_t>(2 * i)] = sample_ratio < 1.0 ? sample_ratio * w : w;
  }
  for (int64_t i = 0; i + 1 < nwin; ++i) {
    table[static_cast<size_t>(2 * i + 1)] =
        table[static_cast<size_t>(2 * i + 2)] - table[static_cast<size_t>(2 * i)];
  }
  const double scale = std::min(1.0, sample_ratio);
  const double time_increment = 1.0 / sample_ratio;
  const double num_table = static_cast<double>(kNumTable);
  const auto index_step = static_cast<int64_t>(scale * num_table);
  COMBO_CHECK(index_step >= 1, "resample: ratio ", sr_orig, " -> ", sr_new,
              " is below the filter's resolution (at most ", kNumTable, ":1 downsampling)");

  at::Tensor output = at::empty({n_out}, at::kDouble);
  const double* xs = input.data_ptr<double>();
  double* ys = output.data_ptr<double>();
  const double* wd = table.data();
  // Each output sample is accumulated in resampy's order (left wing outwards from x[n], then the
  // right wing from x[n + 1]), so the result does not depend on the thread count.
  at::parallel_for(0, n_out, 2048, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const double time_register = static_cast<double>(t) * time_increment;
      const auto n = static_cast<int64_t>(time_register);
      double frac = scale * (time_register - static_cast<double>(n));
      double index_frac = frac * num_table;
      auto offset = static_cast<int64_t>(index_frac);
      double eta = index_frac - static_cast<double>(offset);
      double acc = 0.0;
      const int64_t i_max = std::min(n + 1, (nwin - offset) / index_step);
      for (int64_t i = 0; i < i_max; ++i) {
        const int64_t j = offset + i * index_step;
        acc += (wd[2 * j] + eta * wd[2 * j + 1]) * xs[n - i];
      }
      frac = scale - frac;
      index_frac = frac * num_table;
      offset = static_cast<int64_t>(index_frac);
      eta = index_frac - static_cast<double>(offset);
      const int64_t k_max = std::min(n_orig - n - 1, (nwin - offset) / index_step);
      for (int64_t k = 0; k < k_max; ++k) {
        const int64_t j = offset + k * index_step;
        acc += (wd[2 * j] + eta * wd[2 * j + 1]) * xs[n + k + 1];
      }
      ys[t] = acc;
    }
  });
  return output;
}

}  // namespace combo::audio
