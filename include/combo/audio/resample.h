#pragma once
/// Band-limited resampling as `resampy.resample` (resampy 0.4.2), used by the official VGGish
/// front end for audio that is not 16 kHz.
#include <ATen/ATen.h>

#include <cstdint>

namespace combo::audio {

/// Resamples a signal exactly as `resampy.resample(x, sr_orig, sr_new)` with resampy 0.4.2's
/// default `kaiser_best` filter (Kaiser-windowed sinc, 50 zero crossings, 2^13 table entries per
/// crossing, linear interpolation between table entries, scaled by min(1, sr_new / sr_orig)).
/// Matches resampy to ~1e-15 in float64 and does not depend on the thread count.
/// x: [T] float32 or float64 (any device; computed on the CPU). Returns float64 [T'] on the CPU
/// with T' = floor(T * sr_new / sr_orig) (resampy's rule). Equal rates return a float64 copy of x.
/// Where resampy raises because T' < 1, this returns an empty [0] tensor, so that a very short
/// file reaches the example padding instead of failing.
at::Tensor resample(const at::Tensor& x, int64_t sr_orig, int64_t sr_new);

}  // namespace combo::audio
