#pragma once
/// The VGGish log-mel front end (official `torchvggish` `vggish_input.py` / `mel_features.py`,
/// COMBO_SPEC 3.1, AVSBENCH_SPEC 2.5): waveform -> 16 kHz -> |STFT| -> 64 HTK mel bands ->
/// log(x + 0.01) -> non-overlapping 96-frame examples. All arithmetic is float64 as in the
/// official NumPy code; examples are cast to float32 at the end.
#include <ATen/ATen.h>

#include <cstdint>

namespace combo::audio {

/// Sample rate the VGGish front end works at.
constexpr int64_t kVggishSampleRate = 16000;
/// STFT window: 0.025 s at 16 kHz, periodic Hann.
constexpr int64_t kStftWindowLength = 400;
/// STFT hop: 0.010 s at 16 kHz.
constexpr int64_t kStftHopLength = 160;
/// FFT length: the next power of two >= kStftWindowLength.
constexpr int64_t kFftLength = 512;
/// Magnitude bins of a real FFT of length kFftLength.
constexpr int64_t kNumSpectrogramBins = kFftLength / 2 + 1;
/// HTK mel bands and their frequency range.
constexpr int64_t kNumMelBins = 64;
constexpr double kMelMinHertz = 125.0;
constexpr double kMelMaxHertz = 7500.0;
/// Added to the mel energies before the natural log.
constexpr double kLogOffset = 0.01;
/// STFT frames per example (0.96 s) and between examples (no overlap).
constexpr int64_t kExampleWindowFrames = 96;
constexpr int64_t kExampleHopFrames = 96;

/// HTK mel scale: 1127 * ln(1 + hz / 700).
double hertz_to_mel(double hertz);

/// The official `spectrogram_to_mel_matrix(64, 257, 16000, 125, 7500)`: triangular weights
/// computed in the mel domain, the DC row forced to zero. Returns float64 [257, 64].
at::Tensor mel_matrix();

/// The periodic Hann window 0.5 - 0.5 cos(2 pi n / length), n = 0..length-1. float64 [length].
at::Tensor periodic_hann(int64_t length);

/// STFT frames of `num_samples` samples: 1 + floor((num_samples - 400) / 160), and 0 when
/// num_samples < 400 (the official code fails below 240 samples).
int64_t num_stft_frames(int64_t num_samples);

/// Examples of `num_samples` 16 kHz samples before any padding (80000 -> 5, 160000 -> 10).
int64_t num_examples(int64_t num_samples);

/// The official `log_mel_spectrogram` of a 16 kHz mono signal.
/// mono16k: [T] float64 (other floating dtypes are converted; computed on the CPU).
/// Returns float64 [num_stft_frames(T), 64] (0 rows when T < 400).
at::Tensor log_mel_spectrogram(const at::Tensor& mono16k);

/// Cuts a log-mel spectrogram [frames, 64] into non-overlapping 96-frame examples, dropping the
/// incomplete tail. Returns float32 [frames / 96, 1, 96, 64].
at::Tensor frame_examples(const at::Tensor& log_mel);

/// Converts a mono waveform to VGGish log-mel examples, as the official `waveform_to_examples`.
/// mono: [T] float32 or float64, values in [-1, 1]; resampled to 16 kHz with `resample` (resampy
/// `kaiser_best`) when sample_rate != kVggishSampleRate. Returns float32 [n, 1, 96, 64] (n may
/// be 0: shorter than 0.975 s at 16 kHz; pad with `pad_examples`).
at::Tensor waveform_to_examples(const at::Tensor& mono, int64_t sample_rate);

/// How `pad_examples` fills missing examples.
enum class PadMode {
  /// S4/MS3 (AVSBench's offline pkl files): repeat the last example. With no example at all
  /// (silent or shorter than 0.975 s), every slot is filled with log(kLogOffset), which is
  /// exactly the log-mel of digital silence.
  kRepeatLast,
  /// AVSS (official `_preprocess`): copy the examples into a zero tensor.
  kZeros,
};

/// What `pad_examples` does with more examples than wanted.
enum class ExcessMode {
  /// Throw combo::Error naming the count (the official S4/MS3 data treat this as failed
  /// preprocessing; the official AVSS code crashes).
  kError,
  /// Keep the first `count` examples.
  kTruncate,
};

/// Pads (or truncates) examples [n, 1, 96, 64] to exactly [count, 1, 96, 64] (same dtype and
/// device as the input).
at::Tensor pad_examples(const at::Tensor& examples, int64_t count, PadMode mode,
                        ExcessMode excess = ExcessMode::kError);

}  // namespace combo::audio
