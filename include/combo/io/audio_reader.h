#pragma once
/// Audio input: decode a file (wav, flac, ogg, mp3, m4a/aac, the audio track of mp4/mkv/avi/webm)
/// to float samples, mix to mono, bring to 16 kHz, and compute VGGish log-mel examples
/// (AVSBENCH_SPEC 2.5, COMBO_SPEC 3.1).
///
/// wav/flac/ogg (and the other formats libsndfile knows) go through libsndfile; 16-bit PCM is
/// read as int16 and divided by 32768 exactly as the official `wavfile_to_examples`
/// (`soundfile.read(dtype='int16') / 32768.0`); other sample formats use libsndfile's float
/// normalisation (full precision, where the official reader would first truncate to int16: a
/// difference below 2^-15). Everything else, and files libsndfile refuses, go through FFmpeg
/// (libavformat + libavcodec, any sample format converted to float by libswresample).
#include <ATen/ATen.h>

#include <cstdint>
#include <string>

#include "combo/audio/log_mel.h"

namespace combo::io {

/// Decoded audio of one file.
struct AudioClip {
  /// float32 [C, T] (C >= 1 channels, T samples per channel, T may be 0), values in [-1, 1]
  /// for integer sources.
  at::Tensor samples;
  int64_t sample_rate = 0;
  int64_t channels = 0;
  /// Seconds of audio: T / sample_rate.
  double duration() const;
};

/// How `load_audio_16k_mono` converts the sample rate.
enum class Resampler {
  /// `combo::audio::resample`, a port of resampy's `kaiser_best` filter used by the official
  /// pipeline: reproduces the official log-mel inputs (and so the official numbers).
  kKaiserBest,
  /// libswresample with a Kaiser-windowed sinc of kaiser_best's design values: about twice as
  /// fast, but only close to the official pipeline (max abs difference 1.1e-3 from resampy on
  /// the speech fixture at 22.05 -> 16 kHz, where kKaiserBest is within ~1e-15). Use it where
  /// speed matters more than reproducing published numbers.
  kSwr,
};

/// Reads every channel of the first (best) audio stream of `path` at its own sample rate.
/// Throws combo::Error naming the file for a missing or 0-byte file, a file without an audio
/// stream, undecodable data or an unsupported format. A valid file holding no samples gives
/// T = 0, not an error; a file whose data end early gives the samples before the damage.
AudioClip read_audio(const std::string& path);

/// Mean over channels (the official `np.mean(data, axis=1)`): float64 [T]. Accepts samples
/// [C, T] or already-mono [T].
at::Tensor to_mono(const AudioClip& clip);

/// Resamples a mono signal with libswresample (see Resampler::kSwr). mono: [T] floating;
/// returns float64 [T'] with T' = floor(T * sr_new / sr_orig), resampy's output length, aligned
/// so that output sample 0 is input time 0. Equal rates return a float64 copy.
at::Tensor resample_swr(const at::Tensor& mono, int64_t sr_orig, int64_t sr_new);

/// read_audio + to_mono + resampling to 16 kHz (no-op when the file is already 16 kHz).
/// Returns float64 [T'].
at::Tensor load_audio_16k_mono(const std::string& path,
                               Resampler resampler = Resampler::kKaiserBest);

/// The VGGish log-mel examples of a file, as the official `wavfile_to_examples`:
/// float32 [n, 1, 96, 64], n = whole 0.96 s examples (0 for a file shorter than 0.975 s).
/// Pad them per subset with `combo::audio::pad_examples`.
at::Tensor audio_file_to_examples(const std::string& path,
                                  Resampler resampler = Resampler::kKaiserBest);

/// audio_file_to_examples followed by `combo::audio::pad_examples(examples, count, mode)`
/// (S4/MS3: count 5, kRepeatLast; AVSS: count 10, kZeros). Returns float32 [count, 1, 96, 64].
at::Tensor audio_file_to_examples(const std::string& path, int64_t count, audio::PadMode mode,
                                  Resampler resampler = Resampler::kKaiserBest,
                                  audio::ExcessMode excess = audio::ExcessMode::kError);

}  // namespace combo::io
