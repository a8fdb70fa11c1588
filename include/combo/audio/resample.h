#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace combo::audio {

/// Band-limited resampling equivalent to `resampy.resample(x, sr_orig, sr_new)` with resampy's
/// default `kaiser_best` filter (resampy 0.4.2).
/// x: [T] float32 or float64 (CPU or any device; computed on CPU). Returns float64 [T'] with
/// T' = ceil(T * sr_new / sr_orig). Equal rates return a float64 copy of x.
at::Tensor resample(const at::Tensor& x, int64_t sr_orig, int64_t sr_new);

}  // namespace combo::audio
