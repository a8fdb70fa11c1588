#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "combo/nn/position_encoding.h"
#include "testing/testing.h"

// Independent scalar evaluation of COMBO_SPEC 5.4 in double precision.
TEST(PositionEncodingTest, MatchesTheFormulaElementwise) {
  const int64_t H = 3, W = 5, F = 8;
  auto pos = combo::nn::sine_position_encoding(H, W, F);
  ASSERT_EQ(pos.sizes(), (std::vector<int64_t>{1, 2 * F, H, W}));
  auto acc = pos.accessor<float, 4>();
  for (int64_t i = 0; i < F; ++i) {
    const double dim_t = std::pow(10000.0, 2.0 * (i / 2) / F);
    for (int64_t h = 0; h < H; ++h) {
      for (int64_t w = 0; w < W; ++w) {
        const double y = (h + 1) / (H + 1e-6) * 2 * M_PI;
        const double x = (w + 1) / (W + 1e-6) * 2 * M_PI;
        const double ey = i % 2 == 0 ? std::sin(y / dim_t) : std::cos(y / dim_t);
        const double ex = i % 2 == 0 ? std::sin(x / dim_t) : std::cos(x / dim_t);
        EXPECT_NEAR(acc[0][i][h][w], ey, 1e-5) << "y channel " << i;
        EXPECT_NEAR(acc[0][F + i][h][w], ex, 1e-5) << "x channel " << i;
      }
    }
  }
}

TEST(PositionEncodingTest, RejectsOddFeatureCounts) {
  EXPECT_THROW(combo::nn::sine_position_encoding(2, 2, 7), std::exception);
}
