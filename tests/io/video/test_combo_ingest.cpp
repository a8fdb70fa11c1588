// combo-ingest end to end: small raw videos and a CSV per subset -> the AVSBench layout, with
// missing and silent videos reported.
#include <gtest/gtest.h>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <filesystem>
#include <fstream>
#include <string>

#include "combo/core/check.h"
#include "combo/io/audio_reader.h"
#include "combo/io/video.h"
#include "io/video/video_test_helpers.h"
#include "testing/testing.h"

namespace combo::io {
namespace {

namespace fs = std::filesystem;
using combo::testing::decode_index;
using combo::testing::index_frames;
using combo::testing::run_shell;
using combo::testing::TempDir;
using combo::testing::tone;

std::string quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

fs::path ingest_exe() { return combo::testing::binary_dir() / "tools" / "combo-ingest"; }

// Index-coded frames with an optional stereo tone at 22.05 kHz (resampled and mixed by the tool).
void make_video(const fs::path& path, double fps, int64_t frames, bool audio, int w = 64,
                int h = 48) {
  VideoWriterOptions opt;
  opt.fps = fps;
  opt.audio_sample_rate = 22050;
  write_video(path.string(), index_frames(frames, w, h),
              audio ? tone(static_cast<double>(frames) / fps, 22050, 2) : at::Tensor(), opt);
}

void write_text(const fs::path& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

int run_ingest(const std::string& args, std::string* output) {
  const int rc = run_shell(quote(ingest_exe().string()) + " " + args, output);
  std::cout << *output;
  return rc;
}

void expect_wav(const fs::path& path, double seconds) {
  ASSERT_TRUE(fs::exists(path)) << path;
  const AudioClip clip = read_audio(path.string());
  EXPECT_EQ(clip.sample_rate, 16000) << path;
  EXPECT_EQ(clip.channels, 1) << path;
  EXPECT_NEAR(clip.duration(), seconds, 0.02) << path;
}

class IngestIntegration : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(ingest_exe())) GTEST_SKIP() << "no " << ingest_exe() << " (build it)";
  }
};

TEST_F(IngestIntegration, S4LayoutWithMissingAndSilentVideosReported) {
  TempDir dir;
  const fs::path raw = dir.path() / "raw";
  fs::create_directories(raw);
  make_video(raw / "dogA_1.mp4", 25.0, 130, true);
  // start = 6: T = 4 frames and 4 s of audio from 6 s; 10 fps -> frames 60 + {9, 19, 29, 39}.
  make_video(raw / "babyB_2.mkv", 10.0, 105, true);
  make_video(raw / "mute_3.mp4", 25.0, 130, false);
  const fs::path csv = dir.path() / "s4.csv";
  write_text(csv,
             "name,start,category,split\n"
             "dogA_1,0,dog_barking,train\n"
             "babyB_2,6,baby_laughter,test\n"
             "mute_3,0,dog_barking,val\n"
             "gone_4,0,dog_barking,val\n");
  const fs::path out = dir.path() / "Single-source";
  std::string log;
  const int rc =
      run_ingest(str_cat("--dataset s4 --videos ", quote(raw.string()), " --csv ",
                         quote(csv.string()), " --out ", quote(out.string()), " --jobs 2"),
                 &log);
  EXPECT_NE(rc, 0) << log;
  EXPECT_NE(log.find("summary: 2 ok"), std::string::npos) << log;
  EXPECT_NE(log.find("2 failed"), std::string::npos) << log;
  EXPECT_NE(log.find((raw / "mute_3.mp4").string()), std::string::npos) << log;
  EXPECT_NE(log.find("no audio track"), std::string::npos) << log;
  EXPECT_NE(log.find((raw / "gone_4").string()), std::string::npos) << log;

  EXPECT_TRUE(fs::exists(out / "s4_meta_data.csv"));
  const fs::path frames_a = out / "s4_data/visual_frames/train/dog_barking/dogA_1";
  const int64_t want_a[] = {23, 48, 73, 98, 123};
  for (int k = 1; k <= 5; ++k) {
    const cv::Mat bgr = cv::imread((frames_a / str_cat("dogA_1_", k, ".png")).string());
    ASSERT_FALSE(bgr.empty()) << k;
    EXPECT_EQ(bgr.cols, 224);
    EXPECT_EQ(bgr.rows, 224);
    cv::Mat rgb;
    cv::cvtColor(bgr, rgb, cv::COLOR_BGR2RGB);
    EXPECT_EQ(decode_index(rgb), want_a[k - 1]) << k;
  }
  EXPECT_FALSE(fs::exists(frames_a / "dogA_1_6.png"));
  expect_wav(out / "s4_data/audio_wav/train/dog_barking/dogA_1.wav", 5.0);

  const fs::path frames_b = out / "s4_data/visual_frames/test/baby_laughter/babyB_2";
  const int64_t want_b[] = {69, 79, 89, 99};
  for (int k = 1; k <= 4; ++k) {
    const cv::Mat bgr = cv::imread((frames_b / str_cat("babyB_2_", k, ".png")).string());
    ASSERT_FALSE(bgr.empty()) << k;
    cv::Mat rgb;
    cv::cvtColor(bgr, rgb, cv::COLOR_BGR2RGB);
    EXPECT_EQ(decode_index(rgb), want_b[k - 1]) << k;
  }
  EXPECT_FALSE(fs::exists(frames_b / "babyB_2_5.png"));
  expect_wav(out / "s4_data/audio_wav/test/baby_laughter/babyB_2.wav", 4.0);
  EXPECT_FALSE(fs::exists(out / "s4_data/audio_wav/val/dog_barking/mute_3.wav"));
}

