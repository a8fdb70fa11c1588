#include <gtest/gtest.h>
#include <torch/torch.h>

#include "backbone/official_shapes.h"
#include "backbone_parity.h"
#include "combo/backbone/resnet.h"
#include "combo/core/check.h"
#include "combo/nn/frozen_batch_norm.h"
#include "testing/testing.h"

using combo::backbone::FeatureMap;
using combo::backbone::ResNet;
using combo::backbone::ResNetOptions;
using combo::testing::SeededTest;

namespace {

// Depth from the number of blocks per stage, widths from the stem and res2 weights.
ResNetOptions infer_resnet_options(const combo::TensorDict& sd) {
  std::vector<int64_t> blocks;
  for (int s = 2; s <= 5; ++s) {
    int64_t n = 0;
    while (sd.count("res" + std::to_string(s) + "." + std::to_string(n) + ".conv1.weight")) ++n;
    blocks.push_back(n);
  }
  ResNetOptions o;
  for (int64_t depth : {50, 101, 152}) {
    if (combo::backbone::resnet_blocks_per_stage(depth) == blocks) o.depth(depth);
  }
  EXPECT_EQ(combo::backbone::resnet_blocks_per_stage(o.depth()), blocks) << "no ResNet depth fits";
  const at::Tensor stem = sd.at("stem.conv1.weight");
  return o.in_channels(stem.size(1))
      .stem_out_channels(stem.size(0))
      .res2_out_channels(sd.at("res2.0.conv3.weight").size(0));
}

// A random FrozenBN state: statistics as the fixtures perturb them.
void randomise_norms(torch::nn::Module& m) {
  torch::NoGradGuard no_grad;
  for (auto& b : m.named_buffers()) {
    const std::string& k = b.key();
    at::Tensor t = b.value();
    if (k.size() >= 11 && k.compare(k.size() - 11, 11, "running_var") == 0) {
      t.uniform_(0.5, 2.0);
    } else if (k.size() >= 6 && k.compare(k.size() - 6, 6, "weight") == 0) {
      t.normal_(1.0, 0.1);
    } else {
      t.normal_(0.0, 0.1);
    }
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------
TEST(ResNetParity, OutputsAndInputGradientsMatchDetectron2) {
  COMBO_TEST_DEVICE_OR_SKIP(device);
  COMBO_LOAD_FIXTURE_OR_SKIP(fx, "resnet50_d2.pt");
  const combo::TensorDict sd = fx.state_dict();
  ResNet model(infer_resnet_options(sd));
  model->eval();
  const auto report =
      combo::backbone::load_backbone_state_dict(*model, sd, {true, {}, "resnet50_d2.pt"});
  EXPECT_TRUE(report.clean()) << report.to_string();

  model->to(device);
  // The input gradient's float32 error depends on the convolution backward kernels: on a 77x53
  // input PyTorch 1.13's single-threaded float32 run (as the fixtures were made) is 1.2 % of the
  // scale off float64 in the 0.999 quantile (3 % max), ours 0.1 % (0.2 %) at one or two threads,
  // and issue 20 measured 0.5-1.5 % in both implementations. Our runs cannot measure the
  // official kernels' error, so the floor of grads/x is 2.5 % of its scale; the outputs, where
  // a wrong computation shows first, keep the measured bounds.
  combo::testing::Float32Budget grad_budget;
  grad_budget.floor_fraction = 2.5e-2;
  combo::testing::expect_backbone_parity(*model, fx, grad_budget);
}

TEST(ResNetParity, StateDictNamesShapesAndCountsMatch) {
  COMBO_LOAD_FIXTURE_OR_SKIP(fx, "resnet50_d2.pt");
  ResNet model(infer_resnet_options(fx.state_dict()));
  const combo::TensorDict ours = combo::module_state_dict(*model);
  if (fx.has("state_dict_shapes")) {
    const combo::TensorDict shapes = fx.tensors("state_dict_shapes");
    EXPECT_EQ(ours.size(), shapes.size());
    for (const auto& [k, s] : shapes) {
      ASSERT_TRUE(ours.count(k)) << "missing " << k;
      const at::Tensor s64 = s.to(torch::kInt64).contiguous();
      const std::vector<int64_t> expected(s64.data_ptr<int64_t>(),
                                          s64.data_ptr<int64_t>() + s64.numel());
      EXPECT_EQ(ours.at(k).sizes().vec(), expected) << k;
    }
  }
  if (fx.has("info/num_params")) {
    EXPECT_EQ(combo::count_parameters(*model), fx.integer("info/num_params"));
  }
  if (fx.has("info/num_state_dict_entries")) {
    EXPECT_EQ(static_cast<int64_t>(ours.size()), fx.integer("info/num_state_dict_entries"));
  }
}

// ---------------------------------------------------------------------------------------------
class ResNetTest : public SeededTest {};

TEST_F(ResNetTest, SyntheticDetectron2StateDictLoadsStrictly) {
  const auto shapes = combo::testing::official_resnet50_shapes();
  int64_t conv_params = 0;
  for (const auto& [k, s] : shapes) {
    if (!combo::testing::is_frozen_bn_buffer(k)) conv_params += combo::testing::numel_of(s);
  }
  // COMBO_SPEC 15(c): ResNet-50 convolutions, FrozenBN buffers excluded; 53 convs x 5 entries.
  EXPECT_EQ(conv_params, 23454912);
  EXPECT_EQ(shapes.size(), 265u);

  ResNet model;
  EXPECT_EQ(combo::count_parameters(*model), conv_params);
  EXPECT_EQ(model->parameters().size(), 53u);
  auto sd = combo::testing::random_state_dict(shapes);
  const auto report = combo::backbone::load_backbone_state_dict(*model, sd);
  EXPECT_TRUE(report.clean()) << report.to_string();
  EXPECT_EQ(report.loaded, 265);
  EXPECT_TENSOR_EQ(sd.at("res4.5.conv2.weight"), model->named_parameters()["res4.5.conv2.weight"]);
  EXPECT_TENSOR_EQ(sd.at("res3.0.shortcut.norm.running_var"),
                   model->named_buffers()["res3.0.shortcut.norm.running_var"]);
}

TEST_F(ResNetTest, ClassifierAndBatchNormCountersAreIgnoredOnLoad) {
  ResNet source;
  combo::TensorDict sd = combo::module_state_dict(*source);
  sd["stem.fc.weight"] = torch::randn({1000, 2048});
  sd["stem.fc.bias"] = torch::randn({1000});
  sd["res2.0.conv1.norm.num_batches_tracked"] = torch::tensor(int64_t{5});
  ResNet target;
  EXPECT_THROW(combo::load_state_dict_into(*target, sd), combo::Error);
  const auto report = combo::backbone::load_backbone_state_dict(*target, sd);
  EXPECT_TRUE(report.clean()) << report.to_string();
  sd["res2.0.conv4.weight"] = torch::zeros({1});
  EXPECT_THROW(combo::backbone::load_backbone_state_dict(*target, sd), combo::Error);
}

TEST_F(ResNetTest, OutputShapesForSquareAndNonSquareInputs) {
  ResNet model;
  model->eval();
  torch::NoGradGuard no_grad;
  const auto shapes = model->output_shapes();
  const std::vector<int64_t> channels = {256, 512, 1024, 2048};
  for (const auto& hw :
       std::vector<std::pair<int64_t, int64_t>>{{224, 224}, {128, 96}, {100, 70}}) {
    SCOPED_TRACE(std::to_string(hw.first) + "x" + std::to_string(hw.second));
    const FeatureMap out = model->forward(torch::randn({1, 3, hw.first, hw.second}));
    ASSERT_EQ(out.size(), 4u);
    // conv 7x7/2 p3 then max-pool 3x3/2 p1, then a 3x3/2 p1 conv per later stage.
    auto down = [](int64_t v) { return (v + 2 - 3) / 2 + 1; };
    int64_t h = down(down(hw.first));
    int64_t w = down(down(hw.second));
    int i = 0;
    for (const std::string name : {"res2", "res3", "res4", "res5"}) {
      const at::Tensor& t = out.at(name);
      EXPECT_EQ(shapes.at(name).channels, channels[i]);
      EXPECT_EQ(shapes.at(name).stride, int64_t{4} << i);
      EXPECT_EQ(t.sizes(), (std::vector<int64_t>{1, shapes.at(name).channels, h, w})) << name;
      EXPECT_TRUE(t.is_contiguous()) << name;
      if (hw.first % 32 == 0 && hw.second % 32 == 0) {
        EXPECT_EQ(h * shapes.at(name).stride, hw.first);
        EXPECT_EQ(w * shapes.at(name).stride, hw.second);
      }
      h = down(h);
      w = down(w);
      ++i;
    }
  }
}

TEST_F(ResNetTest, MatchesUnfoldedReferenceComputation) {
  // Independent reference: plain conv, explicit FrozenBN formula, ReLU, as detectron2 writes it.
  ResNet model;
  randomise_norms(*model);
  model->eval();
  torch::NoGradGuard no_grad;
  auto params = model->named_parameters();
  auto buffers = model->named_buffers();
  auto conv_bn = [&](const at::Tensor& x, const std::string& name, int64_t stride, int64_t pad) {
    at::Tensor y = torch::conv2d(x, params[name + ".weight"], {}, stride, pad);
    const auto c = [&](const char* b) { return buffers[name + ".norm." + b].view({1, -1, 1, 1}); };
    return (y - c("running_mean")) / torch::sqrt(c("running_var") + 1e-5) * c("weight") + c("bias");
  };
  const at::Tensor x = torch::randn({2, 3, 64, 96});
  at::Tensor y = torch::max_pool2d(torch::relu(conv_bn(x, "stem.conv1", 2, 3)), 3, 2, 1);
  const FeatureMap out = model->forward(x);
  const std::vector<int64_t> blocks = {3, 4, 6, 3};
  for (int s = 0; s < 4; ++s) {
    for (int64_t b = 0; b < blocks[s]; ++b) {
      const std::string p = "res" + std::to_string(s + 2) + "." + std::to_string(b) + ".";
      const int64_t stride = (b == 0 && s > 0) ? 2 : 1;
      at::Tensor r = torch::relu(conv_bn(y, p + "conv1", 1, 0));
      r = torch::relu(conv_bn(r, p + "conv2", stride, 1));
      r = conv_bn(r, p + "conv3", 1, 0);
      const at::Tensor sc = b == 0 ? conv_bn(y, p + "shortcut", stride, 0) : y;
      y = torch::relu(r + sc);
    }
    EXPECT_TENSOR_NEAR_REL(y, out.at("res" + std::to_string(s + 2)), 1e-5);
  }
}

TEST_F(ResNetTest, GradientsReachEveryConvolutionAndNormsStayFrozen) {
  ResNet model;
  randomise_norms(*model);
  model->train();
  const combo::TensorDict before = combo::module_state_dict(*model);
  std::map<std::string, at::Tensor> buffers_before;
  for (const auto& b : model->named_buffers()) buffers_before[b.key()] = b.value().clone();
  combo::testing::feature_loss(model->forward(torch::randn({2, 3, 64, 64}))).backward();
  for (const auto& p : model->named_parameters()) {
    ASSERT_TRUE(p.value().grad().defined()) << p.key();
    EXPECT_GT(p.value().grad().abs().sum().item<double>(), 0.0) << p.key();
  }
  for (const auto& b : model->named_buffers()) {
    EXPECT_FALSE(b.value().requires_grad()) << b.key();
    EXPECT_TENSOR_EQ(buffers_before.at(b.key()), b.value());
  }
}

TEST_F(ResNetTest, TrainAndEvalComputeTheSame) {
  ResNet model;
  randomise_norms(*model);
  torch::NoGradGuard no_grad;
  const at::Tensor x = torch::randn({1, 3, 64, 64});
  model->train();
  const FeatureMap t = model->forward(x);
  model->eval();
  const FeatureMap e = model->forward(x);
  for (const auto& [name, v] : t) EXPECT_TENSOR_EQ(v, e.at(name));
}

TEST_F(ResNetTest, FrozenBatchNormIsTheFixedAffineMap) {
  combo::nn::FrozenBatchNorm2d bn(6);
  const at::Tensor x = torch::randn({2, 6, 5, 4});
  EXPECT_TENSOR_NEAR_ABS(x, bn->forward(x), 1e-6);  // defaults: identity
  EXPECT_EQ(bn->parameters().size(), 0u);
  EXPECT_EQ(bn->named_buffers().size(), 4u);
  randomise_norms(*bn);
  const auto v = [&](const at::Tensor& t) { return t.view({1, -1, 1, 1}); };
  const at::Tensor ref =
      (x - v(bn->running_mean)) / torch::sqrt(v(bn->running_var) + 1e-5) * v(bn->weight) +
      v(bn->bias);
  EXPECT_TENSOR_NEAR_ABS(ref, bn->forward(x), 1e-5);
  const at::Tensor cl = x.contiguous(at::MemoryFormat::ChannelsLast);
  EXPECT_TENSOR_NEAR_ABS(ref, bn->forward(cl), 1e-5);
  EXPECT_THROW(bn->forward(torch::randn({2, 5, 3, 3})), combo::Error);
}

TEST_F(ResNetTest, RejectsUnsupportedDepthAndBadInputs) {
  EXPECT_THROW(ResNet(ResNetOptions().depth(34)), combo::Error);
  ResNet model;
  EXPECT_THROW(model->forward(torch::randn({1, 4, 64, 64})), combo::Error);
  EXPECT_EQ(ResNet(ResNetOptions().depth(101))->named_parameters().size(), 104u);
}
