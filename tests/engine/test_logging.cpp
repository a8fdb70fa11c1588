#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "combo/core/check.h"
#include "combo/engine/logging.h"
#include "testing/testing.h"

namespace {
std::string read_all(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}
}  // namespace

TEST(LoggingTest, WritesToTheOutputFolderLogFile) {
  combo::testing::TempDir dir;
  const std::string out = dir.file("run/nested");
  combo::engine::setup_logging(out);
  spdlog::info("iteration {} loss {}", 7, 0.5);
  spdlog::debug("hidden at info level");
  spdlog::default_logger()->flush();
  const std::string text = read_all(out + "/log.txt");
  EXPECT_NE(text.find("iteration 7 loss 0.5"), std::string::npos) << text;
  EXPECT_EQ(text.find("hidden at info level"), std::string::npos) << text;
  combo::engine::setup_logging();  // back to console only
}

TEST(LoggingTest, OtherRanksWriteTheirOwnFile) {
  combo::testing::TempDir dir;
  combo::engine::setup_logging(dir.path().string(), /*rank=*/1, "debug");
  spdlog::debug("rank one detail");
  spdlog::default_logger()->flush();
  EXPECT_NE(read_all(dir.file("log.txt.rank1")).find("rank one detail"), std::string::npos);
  combo::engine::setup_logging();
}

TEST(LoggingTest, BadLevelAndUnwritableFolderAreErrors) {
  EXPECT_THROW(combo::engine::setup_logging("", 0, "loud"), combo::Error);
  combo::testing::TempDir dir;
  {
    std::ofstream f(dir.file("a_file"));
    f << "x";
  }
  // A folder cannot be created below a regular file.
  EXPECT_THROW(combo::engine::setup_logging(dir.file("a_file/sub")), combo::Error);
  combo::engine::setup_logging();
}
