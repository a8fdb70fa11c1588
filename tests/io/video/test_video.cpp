// combo::io video files: the AVSBench frame rule, write -> probe -> read round trips, fixed-rate
// and all-frames selection, clamping, files without audio, and errors that name the file.
#include <gtest/gtest.h>

#include <opencv2/core.hpp>

#include <fstream>
#include <string>
#include <vector>

#include "combo/core/check.h"
#include "combo/io/audio_reader.h"
#include "combo/io/video.h"
#include "io/video/video_test_helpers.h"
#include "testing/testing.h"

namespace combo::io {
namespace {

using combo::testing::decode_index;
using combo::testing::index_frames;
using combo::testing::TempDir;
using combo::testing::thrown_message;
using combo::testing::tone;

constexpr int kW = 64, kH = 48;

std::vector<int64_t> decoded_indices(const DecodedFrames& d) {
  std::vector<int64_t> out;
  for (const auto& f : d.frames) out.push_back(decode_index(f));
  return out;
}

// A clip of `frames` index-coded frames (with a tone unless `audio` is false) in `dir`.
std::string index_video(const TempDir& dir, double fps, int64_t frames, bool audio = true) {
  const std::string path =
      dir.file(str_cat("idx_", fps, "_", frames, audio ? "" : "_mute", ".mp4"));
  if (std::ifstream(path).good()) return path;
  VideoWriterOptions opt;
  opt.fps = fps;
  const at::Tensor a = audio ? tone(static_cast<double>(frames) / fps, 16000) : at::Tensor();
  write_video(path, index_frames(frames, kW, kH), a, opt);
  return path;
}

TEST(AvsbenchFrameIndices, OfficialExamples) {
  EXPECT_EQ(avsbench_frame_indices(25.0, 5, 0), (std::vector<int64_t>{23, 48, 73, 98, 123}));
  EXPECT_EQ(avsbench_frame_indices(30.0, 5, 0), (std::vector<int64_t>{28, 58, 88, 118, 148}));
  // fi = round(29.97) = 30.
  EXPECT_EQ(avsbench_frame_indices(29.97, 5, 0), (std::vector<int64_t>{28, 58, 88, 118, 148}));
  EXPECT_EQ(avsbench_frame_indices(25.0, 10, 0).back(), 248);
  EXPECT_TRUE(avsbench_frame_indices(25.0, 0, 0).empty());
}

TEST(AvsbenchFrameIndices, RoundsHalfToEvenAsPython) {
  // round(24.5) = 24 -> int(0.9375 * 24) = 22; round(25.5) = 26 -> int(24.375) = 24.
  EXPECT_EQ(avsbench_frame_indices(24.5, 1, 0), (std::vector<int64_t>{22}));
  EXPECT_EQ(avsbench_frame_indices(25.5, 1, 0), (std::vector<int64_t>{24}));
  EXPECT_EQ(avsbench_frame_indices(12.0, 2, 0), (std::vector<int64_t>{11, 23}));
}

TEST(AvsbenchFrameIndices, ClampsToTheLastFrame) {
  EXPECT_EQ(avsbench_frame_indices(25.0, 5, 60), (std::vector<int64_t>{23, 48, 59, 59, 59}));
  EXPECT_THROW(avsbench_frame_indices(0.0, 5, 0), Error);
  EXPECT_THROW(avsbench_frame_indices(25.0, -1, 0), Error);
}

TEST(VideoIo, EncoderIsAvailable) {
  const std::string name = video_encoder_name();
  std::cout << "[ INFO ] write_video encoder: " << name << std::endl;
  EXPECT_TRUE(name == "libx264" || name == "mpeg4") << name;
}

TEST(VideoIo, WriteProbeRoundTrip) {
  TempDir dir;
  const std::string path = dir.file("sub/clip.mp4");
  VideoWriterOptions opt;
  opt.fps = 25.0;
  write_video(path, index_frames(30, kW, kH), tone(1.2, 16000), opt);

  const VideoInfo info = probe_video(path);
  EXPECT_EQ(info.width, kW);
  EXPECT_EQ(info.height, kH);
  EXPECT_NEAR(info.fps, 25.0, 1e-6);
  EXPECT_EQ(info.num_frames, 30);
  EXPECT_NEAR(info.duration, 1.2, 0.05);
  EXPECT_TRUE(info.has_audio);
  EXPECT_EQ(info.audio_sample_rate, 16000);
  EXPECT_EQ(info.audio_channels, 1);

  const AudioClip clip = read_audio(path);
  EXPECT_EQ(clip.sample_rate, 16000);
  EXPECT_EQ(clip.channels, 1);
  EXPECT_NEAR(clip.duration(), 1.2, 0.1);
  // The tone survives AAC: its level stays near 0.5 / sqrt(2).
  const double rms = clip.samples.slice(1, 2000, 16000).square().mean().sqrt().item<double>();
  EXPECT_NEAR(rms, 0.5 / std::sqrt(2.0), 0.05);

  FrameSelection all;
  all.mode = FrameSelection::Mode::kAll;
  const DecodedFrames d = read_video_frames(path, all);
  ASSERT_EQ(d.frames.size(), 30u);
  EXPECT_EQ(d.info.num_frames, 30);
  for (int64_t i = 0; i < 30; ++i) {
    EXPECT_EQ(d.frame_index[i], i);
    EXPECT_NEAR(d.timestamps[i], i / 25.0, 1e-6);
    EXPECT_EQ(decode_index(d.frames[i]), i) << "frame " << i;
    EXPECT_EQ(d.frames[i].type(), CV_8UC3);
    EXPECT_EQ(d.frames[i].cols, kW);
    EXPECT_EQ(d.frames[i].rows, kH);
  }
  // Close to what was written, pixel for pixel.
  const auto written = index_frames(30, kW, kH);
  EXPECT_LE(cv::norm(d.frames[17], written[17], cv::NORM_INF), 8.0);
  // No temporary file is left beside the result.
  int files = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir.path() / "sub")) {
    (void)e;
    ++files;
  }
  EXPECT_EQ(files, 1);
}

