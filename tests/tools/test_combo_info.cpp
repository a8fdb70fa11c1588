#include <gtest/gtest.h>

#include <sys/wait.h>
#include <array>
#include <cstdio>
#include <memory>

#include "combo/engine/config.h"
#include "testing/testing.h"

namespace {

using Result = combo::testing::CommandResult;
using combo::testing::run_shell;

std::string tool() { return (combo::testing::binary_dir() / "tools" / "combo-info").string(); }

}  // namespace

TEST(ComboInfoIntegration, DumpsAConfigThatLoadsBack) {
  combo::testing::TempDir dir;
  const auto cfg = (combo::testing::source_dir() / "configs/demo/demo.yaml").string();
  auto r = run_shell(tool() + " --config " + cfg + " --dump " + dir.file("dump.yaml") +
                     " solver.max_iter=3 model.fusion.type=none");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("LibTorch"), std::string::npos) << r.output;
  const auto back = combo::engine::load_config(dir.file("dump.yaml"));
  EXPECT_EQ(back.solver.max_iter, 3);
  EXPECT_EQ(back.model.fusion.type, "none");
  EXPECT_TRUE(back ==
              combo::engine::load_config(cfg, {"solver.max_iter=3", "model.fusion.type=none"}));
}

TEST(ComboInfoIntegration, OpenMpWaitsPassivelyUnlessTheUserChose) {
  auto r = run_shell("env -u OMP_WAIT_POLICY " + tool() + " --fields");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("OpenMP wait policy PASSIVE"), std::string::npos) << r.output;
  r = run_shell("env OMP_WAIT_POLICY=ACTIVE " + tool() + " --fields");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("OpenMP wait policy ACTIVE"), std::string::npos) << r.output;
}

TEST(ComboInfoIntegration, ErrorsPrintErrorAndExitNonZero) {
  auto r = run_shell(tool() + " solver.max_itr=3");
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("error: unknown config key 'solver.max_itr'"), std::string::npos)
      << r.output;
  r = run_shell(tool() + " --config /nonexistent/x.yaml");
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("error: config file '/nonexistent/x.yaml' does not exist"),
            std::string::npos)
      << r.output;
}

TEST(ComboInfoIntegration, ModelSummaryCountsParameters) {
  const auto cfg = (combo::testing::source_dir() / "configs/demo/demo.yaml").string();
  auto r = run_shell(tool() + " --config " + cfg + " --no-config --model");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("sem_seg_head.predictor"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("pre_sam_backbone"), std::string::npos) << r.output;
}
