#include <gtest/gtest.h>
#include <torch/torch.h>

#include <string>
#include <vector>

#include "combo/audio/vggish.h"
#include "combo/core/check.h"
#include "combo/core/state_dict.h"
#include "testing/testing.h"

using combo::audio::Vggish;

namespace {

class VggishTest : public combo::testing::SeededTest {};

}  // namespace

TEST(VggishParity, EmbeddingMatchesOfficial) {
  COMBO_TEST_DEVICE_OR_SKIP(device);
  COMBO_LOAD_FIXTURE_OR_SKIP(fx, "vggish.pt");
  Vggish model;
  const combo::LoadReport report =
      combo::load_state_dict_into(*model, fx.state_dict(), {true, {}, fx.path().string()});
  EXPECT_TRUE(report.clean()) << report.to_string();
  model->freeze();
  model->to(device);
  // Float32 and float64 runs on the fixture's input; bounds from the measured float32 error.
  auto run = [&](at::ScalarType dtype) {
    combo::testing::parity_to(*model, dtype);
    c10::InferenceMode guard;
    return model->forward(combo::testing::parity_input(fx.tensor("inputs/x"), device, dtype));
  };
  const at::Tensor got64 = run(torch::kFloat64);
  const at::Tensor got32_1 = combo::testing::official_threads([&] { return run(torch::kFloat32); });
  const at::Tensor got32 = run(torch::kFloat32);
  EXPECT_FLOAT32_PARITY_RUNS("outputs/embedding", fx.tensor("outputs/embedding"), got64, got32,
                             got32_1);
}

TEST_F(VggishTest, KeysAndShapesAreOfficial) {
  // vggish-10086976.pth (harritaylor torchvggish), COMBO_SPEC 3.2.
  const std::vector<std::pair<std::string, std::vector<int64_t>>> official = {
      {"features.0.weight", {64, 1, 3, 3}},     {"features.0.bias", {64}},
      {"features.3.weight", {128, 64, 3, 3}},   {"features.3.bias", {128}},
      {"features.6.weight", {256, 128, 3, 3}},  {"features.6.bias", {256}},
      {"features.8.weight", {256, 256, 3, 3}},  {"features.8.bias", {256}},
      {"features.11.weight", {512, 256, 3, 3}}, {"features.11.bias", {512}},
      {"features.13.weight", {512, 512, 3, 3}}, {"features.13.bias", {512}},
      {"embeddings.0.weight", {4096, 12288}},   {"embeddings.0.bias", {4096}},
      {"embeddings.2.weight", {4096, 4096}},    {"embeddings.2.bias", {4096}},
      {"embeddings.4.weight", {128, 4096}},     {"embeddings.4.bias", {128}},
  };
  Vggish model;
  const combo::TensorDict sd = combo::module_state_dict(*model);
  ASSERT_EQ(sd.size(), official.size());
  combo::TensorDict synthetic;
  for (const auto& [key, shape] : official) {
    ASSERT_TRUE(sd.count(key)) << key;
    EXPECT_EQ(sd.at(key).sizes().vec(), shape) << key;
    synthetic[key] = torch::randn(shape) * 0.01;
  }
  const combo::LoadReport report = combo::load_state_dict_into(*model, synthetic);
  EXPECT_TRUE(report.clean()) << report.to_string();
  EXPECT_EQ(report.loaded, static_cast<int64_t>(official.size()));
}

TEST_F(VggishTest, FlattensInTimeFrequencyChannelOrder) {
  Vggish model;
  model->eval();
  torch::NoGradGuard no_grad;
  const at::Tensor x = torch::randn({2, 1, 96, 64});
  const at::Tensor maps = model->features->forward(x);
  ASSERT_EQ(maps.sizes(), (std::vector<int64_t>{2, 512, 6, 4}));
  // Flatten element by element in (time, frequency, channel) order, independently of permute.
  at::Tensor flat = torch::empty({2, 12288});
  auto m = maps.accessor<float, 4>();
  auto f = flat.accessor<float, 2>();
  for (int64_t n = 0; n < 2; ++n) {
    for (int64_t h = 0; h < 6; ++h) {
      for (int64_t w = 0; w < 4; ++w) {
        for (int64_t c = 0; c < 512; ++c) {
          f[n][(h * 4 + w) * 512 + c] = m[n][c][h][w];
        }
      }
    }
  }
  const at::Tensor expected = model->embeddings->forward(flat);
  const at::Tensor got = model->forward(x);
  EXPECT_TENSOR_NEAR_ABS(expected, got, 1e-6);
  EXPECT_GE(got.min().item<float>(), 0.0f);  // final ReLU
}

TEST_F(VggishTest, FreezeStopsGradientsAndRunsUnderInferenceMode) {
  Vggish model;
  model->freeze();
  EXPECT_FALSE(model->is_training());
  for (const auto& p : model->parameters()) {
    EXPECT_FALSE(p.requires_grad());
  }
  const at::Tensor x = torch::randn({3, 1, 96, 64});
  at::Tensor a;
  {
    c10::InferenceMode guard;
    a = model->forward(x);
  }
  at::Tensor b;
  {
    torch::NoGradGuard guard;
    b = model->forward(x);
  }
  EXPECT_EQ(a.sizes(), (std::vector<int64_t>{3, 128}));
  EXPECT_FALSE(b.requires_grad());
  EXPECT_TENSOR_EQ(a, b);
}

TEST_F(VggishTest, RejectsWrongInputShape) {
  Vggish model;
  try {
    model->forward(torch::zeros({2, 1, 64, 96}));
    FAIL() << "expected combo::Error";
  } catch (const combo::Error& e) {
    EXPECT_NE(std::string(e.what()).find("[N, 1, 96, 64]"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("[2, 1, 64, 96]"), std::string::npos) << e.what();
  }
}
