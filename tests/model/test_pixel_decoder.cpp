#include <ATen/autocast_mode.h>
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <torch/version.h>

#include <cmath>
#include <map>
#include <string>

#include "combo/core/state_dict.h"
#include "combo/model/pixel_decoder.h"
#include "testing/testing.h"

namespace {

using combo::model::MSDeformAttnPixelDecoder;
using combo::model::MSDeformAttnPixelDecoderOptions;
using combo::model::PixelDecoderInputShapes;

class PixelDecoderParity : public combo::testing::SeededTest {};
class PixelDecoderTest : public combo::testing::SeededTest {};

const std::vector<std::string> kFeatureNames = {"res2", "res3", "res4", "res5"};

// detectron2 names a feature map res<k> for stride 2^k.
int64_t stride_of(const std::string& name) { return int64_t{1} << std::stoi(name.substr(3)); }

PixelDecoderInputShapes shapes_of(const std::map<std::string, at::Tensor>& features) {
  PixelDecoderInputShapes shapes;
  for (const auto& [name, x] : features) shapes[name] = {x.size(1), stride_of(name)};
  return shapes;
}

PixelDecoderInputShapes shapes_from_channels(const std::vector<int64_t>& channels) {
  PixelDecoderInputShapes shapes;
  for (size_t i = 0; i < kFeatureNames.size(); ++i) {
    shapes[kFeatureNames[i]] = {channels[i], stride_of(kFeatureNames[i])};
  }
  return shapes;
}

// Random maps for an image of height x width (sizes rounded up per stride, as strided convs do).
std::map<std::string, at::Tensor> random_features(const PixelDecoderInputShapes& shapes,
                                                  int64_t batch, int64_t height, int64_t width) {
  std::map<std::string, at::Tensor> features;
  for (const auto& [name, shape] : shapes) {
    const int64_t s = shape.stride;
    features[name] =
        torch::randn({batch, shape.channels, (height + s - 1) / s, (width + s - 1) / s});
  }
  return features;
}

int64_t count_parameters(const torch::nn::Module& module, const std::string& prefix = "") {
  int64_t total = 0;
  for (const auto& item : module.named_parameters()) {
    if (item.key().rfind(prefix, 0) == 0) total += item.value().numel();
  }
  return total;
}

at::Tensor parity_loss(const combo::model::PixelDecoderOutput& out) {
  auto loss = out.mask_features.pow(2).mean();
  for (const auto& m : out.multi_scale_features) loss = loss + m.pow(2).mean();
  return loss;
}

void run_parity(const combo::testing::Fixture& fx, bool fused_kernel, const at::Device& device) {
  std::map<std::string, at::Tensor> inputs;
  for (const auto& name : kFeatureNames) inputs[name] = fx.tensor("inputs/" + name);
  MSDeformAttnPixelDecoder decoder(
      MSDeformAttnPixelDecoderOptions(shapes_of(inputs)).fused_kernel(fused_kernel));
  combo::LoadOptions load_options;
  load_options.source = fx.path().string();
  const auto report = combo::load_state_dict_into(*decoder, fx.state_dict(), load_options);
  EXPECT_TRUE(report.clean()) << report.to_string();
  decoder->eval();
  decoder->to(device);

  // Float32 and float64 runs on the fixture's inputs; bounds from the measured float32 error
  // (the gradients are O(1e-4): the bound scales with them, not with the README's max(1, .)).
  auto run = [&](at::ScalarType dtype) {
    combo::testing::parity_to(*decoder, dtype);
    std::map<std::string, at::Tensor> x;
    for (const auto& [name, t] : inputs)
      x[name] = combo::testing::parity_input(t, device, dtype, /*requires_grad=*/true);
    const auto out = decoder->forward(x);
    parity_loss(out).backward();
    std::map<std::string, at::Tensor> got;
    got["outputs/mask_features"] = out.mask_features.detach();
    got["outputs/transformer_encoder_features"] = out.transformer_encoder_features.detach();
    for (size_t i = 0; i < out.multi_scale_features.size(); ++i)
      got["outputs/multi_scale_features/" + std::to_string(i)] =
          out.multi_scale_features[i].detach();
    for (const auto& [name, t] : x) got["grads/" + name] = t.grad();
    return got;
  };
  const auto ours64 = run(torch::kFloat64);
  const auto ours32_1 = combo::testing::official_threads([&] { return run(torch::kFloat32); });
  const auto ours32 = run(torch::kFloat32);
  const auto ms = fx.value("outputs/multi_scale_features").toList();
  ASSERT_EQ(ours32.size(), 2 + ms.size() + kFeatureNames.size());
  const std::string kernel = fused_kernel ? "fused: " : "grid sampler: ";
  for (const auto& [key, got] : ours32) {
    const std::string list = "outputs/multi_scale_features/";
    const at::Tensor ref = key.rfind(list, 0) == 0
                               ? ms.get(std::stoul(key.substr(list.size()))).toTensor()
                               : fx.tensor(key);
    ASSERT_TRUE(got.defined()) << key;
    EXPECT_FLOAT32_PARITY_RUNS(kernel + key, ref, ours64.at(key), got, ours32_1.at(key));
  }
}

TEST_F(PixelDecoderParity, MatchesOfficialWithGridSamplerReference) {
  COMBO_TEST_DEVICE_OR_SKIP(device);
  COMBO_LOAD_FIXTURE_OR_SKIP(fx, "pixel_decoder.pt");
  run_parity(fx, /*fused_kernel=*/false, device);
}

TEST_F(PixelDecoderParity, MatchesOfficialWithFusedKernel) {
  // On a GPU the fused kernel is not used (the CPU has it): the decoder takes the reference path.
  COMBO_TEST_DEVICE_OR_SKIP(device);
  COMBO_LOAD_FIXTURE_OR_SKIP(fx, "pixel_decoder.pt");
  run_parity(fx, /*fused_kernel=*/true, device);
}

TEST_F(PixelDecoderParity, StateDictKeysAndShapesEqualOfficial) {
  COMBO_LOAD_FIXTURE_OR_SKIP(fx, "pixel_decoder.pt");
  std::map<std::string, at::Tensor> inputs;
  for (const auto& name : kFeatureNames) inputs[name] = fx.tensor("inputs/" + name);
  MSDeformAttnPixelDecoder decoder(MSDeformAttnPixelDecoderOptions(shapes_of(inputs)));
  const auto ours = combo::module_state_dict(*decoder);
  const auto theirs = fx.state_dict();
  ASSERT_EQ(ours.size(), theirs.size());
  for (const auto& [key, tensor] : theirs) {
    ASSERT_EQ(ours.count(key), 1u) << key;
    EXPECT_EQ(ours.at(key).sizes(), tensor.sizes()) << key;
  }
}

TEST_F(PixelDecoderTest, ParameterCountPvtV2B5) {
  MSDeformAttnPixelDecoder decoder(
      MSDeformAttnPixelDecoderOptions(shapes_from_channels({64, 128, 320, 512})));
  EXPECT_EQ(count_parameters(*decoder), 5315008);  // COMBO_SPEC 15(c)
  EXPECT_EQ(count_parameters(*decoder, "input_proj."), 248064);
  EXPECT_EQ(count_parameters(*decoder, "adapter_1.") + count_parameters(*decoder, "layer_1."),
            607232);
  EXPECT_EQ(count_parameters(*decoder, "transformer.encoder."), 4393152);
  EXPECT_EQ(count_parameters(*decoder, "transformer.level_embed"), 768);
  EXPECT_EQ(count_parameters(*decoder, "mask_features."), 65792);
}

TEST_F(PixelDecoderTest, ParameterCountResNet50) {
  MSDeformAttnPixelDecoder decoder(
      MSDeformAttnPixelDecoderOptions(shapes_from_channels({256, 512, 1024, 2048})));
  EXPECT_EQ(count_parameters(*decoder), 6035904);  // COMBO_SPEC 15(c)
  EXPECT_EQ(count_parameters(*decoder, "input_proj."), 919808);
  EXPECT_EQ(count_parameters(*decoder, "adapter_1.") + count_parameters(*decoder, "layer_1."),
            656384);
}

TEST_F(PixelDecoderTest, OutputShapesForOddNonSquareSizes) {
  const auto shapes = shapes_from_channels({32, 48, 64, 96});
  MSDeformAttnPixelDecoder decoder(
      MSDeformAttnPixelDecoderOptions(shapes).conv_dim(64).mask_dim(48).transformer_enc_layers(2));
  EXPECT_EQ(decoder->num_fpn_levels(), 1);
  EXPECT_EQ(decoder->transformer_in_features(), (std::vector<std::string>{"res3", "res4", "res5"}));
  // 100 x 60 image: res2 25x15, res3 13x8, res4 7x4, res5 4x2.
  const auto features = random_features(shapes, 3, 100, 60);
  const auto out = decoder->forward(features);
  EXPECT_EQ(out.mask_features.sizes(), (std::vector<int64_t>{3, 48, 25, 15}));
  EXPECT_EQ(out.transformer_encoder_features.sizes(), (std::vector<int64_t>{3, 64, 4, 2}));
  ASSERT_EQ(out.multi_scale_features.size(), 3u);
  EXPECT_EQ(out.multi_scale_features[0].sizes(), (std::vector<int64_t>{3, 64, 4, 2}));
  EXPECT_EQ(out.multi_scale_features[1].sizes(), (std::vector<int64_t>{3, 64, 7, 4}));
  EXPECT_EQ(out.multi_scale_features[2].sizes(), (std::vector<int64_t>{3, 64, 13, 8}));
  EXPECT_TRUE(torch::equal(out.transformer_encoder_features, out.multi_scale_features[0]));
  EXPECT_TRUE(out.mask_features.isfinite().all().item<bool>());
}

TEST_F(PixelDecoderTest, GradientsReachEveryParameter) {
  const auto shapes = shapes_from_channels({32, 48, 64, 96});
  MSDeformAttnPixelDecoder decoder(
      MSDeformAttnPixelDecoderOptions(shapes).conv_dim(64).mask_dim(32).transformer_enc_layers(2));
  auto features = random_features(shapes, 2, 64, 96);
  // At the official initialisation the queries (and so the level embeddings) reach the output
  // only through the zero-initialised sampling_offsets / attention_weights matrices.
  parity_loss(decoder->forward(features)).backward();
  for (const auto& item : decoder->named_parameters()) {
    ASSERT_TRUE(item.value().grad().defined()) << item.key();
    const double g = item.value().grad().abs().max().item<double>();
    if (item.key() == "transformer.level_embed") {
      EXPECT_EQ(g, 0.0);
    } else {
      EXPECT_GT(g, 0.0) << item.key();
    }
  }
  decoder->zero_grad();
  {
    torch::NoGradGuard no_grad;
    for (auto& p : decoder->parameters()) p.add_(torch::randn_like(p) * 0.02);
  }
  parity_loss(decoder->forward(features)).backward();
  for (const auto& item : decoder->named_parameters()) {
    ASSERT_TRUE(item.value().grad().defined()) << item.key();
    EXPECT_GT(item.value().grad().abs().max().item<double>(), 0.0) << item.key();
  }
}

TEST_F(PixelDecoderTest, BatchElementsAreIndependent) {
  const auto shapes = shapes_from_channels({32, 48, 64, 96});
  MSDeformAttnPixelDecoder decoder(
      MSDeformAttnPixelDecoderOptions(shapes).conv_dim(64).mask_dim(32).transformer_enc_layers(2));
  decoder->eval();
  torch::NoGradGuard no_grad;
  const auto features = random_features(shapes, 3, 64, 64);
  const auto all = decoder->forward(features);
  std::map<std::string, at::Tensor> second;
  for (const auto& [name, x] : features) second[name] = x.narrow(0, 1, 1);
  const auto one = decoder->forward(second);
  EXPECT_TENSOR_NEAR_ABS(all.mask_features.narrow(0, 1, 1), one.mask_features, 1e-5);
  for (size_t i = 0; i < one.multi_scale_features.size(); ++i) {
    EXPECT_TENSOR_NEAR_ABS(all.multi_scale_features[i].narrow(0, 1, 1), one.multi_scale_features[i],
                           1e-5);
  }
}

TEST_F(PixelDecoderTest, CloneIsIndependentAndComputesTheSame) {
  const auto shapes = shapes_from_channels({32, 48, 64, 96});
  MSDeformAttnPixelDecoder decoder(
      MSDeformAttnPixelDecoderOptions(shapes).conv_dim(64).mask_dim(32).transformer_enc_layers(1));
  decoder->eval();
  auto copy =
      std::dynamic_pointer_cast<combo::model::MSDeformAttnPixelDecoderImpl>(decoder->clone());
  ASSERT_TRUE(copy);
  torch::NoGradGuard no_grad;
  const auto features = random_features(shapes, 1, 64, 32);
  EXPECT_TENSOR_EQ(decoder->forward(features).mask_features, copy->forward(features).mask_features);
  // The FPN convolutions the copy runs are its own registered children.
  copy->named_parameters()["layer_1.weight"].zero_();
  EXPECT_FALSE(torch::equal(decoder->forward(features).mask_features,
                            copy->forward(features).mask_features));
}

TEST_F(PixelDecoderTest, KernelsAgreeOnOutputsAndGradients) {
  const auto shapes = shapes_from_channels({32, 48, 64, 96});
  std::vector<std::vector<at::Tensor>> results;
  for (bool fused : {false, true}) {
    torch::manual_seed(4);
    MSDeformAttnPixelDecoder decoder(MSDeformAttnPixelDecoderOptions(shapes)
                                         .conv_dim(64)
                                         .mask_dim(32)
                                         .transformer_enc_layers(2)
                                         .fused_kernel(fused));
    auto features = random_features(shapes, 2, 96, 64);
    for (auto& [name, x] : features) x.requires_grad_(true);
    const auto out = decoder->forward(features);
    parity_loss(out).backward();
    std::vector<at::Tensor> r = {out.mask_features.detach()};
    for (const auto& [name, x] : features) r.push_back(x.grad());
    for (const auto& p : decoder->parameters()) r.push_back(p.grad());
    results.push_back(r);
  }
  ASSERT_EQ(results[0].size(), results[1].size());
  for (size_t i = 0; i < results[0].size(); ++i) {
    EXPECT_TRUE(combo::testing::tensors_near_rel(results[0][i], results[1][i], 1e-4))
        << "tensor " << i;
  }
}

TEST_F(PixelDecoderTest, HalfInputsAreComputedInFloat32) {
  const auto shapes = shapes_from_channels({32, 48, 64, 96});
  MSDeformAttnPixelDecoder decoder(
      MSDeformAttnPixelDecoderOptions(shapes).conv_dim(64).mask_dim(32).transformer_enc_layers(1));
  decoder->eval();
  torch::NoGradGuard no_grad;
  auto features = random_features(shapes, 1, 64, 64);
  std::map<std::string, at::Tensor> half;
  for (auto& [name, x] : features) {
    half[name] = x.to(torch::kHalf);
    x = half[name].to(torch::kFloat32);  // the same values in float32
  }
  const auto from_half = decoder->forward(half);
  const auto from_float = decoder->forward(features);
  EXPECT_EQ(from_half.mask_features.scalar_type(), torch::kFloat32);
  EXPECT_EQ(from_half.multi_scale_features[0].scalar_type(), torch::kFloat32);
  EXPECT_TENSOR_EQ(from_float.mask_features, from_half.mask_features);
}

TEST_F(PixelDecoderTest, StaysFloat32UnderCpuAutocast) {
  const auto shapes = shapes_from_channels({32, 48, 64, 96});
  MSDeformAttnPixelDecoder decoder(
      MSDeformAttnPixelDecoderOptions(shapes).conv_dim(64).mask_dim(32).transformer_enc_layers(1));
  decoder->eval();
  torch::NoGradGuard no_grad;
  const auto features = random_features(shapes, 1, 64, 64);
  const auto plain = decoder->forward(features);
  auto set_cpu_autocast = [](bool enabled) {
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
    at::autocast::set_autocast_enabled(at::kCPU, enabled);
#else
    at::autocast::set_cpu_enabled(enabled);
#endif
  };
  set_cpu_autocast(true);
  // Outside the decoder autocast is live: a linear layer computes in bfloat16.
  const auto probe = torch::linear(torch::randn({2, 4}), torch::randn({3, 4}));
  const auto under_autocast = decoder->forward(features);
  set_cpu_autocast(false);
  EXPECT_EQ(probe.scalar_type(), torch::kBFloat16);
  EXPECT_EQ(under_autocast.mask_features.scalar_type(), torch::kFloat32);
  EXPECT_TENSOR_EQ(plain.mask_features, under_autocast.mask_features);
}

TEST_F(PixelDecoderTest, OfficialInitialisation) {
  const auto shapes = shapes_from_channels({64, 128, 320, 512});
  MSDeformAttnPixelDecoder decoder{MSDeformAttnPixelDecoderOptions(shapes)};
  const auto params = combo::module_state_dict(*decoder);
  auto bound_check = [&](const std::string& key, double bound) {
    const auto& w = params.at(key);
    EXPECT_LE(w.abs().max().item<double>(), bound) << key;
    EXPECT_GT(w.abs().max().item<double>(), 0.9 * bound) << key;
  };
  // input_proj: xavier-uniform, bias 0, GroupNorm (1, 0). Level 0 is res5.
  bound_check("input_proj.0.0.weight", std::sqrt(6.0 / (512 + 256)));
  bound_check("input_proj.2.0.weight", std::sqrt(6.0 / (128 + 256)));
  EXPECT_EQ(params.at("input_proj.1.0.bias").abs().max().item<double>(), 0.0);
  EXPECT_TRUE(torch::equal(params.at("input_proj.1.1.weight"), torch::ones({256})));
  // Encoder FFN: xavier-uniform weights (every >= 2-d parameter of the transformer).
  bound_check("transformer.encoder.layers.3.linear1.weight", std::sqrt(6.0 / (256 + 1024)));
  bound_check("transformer.encoder.layers.3.self_attn.value_proj.weight",
              std::sqrt(6.0 / (256 + 256)));
  EXPECT_EQ(params.at("transformer.encoder.layers.3.self_attn.sampling_offsets.weight")
                .abs()
                .max()
                .item<double>(),
            0.0);
  // c2_xavier_fill: kaiming-uniform a = 1, bound sqrt(3 / fan_in).
  bound_check("adapter_1.weight", std::sqrt(3.0 / 64));
  bound_check("layer_1.weight", std::sqrt(3.0 / (256 * 9)));
  bound_check("mask_features.weight", std::sqrt(3.0 / 256));
  EXPECT_EQ(params.at("mask_features.bias").abs().max().item<double>(), 0.0);
  // level_embed ~ N(0, 1).
  const auto& level = params.at("transformer.level_embed");
  EXPECT_NEAR(level.std().item<double>(), 1.0, 0.1);
  EXPECT_NEAR(level.mean().item<double>(), 0.0, 0.15);
}

TEST_F(PixelDecoderTest, ReferencePointsArePixelCentres) {
  const auto ref = combo::model::MSDeformAttnEncoderImpl::reference_points({{2, 3}, {1, 2}}, {});
  ASSERT_EQ(ref.sizes(), (std::vector<int64_t>{1, 8, 2, 2}));
  const std::vector<std::pair<double, double>> expected = {
      {0.5 / 3, 0.25}, {1.5 / 3, 0.25}, {2.5 / 3, 0.25}, {0.5 / 3, 0.75},
      {1.5 / 3, 0.75}, {2.5 / 3, 0.75}, {0.25, 0.5},     {0.75, 0.5}};
  auto acc = ref.accessor<float, 4>();
  for (int64_t i = 0; i < 8; ++i) {
    for (int64_t l = 0; l < 2; ++l) {
      EXPECT_NEAR(acc[0][i][l][0], expected[i].first, 1e-7) << "token " << i;
      EXPECT_NEAR(acc[0][i][l][1], expected[i].second, 1e-7) << "token " << i;
    }
  }
}

TEST_F(PixelDecoderTest, MissingOrWrongFeatureMapsAreNamed) {
  const auto shapes = shapes_from_channels({32, 48, 64, 96});
  MSDeformAttnPixelDecoder decoder(
      MSDeformAttnPixelDecoderOptions(shapes).conv_dim(64).mask_dim(32).transformer_enc_layers(1));
  auto features = random_features(shapes, 1, 64, 64);
  auto missing = features;
  missing.erase("res4");
  try {
    decoder->forward(missing);
    FAIL() << "expected an error";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("'res4' is missing"), std::string::npos) << e.what();
  }
  auto wrong = features;
  wrong["res3"] = torch::randn({1, 47, 8, 8});
  try {
    decoder->forward(wrong);
    FAIL() << "expected an error";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("'res3' expected [N, 48, H, W]"), std::string::npos)
        << e.what();
  }
}

}  // namespace
