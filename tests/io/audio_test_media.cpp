#include "audio_test_media.h"

#include <sndfile.h>

extern "C" {
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/channel_layout.h>
#include <libavutil/mathematics.h>
}

#include <algorithm>
#include <cmath>
#include <memory>
#include <vector>

#include "combo/core/check.h"

namespace combo::testing {

void write_sndfile(const std::string& path, const at::Tensor& samples, int sample_rate,
                   int format) {
  COMBO_CHECK(samples.dim() == 2, "write_sndfile: expected [C, T], got ", samples.sizes());
  SF_INFO info{};
  info.samplerate = sample_rate;
  info.channels = static_cast<int>(samples.size(0));
  info.format = format;
  SNDFILE* f = sf_open(path.c_str(), SFM_WRITE, &info);
  COMBO_CHECK(f != nullptr, "write_sndfile: cannot write '", path, "': ", sf_strerror(nullptr));
  const at::Tensor interleaved = samples.t().contiguous();  // [T, C]
  const sf_count_t frames = interleaved.size(0);
  sf_count_t written = 0;
  if (interleaved.scalar_type() == at::kShort) {
    written = sf_writef_short(f, interleaved.data_ptr<int16_t>(), frames);
  } else if (interleaved.scalar_type() == at::kInt) {
    written = sf_writef_int(f, interleaved.data_ptr<int32_t>(), frames);
  } else {
    const at::Tensor fl = interleaved.to(at::kFloat).contiguous();
    written = sf_writef_float(f, fl.data_ptr<float>(), frames);
  }
  sf_close(f);
  COMBO_CHECK(written == frames, "write_sndfile: wrote ", written, " of ", frames, " frames");
}

namespace {

struct CodecFree {
  void operator()(AVCodecContext* c) const { avcodec_free_context(&c); }
};
struct FrameFree {
  void operator()(AVFrame* f) const { av_frame_free(&f); }
};
struct PacketFree {
  void operator()(AVPacket* p) const { av_packet_free(&p); }
};
struct OutputFree {
  void operator()(AVFormatContext* oc) const {
    if (oc->pb && !(oc->oformat->flags & AVFMT_NOFILE)) avio_closep(&oc->pb);
    avformat_free_context(oc);
  }
};

struct Output {
  AVStream* stream = nullptr;
  std::unique_ptr<AVCodecContext, CodecFree> codec;
  int64_t next_pts = 0;
  bool done = false;
};

AVSampleFormat pick_sample_format(const AVCodec* codec) {
  const AVSampleFormat preferred[] = {AV_SAMPLE_FMT_FLTP, AV_SAMPLE_FMT_FLT, AV_SAMPLE_FMT_S16,
                                      AV_SAMPLE_FMT_S16P, AV_SAMPLE_FMT_S32, AV_SAMPLE_FMT_S32P};
  if (codec->sample_fmts == nullptr) return AV_SAMPLE_FMT_FLTP;
  for (AVSampleFormat want : preferred) {
    for (const AVSampleFormat* f = codec->sample_fmts; *f != AV_SAMPLE_FMT_NONE; ++f) {
      if (*f == want) return want;
    }
  }
  return AV_SAMPLE_FMT_NONE;
}

// Converts one float sample in [-1, 1] to the encoder's format; int16 sources that were divided
// by 32768 come back exactly.
template <typename T>
T quantize(float x, double scale) {
  const double v = std::nearbyint(static_cast<double>(x) * scale);
  return static_cast<T>(std::clamp(v, -scale, scale - 1));
}

void fill_audio_frame(AVFrame* frame, const at::Tensor& samples, int64_t start) {
  const int channels = frame->ch_layout.nb_channels;
  const auto acc = samples.accessor<float, 2>();
  const int64_t available = samples.size(1) - start;
  for (int c = 0; c < channels; ++c) {
    for (int i = 0; i < frame->nb_samples; ++i) {
      const float x = i < available ? acc[c][start + i] : 0.f;
      switch (frame->format) {
        case AV_SAMPLE_FMT_FLTP:
          reinterpret_cast<float*>(frame->data[c])[i] = x;
          break;
        case AV_SAMPLE_FMT_FLT:
          reinterpret_cast<float*>(frame->data[0])[i * channels + c] = x;
          break;
        case AV_SAMPLE_FMT_S16P:
          reinterpret_cast<int16_t*>(frame->data[c])[i] = quantize<int16_t>(x, 32768.0);
          break;
        case AV_SAMPLE_FMT_S16:
          reinterpret_cast<int16_t*>(frame->data[0])[i * channels + c] =
              quantize<int16_t>(x, 32768.0);
          break;
        case AV_SAMPLE_FMT_S32P:
          reinterpret_cast<int32_t*>(frame->data[c])[i] = quantize<int32_t>(x, 2147483648.0);
          break;
        case AV_SAMPLE_FMT_S32:
          reinterpret_cast<int32_t*>(frame->data[0])[i * channels + c] =
              quantize<int32_t>(x, 2147483648.0);
          break;
        default:
          COMBO_FAIL("encode_media: unexpected sample format ", frame->format);
      }
    }
  }
}

void fill_video_frame(AVFrame* frame, int64_t index) {
  for (int y = 0; y < frame->height; ++y) {
    for (int x = 0; x < frame->width; ++x) {
      frame->data[0][y * frame->linesize[0] + x] = static_cast<uint8_t>(x + y + index * 3);
    }
  }
  for (int y = 0; y < frame->height / 2; ++y) {
    for (int x = 0; x < frame->width / 2; ++x) {
      frame->data[1][y * frame->linesize[1] + x] = 128;
      frame->data[2][y * frame->linesize[2] + x] = static_cast<uint8_t>(64 + y + index);
    }
  }
}

// Sends one frame (nullptr flushes) and writes every packet the encoder returns.
void encode_and_write(AVFormatContext* oc, Output& out, AVFrame* frame) {
  int ret = avcodec_send_frame(out.codec.get(), frame);
  COMBO_CHECK(ret >= 0, "encode_media: avcodec_send_frame failed: ", ret);
  std::unique_ptr<AVPacket, PacketFree> pkt(av_packet_alloc());
  while (true) {
    ret = avcodec_receive_packet(out.codec.get(), pkt.get());
    if (ret == AVERROR(EAGAIN) || ret == AVERROR_EOF) return;
    COMBO_CHECK(ret >= 0, "encode_media: avcodec_receive_packet failed: ", ret);
    av_packet_rescale_ts(pkt.get(), out.codec->time_base, out.stream->time_base);
    pkt->stream_index = out.stream->index;
    ret = av_interleaved_write_frame(oc, pkt.get());
    COMBO_CHECK(ret >= 0, "encode_media: av_interleaved_write_frame failed: ", ret);
  }
}

}  // namespace

bool encode_media(const std::string& path, const at::Tensor& samples_in, int sample_rate,
                  const MediaSpec& spec, std::string* why) {
  const at::Tensor samples = samples_in.to(at::kFloat).contiguous();
  AVFormatContext* raw = nullptr;
  if (avformat_alloc_output_context2(&raw, nullptr, nullptr, path.c_str()) < 0 || !raw) {
    *why = "this FFmpeg has no muxer for '" + path + "'";
    return false;
  }
  std::unique_ptr<AVFormatContext, OutputFree> oc(raw);

  Output video;
  Output audio;
  if (spec.with_video) {
    const AVCodec* codec = avcodec_find_encoder_by_name("mpeg4");
    if (!codec) {
      *why = "this FFmpeg has no mpeg4 video encoder";
      return false;
    }
    video.stream = avformat_new_stream(oc.get(), nullptr);
    video.codec.reset(avcodec_alloc_context3(codec));
    AVCodecContext* c = video.codec.get();
    c->width = 64;
    c->height = 48;
    c->pix_fmt = AV_PIX_FMT_YUV420P;
    c->time_base = AVRational{1, 25};
    c->framerate = AVRational{25, 1};
    c->gop_size = 12;
    c->bit_rate = 200000;
    if (oc->oformat->flags & AVFMT_GLOBALHEADER) c->flags |= AV_CODEC_FLAG_GLOBAL_HEADER;
    COMBO_CHECK(avcodec_open2(c, codec, nullptr) >= 0, "encode_media: cannot open mpeg4");
    avcodec_parameters_from_context(video.stream->codecpar, c);
    video.stream->time_base = c->time_base;
  }
  if (!spec.audio_encoder.empty()) {
    const AVCodec* codec = avcodec_find_encoder_by_name(spec.audio_encoder.c_str());
    if (!codec) {
      *why = "this FFmpeg has no " + spec.audio_encoder + " encoder";
      return false;
    }
    audio.stream = avformat_new_stream(oc.get(), nullptr);
    audio.codec.reset(avcodec_alloc_context3(codec));
    AVCodecContext* c = audio.codec.get();
    c->sample_fmt = pick_sample_format(codec);
    COMBO_CHECK(c->sample_fmt != AV_SAMPLE_FMT_NONE, "encode_media: no usable sample format");
    c->sample_rate = sample_rate;
    av_channel_layout_default(&c->ch_layout, static_cast<int>(samples.size(0)));
    c->bit_rate = 192000;
    c->time_base = AVRational{1, sample_rate};
    if (oc->oformat->flags & AVFMT_GLOBALHEADER) c->flags |= AV_CODEC_FLAG_GLOBAL_HEADER;
    const int ret = avcodec_open2(c, codec, nullptr);
    if (ret < 0) {
      *why = "cannot open the " + spec.audio_encoder + " encoder at " +
             std::to_string(sample_rate) + " Hz (" + std::to_string(ret) + ")";
      return false;
    }
    avcodec_parameters_from_context(audio.stream->codecpar, c);
    audio.stream->time_base = c->time_base;
  }

  if (!(oc->oformat->flags & AVFMT_NOFILE)) {
    COMBO_CHECK(avio_open(&oc->pb, path.c_str(), AVIO_FLAG_WRITE) >= 0,
                "encode_media: cannot open '", path, "' for writing");
  }
  int ret = avformat_write_header(oc.get(), nullptr);
  if (ret < 0) {
    *why = "the muxer for '" + path + "' refuses these streams (" + std::to_string(ret) + ")";
    return false;
  }

  const int64_t total = samples.size(1);
  const int64_t video_frames = static_cast<int64_t>(spec.video_seconds * 25);
  video.done = !spec.with_video;
  audio.done = spec.audio_encoder.empty();
  std::unique_ptr<AVFrame, FrameFree> frame(av_frame_alloc());
  while (!video.done || !audio.done) {
    // Feed whichever stream is behind, so the muxer sees interleaved packets.
    const bool pick_video =
        !video.done && (audio.done || av_compare_ts(video.next_pts, video.codec->time_base,
                                                    audio.next_pts, audio.codec->time_base) <= 0);
    Output& out = pick_video ? video : audio;
    av_frame_unref(frame.get());
    if (pick_video) {
      if (video.next_pts >= video_frames) {
        encode_and_write(oc.get(), video, nullptr);
        video.done = true;
        continue;
      }
      frame->format = video.codec->pix_fmt;
      frame->width = video.codec->width;
      frame->height = video.codec->height;
      COMBO_CHECK(av_frame_get_buffer(frame.get(), 0) >= 0, "encode_media: no video buffer");
      fill_video_frame(frame.get(), video.next_pts);
      frame->pts = video.next_pts++;
    } else {
      if (audio.next_pts >= total) {
        encode_and_write(oc.get(), audio, nullptr);
        audio.done = true;
        continue;
      }
      AVCodecContext* c = audio.codec.get();
      const bool fixed =
          c->frame_size > 0 && !(c->codec->capabilities & AV_CODEC_CAP_VARIABLE_FRAME_SIZE);
      const int64_t chunk = fixed ? c->frame_size : 1024;
      frame->nb_samples = static_cast<int>(std::min<int64_t>(chunk, total - audio.next_pts));
      frame->format = c->sample_fmt;
      frame->sample_rate = c->sample_rate;
      av_channel_layout_copy(&frame->ch_layout, &c->ch_layout);
      COMBO_CHECK(av_frame_get_buffer(frame.get(), 0) >= 0, "encode_media: no audio buffer");
      fill_audio_frame(frame.get(), samples, audio.next_pts);
      frame->pts = audio.next_pts;
      audio.next_pts += frame->nb_samples;
    }
    encode_and_write(oc.get(), out, frame.get());
  }
  COMBO_CHECK(av_write_trailer(oc.get()) >= 0, "encode_media: cannot finish '", path, "'");
  return true;
}

}  // namespace combo::testing
