#include "combo/io/audio_reader.h"

#include <sndfile.h>

extern "C" {
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/channel_layout.h>
#include <libavutil/error.h>
#include <libavutil/log.h>
#include <libavutil/opt.h>
#include <libavutil/samplefmt.h>
#include <libswresample/swresample.h>
}

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "combo/audio/resample.h"
#include "combo/core/check.h"

#if LIBAVCODEC_VERSION_INT < AV_VERSION_INT(59, 24, 100)
#error "combo_io needs FFmpeg >= 5.1 (the AVChannelLayout API)"
#endif

namespace combo::io {
namespace {

namespace fs = std::filesystem;

// resampy 0.4.2 kaiser_best's design (src/audio/resample.cpp): 50 zero crossings a side,
// roll-off 0.917347, Kaiser beta 12.9846.
constexpr int64_t kSwrFilterSize = 100;
constexpr double kSwrCutoff = 0.917347;
constexpr double kSwrKaiserBeta = 12.9846;

std::string av_error_string(int code) {
  char buf[AV_ERROR_MAX_STRING_SIZE] = {0};
  av_strerror(code, buf, sizeof(buf));
  return buf;
}

std::string lower_extension(const std::string& path) {
  std::string ext = fs::path(path).extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return ext;
}

// Containers libsndfile reads natively; everything else goes straight to FFmpeg.
bool prefers_sndfile(const std::string& path) {
  static const char* const kExtensions[] = {".wav", ".wave", ".flac", ".ogg", ".oga",
                                            ".aif", ".aiff", ".aifc", ".au",  ".snd",
                                            ".w64", ".rf64", ".caf"};
  const std::string ext = lower_extension(path);
  return std::any_of(std::begin(kExtensions), std::end(kExtensions),
                     [&](const char* e) { return ext == e; });
}

// Headers of containers that may hold audio libsndfile cannot decode.
bool has_container_magic(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  char head[4] = {0, 0, 0, 0};
  f.read(head, 4);
  if (f.gcount() < 4) return false;
  const std::string h(head, 4);
  const bool mpeg_sync = static_cast<unsigned char>(head[0]) == 0xFF &&
                         (static_cast<unsigned char>(head[1]) & 0xE0) == 0xE0;
  return h == "RIFF" || h == "RIFX" || h == "RF64" || h == "OggS" || h == "fLaC" || h == "FORM" ||
         h.compare(0, 3, "ID3") == 0 || mpeg_sync;
}

// Interleaved [T, C] samples -> AudioClip with samples [C, T].
AudioClip clip_from_interleaved(std::vector<float>&& interleaved, int64_t channels,
                                int64_t sample_rate) {
  const int64_t frames = static_cast<int64_t>(interleaved.size()) / channels;
  at::Tensor t = at::from_blob(interleaved.data(), {frames, channels}, at::kFloat);
  AudioClip clip;
  // clone, not contiguous(): a [T, 1] view is already contiguous and would alias `interleaved`.
  clip.samples = t.t().clone(at::MemoryFormat::Contiguous);
  clip.sample_rate = sample_rate;
  clip.channels = channels;
  return clip;
}

// --------------------------------------------------------------------------------------------
// libsndfile

struct SndfileCloser {
  void operator()(SNDFILE* f) const { sf_close(f); }
};

// Returns false (with `why`) when libsndfile cannot open the file at all, so the caller can try
// FFmpeg; data errors after a successful open are thrown.
bool read_with_sndfile(const std::string& path, AudioClip* out, std::string* why) {
  SF_INFO info{};
  std::unique_ptr<SNDFILE, SndfileCloser> file(sf_open(path.c_str(), SFM_READ, &info));
  if (!file) {
    *why = sf_strerror(nullptr);
    return false;
  }
  COMBO_CHECK(info.channels > 0 && info.samplerate > 0, "cannot read audio file '", path,
              "': libsndfile reports ", info.channels, " channels at ", info.samplerate, " Hz");
  const int64_t channels = info.channels;
  const bool pcm16 = (info.format & SF_FORMAT_SUBMASK) == SF_FORMAT_PCM_16;
  constexpr sf_count_t kChunkFrames = 1 << 16;
  std::vector<float> interleaved;
  if (info.frames > 0 && info.frames < (sf_count_t{1} << 32)) {
    interleaved.reserve(static_cast<size_t>(info.frames * channels));
  }
  if (pcm16) {
    // The official reader: soundfile.read(dtype='int16') / 32768.0, exact in float32.
    std::vector<short> chunk(static_cast<size_t>(kChunkFrames * channels));
    while (true) {
      const sf_count_t got = sf_readf_short(file.get(), chunk.data(), kChunkFrames);
      if (got <= 0) break;
      for (sf_count_t i = 0; i < got * channels; ++i) {
        interleaved.push_back(static_cast<float>(chunk[static_cast<size_t>(i)]) / 32768.0f);
      }
    }
  } else {
    sf_command(file.get(), SFC_SET_NORM_FLOAT, nullptr, SF_TRUE);
    std::vector<float> chunk(static_cast<size_t>(kChunkFrames * channels));
    while (true) {
      const sf_count_t got = sf_readf_float(file.get(), chunk.data(), kChunkFrames);
      if (got <= 0) break;
      interleaved.insert(interleaved.end(), chunk.begin(), chunk.begin() + got * channels);
    }
  }
  const int err = sf_error(file.get());
  COMBO_CHECK(err == SF_ERR_NO_ERROR, "cannot decode audio file '", path,
              "': libsndfile: ", sf_error_number(err), " (after ",
              interleaved.size() / static_cast<size_t>(channels), " samples)");
  *out = clip_from_interleaved(std::move(interleaved), channels, info.samplerate);
  return true;
}

// --------------------------------------------------------------------------------------------
// FFmpeg

struct FormatCloser {
  void operator()(AVFormatContext* c) const { avformat_close_input(&c); }
};
struct CodecCloser {
  void operator()(AVCodecContext* c) const { avcodec_free_context(&c); }
};
struct PacketFreer {
  void operator()(AVPacket* p) const { av_packet_free(&p); }
};
struct FrameFreer {
  void operator()(AVFrame* f) const { av_frame_free(&f); }
};
struct SwrFreer {
  void operator()(SwrContext* s) const { swr_free(&s); }
};

void quiet_ffmpeg_once() {
  static std::once_flag once;
  // FFmpeg's default level prints warnings (e.g. duration estimates) for ordinary files; our
  // errors carry the reason. A caller who already chose a level keeps it.
  std::call_once(once, [] {
    if (av_log_get_level() == AV_LOG_INFO) av_log_set_level(AV_LOG_ERROR);
  });
}

std::string describe_streams(const AVFormatContext* fmt) {
  std::string s;
  for (unsigned i = 0; i < fmt->nb_streams; ++i) {
    const AVCodecParameters* par = fmt->streams[i]->codecpar;
    const char* type = av_get_media_type_string(par->codec_type);
    s += str_cat(i ? ", " : "", type ? type : "unknown", " ", avcodec_get_name(par->codec_id));
  }
  return s.empty() ? std::string("none") : s;
}

// Converts decoded frames of any sample format to planar float, one vector per channel.
class PlanarFloatSink {
 public:
  explicit PlanarFloatSink(const std::string& path) : path_(path) {}

