#include "combo/audio/log_mel.h"

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

#include "combo/audio/resample.h"
#include "combo/core/check.h"

namespace combo::audio {

namespace {

constexpr double kPi = 3.141592653589793;  // numpy.pi
constexpr double kMelBreakFrequencyHertz = 700.0;
constexpr double kMelHighFrequencyQ = 1127.0;

// numpy.linspace(start, stop, num): i * ((stop - start) / (num - 1)) + start, with the last
// point set to `stop` exactly; reproduced so the mel matrix matches the official one bit for bit.
std::vector<double> linspace(double start, double stop, int64_t num) {
  std::vector<double> out(static_cast<size_t>(num));
  const double step = (stop - start) / static_cast<double>(num - 1);
  for (int64_t i = 0; i < num; ++i) {
    out[static_cast<size_t>(i)] = static_cast<double>(i) * step + start;
  }
  out.back() = stop;
  return out;
}

// Frames per parallel task: enough work (an FFT and 64 band sums per frame) to pay for a task.
constexpr int64_t kFramesPerTask = 128;

// [first, last) spectrogram bins with a non-zero weight, per mel band of `mel` [257, 64].
std::vector<std::pair<int64_t, int64_t>> nonzero_bins(const at::Tensor& mel) {
  auto w = mel.accessor<double, 2>();
  std::vector<std::pair<int64_t, int64_t>> bins(static_cast<size_t>(kNumMelBins), {0, 0});
  for (int64_t b = 0; b < kNumMelBins; ++b) {
    int64_t first = kNumSpectrogramBins;
    int64_t last = 0;
    for (int64_t k = 0; k < kNumSpectrogramBins; ++k) {
      if (w[k][b] != 0.0) {
        first = std::min(first, k);
        last = k + 1;
      }
    }
    if (first < last) {
      bins[static_cast<size_t>(b)] = {first, last};
    }
  }
  return bins;
}

at::Tensor to_cpu_double_1d(const at::Tensor& x, const char* what) {
  COMBO_CHECK(x.defined(), what, ": expected a waveform tensor, got an undefined tensor");
  COMBO_CHECK(x.dim() == 1, what, ": expected a 1-D waveform [T], got shape ", x.sizes());
  COMBO_CHECK(at::isFloatingType(x.scalar_type()), what,
              ": expected a float32 or float64 waveform, got ", x.scalar_type());
  return x.to(at::kCPU, at::kDouble).contiguous();
}

}  // namespace

double hertz_to_mel(double hertz) {
  return kMelHighFrequencyQ * std::log(1.0 + hertz / kMelBreakFrequencyHertz);
}

at::Tensor mel_matrix() {
  const double nyquist_hertz = static_cast<double>(kVggishSampleRate) / 2.0;
  const std::vector<double> bins_hertz = linspace(0.0, nyquist_hertz, kNumSpectrogramBins);
  const std::vector<double> edges_mel =
      linspace(hertz_to_mel(kMelMinHertz), hertz_to_mel(kMelMaxHertz), kNumMelBins + 2);
  at::Tensor weights = at::empty({kNumSpectrogramBins, kNumMelBins}, at::kDouble);
  auto w = weights.accessor<double, 2>();
  for (int64_t k = 0; k < kNumSpectrogramBins; ++k) {
    const double mel = hertz_to_mel(bins_hertz[static_cast<size_t>(k)]);
    for (int64_t i = 0; i < kNumMelBins; ++i) {
      const double lower = edges_mel[static_cast<size_t>(i)];
      const double center = edges_mel[static_cast<size_t>(i + 1)];
      const double upper = edges_mel[static_cast<size_t>(i + 2)];
      const double lower_slope = (mel - lower) / (center - lower);
      const double upper_slope = (upper - mel) / (upper - center);
      w[k][i] = std::max(0.0, std::min(lower_slope, upper_slope));
    }
  }
  // The official code zeroes the DC bin whatever the band edges are.
  weights[0].zero_();
  return weights;
}

at::Tensor periodic_hann(int64_t length) {
  COMBO_CHECK(length > 0, "periodic_hann: expected a positive length, got ", length);
  at::Tensor window = at::empty({length}, at::kDouble);
  double* w = window.data_ptr<double>();
  const double step = 2.0 * kPi / static_cast<double>(length);
  for (int64_t n = 0; n < length; ++n) {
    w[n] = 0.5 - 0.5 * std::cos(step * static_cast<double>(n));
  }
  return window;
}

int64_t num_stft_frames(int64_t num_samples) {
  if (num_samples < kStftWindowLength) {
    return 0;
  }
  return 1 + (num_samples - kStftWindowLength) / kStftHopLength;
}

int64_t num_examples(int64_t num_samples) {
  const int64_t frames = num_stft_frames(num_samples);
  if (frames < kExampleWindowFrames) {
    return 0;
  }
  return 1 + (frames - kExampleWindowFrames) / kExampleHopFrames;
}

at::Tensor log_mel_spectrogram(const at::Tensor& mono16k) {
  const at::Tensor x = to_cpu_double_1d(mono16k, "log_mel_spectrogram");
  const int64_t frames = num_stft_frames(x.size(0));
  if (frames == 0) {
    return at::empty({0, kNumMelBins}, at::kDouble);
  }
  static const at::Tensor window = periodic_hann(kStftWindowLength);
  static const at::Tensor mel = mel_matrix();
  static const std::vector<std::pair<int64_t, int64_t>> band_bins = nonzero_bins(mel);
  at::Tensor log_mel = at::empty({frames, kNumMelBins}, at::kDouble);
  const double* weights = mel.data_ptr<double>();
  double* out = log_mel.data_ptr<double>();
  // One parallel region over blocks of frames rather than one per tensor op: the ops are small,
  // and every extra fork/join is costly when the cores are shared (data-loader threads). Each
  // frame is computed the same way whatever the blocking, so the result does not depend on the
  // thread count.
  at::parallel_for(0, frames, kFramesPerTask, [&](int64_t begin, int64_t end) {
    const int64_t count = end - begin;
    const at::Tensor samples =
        x.narrow(0, begin * kStftHopLength, (count - 1) * kStftHopLength + kStftWindowLength);
    const at::Tensor windowed = samples.unfold(0, kStftWindowLength, kStftHopLength) * window;
    const at::Tensor magnitude = at::abs(at::fft_rfft(windowed, kFftLength, -1)).contiguous();
    const double* mag = magnitude.data_ptr<double>();
    for (int64_t f = 0; f < count; ++f) {
      const double* row = mag + f * kNumSpectrogramBins;
      for (int64_t b = 0; b < kNumMelBins; ++b) {
        // Only the band's non-zero weights are summed (the official np.dot adds exact zeros).
        double energy = 0.0;
        for (int64_t k = band_bins[b].first; k < band_bins[b].second; ++k) {
          energy += row[k] * weights[k * kNumMelBins + b];
        }
        out[(begin + f) * kNumMelBins + b] = std::log(energy + kLogOffset);
      }
    }
  });
  return log_mel;
}

at::Tensor frame_examples(const at::Tensor& log_mel) {
  COMBO_CHECK(log_mel.dim() == 2 && log_mel.size(1) == kNumMelBins,
              "frame_examples: expected a log-mel spectrogram [frames, ", kNumMelBins,
              "], got shape ", log_mel.sizes());
  const int64_t frames = log_mel.size(0);
  const int64_t n =
      frames < kExampleWindowFrames ? 0 : 1 + (frames - kExampleWindowFrames) / kExampleHopFrames;
  // Window == hop, so the examples are consecutive blocks of 96 frames.
  static_assert(kExampleWindowFrames == kExampleHopFrames, "examples are assumed not to overlap");
  return log_mel.narrow(0, 0, n * kExampleWindowFrames)
      .reshape({n, 1, kExampleWindowFrames, kNumMelBins})
      .to(at::kFloat)
      .contiguous();
}

at::Tensor waveform_to_examples(const at::Tensor& mono, int64_t sample_rate) {
  COMBO_CHECK(sample_rate > 0, "waveform_to_examples: expected a positive sample rate, got ",
              sample_rate);
  at::Tensor x = to_cpu_double_1d(mono, "waveform_to_examples");
  if (sample_rate != kVggishSampleRate) {
    x = resample(x, sample_rate, kVggishSampleRate);
  }
  return frame_examples(log_mel_spectrogram(x));
}

at::Tensor pad_examples(const at::Tensor& examples, int64_t count, PadMode mode,
                        ExcessMode excess) {
  COMBO_CHECK(examples.dim() == 4 && examples.size(1) == 1 &&
                  examples.size(2) == kExampleWindowFrames && examples.size(3) == kNumMelBins,
              "pad_examples: expected examples [n, 1, ", kExampleWindowFrames, ", ", kNumMelBins,
              "], got shape ", examples.sizes());
  COMBO_CHECK(count > 0, "pad_examples: expected a positive example count, got ", count);
  const int64_t n = examples.size(0);
  if (n > count) {
    COMBO_CHECK(excess == ExcessMode::kTruncate, "pad_examples: got ", n,
                " log-mel examples but expected at most ", count, " (", count,
                " frames per clip); the audio is longer than the clip. Use ExcessMode::kTruncate "
                "to keep the first ",
                count);
    return examples.narrow(0, 0, count).contiguous();
  }
  if (n == count) {
    return examples.contiguous();
  }
  const at::TensorOptions options = examples.options();
  if (mode == PadMode::kZeros) {
    at::Tensor out = at::zeros({count, 1, kExampleWindowFrames, kNumMelBins}, options);
    out.narrow(0, 0, n).copy_(examples);
    return out;
  }
  if (n == 0) {
    return at::full({count, 1, kExampleWindowFrames, kNumMelBins}, std::log(kLogOffset), options);
  }
  const at::Tensor last = examples.narrow(0, n - 1, 1).expand({count - n, -1, -1, -1});
  return at::cat({examples, last}, 0);
}

}  // namespace combo::audio
