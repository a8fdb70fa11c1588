// The product path through the real executables: combo-train (checkpoints, logs, validation,
// --resume, SIGTERM) then combo-eval (metrics.json, per-video CSV, overlays, MP4s, errors).
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <nlohmann/json.hpp>

#include <array>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <thread>

#include <opencv2/core.hpp>

#include "combo/core/state_dict.h"
#include "combo/io/image.h"
#include "combo/io/video.h"
#include "testing/data_tree.h"
#include "testing/testing.h"
#include "tiny_config.h"

namespace {

namespace fs = std::filesystem;

using Result = combo::testing::CommandResult;
using combo::testing::run_shell;

std::string tool(const std::string& name) {
  return (combo::testing::binary_dir() / "tools" / name).string();
}

std::string read_text(const fs::path& p) {
  std::ifstream in(p);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

class TrainEvalSmoke : public ::testing::Test {
 protected:
  combo::testing::TempDir dir;
  fs::path data = dir.path() / "data";
  fs::path out = dir.path() / "run";
  fs::path cfg = dir.path() / "tiny.yaml";
  void SetUp() override {
    combo::testing::TreeSpec spec;
    spec.train = 4;
    spec.val = 2;
    spec.test = 2;
    combo::testing::write_s4_tree(data, spec);
    combo::testing::write_tiny_config(cfg, data, out);
  }
};

TEST_F(TrainEvalSmoke, TrainResumeAndEvaluate) {
  auto r = run_shell(tool("combo-train") + " --config " + cfg.string());
  ASSERT_EQ(r.status, 0) << r.output;
  for (const char* f :
       {"model_0000001.pth", "model_0000003.pth", "model_final.pth", "model_best.pth",
        "last_checkpoint", "config.yaml", "env.json", "metrics.jsonl", "log.txt"})
    EXPECT_TRUE(fs::exists(out / f)) << f << "\n" << r.output;
  EXPECT_NE(r.output.find("validation at iteration 2"), std::string::npos) << r.output;
  bool events = false;
  for (const auto& e : fs::directory_iterator(out))
    events |= e.path().filename().string().rfind("events.out.tfevents.", 0) == 0;
  EXPECT_TRUE(events);
  // JSONL: one record per logged iteration with the total loss and the learning rate.
  std::ifstream jl(out / "metrics.jsonl");
  std::string line;
  int records = 0;
  while (std::getline(jl, line)) {
    auto j = nlohmann::json::parse(line);
    if (j.contains("total_loss")) ++records;
  }
  EXPECT_GE(records, 1);

  // Resume to 6 iterations: starts after the final checkpoint of the first run.
  r = run_shell(tool("combo-train") + " --config " + cfg.string() + " --resume solver.max_iter=6");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("resuming from"), std::string::npos) << r.output;
  EXPECT_TRUE(fs::exists(out / "model_0000005.pth"));

  // Evaluate the final weights on the test split with overlays and videos.
  const fs::path ev = dir.path() / "eval";
  r = run_shell(tool("combo-eval") + " --config " + cfg.string() + " --weights " +
                (out / "model_final.pth").string() + " --out " + ev.string() +
                " --overlays --videos");
  ASSERT_EQ(r.status, 0) << r.output;
  const auto m = nlohmann::json::parse(read_text(ev / "metrics.json"));
  EXPECT_EQ(m["split"], "test");
  EXPECT_EQ(m["protocol"], "combo");
  EXPECT_EQ(m["videos_evaluated"], 2);
  EXPECT_EQ(m["partial"], false);
  EXPECT_EQ(m["checkpoint"], (out / "model_final.pth").string());
  const double miou = m["metrics"]["mIoU"];
  EXPECT_GE(miou, 0.0);
  EXPECT_LE(miou, 1.0);
  const std::string csv = read_text(ev / "videos.csv");
  EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), 3) << csv;  // header + 2 videos
  EXPECT_NE(csv.find("vs0"), std::string::npos);
  const cv::Mat o = combo::io::read_rgb((ev / "overlays" / "vs1" / "4.png").string());
  EXPECT_EQ(o.rows, 32);
  const auto info = combo::io::probe_video((ev / "videos" / "vs0.mp4").string());
  EXPECT_TRUE(info.has_audio);
  EXPECT_EQ(info.width, 32);
  EXPECT_GE(info.duration, 4.0);
}