TEST_F(IngestIntegration, Ms3AllowSilentWritesSilence) {
  TempDir dir;
  const fs::path raw = dir.path() / "raw";
  fs::create_directories(raw);
  make_video(raw / "multiA.mp4", 30.0, 150, true);
  make_video(raw / "quietB.mp4", 25.0, 126, false);
  const fs::path csv = dir.path() / "ms3.csv";
  write_text(csv, "name,split\nmultiA,train\nquietB,test\n");
  const fs::path out = dir.path() / "Multi-sources";
  std::string log;
  const int rc =
      run_ingest(str_cat("--dataset ms3 --allow-silent --videos ", quote(raw.string()), " --csv ",
                         quote(csv.string()), " --out ", quote(out.string()), " --size 32"),
                 &log);
  EXPECT_EQ(rc, 0) << log;
  EXPECT_NE(log.find("warning"), std::string::npos) << log;
  EXPECT_NE(log.find("summary: 2 ok"), std::string::npos) << log;
  const int64_t want_a[] = {28, 58, 88, 118, 148};
  for (int k = 1; k <= 5; ++k) {
    const fs::path png = out / "ms3_data/visual_frames/multiA" / str_cat("multiA.mp4_", k, ".png");
    const cv::Mat bgr = cv::imread(png.string());
    ASSERT_FALSE(bgr.empty()) << png;
    EXPECT_EQ(bgr.cols, 32);
    cv::Mat rgb;
    cv::cvtColor(bgr, rgb, cv::COLOR_BGR2RGB);
    EXPECT_EQ(decode_index(rgb), want_a[k - 1]) << k;
    EXPECT_TRUE(
        fs::exists(out / "ms3_data/visual_frames/quietB" / str_cat("quietB.mp4_", k, ".png")));
  }
  EXPECT_TRUE(fs::exists(out / "ms3_meta_data.csv"));
  expect_wav(out / "ms3_data/audio_wav/train/multiA.wav", 5.0);
  const fs::path silent = out / "ms3_data/audio_wav/test/quietB.wav";
  expect_wav(silent, 5.0);
  EXPECT_EQ(read_audio(silent.string()).samples.abs().max().item<float>(), 0.0f);
}

TEST_F(IngestIntegration, AvssLayoutKeepsTheVideoSize) {
  TempDir dir;
  const fs::path raw = dir.path() / "raw";
  fs::create_directories(raw);
  make_video(raw / "uidM.mp4", 10.0, 52, true, 80, 60);
  make_video(raw / "uidV2.mp4", 10.0, 100, true, 48, 32);
  const fs::path csv = dir.path() / "metadata_in.csv";
  write_text(csv,
             "vid,uid,s_min,s_sec,a_obj,split,label\n"
             "1,uidM,0,0,man_piano,train,v1m\n"
             "2,uidV2,0,0,dog,val,v2\n");
  const fs::path out = dir.path() / "AVSS";
  std::string log;
  const int rc =
      run_ingest(str_cat("--dataset avss --videos ", quote(raw.string()), " --csv ",
                         quote(csv.string()), " --out ", quote(out.string()), " --jobs 1"),
                 &log);
  EXPECT_EQ(rc, 0) << log;
  EXPECT_TRUE(fs::exists(out / "metadata.csv"));
  for (int i = 0; i < 5; ++i) {
    const cv::Mat jpg = cv::imread((out / "v1m/uidM/frames" / str_cat(i, ".jpg")).string());
    ASSERT_FALSE(jpg.empty()) << i;
    EXPECT_EQ(jpg.cols, 80);
    EXPECT_EQ(jpg.rows, 60);
    cv::Mat rgb;
    cv::cvtColor(jpg, rgb, cv::COLOR_BGR2RGB);
    EXPECT_EQ(decode_index(rgb), 9 + 10 * i) << i;
  }
  EXPECT_FALSE(fs::exists(out / "v1m/uidM/frames/5.jpg"));
  expect_wav(out / "v1m/uidM/audio.wav", 5.0);
  int v2_frames = 0;
  for (const auto& e : fs::directory_iterator(out / "v2/uidV2/frames")) {
    (void)e;
    ++v2_frames;
  }
  EXPECT_EQ(v2_frames, 10);
  EXPECT_EQ(cv::imread((out / "v2/uidV2/frames/9.jpg").string()).cols, 48);
  expect_wav(out / "v2/uidV2/audio.wav", 10.0);
}

TEST_F(IngestIntegration, BadArgumentsFail) {
  TempDir dir;
  std::string log;
  EXPECT_NE(run_ingest("--dataset s5 --videos . --csv x --out y", &log), 0);
  const fs::path csv = dir.path() / "a.csv";
  write_text(csv, "uid,split\nx,train\n");
  EXPECT_NE(run_ingest(str_cat("--dataset avss --videos ", quote(dir.path().string()), " --csv ",
                               quote(csv.string()), " --out ", quote((dir.path() / "o").string())),
                       &log),
            0);
  EXPECT_NE(log.find("label"), std::string::npos) << log;
  EXPECT_NE(log.find(csv.string()), std::string::npos) << log;
}

}  // namespace
}  // namespace combo::io