TEST(VideoIo, AvsbenchRulePicksTheOfficialFramesAt25Fps) {
  TempDir dir;
  const std::string path = index_video(dir, 25.0, 130);
  FrameSelection sel;  // kAvsbench, 5 frames
  const DecodedFrames d = read_video_frames(path, sel);
  const std::vector<int64_t> want{23, 48, 73, 98, 123};
  EXPECT_EQ(d.frame_index, want);
  EXPECT_EQ(decoded_indices(d), want);
  EXPECT_NEAR(d.timestamps[0], 23 / 25.0, 1e-6);

  // Resized frames, and the `start` trim: positions count from the first frame at 1 s.
  sel.count = 4;
  sel.start = 1.0;
  sel.width = 32;
  sel.height = 30;
  const DecodedFrames t = read_video_frames(path, sel);
  const std::vector<int64_t> trimmed{48, 73, 98, 123};
  EXPECT_EQ(t.frame_index, trimmed);
  EXPECT_EQ(decoded_indices(t), trimmed);
  EXPECT_NEAR(t.timestamps[0], 23 / 25.0, 1e-6);
  for (const auto& f : t.frames) {
    EXPECT_EQ(f.cols, 32);
    EXPECT_EQ(f.rows, 30);
  }
}

TEST(VideoIo, AvsbenchRulePicksTheOfficialFramesAt30Fps) {
  TempDir dir;
  const std::string path = index_video(dir, 30.0, 150);
  const DecodedFrames d = read_video_frames(path, FrameSelection{});
  const std::vector<int64_t> want{28, 58, 88, 118, 148};
  EXPECT_EQ(d.frame_index, want);
  EXPECT_EQ(decoded_indices(d), want);
  EXPECT_NEAR(d.info.fps, 30.0, 1e-6);
}

TEST(VideoIo, AvsbenchRuleClampsPastTheEnd) {
  TempDir dir;
  const std::string path = index_video(dir, 25.0, 60);
  FrameSelection sel;
  const DecodedFrames d = read_video_frames(path, sel);
  const std::vector<int64_t> want{23, 48, 59, 59, 59};
  EXPECT_EQ(d.frame_index, want);
  EXPECT_EQ(decoded_indices(d), want);
  EXPECT_EQ(d.info.num_frames, 60);
  // A start past the last frame leaves nothing to pick.
  sel.start = 5.0;
  const std::string msg = thrown_message([&] { read_video_frames(path, sel); });
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  EXPECT_NE(msg.find("no frames"), std::string::npos) << msg;
}

