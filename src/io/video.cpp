#include "combo/io/video.h"

extern "C" {
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/channel_layout.h>
#include <libavutil/error.h>
#include <libavutil/imgutils.h>
#include <libavutil/log.h>
#include <libavutil/opt.h>
#include <libavutil/rational.h>
#include <libswscale/swscale.h>
}

#include <ATen/ATen.h>
#include <unistd.h>

#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <memory>
#include <mutex>
#include <string>
#include <system_error>
#include <vector>

#include "combo/core/check.h"

#if LIBAVCODEC_VERSION_INT < AV_VERSION_INT(59, 24, 100)
#error "combo_io needs FFmpeg >= 5.1 (the AVChannelLayout API)"
#endif

namespace combo::io {
namespace {

namespace fs = std::filesystem;

std::string av_error_string(int code) {
  char buf[AV_ERROR_MAX_STRING_SIZE] = {0};
  av_strerror(code, buf, sizeof(buf));
  return buf;
}

struct FormatCloser {
  void operator()(AVFormatContext* c) const { avformat_close_input(&c); }
};
struct OutputFormatCloser {
  void operator()(AVFormatContext* c) const {
    if (c->pb && !(c->oformat->flags & AVFMT_NOFILE)) avio_closep(&c->pb);
    avformat_free_context(c);
  }
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
struct SwsFreer {
  void operator()(SwsContext* s) const { sws_freeContext(s); }
};

using FramePtr = std::unique_ptr<AVFrame, FrameFreer>;

void quiet_ffmpeg_once() {
  static std::once_flag once;
  // FFmpeg's default level prints warnings for ordinary files (and x264 its statistics); our
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

void check_input_file(const std::string& path) {
  std::error_code ec;
  COMBO_CHECK(fs::exists(path, ec), "video file '", path, "' does not exist");
  COMBO_CHECK(fs::is_regular_file(path, ec), "video file '", path, "' is not a regular file");
  COMBO_CHECK(fs::file_size(path, ec) > 0, "video file '", path, "' is empty (0 bytes)");
}

// An open container with its best video stream (and the best audio stream, if any).
struct OpenedVideo {
  std::unique_ptr<AVFormatContext, FormatCloser> fmt;
  int video_index = -1;
  int audio_index = -1;
  VideoInfo info;
};

OpenedVideo open_video(const std::string& path) {
  check_input_file(path);
  quiet_ffmpeg_once();
  OpenedVideo v;
  AVFormatContext* raw_fmt = nullptr;
  int ret = avformat_open_input(&raw_fmt, path.c_str(), nullptr, nullptr);
  COMBO_CHECK(ret >= 0, "cannot open video file '", path,
              "': unsupported or corrupt format (FFmpeg: ", av_error_string(ret), ")");
  v.fmt.reset(raw_fmt);
  ret = avformat_find_stream_info(v.fmt.get(), nullptr);
  COMBO_CHECK(ret >= 0, "cannot read video file '", path,
              "': no readable stream information (FFmpeg: ", av_error_string(ret), ")");
  // Cover art and thumbnails are video streams too; a real video stream is not attached.
  auto is_video = [&](int i) {
    const AVStream* s = v.fmt->streams[i];
    return s->codecpar->codec_type == AVMEDIA_TYPE_VIDEO &&
           !(s->disposition & AV_DISPOSITION_ATTACHED_PIC);
  };
  v.video_index = av_find_best_stream(v.fmt.get(), AVMEDIA_TYPE_VIDEO, -1, -1, nullptr, 0);
  if (v.video_index < 0 || !is_video(v.video_index)) {
    v.video_index = -1;
    for (unsigned i = 0; i < v.fmt->nb_streams && v.video_index < 0; ++i) {
      if (is_video(static_cast<int>(i))) v.video_index = static_cast<int>(i);
    }
  }
  COMBO_CHECK(v.video_index >= 0, "video file '", path,
              "' has no video stream (streams: ", describe_streams(v.fmt.get()), ")");
  AVStream* stream = v.fmt->streams[v.video_index];
  const AVCodecParameters* par = stream->codecpar;
  COMBO_CHECK(par->width > 0 && par->height > 0, "video file '", path, "': its ",
              avcodec_get_name(par->codec_id),
              " video stream has no readable size (corrupt or truncated file?)");

  VideoInfo& info = v.info;
  info.width = par->width;
  info.height = par->height;
  // The rate OpenCV's CAP_PROP_FPS reports, which the AVSBench preprocessing rounds.
  AVRational rate = av_guess_frame_rate(v.fmt.get(), stream, nullptr);
  if (rate.num <= 0 || rate.den <= 0) rate = stream->avg_frame_rate;
  info.fps = (rate.num > 0 && rate.den > 0) ? av_q2d(rate) : 0.0;
  if (stream->duration != AV_NOPTS_VALUE && stream->duration > 0) {
    info.duration = static_cast<double>(stream->duration) * av_q2d(stream->time_base);
  } else if (v.fmt->duration != AV_NOPTS_VALUE && v.fmt->duration > 0) {
    info.duration = static_cast<double>(v.fmt->duration) / AV_TIME_BASE;
  }
  if (stream->nb_frames > 0) {
    info.num_frames = stream->nb_frames;
  } else if (info.duration > 0 && info.fps > 0) {
    info.num_frames = static_cast<int64_t>(std::llround(info.duration * info.fps));
  }

  v.audio_index = av_find_best_stream(v.fmt.get(), AVMEDIA_TYPE_AUDIO, -1, -1, nullptr, 0);
  if (v.audio_index < 0) {
    // FFmpeg skips audio streams whose parameters it could not read; those still count.
    v.audio_index = -1;
    for (unsigned i = 0; i < v.fmt->nb_streams; ++i) {
      if (v.fmt->streams[i]->codecpar->codec_type == AVMEDIA_TYPE_AUDIO) {
        v.audio_index = static_cast<int>(i);
        break;
      }
    }
  }
  if (v.audio_index >= 0) {
    const AVCodecParameters* apar = v.fmt->streams[v.audio_index]->codecpar;
    info.has_audio = true;
    info.audio_sample_rate = apar->sample_rate;
    info.audio_channels = apar->ch_layout.nb_channels;
  }
  return v;
}

// Sequential decoding of the video stream with frames converted to RGB24 the way OpenCV's
// FFmpeg backend does it (swscale, SWS_BICUBIC, default BT.601 limited-range coefficients), so
// frames match what cv2.VideoCapture gave the official preprocessing.
class FrameDecoder {
 public:
  FrameDecoder(const std::string& path, OpenedVideo& video) : path_(path), video_(video) {
    AVStream* stream = video_.fmt->streams[video_.video_index];
    const AVCodec* decoder = avcodec_find_decoder(stream->codecpar->codec_id);
    COMBO_CHECK(decoder != nullptr, "cannot read video file '", path_,
                "': unsupported video codec '", avcodec_get_name(stream->codecpar->codec_id),
                "' (this FFmpeg build has no decoder for it)");
    codec_.reset(avcodec_alloc_context3(decoder));
    COMBO_CHECK(codec_ != nullptr, "cannot read video file '", path_, "': out of memory");
    int ret = avcodec_parameters_to_context(codec_.get(), stream->codecpar);
    COMBO_CHECK(ret >= 0, "cannot read video file '", path_,
                "': bad codec parameters (FFmpeg: ", av_error_string(ret), ")");
    codec_->pkt_timebase = stream->time_base;
    ret = avcodec_open2(codec_.get(), decoder, nullptr);
    COMBO_CHECK(ret >= 0, "cannot read video file '", path_, "': cannot open the ", decoder->name,
                " decoder (FFmpeg: ", av_error_string(ret), ")");
    packet_.reset(av_packet_alloc());
    frame_.reset(av_frame_alloc());
    COMBO_CHECK(packet_ && frame_, "cannot read video file '", path_, "': out of memory");
    time_base_ = av_q2d(stream->time_base);
    origin_ = stream->start_time;
  }

  /// The next decoded frame (owned by the decoder until the next call), or nullptr at the end.
  /// `seconds` is its time from the stream start.
  const AVFrame* next(double* seconds) {
    av_frame_unref(frame_.get());
    while (true) {
      const int r = avcodec_receive_frame(codec_.get(), frame_.get());
      if (r >= 0) {
        *seconds = frame_seconds();
        ++decoded_;
        return frame_.get();
      }
      if (r == AVERROR_EOF) return nullptr;
      COMBO_CHECK(r == AVERROR(EAGAIN), "cannot decode video file '", path_, "' at frame ",
                  decoded_, ": ", av_error_string(r));
      if (flushed_) return nullptr;
      feed();
    }
  }

  /// Frames returned so far.
  int64_t decoded() const { return decoded_; }

  /// The frame as RGB24 CV_8UC3 at its own size.
  cv::Mat to_rgb(const AVFrame* frame) {
    COMBO_CHECK(frame->width > 0 && frame->height > 0 && frame->format >= 0,
                "cannot decode video file '", path_, "': frame ", decoded_ - 1, " has no picture");
    sws_.reset(sws_getCachedContext(
        sws_.release(), frame->width, frame->height, static_cast<AVPixelFormat>(frame->format),
        frame->width, frame->height, AV_PIX_FMT_RGB24, SWS_BICUBIC, nullptr, nullptr, nullptr));
    COMBO_CHECK(sws_ != nullptr, "cannot decode video file '", path_, "': cannot convert ",
                av_get_pix_fmt_name(static_cast<AVPixelFormat>(frame->format)), " to RGB (frame ",
                decoded_ - 1, ")");
    cv::Mat rgb(frame->height, frame->width, CV_8UC3);
    uint8_t* dst[4] = {rgb.data, nullptr, nullptr, nullptr};
    int dst_stride[4] = {static_cast<int>(rgb.step[0]), 0, 0, 0};
    const int rows =
        sws_scale(sws_.get(), frame->data, frame->linesize, 0, frame->height, dst, dst_stride);
    COMBO_CHECK(rows == frame->height, "cannot decode video file '", path_,
                "': colour conversion of frame ", decoded_ - 1, " failed");
    return rgb;
  }

 private:
  void feed() {
    while (true) {
      const int ret = av_read_frame(video_.fmt.get(), packet_.get());
      if (ret == AVERROR_EOF) {
        avcodec_send_packet(codec_.get(), nullptr);
        flushed_ = true;
        return;
      }
      COMBO_CHECK(ret >= 0, "cannot read video file '", path_, "' after frame ", decoded_, ": ",
                  av_error_string(ret));
      if (packet_->stream_index != video_.video_index) {
        av_packet_unref(packet_.get());
        continue;
      }
      const int r = avcodec_send_packet(codec_.get(), packet_.get());
      av_packet_unref(packet_.get());
      COMBO_CHECK(r >= 0 || r == AVERROR(EAGAIN), "cannot decode video file '", path_,
                  "' at frame ", decoded_, ": ", av_error_string(r));
      return;
    }
  }

  double frame_seconds() {
    int64_t pts = frame_->best_effort_timestamp;
    if (pts == AV_NOPTS_VALUE) pts = frame_->pts;
    if (pts == AV_NOPTS_VALUE || time_base_ <= 0) {
      // No timestamps: frames are evenly spaced at the stream's rate.
      const double fps = video_.info.fps > 0 ? video_.info.fps : 25.0;
      return static_cast<double>(decoded_) / fps;
    }
    if (origin_ == AV_NOPTS_VALUE) origin_ = pts;
    return static_cast<double>(pts - origin_) * time_base_;
  }

  std::string path_;
  OpenedVideo& video_;
  std::unique_ptr<AVCodecContext, CodecCloser> codec_;
  std::unique_ptr<AVPacket, PacketFreer> packet_;
  FramePtr frame_;
  std::unique_ptr<SwsContext, SwsFreer> sws_;
  double time_base_ = 0.0;
  int64_t origin_ = AV_NOPTS_VALUE;
  int64_t decoded_ = 0;
  bool flushed_ = false;
};

FramePtr ref_frame(const AVFrame* src) {
  FramePtr copy(av_frame_alloc());
  COMBO_CHECK(copy != nullptr && av_frame_ref(copy.get(), src) >= 0,
              "read_video_frames: out of memory");
  return copy;
}

void check_selection(const std::string& path, const FrameSelection& sel) {
  COMBO_CHECK(sel.count >= 0, "read_video_frames('", path, "'): count must be >= 0, got ",
              sel.count);
  COMBO_CHECK(sel.mode != FrameSelection::Mode::kRate || sel.rate > 0, "read_video_frames('", path,
              "'): rate must be > 0, got ", sel.rate);
  COMBO_CHECK(std::isfinite(sel.start) && sel.start >= 0, "read_video_frames('", path,
              "'): start must be >= 0 seconds, got ", sel.start);
  COMBO_CHECK((sel.width == 0 && sel.height == 0) || (sel.width > 0 && sel.height > 0),
              "read_video_frames('", path,
              "'): resize needs both width and height > 0 (or both "
              "0 to keep the size), got ",
              sel.width, "x", sel.height);
}

// ---------------------------------------------------------------------------------------------
// Writing

std::string temp_path_for(const std::string& path) {
  static std::atomic<uint64_t> counter{0};
  const fs::path p(path);
  return (p.parent_path() / str_cat(".", p.filename().string(), ".tmp.", ::getpid(), ".",
                                    counter.fetch_add(1), ".mp4"))
      .string();
}

class Mp4Writer {
 public:
  Mp4Writer(const std::string& path, const std::string& tmp_path) : path_(path), tmp_(tmp_path) {}

  void open(int width, int height, double fps, int64_t sample_rate, int64_t channels,
            int64_t bitrate) {
    AVFormatContext* raw = nullptr;
    int ret = avformat_alloc_output_context2(&raw, nullptr, "mp4", tmp_.c_str());
    COMBO_CHECK(ret >= 0 && raw != nullptr, "cannot write video file '", path_,
                "': no MP4 muxer (FFmpeg: ", av_error_string(ret), ")");
    fmt_.reset(raw);
    open_video(width, height, fps, bitrate);
    if (channels > 0) open_audio(sample_rate, channels);
    ret = avio_open(&fmt_->pb, tmp_.c_str(), AVIO_FLAG_WRITE);
    COMBO_CHECK(ret >= 0, "cannot write video file '", path_, "': cannot create '", tmp_,
                "' (FFmpeg: ", av_error_string(ret), ")");
    ret = avformat_write_header(fmt_.get(), nullptr);
    COMBO_CHECK(ret >= 0, "cannot write video file '", path_,
                "': MP4 header (FFmpeg: ", av_error_string(ret), ")");
  }

  void write_frame(const cv::Mat& rgb, int64_t index) {
    int ret = av_frame_make_writable(vframe_.get());
    COMBO_CHECK(ret >= 0, "cannot write video file '", path_, "': out of memory");
    const uint8_t* src[4] = {rgb.data, nullptr, nullptr, nullptr};
    const int src_stride[4] = {static_cast<int>(rgb.step[0]), 0, 0, 0};
    sws_scale(sws_.get(), src, src_stride, 0, rgb.rows, vframe_->data, vframe_->linesize);
    vframe_->pts = index;
    encode(vcodec_.get(), vstream_, vframe_.get(), "video frame ", index);
  }

  /// Encodes audio planes [C][T] up to sample `until` (exclusive); the rest waits.
  void write_audio_until(const std::vector<std::vector<float>>& planes, int64_t until) {
    if (!acodec_) return;
    const int64_t total = static_cast<int64_t>(planes.front().size());
    until = std::min(until, total);
    const int64_t frame_size = acodec_->frame_size > 0 ? acodec_->frame_size : 1024;
    while (audio_pos_ < until && (until - audio_pos_ >= frame_size || until == total)) {
      const int64_t n = std::min(frame_size, total - audio_pos_);
      int ret = av_frame_make_writable(aframe_.get());
      COMBO_CHECK(ret >= 0, "cannot write video file '", path_, "': out of memory");
      aframe_->nb_samples = static_cast<int>(n);
      for (size_t c = 0; c < planes.size(); ++c) {
        float* dst = reinterpret_cast<float*>(aframe_->data[c]);
        std::copy(planes[c].begin() + audio_pos_, planes[c].begin() + audio_pos_ + n, dst);
        std::fill(dst + n, dst + frame_size, 0.0f);
      }
      aframe_->pts = audio_pos_;
      encode(acodec_.get(), astream_, aframe_.get(), "audio sample ", audio_pos_);
      audio_pos_ += n;
    }
  }

  void finish() {
    encode(vcodec_.get(), vstream_, nullptr, "the end of the video", 0);
    if (acodec_) encode(acodec_.get(), astream_, nullptr, "the end of the audio", 0);
    const int ret = av_write_trailer(fmt_.get());
    COMBO_CHECK(ret >= 0, "cannot write video file '", path_,
                "': MP4 trailer (FFmpeg: ", av_error_string(ret), ")");
    const int closed = avio_closep(&fmt_->pb);
    COMBO_CHECK(closed >= 0, "cannot write video file '", path_, "': ", av_error_string(closed));
  }

 private:
  void open_video(int width, int height, double fps, int64_t bitrate) {
    const std::string name = video_encoder_name();
    const AVCodec* codec = name.empty() ? nullptr : avcodec_find_encoder_by_name(name.c_str());
    COMBO_CHECK(codec != nullptr, "cannot write video file '", path_,
                "': this FFmpeg build has neither the libx264 nor the mpeg4 encoder");
    vstream_ = avformat_new_stream(fmt_.get(), nullptr);
    vcodec_.reset(avcodec_alloc_context3(codec));
    COMBO_CHECK(vstream_ && vcodec_, "cannot write video file '", path_, "': out of memory");
    AVRational rate = av_d2q(fps, 1 << 16);
    COMBO_CHECK(rate.num > 0 && rate.den > 0, "cannot write video file '", path_,
                "': bad frame rate ", fps);
    vcodec_->codec_id = codec->id;
    vcodec_->width = width;
    vcodec_->height = height;
    vcodec_->pix_fmt = AV_PIX_FMT_YUV420P;
    vcodec_->time_base = av_inv_q(rate);
    vcodec_->framerate = rate;
    vcodec_->gop_size = 12;
    // swscale's RGB -> YUV conversion below uses BT.601 limited range; say so in the stream.
    vcodec_->color_range = AVCOL_RANGE_MPEG;
    vcodec_->colorspace = AVCOL_SPC_SMPTE170M;
    vcodec_->color_primaries = AVCOL_PRI_SMPTE170M;
    vcodec_->color_trc = AVCOL_TRC_SMPTE170M;
    if (bitrate > 0) {
      vcodec_->bit_rate = bitrate;
    } else if (codec->id == AV_CODEC_ID_H264) {
      av_opt_set(vcodec_->priv_data, "crf", "18", 0);
    } else {
      // mpeg4's default is a fixed 200 kbit/s; a fixed quantiser keeps small frames sharp.
      vcodec_->flags |= AV_CODEC_FLAG_QSCALE;
      vcodec_->global_quality = FF_QP2LAMBDA * 3;
    }
    if (codec->id == AV_CODEC_ID_H264) av_opt_set(vcodec_->priv_data, "preset", "veryfast", 0);
    if (fmt_->oformat->flags & AVFMT_GLOBALHEADER) vcodec_->flags |= AV_CODEC_FLAG_GLOBAL_HEADER;
    int ret = avcodec_open2(vcodec_.get(), codec, nullptr);
    COMBO_CHECK(ret >= 0, "cannot write video file '", path_, "': cannot open the ", codec->name,
                " encoder for ", width, "x", height, " at ", fps,
                " fps (FFmpeg: ", av_error_string(ret), ")");
    ret = avcodec_parameters_from_context(vstream_->codecpar, vcodec_.get());
    COMBO_CHECK(ret >= 0, "cannot write video file '", path_, "': ", av_error_string(ret));
    vstream_->time_base = vcodec_->time_base;
    vstream_->avg_frame_rate = rate;

    vframe_.reset(av_frame_alloc());
    COMBO_CHECK(vframe_ != nullptr, "cannot write video file '", path_, "': out of memory");
    vframe_->format = AV_PIX_FMT_YUV420P;
    vframe_->width = width;
    vframe_->height = height;
    ret = av_frame_get_buffer(vframe_.get(), 0);
    COMBO_CHECK(ret >= 0, "cannot write video file '", path_, "': out of memory");
    sws_.reset(sws_getContext(width, height, AV_PIX_FMT_RGB24, width, height, AV_PIX_FMT_YUV420P,
                              SWS_BICUBIC, nullptr, nullptr, nullptr));
    COMBO_CHECK(sws_ != nullptr, "cannot write video file '", path_,
                "': no RGB -> YUV 4:2:0 conversion");
  }

  void open_audio(int64_t sample_rate, int64_t channels) {
    const AVCodec* codec = avcodec_find_encoder_by_name("aac");
    COMBO_CHECK(codec != nullptr, "cannot write video file '", path_,
                "': this FFmpeg build has no aac encoder");
    astream_ = avformat_new_stream(fmt_.get(), nullptr);
    acodec_.reset(avcodec_alloc_context3(codec));
    COMBO_CHECK(astream_ && acodec_, "cannot write video file '", path_, "': out of memory");
    acodec_->sample_fmt = AV_SAMPLE_FMT_FLTP;
    acodec_->sample_rate = static_cast<int>(sample_rate);
    av_channel_layout_default(&acodec_->ch_layout, static_cast<int>(channels));
    acodec_->bit_rate = 64000 * std::min<int64_t>(channels, 6);
    acodec_->time_base = AVRational{1, static_cast<int>(sample_rate)};
    if (fmt_->oformat->flags & AVFMT_GLOBALHEADER) acodec_->flags |= AV_CODEC_FLAG_GLOBAL_HEADER;
    int ret = avcodec_open2(acodec_.get(), codec, nullptr);
    COMBO_CHECK(ret >= 0, "cannot write video file '", path_, "': cannot open the aac encoder for ",
                channels, " channels at ", sample_rate, " Hz (FFmpeg: ", av_error_string(ret), ")");
    ret = avcodec_parameters_from_context(astream_->codecpar, acodec_.get());
    COMBO_CHECK(ret >= 0, "cannot write video file '", path_, "': ", av_error_string(ret));
    astream_->time_base = acodec_->time_base;

    aframe_.reset(av_frame_alloc());
    COMBO_CHECK(aframe_ != nullptr, "cannot write video file '", path_, "': out of memory");
    aframe_->format = AV_SAMPLE_FMT_FLTP;
    aframe_->sample_rate = acodec_->sample_rate;
    aframe_->nb_samples = acodec_->frame_size > 0 ? acodec_->frame_size : 1024;
    ret = av_channel_layout_copy(&aframe_->ch_layout, &acodec_->ch_layout);
    ret = ret < 0 ? ret : av_frame_get_buffer(aframe_.get(), 0);
    COMBO_CHECK(ret >= 0, "cannot write video file '", path_, "': out of memory");
  }

  void encode(AVCodecContext* codec, AVStream* stream, const AVFrame* frame, const char* what,
              int64_t where) {
    int ret = avcodec_send_frame(codec, frame);
    COMBO_CHECK(ret >= 0, "cannot write video file '", path_, "': encoding ", what,
                frame ? std::to_string(where) : std::string(),
                " failed (FFmpeg: ", av_error_string(ret), ")");
    std::unique_ptr<AVPacket, PacketFreer> packet(av_packet_alloc());
    COMBO_CHECK(packet != nullptr, "cannot write video file '", path_, "': out of memory");
    while (true) {
      ret = avcodec_receive_packet(codec, packet.get());
      if (ret == AVERROR(EAGAIN) || ret == AVERROR_EOF) return;
      COMBO_CHECK(ret >= 0, "cannot write video file '", path_, "': encoding ", what,
                  frame ? std::to_string(where) : std::string(),
                  " failed (FFmpeg: ", av_error_string(ret), ")");
      av_packet_rescale_ts(packet.get(), codec->time_base, stream->time_base);
      packet->stream_index = stream->index;
      ret = av_interleaved_write_frame(fmt_.get(), packet.get());
      COMBO_CHECK(ret >= 0, "cannot write video file '", path_,
                  "': writing a packet failed (FFmpeg: ", av_error_string(ret), ")");
    }
  }

  std::string path_, tmp_;
  std::unique_ptr<AVFormatContext, OutputFormatCloser> fmt_;
  AVStream* vstream_ = nullptr;
  AVStream* astream_ = nullptr;
  std::unique_ptr<AVCodecContext, CodecCloser> vcodec_, acodec_;
  FramePtr vframe_, aframe_;
  std::unique_ptr<SwsContext, SwsFreer> sws_;
  int64_t audio_pos_ = 0;
};

// Planes [C][T] of the audio to write; empty when there is none.
std::vector<std::vector<float>> audio_planes(const std::string& path, const at::Tensor& audio,
                                             const VideoWriterOptions& options) {
  std::vector<std::vector<float>> planes;
  if (!audio.defined() || audio.numel() == 0) return planes;
  COMBO_CHECK(audio.dim() == 1 || audio.dim() == 2, "cannot write video file '", path,
              "': audio must be [T] or [C, T], got ", audio.sizes());
  COMBO_CHECK(audio.is_floating_point(), "cannot write video file '", path,
              "': audio must be floating point in [-1, 1], got ", audio.scalar_type());
  COMBO_CHECK(options.audio_sample_rate > 0, "cannot write video file '", path,
              "': audio_sample_rate must be > 0, got ", options.audio_sample_rate);
  at::Tensor a = audio.to(at::kCPU, at::kFloat).contiguous();
  if (a.dim() == 1) {
    COMBO_CHECK(options.audio_channels >= 1, "cannot write video file '", path,
                "': audio_channels must be >= 1, got ", options.audio_channels);
    a = a.unsqueeze(0).expand({options.audio_channels, a.size(0)}).contiguous();
  }
  COMBO_CHECK(a.size(0) >= 1 && a.size(0) <= 8, "cannot write video file '", path,
              "': audio must have 1..8 channels, got ", a.size(0));
  a = a.clamp(-1.0, 1.0).contiguous();
  for (int64_t c = 0; c < a.size(0); ++c) {
    const float* p = a[c].data_ptr<float>();
    planes.emplace_back(p, p + a.size(1));
  }
  return planes;
}

}  // namespace

VideoInfo probe_video(const std::string& path) { return open_video(path).info; }

std::string video_encoder_name() {
  for (const char* name : {"libx264", "mpeg4"}) {
    if (avcodec_find_encoder_by_name(name)) return name;
  }
  return "";
}

std::vector<int64_t> avsbench_frame_indices(double fps, int64_t count, int64_t total_frames) {
  COMBO_CHECK(std::isfinite(fps) && fps > 0, "avsbench_frame_indices: fps must be > 0, got ", fps);
  COMBO_CHECK(count >= 0, "avsbench_frame_indices: count must be >= 0, got ", count);
  // Python's round() rounds halves to even, as nearbyint does in the default rounding mode.
  const int64_t fi = static_cast<int64_t>(std::nearbyint(fps));
  std::vector<int64_t> indices;
  indices.reserve(static_cast<size_t>(count));
  for (int64_t l = 0; l < count; ++l) {
    // int(l*fi + (i/16)*fi) with i = 15, in Python's float arithmetic.
    int64_t k =
        static_cast<int64_t>(static_cast<double>(l * fi) + (15.0 / 16.0) * static_cast<double>(fi));
    if (total_frames > 0) k = std::min(k, total_frames - 1);
    indices.push_back(k);
  }
  return indices;
}

DecodedFrames read_video_frames(const std::string& path, const FrameSelection& selection) {
  check_selection(path, selection);
  OpenedVideo video = open_video(path);
  DecodedFrames out;
  out.info = video.info;
  const double fps = video.info.fps;
  COMBO_CHECK(selection.mode != FrameSelection::Mode::kAvsbench || fps > 0, "video file '", path,
              "' reports no frame rate; the AVSBench frame rule needs one");
  // A frame belongs to the trimmed clip when it starts at most half a frame before `start`.
  const double tolerance = fps > 0 ? 0.5 / fps : 1e-3;

  auto keep = [&](cv::Mat rgb, int64_t index, double t) {
    if (selection.width > 0) {
      cv::Mat resized;
      cv::resize(rgb, resized,
                 cv::Size(static_cast<int>(selection.width), static_cast<int>(selection.height)), 0,
                 0, cv::INTER_LINEAR);
      rgb = resized;
    }
    out.frames.push_back(std::move(rgb));
    out.frame_index.push_back(index);
    out.timestamps.push_back(t);
  };

  FrameDecoder decoder(path, video);
  // Unclamped targets (positions in the trimmed clip) for kAvsbench; times for kRate.
  std::vector<int64_t> wanted;
  if (selection.mode == FrameSelection::Mode::kAvsbench) {
    wanted = avsbench_frame_indices(fps, selection.count, 0);
  }
  size_t next_wanted = 0;
  int64_t next_rate_step = 0;
  auto rate_target = [&](int64_t j) { return static_cast<double>(j) / selection.rate; };

  // The previous frame of the clip (kRate: the nearest-frame choice; kAvsbench: the clamp).
  FramePtr previous;
  int64_t previous_index = -1;
  double previous_t = 0.0;
  int64_t clip_position = 0;  // frames of the trimmed clip seen so far
  bool all_found = selection.mode == FrameSelection::Mode::kAvsbench && wanted.empty();

  double seconds = 0.0;
  while (!all_found) {
    const AVFrame* frame = decoder.next(&seconds);
    if (!frame) break;
    const int64_t index = decoder.decoded() - 1;
    const double t = seconds - selection.start;
    if (t < -tolerance) continue;
    switch (selection.mode) {
      case FrameSelection::Mode::kAll:
        keep(decoder.to_rgb(frame), index, t);
        break;
      case FrameSelection::Mode::kAvsbench: {
        if (next_wanted < wanted.size() && wanted[next_wanted] == clip_position) {
          cv::Mat rgb = decoder.to_rgb(frame);
          while (next_wanted < wanted.size() && wanted[next_wanted] == clip_position) {
            keep(rgb.clone(), index, t);
            ++next_wanted;
          }
        }
        all_found = next_wanted == wanted.size();
        break;
      }
      case FrameSelection::Mode::kRate: {
        // Every target at or before this frame takes this frame or the previous one, whichever
        // is nearer (ties go to the earlier frame).
        while (rate_target(next_rate_step) <= t) {
          const double target = rate_target(next_rate_step);
          if (previous && target - previous_t <= t - target) {
            keep(decoder.to_rgb(previous.get()), previous_index, previous_t);
          } else {
            keep(decoder.to_rgb(frame), index, t);
          }
          ++next_rate_step;
        }
        break;
      }
    }
    if (selection.mode != FrameSelection::Mode::kAll) {
      previous = ref_frame(frame);
      previous_index = index;
      previous_t = t;
    }
    ++clip_position;
  }

  if (!all_found) {
    // Decoded to the end: the true frame count is known.
    out.info.num_frames = decoder.decoded();
    COMBO_CHECK(clip_position > 0, "video file '", path, "' has no frames",
                selection.start > 0 ? str_cat(" at or after ", selection.start, " s") : "", " (",
                decoder.decoded(), " decoded)");
    if (selection.mode == FrameSelection::Mode::kAvsbench && next_wanted < wanted.size()) {
      // Past the end: the last frame, as the official preprocessing's clamp.
      const cv::Mat last = decoder.to_rgb(previous.get());
      for (; next_wanted < wanted.size(); ++next_wanted) {
        keep(last.clone(), previous_index, previous_t);
      }
    } else if (selection.mode == FrameSelection::Mode::kRate && previous) {
      // Targets within the last frame's display time take the last frame.
      const double frame_time = fps > 0 ? 1.0 / fps : 0.0;
      while (rate_target(next_rate_step) < previous_t + frame_time - 1e-9) {
        keep(decoder.to_rgb(previous.get()), previous_index, previous_t);
        ++next_rate_step;
      }
    }
  }
  return out;
}

void write_video(const std::string& path, const std::vector<cv::Mat>& frames,
                 const at::Tensor& audio, const VideoWriterOptions& options) {
  quiet_ffmpeg_once();
  COMBO_CHECK(!frames.empty(), "cannot write video file '", path, "': no frames");
  COMBO_CHECK(std::isfinite(options.fps) && options.fps > 0, "cannot write video file '", path,
              "': fps must be > 0, got ", options.fps);
  for (size_t i = 0; i < frames.size(); ++i) {
    COMBO_CHECK(frames[i].type() == CV_8UC3 && !frames[i].empty(), "cannot write video file '",
                path, "': frame ", i, " must be a non-empty CV_8UC3 RGB image, got type ",
                frames[i].type(), " size ", frames[i].cols, "x", frames[i].rows);
    COMBO_CHECK(frames[i].size() == frames[0].size(), "cannot write video file '", path,
                "': frame ", i, " is ", frames[i].cols, "x", frames[i].rows, ", frame 0 is ",
                frames[0].cols, "x", frames[0].rows);
  }
  COMBO_CHECK(options.width >= 0 && options.height >= 0, "cannot write video file '", path,
              "': negative size ", options.width, "x", options.height);
  const int src_w = options.width > 0 ? static_cast<int>(options.width) : frames[0].cols;
  const int src_h = options.height > 0 ? static_cast<int>(options.height) : frames[0].rows;
  // YUV 4:2:0 needs even sizes: an odd edge is padded by repeating its last row or column.
  const int pad_w = src_w % 2, pad_h = src_h % 2;
  const std::vector<std::vector<float>> planes = audio_planes(path, audio, options);

  std::error_code ec;
  const fs::path parent = fs::path(path).parent_path();
  if (!parent.empty()) fs::create_directories(parent, ec);
  const std::string tmp = temp_path_for(path);
  try {
    Mp4Writer writer(path, tmp);
    writer.open(src_w + pad_w, src_h + pad_h, options.fps, options.audio_sample_rate,
                static_cast<int64_t>(planes.size()), options.bitrate);
    cv::Mat resized, padded;
    for (size_t i = 0; i < frames.size(); ++i) {
      const cv::Mat* rgb = &frames[i];
      if (rgb->cols != src_w || rgb->rows != src_h) {
        cv::resize(*rgb, resized, cv::Size(src_w, src_h), 0, 0, cv::INTER_LINEAR);
        rgb = &resized;
      }
      if (pad_w || pad_h) {
        cv::copyMakeBorder(*rgb, padded, 0, pad_h, 0, pad_w, cv::BORDER_REPLICATE);
        rgb = &padded;
      }
      cv::Mat contiguous = rgb->isContinuous() ? *rgb : rgb->clone();
      writer.write_frame(contiguous, static_cast<int64_t>(i));
      if (!planes.empty()) {
        // Interleave: audio up to the end of this frame's display time.
        const double end = static_cast<double>(i + 1) / options.fps;
        writer.write_audio_until(
            planes,
            static_cast<int64_t>(std::ceil(end * static_cast<double>(options.audio_sample_rate))));
      }
    }
    if (!planes.empty()) {
      writer.write_audio_until(planes, std::numeric_limits<int64_t>::max());
    }
    writer.finish();
  } catch (...) {
    fs::remove(tmp, ec);
    throw;
  }
  fs::rename(tmp, path, ec);
  if (ec) {
    std::error_code ignored;
    fs::remove(tmp, ignored);
    COMBO_FAIL("cannot write video file '", path, "': rename from '", tmp,
               "' failed: ", ec.message());
  }
}

}  // namespace combo::io