  void push(const AVFrame* frame) {
    if (frame->nb_samples <= 0) return;
    const int channels = frame->ch_layout.nb_channels;
    COMBO_CHECK(channels > 0, "cannot decode audio file '", path_,
                "': a decoded frame has no channels");
    if (!swr_) {
      init(frame);
    } else {
      COMBO_CHECK(frame->sample_rate == sample_rate_ && channels == channels_,
                  "cannot decode audio file '", path_, "': the audio stream changes from ",
                  channels_, " channels at ", sample_rate_, " Hz to ", channels, " channels at ",
                  frame->sample_rate, " Hz mid-stream");
      if (frame->format != in_format_) init(frame);
    }
    convert(const_cast<const uint8_t**>(frame->extended_data), frame->nb_samples);
  }

  void finish() {
    if (swr_) convert(nullptr, 0);
  }

  int sample_rate() const { return sample_rate_; }
  int channels() const { return channels_; }
  std::vector<std::vector<float>>& planes() { return planes_; }

 private:
  void init(const AVFrame* frame) {
    if (swr_) convert(nullptr, 0);
    sample_rate_ = frame->sample_rate;
    channels_ = frame->ch_layout.nb_channels;
    in_format_ = frame->format;
    planes_.resize(static_cast<size_t>(channels_));
    AVChannelLayout layout{};
    if (frame->ch_layout.order == AV_CHANNEL_ORDER_UNSPEC) {
      av_channel_layout_default(&layout, channels_);
    } else {
      av_channel_layout_copy(&layout, &frame->ch_layout);
    }
    SwrContext* swr = nullptr;
    int ret =
        swr_alloc_set_opts2(&swr, &layout, AV_SAMPLE_FMT_FLTP, sample_rate_, &layout,
                            static_cast<AVSampleFormat>(in_format_), sample_rate_, 0, nullptr);
    av_channel_layout_uninit(&layout);
    swr_.reset(swr);
    COMBO_CHECK(ret >= 0, "cannot decode audio file '", path_,
                "': libswresample setup failed: ", av_error_string(ret));
    ret = swr_init(swr_.get());
    COMBO_CHECK(ret >= 0, "cannot decode audio file '", path_, "': cannot convert sample format ",
                av_get_sample_fmt_name(static_cast<AVSampleFormat>(in_format_)),
                " to float: ", av_error_string(ret));
  }