TEST(VideoIo, FixedRateTakesTheNearestFrames) {
  TempDir dir;
  const std::string path = index_video(dir, 25.0, 50);
  FrameSelection sel;
  sel.mode = FrameSelection::Mode::kRate;
  sel.rate = 5.0;
  const DecodedFrames d = read_video_frames(path, sel);
  std::vector<int64_t> want;
  for (int64_t i = 0; i < 10; ++i) want.push_back(5 * i);
  EXPECT_EQ(d.frame_index, want);
  EXPECT_EQ(decoded_indices(d), want);
  ASSERT_EQ(d.timestamps.size(), 10u);
  EXPECT_NEAR(d.timestamps[3], 0.6, 1e-6);

  // 3 per second: targets 1/3 s apart fall between frames; the nearer one is taken.
  sel.rate = 3.0;
  const DecodedFrames r = read_video_frames(path, sel);
  EXPECT_EQ(r.frame_index, (std::vector<int64_t>{0, 8, 17, 25, 33, 42}));
  EXPECT_EQ(decoded_indices(r), r.frame_index);

  // Trimmed: t = 0 is the frame at 1 s.
  sel.rate = 5.0;
  sel.start = 1.0;
  const DecodedFrames s = read_video_frames(path, sel);
  EXPECT_EQ(s.frame_index, (std::vector<int64_t>{25, 30, 35, 40, 45}));
  EXPECT_EQ(decoded_indices(s), s.frame_index);
}

TEST(VideoIo, VideoWithoutAudioIsNotAnError) {
  TempDir dir;
  const std::string path = index_video(dir, 25.0, 20, /*audio=*/false);
  const VideoInfo info = probe_video(path);
  EXPECT_FALSE(info.has_audio);
  EXPECT_EQ(info.audio_sample_rate, 0);
  EXPECT_EQ(info.num_frames, 20);
  FrameSelection sel;
  sel.count = 2;
  sel.rate = 12.0;
  const DecodedFrames d = read_video_frames(path, sel);
  EXPECT_FALSE(d.info.has_audio);
  EXPECT_EQ(decoded_indices(d), (std::vector<int64_t>{19, 19}));
}

TEST(VideoIo, OddSizesArePaddedAndStereoIsKept) {
  TempDir dir;
  const std::string path = dir.file("odd.mp4");
  VideoWriterOptions opt;
  opt.fps = 10.0;
  opt.audio_sample_rate = 22050;
  write_video(path, index_frames(12, 63, 47), tone(1.2, 22050, 2), opt);
  const VideoInfo info = probe_video(path);
  EXPECT_EQ(info.width, 64);
  EXPECT_EQ(info.height, 48);
  EXPECT_EQ(info.audio_channels, 2);
  EXPECT_EQ(info.audio_sample_rate, 22050);
  FrameSelection all;
  all.mode = FrameSelection::Mode::kAll;
  const DecodedFrames d = read_video_frames(path, all);
  ASSERT_EQ(d.frames.size(), 12u);
  EXPECT_EQ(decode_index(d.frames[7]), 7);
  // The padded column repeats the last one.
  const cv::Vec3b inner = d.frames[7].at<cv::Vec3b>(20, 62),
                  pad = d.frames[7].at<cv::Vec3b>(20, 63);
  for (int c = 0; c < 3; ++c) EXPECT_NEAR(inner[c], pad[c], 6);

  // Requested sizes resize the frames.
  opt.width = 32;
  opt.height = 24;
  write_video(path, index_frames(3, 63, 47), at::Tensor(), opt);
  EXPECT_EQ(probe_video(path).width, 32);
  EXPECT_EQ(probe_video(path).height, 24);
}

