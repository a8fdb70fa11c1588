#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace combo::audio {

/// Sample rate the VGGish front end works at.
constexpr int64_t kVggishSampleRate = 16000;

/// Converts a mono waveform to VGGish log-mel examples, as the official `waveform_to_examples`.
/// mono: [T] float32 or float64, values in [-1, 1]; resampled to 16 kHz when
/// sample_rate != kVggishSampleRate. Returns float32 [n, 1, 96, 64] (n may be 0).
at::Tensor waveform_to_examples(const at::Tensor& mono, int64_t sample_rate);

}  // namespace combo::audio
