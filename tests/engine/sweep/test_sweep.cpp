// The sweep library behind combo-sweep: grid expansion, run names, sweep files, run status and
// the collected results table (on hand-made run folders).
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>

#include "combo/core/check.h"
#include "combo/engine/sweep.h"
#include "testing/testing.h"

namespace {

namespace fs = std::filesystem;
using namespace combo::engine;

std::string read_text(const fs::path& p) {
  std::ifstream in(p);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

TEST(Sweep, GridIsTheCartesianProductFirstAxisSlowest) {
  const auto runs = expand_grid(
      {"model.fusion.type=bidirectional,none", "loss.consistency.type=adaptive,fixed,none"});
  ASSERT_EQ(runs.size(), 6u);
  EXPECT_EQ(runs[0].overrides, (std::vector<std::string>{"model.fusion.type=bidirectional",
                                                         "loss.consistency.type=adaptive"}));
  EXPECT_EQ(runs[1].overrides[1], "loss.consistency.type=fixed");
  EXPECT_EQ(runs[3].overrides[0], "model.fusion.type=none");
  EXPECT_EQ(runs[5].overrides[1], "loss.consistency.type=none");
  // Both keys end in "type": names use the shortest suffix that tells them apart.
  EXPECT_EQ(runs[0].name, "fusion.type-bidirectional_consistency.type-adaptive");
  EXPECT_EQ(runs[5].name, "fusion.type-none_consistency.type-none");
}

TEST(Sweep, NamesUseTheLastKeyPartWhenUniqueAndSanitize) {
  EXPECT_EQ(run_name({"data.silence_audio=true"}, {"data.silence_audio"}), "silence_audio-true");
  EXPECT_EQ(run_name({"data.augment.short_sides=[32, 40]"}, {"data.augment.short_sides"}),
            "short_sides--32--40-");
  EXPECT_EQ(run_name({}, {}), "base");
}

TEST(Sweep, BracketedListsAreOneValue) {
  const auto [key, values] = parse_grid_axis("data.augment.short_sides=[32,40],[48,56]");
  EXPECT_EQ(key, "data.augment.short_sides");
  EXPECT_EQ(values, (std::vector<std::string>{"[32,40]", "[48,56]"}));
}

TEST(Sweep, BadGridsAreErrorsThatSayWhy) {
  try {
    expand_grid({"model.fusion.type"});
    FAIL() << "no '=' accepted";
  } catch (const combo::Error& e) {
    EXPECT_NE(std::string(e.what()).find("key.path=value"), std::string::npos) << e.what();
  }
  try {
    expand_grid({"a.b=1,2", "a.b=3"});
    FAIL() << "repeated key accepted";
  } catch (const combo::Error& e) {
    EXPECT_NE(std::string(e.what()).find("a.b"), std::string::npos) << e.what();
  }
  EXPECT_THROW(expand_grid({"a.b=1,,2"}), combo::Error);
  SweepSpec spec;
  spec.base_config = "x.yaml";
  spec.runs = {{"same", {}}, {"same", {"a.b=1"}}};
  EXPECT_THROW(validate_sweep(spec), combo::Error);
  spec.runs = {{"../escape", {}}};
  EXPECT_THROW(validate_sweep(spec), combo::Error);
}

TEST(Sweep, SweepFileWithGridRunsAndCommonOverrides) {
  combo::testing::TempDir dir;
  std::ofstream(dir.path() / "base.yaml") << "output_dir: x\n";
  std::ofstream(dir.path() / "s.yaml")
      << "base: base.yaml\n"
      << "overrides: [solver.max_iter=10]\n"
      << "grid:\n  model.pre_sam.enabled: [true, false]\n"
      << "runs:\n  - name: silent\n    overrides: [data.silence_audio=true]\n";
  const auto spec = read_sweep_file((dir.path() / "s.yaml").string());
  EXPECT_EQ(spec.base_config, (dir.path() / "base.yaml").string());
  EXPECT_EQ(spec.common, std::vector<std::string>{"solver.max_iter=10"});
  ASSERT_EQ(spec.runs.size(), 3u);
  EXPECT_EQ(spec.runs[0].name, "enabled-true");
  EXPECT_EQ(spec.runs[1].overrides, std::vector<std::string>{"model.pre_sam.enabled=false"});
  EXPECT_EQ(spec.runs[2].name, "silent");

  std::ofstream(dir.path() / "bad.yaml") << "base: base.yaml\ngrids: {}\n";
  try {
    read_sweep_file((dir.path() / "bad.yaml").string());
    FAIL() << "unknown key accepted";
  } catch (const combo::Error& e) {
    EXPECT_NE(std::string(e.what()).find("bad.yaml"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("grids"), std::string::npos) << e.what();
  }
}

TEST(Sweep, ShippedSweepFilesParse) {
  const auto folder = combo::testing::source_dir() / "configs" / "sweeps";
  int n = 0;
  for (const auto& f : fs::directory_iterator(folder)) {
    if (f.path().extension() != ".yaml") continue;
    const auto spec = read_sweep_file(f.path().string());
    EXPECT_TRUE(fs::exists(spec.base_config)) << f.path() << ": " << spec.base_config;
    EXPECT_GE(spec.runs.size(), 2u) << f.path();
    ++n;
  }
  EXPECT_GE(n, 2) << "configs/sweeps should hold the paper's and our ablation sweeps";
}

TEST(Sweep, StatusRoundTrip) {
  combo::testing::TempDir dir;
  EXPECT_EQ(read_run_status(dir.path().string()).state, RunState::kPending);
  RunStatus s;
  s.state = RunState::kFailed;
  s.stage = "train";
  s.exit_code = 3;
  s.message = "error: boom";
  s.seconds = 12.5;
  write_run_status(dir.path().string(), s);
  const auto r = read_run_status(dir.path().string());
  EXPECT_EQ(r.state, RunState::kFailed);
  EXPECT_EQ(r.stage, "train");
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_EQ(r.message, "error: boom");
  EXPECT_DOUBLE_EQ(r.seconds, 12.5);
}

TEST(Sweep, CollectBuildsOneRowPerRunWithEffectiveValues) {
  combo::testing::TempDir dir;
  const fs::path sweep = dir.path();
  std::ofstream(sweep / "sweep.json")
      << R"({"runs": [{"name": "b"}, {"name": "a"}, {"name": "never_started"}]})";
  auto make_run = [&](const std::string& name, const std::string& overrides, const std::string& cfg,
                      const std::string& metrics, const std::string& state) {
    fs::create_directories(sweep / name / "eval_test");
    std::ofstream(sweep / name / "run.json")
        << R"({"name": ")" << name << R"(", "overrides": )" << overrides << "}";
    std::ofstream(sweep / name / "config.yaml") << cfg;
    if (!metrics.empty()) std::ofstream(sweep / name / "eval_test" / "metrics.json") << metrics;
    std::ofstream(sweep / name / "metrics.jsonl") << R"({"iteration": 9, "mIoU": 0.25})"
                                                  << "\n"
                                                  << R"({"iteration": 19, "mIoU": 0.5})"
                                                  << "\n{broken\n";
    RunStatus s;
    s.state = state == "done" ? RunState::kDone : RunState::kInterrupted;
    s.seconds = 42;
    write_run_status((sweep / name).string(), s);
  };
  make_run("b", R"(["model.fusion.type=none"])", "model:\n  fusion:\n    type: none\n",
           R"({"split": "test", "protocol": "combo", "metrics": {"mIoU": 0.5, "F": 0.75}})",
           "done");
  make_run("a", R"(["data.silence_audio=yes"])",
           "model:\n  fusion:\n    type: bidirectional\ndata:\n  silence_audio: true\n", "",
           "interrupted");
  const auto table = collect_sweep(sweep.string());
  ASSERT_EQ(table.rows.size(), 3u);
  EXPECT_EQ(table.rows[0].run, "b");
  EXPECT_EQ(table.rows[1].run, "a");
  EXPECT_EQ(table.rows[2].state, "missing");
  EXPECT_EQ(table.key_columns,
            (std::vector<std::string>{"data.silence_audio", "model.fusion.type"}));
  EXPECT_EQ(table.rows[1].keys.at("data.silence_audio"), "true");  // the config's value
  EXPECT_DOUBLE_EQ(table.rows[0].metrics.at("mIoU"), 0.5);
  EXPECT_DOUBLE_EQ(table.rows[0].best_val_miou, 0.5);
  EXPECT_EQ(table.rows[0].iterations, 20);
  const auto csv = read_text(sweep / "results.csv");
  EXPECT_EQ(csv.substr(0, csv.find('\n')),
            "run,state,data.silence_audio,model.fusion.type,split,protocol,F,mIoU,best_val_mIoU,"
            "iterations,seconds");
  EXPECT_NE(csv.find("b,done,,none,test,combo,0.7500,0.5000,0.5000,20,42"), std::string::npos)
      << csv;
  // Run a does not override the fusion: its cell shows the value in its merged config.
  EXPECT_NE(csv.find("a,interrupted,true,bidirectional,,,,,0.5000,20,42"), std::string::npos)
      << csv;
  const auto md = read_text(sweep / "results.md");
  EXPECT_NE(md.find("| b | done |"), std::string::npos) << md;
}

}  // namespace
