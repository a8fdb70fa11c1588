// combo-bench through the executable: the JSON record and the table carry every figure, its
// statistics and the parameters (timings themselves are measured, never asserted).
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>

#include "testing/testing.h"

namespace {

namespace fs = std::filesystem;
using combo::testing::run_shell;
using combo::testing::tool_path;

TEST(BenchSmoke, RecordsEveryFigureWithStatisticsAndAppends) {
  combo::testing::TempDir dir;
  const fs::path cfg = dir.path() / "tiny.yaml";
  std::ofstream(cfg)
      << "_base_: " << (combo::testing::source_dir() / "configs/_base_/avs_s4.yaml").string()
      << "\nmodel:\n  backbone:\n    name: pvt_v2_b0\n  audio:\n    mlp_dim: 64\n"
      << "  decoder:\n    num_queries: 4\n    dec_layers: 2\n    dim_feedforward: 32\n"
      << "  pixel_decoder:\n    enc_layers: 1\n    dim_feedforward: 32\n"
      << "loss:\n  train_num_points: 256\n  consistency:\n    grouping: per_video\n";
  const fs::path json = dir.path() / "bench.json";
  const std::string cmd = tool_path("combo-bench") + " --config " + cfg.string() +
                          " --size 32 --frames 3 --warmup 1 --runs 2 --threads 1 --json " +
                          json.string() + " --what inference,train,logmel --label tiny";
  auto r = run_shell(cmd);
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("| inference per clip |"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("| transformer decoder |"), std::string::npos) << r.output;
  r = run_shell(cmd + " --videos 2");
  ASSERT_EQ(r.status, 0) << r.output;
  std::ifstream in(json);
  const auto records = nlohmann::json::parse(in);
  ASSERT_TRUE(records.is_array());
  ASSERT_EQ(records.size(), 2u) << "the second run appends";
  const auto& rec = records[0];
  EXPECT_EQ(rec["label"], "tiny");
  EXPECT_EQ(rec["parameters"]["frames"], 3);
  EXPECT_EQ(rec["parameters"]["size"], 32);
  EXPECT_EQ(records[1]["parameters"]["videos"], 2);
  EXPECT_EQ(rec["runtime"]["intra_op_threads"], 1);
  EXPECT_TRUE(rec["runtime"].contains("git_commit"));
  EXPECT_GT(rec["parameters"]["params_total"].get<int64_t>(), 0);
  std::set<std::string> names;
  for (const auto& f : rec["figures"]) {
    names.insert(f["name"]);
    ASSERT_EQ(f["values"].size(), 2u) << f.dump();
    EXPECT_LE(f["min"].get<double>(), f["median"].get<double>());
    EXPECT_LE(f["median"].get<double>(), f["max"].get<double>());
    EXPECT_GT(f["min"].get<double>(), 0.0);
    EXPECT_GT(f["peak_rss_bytes"].get<int64_t>(), 0);
  }
  EXPECT_EQ(names,
            (std::set<std::string>{"inference per clip", "train step", "log-mel front end"}));
  const auto& train = rec["figures"][1];
  for (const char* stage : {"forward", "criterion", "matcher", "backward", "optimizer", "VGGish",
                            "pixel decoder", "transformer decoder"})
    EXPECT_TRUE(train["components"].contains(stage)) << stage << ": " << train.dump();

  // The table of all records.
  r = run_shell(tool_path("combo-bench") + " --table " + json.string() + " --anchor " +
                (combo::testing::source_dir() / "bench/official_anchor.json").string());
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("| tiny | 1 | 1x3 @ 32 |"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("| tiny | 1 | 2x3 @ 32 |"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("log-mel front end"), std::string::npos) << r.output;

  // The loader figure on a small synthetic tree it writes and removes itself.
  r = run_shell(tool_path("combo-bench") + " --config " + cfg.string() +
                " --what loader --loader-videos 4 --warmup 0 --runs 1 --threads 1");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("| loader (S4 train, augmented) |"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("videos/s"), std::string::npos) << r.output;

  r = run_shell(tool_path("combo-bench") + " --config " + cfg.string() + " --what speed");
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("unknown figure 'speed'"), std::string::npos) << r.output;
}

}  // namespace
