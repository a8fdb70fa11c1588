#include "combo/data/random.h"

#include <limits>

#include "combo/core/check.h"

namespace combo::data {

// Random numbers from raw engine output only: std:: distributions are implementation-defined,
// and the same seed must give the same augmentation with libstdc++ and libc++.

double uniform(Rng& rng, double lo, double hi) {
  // 53 random mantissa bits -> [0, 1), exactly representable.
  const double u = static_cast<double>(rng() >> 11) * 0x1.0p-53;
  return lo + (hi - lo) * u;
}

int64_t uniform_int(Rng& rng, int64_t lo, int64_t hi) {
  COMBO_CHECK(lo <= hi, "uniform_int: empty range [", lo, ", ", hi, "]");
  const uint64_t span = static_cast<uint64_t>(hi) - static_cast<uint64_t>(lo);
  if (span == std::numeric_limits<uint64_t>::max()) {
    return static_cast<int64_t>(static_cast<uint64_t>(lo) + rng());
  }
  const uint64_t n = span + 1;
  // Rejection of the incomplete last block keeps every value equally likely; the rejection
  // probability is below n / 2^64, so in practice one draw is consumed.
  const uint64_t limit =
      std::numeric_limits<uint64_t>::max() - std::numeric_limits<uint64_t>::max() % n;
  uint64_t x = rng();
  while (x >= limit) {
    x = rng();
  }
  return static_cast<int64_t>(static_cast<uint64_t>(lo) + x % n);
}

// As detectron2's RandomFlip (np.random.uniform() < prob): one draw whatever p is.
bool bernoulli(Rng& rng, double p) { return uniform(rng, 0.0, 1.0) < p; }

}  // namespace combo::data
