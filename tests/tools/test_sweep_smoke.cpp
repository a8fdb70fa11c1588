// combo-sweep through the executables: a 4-run grid of a tiny COMBO, stopped by SIGTERM in the
// middle, resumed with the same command, then collected into results.csv; and the pictures
// tools/plot_runs.py makes of runs and sweeps.
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include <opencv2/imgcodecs.hpp>

#include "combo/engine/sweep.h"
#include "testing/data_tree.h"
#include "testing/testing.h"

namespace {

namespace fs = std::filesystem;
using combo::testing::run_shell;
using combo::testing::tool_path;

std::string read_text(const fs::path& p) {
  std::ifstream in(p);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

std::vector<std::string> lines(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string l;
  while (std::getline(ss, l))
    if (!l.empty()) out.push_back(l);
  return out;
}

void write_tiny_config(const fs::path& file, const fs::path& data);

/// An S4 tree with `train` / `eval` / `eval` videos under dir/data and the tiny config for it at
/// dir/tiny.yaml, which it returns.
fs::path tiny_setup(const fs::path& dir, int64_t train, int64_t eval) {
  combo::testing::TreeSpec spec;
  spec.train = train;
  spec.val = eval;
  spec.test = eval;
  combo::testing::write_s4_tree(dir / "data", spec);
  write_tiny_config(dir / "tiny.yaml", dir / "data");
  return dir / "tiny.yaml";
}

void write_tiny_config(const fs::path& file, const fs::path& data) {
  std::ofstream(file)
      << "_base_: " << (combo::testing::source_dir() / "configs/_base_/avs_s4.yaml").string()
      << "\n"
      << "model:\n  backbone:\n    name: pvt_v2_b0\n  audio:\n    mlp_dim: 64\n"
      << "  decoder:\n    num_queries: 4\n    dec_layers: 2\n    dim_feedforward: 32\n"
      << "  pixel_decoder:\n    enc_layers: 1\n    dim_feedforward: 32\n"
      << "loss:\n  train_num_points: 256\n"
      << "data:\n  root: " << data.string() << "\n  num_workers: 1\n"
      << "  augment:\n    short_sides: [32, 40]\n    crop_size: 32\n    pad_size: 32\n"
      << "solver:\n  max_iter: 6\n  ims_per_batch: 2\n  checkpoint_period: 3\n  base_lr: 0.0001\n"
      << "test:\n  eval_period: 0\n"
      << "output_dir: unused\n";
}

bool wait_for(const std::function<bool()>& cond, int seconds) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
  while (!cond()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return true;
}

TEST(SweepSmoke, GridStoppedMidwayResumesAndCollectsFourRows) {
  combo::testing::TempDir dir;
  const fs::path sweep = dir.path() / "sweep";
  const fs::path cfg = tiny_setup(dir.path(), 4, 2);
  const std::string cmd =
      tool_path("combo-sweep") + " --config " + cfg.string() + " --out " + sweep.string() +
      " --grid data.silence_audio=false,true --grid model.pre_sam.enabled=true,false";

  // Start, and stop with SIGTERM once the first run is done and the second has a checkpoint.
  const fs::path log1 = dir.path() / "sweep1.log";
  const auto started = run_shell(cmd + " > " + log1.string() + " 2>&1 & echo $!");
  const pid_t pid = std::stoi(started.output);
  const fs::path first = sweep / "silence_audio-false_enabled-true";
  const fs::path second = sweep / "silence_audio-false_enabled-false";
  ASSERT_TRUE(wait_for([&] { return fs::exists(second / "model_0000002.pth"); }, 300))
      << read_text(log1);
  ASSERT_EQ(combo::engine::read_run_status(first.string()).state, combo::engine::RunState::kDone)
      << read_text(log1);
  ::kill(pid, SIGTERM);
  ASSERT_TRUE(wait_for([&] { return ::kill(pid, 0) != 0; }, 120)) << "the sweep did not stop";
  const std::string out1 = read_text(log1);
  EXPECT_NE(
      out1.find("interrupted (resume with the same command): silence_audio-false_enabled-false"),
      std::string::npos)
      << out1;
  EXPECT_EQ(combo::engine::read_run_status(second.string()).state,
            combo::engine::RunState::kInterrupted);
  EXPECT_FALSE(fs::exists(second / "model_final.pth"));
  EXPECT_FALSE(fs::exists(sweep / "silence_audio-true_enabled-true" / "status.json"));

  // The same command again: the finished run is skipped, the stopped one resumes.
  const auto r = run_shell(cmd);
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("silence_audio-false_enabled-true: done, skipped"), std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("silence_audio-false_enabled-false: train (resuming) started"),
            std::string::npos)
      << r.output;
  EXPECT_NE(read_text(second / "log.txt").find("resuming from"), std::string::npos);

  const auto csv = lines(read_text(sweep / "results.csv"));
  ASSERT_EQ(csv.size(), 5u) << read_text(sweep / "results.csv");
  EXPECT_EQ(csv[0],
            "run,state,data.silence_audio,model.pre_sam.enabled,split,protocol,F,mIoU,"
            "best_val_mIoU,iterations,seconds");
  EXPECT_EQ(csv[1].rfind("silence_audio-false_enabled-true,done,false,true,test,combo,", 0), 0u)
      << csv[1];
  EXPECT_EQ(csv[2].rfind("silence_audio-false_enabled-false,done,false,false,test,combo,", 0), 0u)
      << csv[2];
  EXPECT_EQ(csv[3].rfind("silence_audio-true_enabled-true,done,true,true,test,combo,", 0), 0u)
      << csv[3];
  EXPECT_EQ(csv[4].rfind("silence_audio-true_enabled-false,done,true,false,test,combo,", 0), 0u)
      << csv[4];
  for (const auto& run : {first, second})
    EXPECT_TRUE(fs::exists(run / "eval_test" / "metrics.json")) << run;

  // --collect alone rewrites the same table.
  fs::remove(sweep / "results.csv");
  const auto c = run_shell(tool_path("combo-sweep") + " --collect " + sweep.string());
  ASSERT_EQ(c.status, 0) << c.output;
  EXPECT_EQ(lines(read_text(sweep / "results.csv")).size(), 5u);
}

TEST(SweepSmoke, AFailingRunIsReportedAndTheOthersStillRun) {
  combo::testing::TempDir dir;
  const fs::path sweep = dir.path() / "sweep";
  const fs::path cfg = tiny_setup(dir.path(), 2, 1);
  // The first run asks for weights that do not exist: it fails, the second one completes.
  const auto r = run_shell(tool_path("combo-sweep") + " --config " + cfg.string() + " --out " +
                           sweep.string() + " solver.max_iter=2 solver.checkpoint_period=0" +
                           " --run 'broken:model.weights=" + (dir.path() / "missing.pth").string() +
                           "' --run ok");
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("broken: train FAILED"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("missing.pth"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("ok: done"), std::string::npos) << r.output;
  EXPECT_EQ(combo::engine::read_run_status((sweep / "broken").string()).state,
            combo::engine::RunState::kFailed);
  const auto csv = lines(read_text(sweep / "results.csv"));
  ASSERT_EQ(csv.size(), 3u);
  EXPECT_EQ(csv[1].rfind("broken,failed,", 0), 0u) << csv[1];
  EXPECT_EQ(csv[2].rfind("ok,done,", 0), 0u) << csv[2];
}

bool have_matplotlib() {
  return run_shell("/usr/bin/python3 -c 'import matplotlib' 2>/dev/null").status == 0;
}

void expect_png(const fs::path& p) {
  ASSERT_TRUE(fs::exists(p)) << p;
  const cv::Mat img = cv::imread(p.string(), cv::IMREAD_COLOR);
  ASSERT_FALSE(img.empty()) << p << " is not a readable image";
  EXPECT_GT(img.cols, 300);
  EXPECT_GT(img.rows, 200);
  // Not a blank canvas: plotted lines and bars give many distinct colours.
  cv::Mat flat = img.reshape(1, 1);
  std::set<int> values(flat.begin<uint8_t>(), flat.end<uint8_t>());
  EXPECT_GT(values.size(), 20u) << p;
}

TEST(PlotSmoke, CurvesOfRunsAndTheBarChartOfASweep) {
  if (!have_matplotlib()) {
    GTEST_SKIP() << "python3-matplotlib is not installed (scripts/install_deps.sh installs it)";
  }
  combo::testing::TempDir dir;
  const fs::path sweep = dir.path() / "sweep";
  for (const std::string run : {"full", "no_audio"}) {
    fs::create_directories(sweep / run);
    std::ofstream f(sweep / run / "metrics.jsonl");
    for (int it = 19; it < 200; it += 20) {
      const double d = 1.0 + it / 50.0 + (run == "full" ? 0.5 : 0.0);
      f << "{\"iteration\":" << it << ",\"lr\":" << 1e-4 * (1 - it / 200.0)
        << ",\"total_loss\":" << 20 / d << ",\"loss_ce\":" << 2 / d << ",\"loss_ce_0\":" << 2.5 / d
        << ",\"loss_mask\":" << 3 / d << ",\"loss_mask_0\":" << 3.5 / d
        << ",\"loss_dice\":" << 2.5 / d << ",\"loss_dice_0\":" << 2.7 / d
        << ",\"loss_cosine_0\":" << 0.3 / d;
      if ((it + 1) % 100 == 0) f << ",\"mIoU\":" << 0.3 * d / 5 << ",\"F\":" << 0.4 * d / 5;
      f << "}\n";
    }
    f << "{\"iteration\": 2";  // a line cut by a crash is skipped
  }
  std::ofstream(sweep / "results.csv")
      << "run,state,data.silence_audio,split,protocol,F,mIoU,best_val_mIoU,iterations,seconds\n"
      << "full,done,false,test,combo,0.8100,0.7200,0.7000,200,100\n"
      << "no_audio,done,true,test,combo,0.5000,0.3900,0.4000,200,100\n";
  const std::string py =
      "/usr/bin/python3 " + (combo::testing::source_dir() / "tools/plot_runs.py").string();
  auto r = run_shell(py + " --sweep " + sweep.string() + " 2>&1");
  ASSERT_EQ(r.status, 0) << r.output;
  expect_png(sweep / "curves.png");
  expect_png(sweep / "results.png");
  r = run_shell(py + " --out " + (dir.path() / "one.png").string() + " " +
                (sweep / "full").string() + " 2>&1");
  ASSERT_EQ(r.status, 0) << r.output;
  expect_png(dir.path() / "one.png");
  r = run_shell(py + " --out " + (dir.path() / "x.png").string() + " " +
                (dir.path() / "nope").string() + " 2>&1");
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("metrics.jsonl does not exist"), std::string::npos) << r.output;
}

}  // namespace