TEST_F(TrainEvalSmoke, SigtermWritesACheckpointAndResumeFinishes) {
  // A long run, stopped by SIGTERM once the first periodic checkpoint exists.
  const std::string cmd = tool("combo-train") + " --config " + cfg.string() +
                          " --no-eval solver.max_iter=400 solver.checkpoint_period=3 > " +
                          (dir.path() / "train.log").string() + " 2>&1 & echo $!";
  auto started = run_shell(cmd);
  const pid_t pid = std::stoi(started.output);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (!fs::exists(out / "model_0000002.pth") && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  ASSERT_TRUE(fs::exists(out / "model_0000002.pth")) << read_text(dir.path() / "train.log");
  ::kill(pid, SIGTERM);
  // The process is not our child (started through the shell): wait for it to disappear.
  while (::kill(pid, 0) == 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  const std::string log = read_text(dir.path() / "train.log");
  EXPECT_NE(log.find("stopped by signal"), std::string::npos) << log;
  const std::string last = read_text(out / "last_checkpoint");
  ASSERT_FALSE(last.empty());
  const auto ckpt =
      combo::load_state_dict((out / last.substr(0, last.find_first_of("\r\n"))).string());
  const int64_t stopped_at = ckpt.at("iteration").item<int64_t>();
  EXPECT_GE(stopped_at, 2);
  EXPECT_LT(stopped_at, 399);
  auto r = run_shell(tool("combo-train") + " --config " + cfg.string() +
                     " --no-eval --resume solver.max_iter=" + std::to_string(stopped_at + 3) +
                     " solver.checkpoint_period=3");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(fs::exists(out / "model_final.pth"));
  const auto fin = combo::load_state_dict((out / "model_final.pth").string());
  EXPECT_EQ(fin.at("iteration").item<int64_t>(), stopped_at + 2);
}

TEST_F(TrainEvalSmoke, EvalRejectsWeightsOfAnotherClassCountListingTheKeys) {
  auto r =
      run_shell(tool("combo-train") + " --config " + cfg.string() + " --no-eval solver.max_iter=1");
  ASSERT_EQ(r.status, 0) << r.output;
  r = run_shell(tool("combo-eval") + " --config " + cfg.string() + " --weights " +
                (out / "model_final.pth").string() + " --out " + (dir.path() / "e2").string() +
                " model.num_classes=71");
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("sem_seg_head.predictor.class_embed"), std::string::npos) << r.output;
  // Weights with keys missing: an error listing them.
  auto sd = combo::load_state_dict((out / "model_final.pth").string());
  combo::TensorDict partial;
  for (const auto& [k, v] : sd)
    if (k.rfind("model.backbone.", 0) != 0) partial[k] = v;
  combo::save_state_dict((dir.path() / "partial.pth").string(), partial);
  r = run_shell(tool("combo-eval") + " --config " + cfg.string() + " --weights " +
                (dir.path() / "partial.pth").string() + " --out " + (dir.path() / "e3").string());
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("backbone.patch_embed1.proj.weight"), std::string::npos) << r.output;
}

