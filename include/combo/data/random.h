#pragma once
/// The random source of the data pipeline (augmentation, synthetic content): a 64-bit Mersenne
/// Twister seeded by the loader from (seed, epoch, video index), so what a video gets does not
/// depend on the number of workers; and distributions computed from raw engine output with fixed
/// formulas (std:: distributions differ between standard libraries).
#include <cstdint>
#include <random>

namespace combo::data {

using Rng = std::mt19937_64;

/// Uniform double in [lo, hi) and uniform integer in [lo, hi] computed from raw Rng output with
/// a fixed formula: uniform = lo + (hi - lo) * (rng() >> 11) * 2^-53 (one draw); uniform_int =
/// lo + x % n with n = hi - lo + 1 and x a raw draw, redrawn while x falls in the incomplete last
/// block of 2^64 (so almost always one draw).
double uniform(Rng& rng, double lo, double hi);
int64_t uniform_int(Rng& rng, int64_t lo, int64_t hi);
/// True with probability p: uniform(rng, 0, 1) < p (one draw, whatever p is; as detectron2's
/// RandomFlip).
bool bernoulli(Rng& rng, double p);

}  // namespace combo::data
