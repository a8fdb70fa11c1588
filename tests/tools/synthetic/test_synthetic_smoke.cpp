// combo-train, combo-eval and combo-bench through the real executables on the in-memory
// synthetic task (data.source=synthetic): no file is read, so this runs in builds without the
// media stack too, where asking combo-eval for pictures must fail with a clear message.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <string>

#include "combo/engine/data_setup.h"
#include "testing/testing.h"

namespace {

namespace fs = std::filesystem;
using combo::testing::run_shell;
using combo::testing::tool_path;

nlohmann::json read_json(const fs::path& p) {
  std::ifstream in(p);
  return nlohmann::json::parse(in);
}

class SyntheticSmoke : public ::testing::Test {
 protected:
  combo::testing::TempDir dir;
  fs::path out = dir.path() / "run";
  fs::path cfg = dir.path() / "tiny.yaml";
  void SetUp() override {
    // A tiny COMBO on 32 px S4 videos; no data.root at all.
    std::ofstream(cfg)
        << "_base_: " << (combo::testing::source_dir() / "configs/_base_/avs_s4.yaml").string()
        << "\nmodel:\n  backbone:\n    name: pvt_v2_b0\n  audio:\n    mlp_dim: 64\n"
        << "  decoder:\n    num_queries: 4\n    dec_layers: 2\n    dim_feedforward: 32\n"
        << "  pixel_decoder:\n    enc_layers: 1\n    dim_feedforward: 32\n"
        << "loss:\n  train_num_points: 256\n"
        << "data:\n  source: synthetic\n  root: " << (dir.path() / "no_such_folder").string()
        << "\n  num_workers: 1\n  image_size: 32\n"
        << "  synthetic:\n    train_videos: 4\n    eval_videos: 2\n"
        << "solver:\n  max_iter: 4\n  ims_per_batch: 2\n  checkpoint_period: 2\n"
        << "  base_lr: 0.0001\n"
        << "test:\n  eval_period: 2\n"
        << "output_dir: " << out.string() << "\n";
  }
};

}  // namespace

TEST_F(SyntheticSmoke, TrainsEvaluatesAndBenchesWithoutAnyFile) {
  auto r = run_shell(tool_path("combo-train") + " --config " + cfg.string());
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("in-memory synthetic s4"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("validation at iteration 2"), std::string::npos) << r.output;
  for (const char* f : {"model_final.pth", "model_best.pth", "config.yaml", "metrics.jsonl"})
    EXPECT_TRUE(fs::exists(out / f)) << f << "\n" << r.output;
  EXPECT_FALSE(fs::exists(dir.path() / "no_such_folder"));

  // The checkpoint on the synthetic test split.
  r = run_shell(tool_path("combo-eval") + " --config " + cfg.string() + " --weights " +
                (out / "model_final.pth").string());
  ASSERT_EQ(r.status, 0) << r.output;
  const auto m = read_json(out / "eval_test" / "metrics.json");
  EXPECT_EQ(m["split"], "test");
  EXPECT_EQ(m["videos_evaluated"], 2);
  EXPECT_EQ(m["videos_in_split"], 2);
  EXPECT_FALSE(m["partial"].get<bool>());
  for (const char* k : {"mIoU", "F"}) {
    ASSERT_TRUE(m["metrics"].contains(k)) << m.dump();
    EXPECT_GE(m["metrics"][k].get<double>(), 0.0);
    EXPECT_LE(m["metrics"][k].get<double>(), 1.0);
  }
  // The val split is a different draw from the test split: other videos, other figures file.
  r = run_shell(tool_path("combo-eval") + " --config " + cfg.string() + " --split val --weights " +
                (out / "model_final.pth").string() + " --out " + (dir.path() / "ev").string());
  ASSERT_EQ(r.status, 0) << r.output;

  // Pictures need the media stack.
  r = run_shell(tool_path("combo-eval") + " --config " + cfg.string() + " --overlays --weights " +
                (out / "model_final.pth").string() + " --out " + (dir.path() / "ov").string());
  if (combo::engine::has_media_stack()) {
    ASSERT_EQ(r.status, 0) << r.output;
    EXPECT_TRUE(fs::exists(dir.path() / "ov" / "overlays" / "s4_test_0000" / "0.png"));
  } else {
    EXPECT_NE(r.status, 0) << r.output;
    EXPECT_NE(r.output.find("lacks the media stack"), std::string::npos) << r.output;
  }

  // combo-bench's loader figure on the in-memory task.
  const fs::path json = dir.path() / "bench.json";
  r = run_shell(tool_path("combo-bench") + " --config " + cfg.string() +
                " --what loader --loader-videos 3 --warmup 0 --runs 1 --threads 1 --json " +
                json.string());
  ASSERT_EQ(r.status, 0) << r.output;
  const auto rec = read_json(json)[0];
  ASSERT_EQ(rec["figures"].size(), 1u) << rec.dump();
  EXPECT_EQ(rec["figures"][0]["name"], "loader (S4 train, in-memory synthetic)");
  EXPECT_EQ(rec["figures"][0]["extra"]["videos"], 3);
}

TEST_F(SyntheticSmoke, FilesSourceNeedsTheMediaStackOrTheTree) {
  // data.source=files: without the media stack the error says so; with it, the AVSBench reader
  // looks for the tree under data.root and names the folder.
  const auto r =
      run_shell(tool_path("combo-train") + " --config " + cfg.string() + " data.source=files");
  EXPECT_NE(r.status, 0) << r.output;
  if (combo::engine::has_media_stack()) {
    EXPECT_NE(r.output.find("no_such_folder"), std::string::npos) << r.output;
  } else {
    EXPECT_NE(r.output.find("media stack"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("data.source=synthetic"), std::string::npos) << r.output;
  }
}