TEST_F(TrainEvalSmoke, InferSegmentsAVideoWithSound) {
  auto r =
      run_shell(tool("combo-train") + " --config " + cfg.string() + " --no-eval solver.max_iter=1");
  ASSERT_EQ(r.status, 0) << r.output;
  // A 3.5 s clip at 10 fps with a tone: the AVSBench rule takes 3 frames (one per second).
  std::vector<cv::Mat> frames;
  for (int i = 0; i < 35; ++i) frames.push_back(combo::testing::test_frame(1, i, 48, 64));
  const int64_t n = 16000 * 35 / 10;
  const auto audio = at::sin(at::arange(n, at::kFloat) * (2 * M_PI * 440.0 / 16000.0)) * 0.5;
  combo::io::VideoWriterOptions vo;
  vo.fps = 10;
  const fs::path mp4 = dir.path() / "clip.mp4";
  combo::io::write_video(mp4.string(), frames, audio, vo);
  const fs::path inf = dir.path() / "infer";
  r = run_shell(tool("combo-infer") + " --config " + cfg.string() + " --weights " +
                (out / "model_final.pth").string() + " --video " + mp4.string() + " --out " +
                inf.string() + " data.image_size=32");
  ASSERT_EQ(r.status, 0) << r.output;
  const auto summary = nlohmann::json::parse(read_text(inf / "summary.json"));
  EXPECT_EQ(summary["num_frames"], 3);
  EXPECT_EQ(summary["frame_rule"], "avsbench");
  EXPECT_EQ(summary["has_audio"], true);
  EXPECT_EQ(summary["frames"][1]["video_frame_index"], 19);  // int((2-1)*10 + 0.9375*10)
  for (int k = 0; k < 3; ++k) {
    const cv::Mat m =
        combo::io::read_label_map((inf / "masks" / (std::to_string(k) + ".png")).string());
    EXPECT_EQ(m.rows, 32);
    EXPECT_EQ(cv::countNonZero((m != 0) & (m != 255)), 0);
    EXPECT_TRUE(fs::exists(inf / "overlays" / (std::to_string(k) + ".png")));
    EXPECT_TRUE(fs::exists(inf / "maskiges" / (std::to_string(k) + ".png")));
  }
  const auto info = combo::io::probe_video((inf / "overlay.mp4").string());
  EXPECT_TRUE(info.has_audio);
  EXPECT_EQ(info.width, 32);
  EXPECT_GE(info.duration, 2.9);
  // A video without sound is an error unless --allow-silent.
  const fs::path mute = dir.path() / "mute.mp4";
  combo::io::write_video(mute.string(), frames, at::Tensor(), vo);
  r = run_shell(tool("combo-infer") + " --config " + cfg.string() + " --weights " +
                (out / "model_final.pth").string() + " --video " + mute.string() + " --out " +
                (dir.path() / "mute_out").string() + " data.image_size=32");
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("no audio track"), std::string::npos) << r.output;
  r = run_shell(tool("combo-infer") + " --config " + cfg.string() + " --weights " +
                (out / "model_final.pth").string() + " --video " + mute.string() + " --out " +
                (dir.path() / "mute_out").string() + " --allow-silent --rate 2 data.image_size=32");
  ASSERT_EQ(r.status, 0) << r.output;
  const auto s2 = nlohmann::json::parse(read_text(dir.path() / "mute_out" / "summary.json"));
  EXPECT_EQ(s2["frame_rule"], "rate");
  EXPECT_EQ(s2["num_frames"], 7);  // t = 0, 0.5, ..., 3.0 s
}

}  // namespace

namespace {

std::string logged_seed(const std::string& output) {
  const auto at = output.find("] seed ");
  if (at == std::string::npos) return "";
  const auto start = at + 7;
  return output.substr(start, output.find_first_of("\r\n", start) - start);
}

}  // namespace

TEST_F(TrainEvalSmoke, ARandomSeedIsDrawnOnceAndKeptByResume) {
  auto r = run_shell(tool("combo-train") + " --config " + cfg.string() +
                     " --no-eval runtime.seed=-1 solver.max_iter=2 solver.checkpoint_period=1");
  ASSERT_EQ(r.status, 0) << r.output;
  const std::string first = logged_seed(r.output);
  ASSERT_FALSE(first.empty()) << r.output;
  EXPECT_NE(first, "-1");
  r = run_shell(tool("combo-train") + " --config " + cfg.string() +
                " --no-eval --resume runtime.seed=-1 solver.max_iter=3 solver.checkpoint_period=1");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(logged_seed(r.output), first) << r.output;
}