  void convert(const uint8_t** in, int in_samples) {
    const int capacity = swr_get_out_samples(swr_.get(), in_samples);
    if (capacity <= 0) return;
    std::vector<uint8_t*> out(static_cast<size_t>(channels_));
    std::vector<size_t> old_sizes(static_cast<size_t>(channels_));
    for (int c = 0; c < channels_; ++c) {
      auto& plane = planes_[static_cast<size_t>(c)];
      old_sizes[static_cast<size_t>(c)] = plane.size();
      plane.resize(plane.size() + static_cast<size_t>(capacity));
      out[static_cast<size_t>(c)] =
          reinterpret_cast<uint8_t*>(plane.data() + old_sizes[static_cast<size_t>(c)]);
    }
    const int got = swr_convert(swr_.get(), out.data(), capacity, in, in_samples);
    COMBO_CHECK(got >= 0, "cannot decode audio file '", path_,
                "': sample format conversion failed: ", av_error_string(got));
    for (int c = 0; c < channels_; ++c) {
      planes_[static_cast<size_t>(c)].resize(old_sizes[static_cast<size_t>(c)] +
                                             static_cast<size_t>(got));
    }
  }

  std::string path_;
  std::unique_ptr<SwrContext, SwrFreer> swr_;
  int sample_rate_ = 0;
  int channels_ = 0;
  int in_format_ = AV_SAMPLE_FMT_NONE;
  std::vector<std::vector<float>> planes_;
};

AudioClip read_with_ffmpeg(const std::string& path) {
  quiet_ffmpeg_once();
  AVFormatContext* raw_fmt = nullptr;
  int ret = avformat_open_input(&raw_fmt, path.c_str(), nullptr, nullptr);
  COMBO_CHECK(ret >= 0, "cannot open audio file '", path,
              "': unsupported or corrupt format (FFmpeg: ", av_error_string(ret), ")");
  std::unique_ptr<AVFormatContext, FormatCloser> fmt(raw_fmt);
  ret = avformat_find_stream_info(fmt.get(), nullptr);
  COMBO_CHECK(ret >= 0, "cannot read audio file '", path,
              "': no readable stream information (FFmpeg: ", av_error_string(ret), ")");

  const AVCodec* decoder = nullptr;
  const int stream_index = av_find_best_stream(fmt.get(), AVMEDIA_TYPE_AUDIO, -1, -1, &decoder, 0);
  if (stream_index == AVERROR_STREAM_NOT_FOUND) {
    // FFmpeg skips audio streams whose channel count or sample rate it could not determine.
    for (unsigned i = 0; i < fmt->nb_streams; ++i) {
      const AVCodecParameters* par = fmt->streams[i]->codecpar;
      COMBO_CHECK(par->codec_type != AVMEDIA_TYPE_AUDIO, "cannot decode audio file '", path,
                  "': its ", avcodec_get_name(par->codec_id),
                  " audio stream has no readable header (corrupt or truncated file?)");
    }
    COMBO_FAIL("cannot read audio from '", path,
               "': the file has no audio stream (streams: ", describe_streams(fmt.get()), ")");
  }
  if (stream_index == AVERROR_DECODER_NOT_FOUND) {
    std::string codec = "unknown";
    for (unsigned i = 0; i < fmt->nb_streams; ++i) {
      if (fmt->streams[i]->codecpar->codec_type == AVMEDIA_TYPE_AUDIO) {
        codec = avcodec_get_name(fmt->streams[i]->codecpar->codec_id);
        break;
      }
    }
    COMBO_FAIL("cannot read audio from '", path, "': unsupported audio codec '", codec,
               "' (this FFmpeg build has no decoder for it)");
  }
  COMBO_CHECK(stream_index >= 0, "cannot read audio from '", path,
              "': FFmpeg: ", av_error_string(stream_index));
  const AVStream* stream = fmt->streams[stream_index];

  std::unique_ptr<AVCodecContext, CodecCloser> codec(avcodec_alloc_context3(decoder));
  COMBO_CHECK(codec != nullptr, "cannot read audio from '", path, "': out of memory");
  ret = avcodec_parameters_to_context(codec.get(), stream->codecpar);
  COMBO_CHECK(ret >= 0, "cannot read audio from '", path,
              "': bad codec parameters (FFmpeg: ", av_error_string(ret), ")");
  ret = avcodec_open2(codec.get(), decoder, nullptr);
  COMBO_CHECK(ret >= 0, "cannot read audio from '", path, "': cannot open the ", decoder->name,
              " decoder (FFmpeg: ", av_error_string(ret), ")");

  std::unique_ptr<AVPacket, PacketFreer> packet(av_packet_alloc());
  std::unique_ptr<AVFrame, FrameFreer> frame(av_frame_alloc());
  COMBO_CHECK(packet && frame, "cannot read audio from '", path, "': out of memory");
  PlanarFloatSink sink(path);
  int64_t bad_packets = 0;
  int64_t frames_decoded = 0;
  std::string last_error;

  auto drain = [&] {
    while (true) {
      const int r = avcodec_receive_frame(codec.get(), frame.get());
      if (r == AVERROR(EAGAIN) || r == AVERROR_EOF) return;
      if (r < 0) {
        // A damaged frame: skip it as the ffmpeg tool does and keep the rest.
        ++bad_packets;
        last_error = av_error_string(r);
        return;
      }
      sink.push(frame.get());
      ++frames_decoded;
      av_frame_unref(frame.get());
    }
  };

  while (true) {
    ret = av_read_frame(fmt.get(), packet.get());
    if (ret == AVERROR_EOF) break;
    if (ret < 0) {
      // A read error mid-file: keep what was decoded, fail only if there is nothing.
      last_error = av_error_string(ret);
      ++bad_packets;
      break;
    }
    if (packet->stream_index == stream_index) {
      const int r = avcodec_send_packet(codec.get(), packet.get());
      if (r < 0 && r != AVERROR(EAGAIN)) {
        ++bad_packets;
        last_error = av_error_string(r);
      }
      drain();
    }
    av_packet_unref(packet.get());
  }
  avcodec_send_packet(codec.get(), nullptr);
  drain();
  sink.finish();

  COMBO_CHECK(frames_decoded > 0 || bad_packets == 0, "cannot decode audio file '", path, "': the ",
              decoder->name, " stream holds no decodable data (", bad_packets,
              " damaged packets; FFmpeg: ", last_error, ")");

  AudioClip clip;
  if (frames_decoded == 0) {
    // An audio stream with no samples: report its declared shape with T = 0.
    clip.channels = std::max(1, stream->codecpar->ch_layout.nb_channels);
    clip.sample_rate = stream->codecpar->sample_rate;
    clip.samples = at::zeros({clip.channels, 0}, at::kFloat);
    return clip;
  }
  auto& planes = sink.planes();
  const int64_t length = static_cast<int64_t>(planes.front().size());
  clip.channels = sink.channels();
  clip.sample_rate = sink.sample_rate();
  clip.samples = at::empty({clip.channels, length}, at::kFloat);
  for (int64_t c = 0; c < clip.channels; ++c) {
    const auto& plane = planes[static_cast<size_t>(c)];
    COMBO_CHECK(static_cast<int64_t>(plane.size()) == length, "cannot decode audio file '", path,
                "': channel ", c, " has ", plane.size(), " samples, channel 0 has ", length);
    std::copy(plane.begin(), plane.end(), clip.samples[c].data_ptr<float>());
  }
  return clip;
}

}  // namespace

double AudioClip::duration() const {
  if (!samples.defined() || sample_rate <= 0) return 0.0;
  return static_cast<double>(samples.size(-1)) / static_cast<double>(sample_rate);
}

AudioClip read_audio(const std::string& path) {
  std::error_code ec;
  COMBO_CHECK(fs::exists(path, ec), "audio file '", path, "' does not exist");
  COMBO_CHECK(fs::is_regular_file(path, ec), "audio file '", path, "' is not a regular file");
  COMBO_CHECK(fs::file_size(path, ec) > 0, "audio file '", path, "' is empty (0 bytes)");
  if (prefers_sndfile(path)) {
    AudioClip clip;
    std::string sndfile_error;
    if (read_with_sndfile(path, &clip, &sndfile_error)) return clip;
    // libsndfile refuses some payloads (e.g. a .wav holding MP3, an .ogg holding Speex) that
    // FFmpeg decodes. Anything without a recognisable container header is reported as is:
    // FFmpeg's format probing would otherwise guess a format for random bytes.
    if (!has_container_magic(path)) {
      COMBO_FAIL("cannot read audio file '", path, "': not a valid ",
                 lower_extension(path).substr(1), " file (libsndfile: ", sndfile_error, ")");
    }
    try {
      return read_with_ffmpeg(path);
    } catch (const Error& e) {
      COMBO_FAIL("cannot read audio file '", path, "': libsndfile: ", sndfile_error,
                 "; FFmpeg: ", e.what());
    }
  }
  return read_with_ffmpeg(path);
}

at::Tensor to_mono(const AudioClip& clip) {
  COMBO_CHECK(clip.samples.defined(), "to_mono: the clip has no samples tensor");
  const at::Tensor s = clip.samples.to(at::kCPU, at::kDouble);
  if (s.dim() == 1) return s.contiguous();
  COMBO_CHECK(s.dim() == 2 && s.size(0) > 0, "to_mono: expected samples [C, T] or [T], got ",
              s.sizes());
  // Channels are summed in order, then divided, as NumPy's mean over a short axis does.
  at::Tensor sum = s[0].clone();
  for (int64_t c = 1; c < s.size(0); ++c) sum.add_(s[c]);
  return sum.div_(static_cast<double>(s.size(0)));
}

at::Tensor resample_swr(const at::Tensor& mono, int64_t sr_orig, int64_t sr_new) {
  COMBO_CHECK(mono.dim() == 1, "resample_swr: expected a mono signal [T], got ", mono.sizes());
  COMBO_CHECK(sr_orig > 0 && sr_new > 0, "resample_swr: sample rates must be positive, got ",
              sr_orig, " -> ", sr_new);
  const at::Tensor in = mono.to(at::kCPU, at::kDouble).contiguous();
  if (sr_orig == sr_new) return in.clone();
  // Same output length as resampy (and combo::audio::resample's official port).
  const int64_t out_len = in.size(0) * sr_new / sr_orig;
  if (in.size(0) == 0 || out_len == 0) return at::zeros({out_len}, at::kDouble);

  AVChannelLayout layout{};
  av_channel_layout_default(&layout, 1);
  SwrContext* raw = nullptr;
  int ret = swr_alloc_set_opts2(&raw, &layout, AV_SAMPLE_FMT_DBL, static_cast<int>(sr_new), &layout,
                                AV_SAMPLE_FMT_DBL, static_cast<int>(sr_orig), 0, nullptr);
  std::unique_ptr<SwrContext, SwrFreer> swr(raw);
  COMBO_CHECK(ret >= 0, "resample_swr: setup failed: ", av_error_string(ret));
  // kaiser_best's design values instead of FFmpeg's defaults bring the result from 0.033 to
  // 1.1e-3 (max abs) of resampy's on the speech fixture; it stays an approximation.
  ret = av_opt_set_int(swr.get(), "filter_size", kSwrFilterSize, 0);
  ret = ret < 0 ? ret : av_opt_set_double(swr.get(), "cutoff", kSwrCutoff, 0);
  ret = ret < 0 ? ret : av_opt_set_double(swr.get(), "kaiser_beta", kSwrKaiserBeta, 0);
  COMBO_CHECK(ret >= 0, "resample_swr: cannot set filter options: ", av_error_string(ret));
  ret = swr_init(swr.get());
  COMBO_CHECK(ret >= 0, "resample_swr: cannot resample ", sr_orig, " Hz -> ", sr_new,
              " Hz: ", av_error_string(ret));

  std::vector<double> out;
  out.reserve(static_cast<size_t>(out_len) + 64);
  auto run = [&](const uint8_t** src, int n) {
    const int capacity = swr_get_out_samples(swr.get(), n);
    if (capacity <= 0) return 0;
    const size_t old = out.size();
    out.resize(old + static_cast<size_t>(capacity));
    uint8_t* dst = reinterpret_cast<uint8_t*>(out.data() + old);
    const int got = swr_convert(swr.get(), &dst, capacity, src, n);
    COMBO_CHECK(got >= 0, "resample_swr: conversion failed: ", av_error_string(got));
    out.resize(old + static_cast<size_t>(got));
    return got;
  };
  const double* data = in.data_ptr<double>();
  constexpr int64_t kChunk = 1 << 16;
  for (int64_t start = 0; start < in.size(0); start += kChunk) {
    const uint8_t* src = reinterpret_cast<const uint8_t*>(data + start);
    run(&src, static_cast<int>(std::min(kChunk, in.size(0) - start)));
  }
  while (run(nullptr, 0) > 0) {
  }
  out.resize(static_cast<size_t>(out_len), 0.0);
  return at::from_blob(out.data(), {out_len}, at::kDouble).clone();
}

at::Tensor load_audio_16k_mono(const std::string& path, Resampler resampler) {
  const AudioClip clip = read_audio(path);
  const at::Tensor mono = to_mono(clip);
  if (clip.sample_rate == audio::kVggishSampleRate) return mono;
  COMBO_CHECK(clip.sample_rate > 0, "audio file '", path, "' reports a sample rate of ",
              clip.sample_rate, " Hz");
  switch (resampler) {
    case Resampler::kKaiserBest:
      return audio::resample(mono, clip.sample_rate, audio::kVggishSampleRate);
    case Resampler::kSwr:
      return resample_swr(mono, clip.sample_rate, audio::kVggishSampleRate);
  }
  COMBO_FAIL("load_audio_16k_mono: unknown resampler ", static_cast<int>(resampler));
}

at::Tensor audio_file_to_examples(const std::string& path, Resampler resampler) {
  return audio::waveform_to_examples(load_audio_16k_mono(path, resampler),
                                     audio::kVggishSampleRate);
}

at::Tensor audio_file_to_examples(const std::string& path, int64_t count, audio::PadMode mode,
                                  Resampler resampler, audio::ExcessMode excess) {
  const at::Tensor examples = audio_file_to_examples(path, resampler);
  try {
    return audio::pad_examples(examples, count, mode, excess);
  } catch (const Error& e) {
    COMBO_FAIL("audio file '", path, "': ", e.what());
  }
}

}  // namespace combo::io
