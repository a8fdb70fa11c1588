#pragma once
/// Video files through FFmpeg (libavformat/libavcodec/libswscale/libswresample): probing,
/// frame selection by the AVSBench rule or at a fixed rate, and MP4 writing with an audio
/// track (for the synthetic data set and for overlay videos). Every error names the file.
#include <ATen/core/Tensor.h>
#include <opencv2/core/mat.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace combo::io {

/// What a container holds.
struct VideoInfo {
  int64_t width = 0, height = 0;
  double fps = 0.0;        ///< average frame rate of the video stream
  int64_t num_frames = 0;  ///< decoded frame count when known (stream nb_frames or estimate)
  double duration = 0.0;   ///< seconds
  bool has_audio = false;
  int64_t audio_sample_rate = 0;
  int64_t audio_channels = 0;
};

/// Reads the stream parameters. Throws combo::Error naming the file when it is missing, not a
/// media file, or has no video stream.
VideoInfo probe_video(const std::string& path);

/// Which frames to take.
struct FrameSelection {
  enum class Mode {
    kAvsbench,  ///< frame k (1-based) = video frame int((k-1)*fi + (15/16)*fi), fi = round(fps),
                ///< clamped to the last frame (AVSBENCH_SPEC 1.6); `count` frames
    kRate,      ///< one frame every 1/rate seconds starting at t = 0 (nearest frame by pts)
    kAll,       ///< every frame
  };
  Mode mode = Mode::kAvsbench;
  int64_t count = 5;   ///< kAvsbench: frames wanted (S4: 5 or 10 - start, MS3: 5, AVSS: 5/10)
  double rate = 1.0;   ///< kRate: frames per second
  double start = 0.0;  ///< seconds skipped at the start (the S4 CSV `start` column)
  /// 0 = keep the size; else resize every frame to width x height (bilinear, cv::resize).
  int64_t width = 0, height = 0;
};

/// A decoded selection.
struct DecodedFrames {
  std::vector<cv::Mat> frames;       ///< CV_8UC3, RGB order
  std::vector<int64_t> frame_index;  ///< 0-based index in the video of each kept frame
  std::vector<double> timestamps;    ///< seconds from the (trimmed) start
  VideoInfo info;
};

/// Decodes the selected frames (sequential decode, no seeking assumptions). Throws combo::Error
/// naming the file and the frame on a decode failure.
///
/// Details: `fps` is FFmpeg's guessed frame rate (what OpenCV's CAP_PROP_FPS reports). Frames
/// whose time from the stream start is more than half a frame before `start` are skipped; the
/// AVSBench positions and kRate times count from the first frame kept. kRate stops at the end
/// of the last frame's display time. Colours are converted as OpenCV's FFmpeg backend does
/// (swscale, bicubic, BT.601 limited range). When the decode ran to the end of the stream,
/// `info.num_frames` is the decoded frame count; kAvsbench stops after its last frame. A file
/// without audio is not an error (info.has_audio = false).
DecodedFrames read_video_frames(const std::string& path, const FrameSelection& selection);

/// The 0-based frame indices the AVSBench rule picks for `count` frames of a video with `fps`
/// and `total_frames` frames (clamped to total_frames - 1 when total_frames > 0).
std::vector<int64_t> avsbench_frame_indices(double fps, int64_t count, int64_t total_frames);

/// MP4 writing. H.264 (libx264) when available, else MPEG-4 part 2; AAC audio.
struct VideoWriterOptions {
  double fps = 25.0;
  int64_t width = 0, height = 0;  ///< 0 = from the first frame
  int64_t audio_sample_rate = 16000;
  int64_t audio_channels = 1;
  int64_t bitrate = 0;  ///< 0 = codec default quality
};

/// Writes `frames` (CV_8UC3 RGB, all the same size) and optional mono/multichannel audio
/// (float32 [C, T] or [T], values in [-1, 1]) into an MP4 at `path`, atomically (temporary
/// file then rename). Throws combo::Error naming the file on failure.
///
/// Details: frames are resized (bilinear) when options.width/height differ from their size; an
/// odd width or height is padded to the next even number by repeating the last column or row
/// (YUV 4:2:0 needs even sizes), so probe_video then reports the padded size. A [T] audio
/// tensor is written with options.audio_channels copies of itself, a [C, T] one with its C
/// channels (1..8); an undefined or empty tensor writes no audio stream. Frames are converted
/// to BT.601 limited-range YUV 4:2:0; H.264 uses preset veryfast at CRF 18 unless a bitrate is
/// given. Missing parent folders are created.
void write_video(const std::string& path, const std::vector<cv::Mat>& frames,
                 const at::Tensor& audio, const VideoWriterOptions& options);

/// The video encoder write_video uses in this FFmpeg build: "libx264", else "mpeg4"; empty
/// when neither exists (write_video then throws).
std::string video_encoder_name();

}  // namespace combo::io
