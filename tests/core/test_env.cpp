#include <gtest/gtest.h>
#include <torch/torch.h>

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
