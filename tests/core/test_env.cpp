#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdlib>

#include "combo/core/check.h"
#include "combo/core/env.h"
#include "testing/testing.h"

TEST(EnvTest, SetsThreadsToCoresByDefault) {
  EXPECT_EQ(combo::set_num_threads(1), 1);
  EXPECT_EQ(combo::set_num_threads(0), combo::hardware_threads());
  EXPECT_EQ(at::get_num_threads(), combo::hardware_threads());
}

TEST(EnvTest, SeedingMakesRandomStreamsRepeat) {
  combo::seed_everything(123);
  auto a = torch::randn({16});
  combo::seed_everything(123);
  auto b = torch::randn({16});
  combo::seed_everything(124);
  auto c = torch::randn({16});
  EXPECT_TENSOR_EQ(a, b);
  EXPECT_FALSE(torch::equal(a, c));
}

TEST(EnvTest, AllocatorTuningIsSkippedWhenTheUserChoseSettings) {
#if defined(__GLIBC__)
  for (const char* var : {"COMBO_DEFAULT_MALLOC", "MALLOC_MMAP_THRESHOLD_"}) {
    ::setenv(var, "1", 1);
    EXPECT_FALSE(combo::tune_allocator()) << var;
    ::unsetenv(var);
  }
  if (std::getenv("MALLOC_TRIM_THRESHOLD_") == nullptr) {
    EXPECT_TRUE(combo::tune_allocator());
    // The tuned allocator still allocates, reuses and frees large and small blocks.
    for (int i = 0; i < 3; ++i) {
      auto big = torch::ones({40 << 20}, torch::kUInt8);  // above the 32 MB threshold
      auto mid = torch::ones({4 << 20}, torch::kFloat32);
      EXPECT_EQ(big.sum().item<int64_t>(), 40 << 20);
      EXPECT_EQ(mid.sum().item<double>(), 4 << 20);
    }
  }
#else
  std::cout << "[ SKIP REASON ] not glibc: tune_allocator does nothing" << std::endl;
  GTEST_SKIP() << "not glibc";
#endif
}

TEST(EnvTest, RuntimeInfoDescribesTheBuild) {
  auto info = combo::setup_runtime(0, 7);
  EXPECT_FALSE(info.torch_version.empty());
  EXPECT_FALSE(info.git_commit.empty());
  EXPECT_EQ(info.intra_op_threads, combo::hardware_threads());
  EXPECT_NE(info.to_string().find("LibTorch " + info.torch_version), std::string::npos);
  EXPECT_NE(info.to_json().find("\"torch_version\":\"" + info.torch_version + "\""),
            std::string::npos);
}

TEST(CheckTest, MessageCarriesTheValues) {
  try {
    const int got = 3;
    COMBO_CHECK(got == 4, "expected 4 maps, got ", got);
    FAIL() << "no throw";
  } catch (const combo::Error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("expected 4 maps, got 3"), std::string::npos) << msg;
    EXPECT_EQ(msg, "expected 4 maps, got 3");
  }
}