TEST(VideoIo, BadInputsNameTheFile) {
  TempDir dir;
  const std::string missing = dir.file("missing.mp4");
  std::string msg = thrown_message([&] { probe_video(missing); });
  EXPECT_NE(msg.find(missing), std::string::npos) << msg;
  EXPECT_NE(msg.find("does not exist"), std::string::npos) << msg;
  msg = thrown_message([&] { read_video_frames(missing, FrameSelection{}); });
  EXPECT_NE(msg.find(missing), std::string::npos) << msg;

  const std::string garbage = dir.file("garbage.mp4");
  {
    std::ofstream f(garbage, std::ios::binary);
    for (int i = 0; i < 4096; ++i) f.put(static_cast<char>((i * 7919 + 13) % 251));
  }
  msg = thrown_message([&] { probe_video(garbage); });
  EXPECT_NE(msg.find(garbage), std::string::npos) << msg;
  msg = thrown_message([&] { read_video_frames(garbage, FrameSelection{}); });
  EXPECT_NE(msg.find(garbage), std::string::npos) << msg;

  const std::string empty = dir.file("empty.mp4");
  std::ofstream(empty).close();
  msg = thrown_message([&] { probe_video(empty); });
  EXPECT_NE(msg.find(empty), std::string::npos) << msg;

  // A truncated MP4 (header cut) fails with the file's name, it does not crash.
  const std::string good = index_video(dir, 25.0, 20);
  const std::string cut = dir.file("cut.mp4");
  {
    std::ifstream in(good, std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::ofstream(cut, std::ios::binary)
        .write(bytes.data(), static_cast<std::streamsize>(bytes.size() / 3));
  }
  try {
    FrameSelection all;
    all.mode = FrameSelection::Mode::kAll;
    const DecodedFrames d = read_video_frames(cut, all);
    EXPECT_LT(d.frames.size(), 20u);  // whatever survived the cut, never more
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(cut), std::string::npos) << e.what();
  }

  const std::vector<cv::Mat> frames = index_frames(2, kW, kH);
  const std::string out = dir.file("out.mp4");
  msg = thrown_message([&] { write_video(out, {}, at::Tensor(), VideoWriterOptions{}); });
  EXPECT_NE(msg.find(out), std::string::npos) << msg;
  std::vector<cv::Mat> mixed = frames;
  mixed[1] = cv::Mat(kH + 2, kW, CV_8UC3, cv::Scalar(0, 0, 0));
  msg = thrown_message([&] { write_video(out, mixed, at::Tensor(), VideoWriterOptions{}); });
  EXPECT_NE(msg.find("frame 1"), std::string::npos) << msg;
  msg = thrown_message([&] {
    write_video(out, frames, at::zeros({2, 3, 4}), VideoWriterOptions{});
  });
  EXPECT_NE(msg.find(out), std::string::npos) << msg;
  EXPECT_FALSE(std::filesystem::exists(out));
  const std::string unwritable = "/proc/combo_no_such_dir/x.mp4";
  msg =
      thrown_message([&] { write_video(unwritable, frames, at::Tensor(), VideoWriterOptions{}); });
  EXPECT_NE(msg.find(unwritable), std::string::npos) << msg;
}

TEST(VideoIo, AudioOnlyFileHasNoVideoStream) {
  TempDir dir;
  // A 16-bit mono WAV written by hand.
  const std::string wav = dir.file("tone.wav");
  {
    const int n = 1600;
    std::ofstream f(wav, std::ios::binary);
    auto u32 = [&](uint32_t v) { f.write(reinterpret_cast<const char*>(&v), 4); };
    auto u16 = [&](uint16_t v) { f.write(reinterpret_cast<const char*>(&v), 2); };
    f << "RIFF";
    u32(36 + 2 * n);
    f << "WAVEfmt ";
    u32(16);
    u16(1);
    u16(1);
    u32(16000);
    u32(32000);
    u16(2);
    u16(16);
    f << "data";
    u32(2 * n);
    for (int i = 0; i < n; ++i) u16(static_cast<uint16_t>((i * 37) % 2000));
  }
  const std::string msg = thrown_message([&] { probe_video(wav); });
  EXPECT_NE(msg.find(wav), std::string::npos) << msg;
  EXPECT_NE(msg.find("no video stream"), std::string::npos) << msg;
}

TEST(VideoIo, SelectionIsChecked) {
  TempDir dir;
  const std::string path = index_video(dir, 25.0, 20);
  FrameSelection sel;
  sel.width = 10;
  std::string msg = thrown_message([&] { read_video_frames(path, sel); });
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  sel = FrameSelection{};
  sel.mode = FrameSelection::Mode::kRate;
  sel.rate = 0.0;
  msg = thrown_message([&] { read_video_frames(path, sel); });
  EXPECT_NE(msg.find("rate"), std::string::npos) << msg;
}

}  // namespace
}  // namespace combo::io
