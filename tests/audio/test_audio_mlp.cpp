#include <gtest/gtest.h>
#include <torch/torch.h>

#include <string>
#include <vector>

#include "combo/audio/audio_mlp.h"
#include "combo/core/check.h"
#include "combo/core/state_dict.h"
#include "testing/testing.h"

using combo::audio::AudioMlp;
using combo::audio::AudioMlpOptions;

namespace {

class AudioMlpTest : public combo::testing::SeededTest {};

}  // namespace

TEST(AudioMlpParity, OutputsAndGradsMatchOfficial) {
  COMBO_TEST_DEVICE_OR_SKIP(device);
  COMBO_LOAD_FIXTURE_OR_SKIP(fx, "audio_mlp.pt");
  const combo::TensorDict sd = fx.state_dict();
  const AudioMlpOptions options(sd.at("embeddings.0.weight").size(1),
                                sd.at("embeddings.0.weight").size(0),
                                sd.at("embeddings.4.weight").size(0));
  AudioMlp model(options);
  const combo::LoadReport report =
      combo::load_state_dict_into(*model, sd, {true, {}, fx.path().string()});
  EXPECT_TRUE(report.clean()) << report.to_string();
  model->eval();
  model->to(device);
  // Float32 and float64 runs on the fixture's input; bounds from the measured float32 error.
  auto run = [&](at::ScalarType dtype) {
    combo::testing::parity_to(*model, dtype);
    const at::Tensor x = combo::testing::parity_input(fx.tensor("inputs/x"), device, dtype, true);
    const at::Tensor y = model->forward(x);
    y.pow(2).mean().backward();
    return std::make_pair(y.detach(), x.grad());
  };
  const auto [y64, g64] = run(torch::kFloat64);
  const auto [y32_1, g32_1] =
      combo::testing::official_threads([&] { return run(torch::kFloat32); });
  const auto [y32, g32] = run(torch::kFloat32);
  EXPECT_FLOAT32_PARITY_RUNS("outputs/y", fx.tensor("outputs/y"), y64, y32, y32_1);
  EXPECT_FLOAT32_PARITY_RUNS("grads/x", fx.tensor("grads/x"), g64, g32, g32_1);
}

TEST_F(AudioMlpTest, KeysShapesAndAnyLeadingDims) {
  AudioMlp model(AudioMlpOptions(16, 32, 8));
  const combo::TensorDict sd = combo::module_state_dict(*model);
  const std::vector<std::pair<std::string, std::vector<int64_t>>> expected = {
      {"embeddings.0.weight", {32, 16}}, {"embeddings.0.bias", {32}},
      {"embeddings.2.weight", {32, 32}}, {"embeddings.2.bias", {32}},
      {"embeddings.4.weight", {8, 32}},  {"embeddings.4.bias", {8}},
  };
  ASSERT_EQ(sd.size(), expected.size());
  for (const auto& [key, shape] : expected) {
    ASSERT_TRUE(sd.count(key)) << key;
    EXPECT_EQ(sd.at(key).sizes().vec(), shape) << key;
  }
  const at::Tensor x = torch::randn({3, 2, 1, 16});
  const at::Tensor y = model->forward(x);
  EXPECT_EQ(y.sizes(), (std::vector<int64_t>{3, 2, 1, 8}));
  // No final activation: the output must be able to go negative; compare with the layers applied
  // by hand.
  auto lin = [&](const std::string& i, const at::Tensor& t) {
    return at::linear(t, sd.at("embeddings." + i + ".weight"), sd.at("embeddings." + i + ".bias"));
  };
  const at::Tensor expected_y = lin("4", at::relu(lin("2", at::relu(lin("0", x)))));
  EXPECT_TENSOR_NEAR_ABS(expected_y, y, 1e-6);
}

TEST_F(AudioMlpTest, DefaultsAreComboLateFusion) {
  const AudioMlpOptions options;
  EXPECT_EQ(options.in_dim(), 128);
  EXPECT_EQ(options.middle_dim(), 4096);
  EXPECT_EQ(options.out_dim(), 256);
}

TEST_F(AudioMlpTest, RejectsWrongWidth) {
  AudioMlp model(AudioMlpOptions(16, 32, 8));
  try {
    model->forward(torch::zeros({4, 1, 15}));
    FAIL() << "expected combo::Error";
  } catch (const combo::Error& e) {
    EXPECT_NE(std::string(e.what()).find("[4, 1, 15]"), std::string::npos) << e.what();
  }
}
