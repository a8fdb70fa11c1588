#pragma once
/// Writing test media at test time: libsndfile for wav/flac/ogg, FFmpeg's encoders and muxers
/// for mp3, m4a, mp4, mkv, avi and webm (with an optional video stream).
#include <ATen/ATen.h>

#include <string>

namespace combo::testing {

/// Writes samples [C, T] with libsndfile. `format` is a libsndfile SF_FORMAT_* major|sub value,
/// e.g. SF_FORMAT_WAV | SF_FORMAT_PCM_16. int16 tensors are written with sf_writef_short
/// (exact), int32 with sf_writef_int, floating tensors with sf_writef_float.
void write_sndfile(const std::string& path, const at::Tensor& samples, int sample_rate, int format);

struct MediaSpec {
  /// FFmpeg encoder name ("libmp3lame", "aac", "flac", "pcm_s16le", "libvorbis"); empty: no
  /// audio stream.
  std::string audio_encoder;
  /// Add a short mpeg4 video stream before the audio stream.
  bool with_video = false;
  double video_seconds = 1.0;
};

/// Encodes samples float32 [C, T] (values in [-1, 1]) into a container chosen from the file
/// extension. Returns false with `why` set when this FFmpeg build lacks the encoder or muxer.
bool encode_media(const std::string& path, const at::Tensor& samples, int sample_rate,
                  const MediaSpec& spec, std::string* why);

}  // namespace combo::testing
