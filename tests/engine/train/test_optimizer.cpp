#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <map>

#include "combo/core/check.h"
#include "combo/engine/config.h"
#include "combo/engine/lr_schedule.h"
#include "combo/engine/optimizer.h"
#include "testing/testing.h"
#include "train_helpers.h"

using namespace combo::engine;

namespace {

bool starts_with(const std::string& s, const std::string& p) { return s.rfind(p, 0) == 0; }
bool ends_with(const std::string& s, const std::string& p) {
  return s.size() >= p.size() && s.compare(s.size() - p.size(), p.size(), p) == 0;
}

}  // namespace

class OptimizerTest : public combo::testing::SeededTest {};

TEST_F(OptimizerTest, ParamGroupsOfTheComboModelFollowTheSpec) {
  auto model = combo::train_test::tiny_model();
  OptimizerOptions o;  // base 1e-4, x0.1 backbone, wd 0.05, norm/embed 0
  auto groups = make_param_groups(*model, o);
  std::map<std::string, ParamDescription> by_name;
  for (const auto& d : describe_param_groups(groups)) by_name[d.name] = d;

  // Every trainable parameter is in exactly one group; VGGish (frozen) in none.
  int64_t trainable = 0;
  for (const auto& p : model->named_parameters()) {
    if (starts_with(p.key(), "audio_backbone.")) {
      EXPECT_FALSE(p.value().requires_grad()) << p.key();
      EXPECT_EQ(by_name.count(p.key()), 0u) << p.key();
      continue;
    }
    ++trainable;
    ASSERT_EQ(by_name.count(p.key()), 1u) << p.key();
  }
  EXPECT_EQ(static_cast<int64_t>(by_name.size()), trainable);

  auto expect = [&](const std::string& name, double lr, double wd) {
    ASSERT_EQ(by_name.count(name), 1u) << name;
    EXPECT_DOUBLE_EQ(by_name[name].lr, lr) << name;
    EXPECT_DOUBLE_EQ(by_name[name].weight_decay, wd) << name;
  };
  for (const auto& [name, d] : by_name) {
    const bool backbone = starts_with(name, "backbone.") || starts_with(name, "pre_sam_backbone.");
    EXPECT_DOUBLE_EQ(d.lr, backbone ? 1e-5 : 1e-4) << name;
  }
  // Norm weights and biases, embeddings: wd 0. Conv/linear biases and plain parameters: 0.05.
  expect("backbone.patch_embed1.norm.weight", 1e-5, 0.0);
  expect("backbone.patch_embed1.norm.bias", 1e-5, 0.0);
  expect("backbone.patch_embed1.proj.weight", 1e-5, 0.05);
  expect("backbone.patch_embed1.proj.bias", 1e-5, 0.05);
  expect("pre_sam_backbone.patch_embed1.proj.weight", 1e-5, 0.05);
  expect("pre_sam_backbone.block1.0.norm1.weight", 1e-5, 0.0);
  expect("sem_seg_head.predictor.query_feat.weight", 1e-4, 0.0);
  expect("sem_seg_head.predictor.query_embed.weight", 1e-4, 0.0);
  expect("sem_seg_head.predictor.level_embed.weight", 1e-4, 0.0);
  expect("sem_seg_head.predictor.decoder_norm.weight", 1e-4, 0.0);
  expect("sem_seg_head.predictor.class_embed.weight", 1e-4, 0.05);
  expect("sem_seg_head.predictor.class_embed.bias", 1e-4, 0.05);
  expect("sem_seg_head.pixel_decoder.transformer.level_embed", 1e-4, 0.05);  // plain parameter
  // GroupNorm inside the pixel decoder's convs.
  int64_t group_norms = 0;
  for (const auto& [name, d] : by_name) {
    if (name.find("pixel_decoder") != std::string::npos &&
        (ends_with(name, ".norm.weight") || ends_with(name, ".norm.bias"))) {
      EXPECT_EQ(d.weight_decay, 0.0) << name;
      ++group_norms;
    }
  }
  EXPECT_GT(group_norms, 0);
  // The BFM layer-scale gammas are plain parameters: decayed.
  int64_t gammas = 0;
  for (const auto& [name, d] : by_name)
    if (name.find("fusion_module") != std::string::npos &&
        name.find("gamma") != std::string::npos) {
      EXPECT_EQ(d.weight_decay, 0.05) << name;
      ++gammas;
    }
  EXPECT_GT(gammas, 0);
  // Four combinations, one group each: (1e-5, 0.05) (1e-5, 0) (1e-4, 0.05) (1e-4, 0).
  EXPECT_EQ(groups.size(), 4u);
  auto opt = build_optimizer(*model, o);
  ASSERT_EQ(opt.adamw->param_groups().size(), groups.size());
  for (size_t g = 0; g < groups.size(); ++g) {
    const auto& go =
        static_cast<const torch::optim::AdamWOptions&>(opt.adamw->param_groups()[g].options());
    EXPECT_DOUBLE_EQ(go.lr(), groups[g].lr);
    EXPECT_DOUBLE_EQ(go.weight_decay(), groups[g].weight_decay);
    EXPECT_DOUBLE_EQ(std::get<0>(go.betas()), 0.9);
    EXPECT_DOUBLE_EQ(std::get<1>(go.betas()), 0.999);
    EXPECT_DOUBLE_EQ(go.eps(), 1e-8);
    EXPECT_EQ(opt.adamw->param_groups()[g].params().size(), groups[g].params.size());
  }
  EXPECT_NE(param_groups_summary(groups).find("group 3"), std::string::npos);
}

TEST_F(OptimizerTest, UnfrozenVggishFollowsTheOfficialSubstringRule) {
  auto model =
      combo::model::ComboModel(combo::train_test::tiny_model_options().freeze_audio(false));
  auto groups = make_param_groups(*model, OptimizerOptions{});
  bool found = false;
  for (const auto& d : describe_param_groups(groups))
    if (starts_with(d.name, "audio_backbone.")) {
      found = true;
      EXPECT_DOUBLE_EQ(d.lr, 1e-5) << d.name;  // "audio_backbone" contains "backbone"
    }
  EXPECT_TRUE(found);
}

TEST_F(OptimizerTest, SharedParametersAppearOnceAndFrozenOnesNever) {
  torch::nn::Sequential seq(torch::nn::Linear(3, 3),
                            torch::nn::LayerNorm(torch::nn::LayerNormOptions({3})));
  auto lin = seq->ptr<torch::nn::LinearImpl>(0);
  lin->bias.set_requires_grad(false);
  auto groups = make_param_groups(*seq, OptimizerOptions{});
  auto d = describe_param_groups(groups);
  ASSERT_EQ(d.size(), 3u);
  EXPECT_EQ(d[0].name, "0.weight");
  EXPECT_EQ(d[1].name, "1.weight");
  EXPECT_DOUBLE_EQ(d[1].weight_decay, 0.0);
  EXPECT_DOUBLE_EQ(d[0].weight_decay, 0.05);
  for (auto& p : seq->parameters()) p.set_requires_grad(false);
  EXPECT_THROW(build_optimizer(*seq, OptimizerOptions{}), combo::Error);
}

TEST_F(OptimizerTest, OptionsFromConfig) {
  Config c;
  c.solver.base_lr = 2e-4;
  c.solver.betas = {0.8, 0.99};
  auto o = optimizer_options_from_config(c);
  EXPECT_DOUBLE_EQ(o.base_lr, 2e-4);
  EXPECT_DOUBLE_EQ(o.beta1, 0.8);
  EXPECT_DOUBLE_EQ(o.beta2, 0.99);
  EXPECT_DOUBLE_EQ(o.backbone_multiplier, 0.1);
  c.solver.betas = {0.9};
  EXPECT_THROW(optimizer_options_from_config(c), combo::Error);
  c.solver.betas = {0.9, 0.999};
  c.solver.optimizer = "sgd";
  try {
    optimizer_options_from_config(c);
    FAIL() << "expected an error";
  } catch (const combo::Error& e) {
    EXPECT_NE(std::string(e.what()).find("solver.optimizer"), std::string::npos);
  }
  c.solver.clip_gradients.type = "bogus";
  try {
    grad_clip_options_from_config(c);
    FAIL() << "expected an error";
  } catch (const combo::Error& e) {
    EXPECT_NE(std::string(e.what()).find("solver.clip_gradients.type"), std::string::npos);
  }
}

// ---------------------------------------------------------------------------------------------
TEST(LrScheduleTest, PolyWithoutWarmupIsTheCOMBORecipe) {
  LrScheduleOptions o;
  o.max_iter = 90000;
  LrSchedule s(o);
  EXPECT_DOUBLE_EQ(s.factor(0), 1.0);
  EXPECT_DOUBLE_EQ(s.factor(45000), std::pow(0.5, 0.9));
  EXPECT_NEAR(s.factor(89999), std::pow(1.0 / 90000, 0.9), 1e-15);
  EXPECT_DOUBLE_EQ(s.factor(90000), 0.0);
  for (int64_t t = 1; t < 90000; t += 997) EXPECT_LT(s.factor(t), s.factor(t - 1));
}

TEST(LrScheduleTest, LinearWarmupThenPolyAndConstant) {
  LrScheduleOptions o;
  o.max_iter = 100;
  o.warmup_iters = 10;
  o.warmup_factor = 0.1;
  LrSchedule s(o);
  EXPECT_DOUBLE_EQ(s.factor(0), 0.1);
  EXPECT_DOUBLE_EQ(s.factor(5), (0.1 * 0.5 + 0.5) * std::pow(0.95, 0.9));
  EXPECT_DOUBLE_EQ(s.factor(10), std::pow(0.9, 0.9));
  o.name = "constant";
  LrSchedule c(o);
  EXPECT_DOUBLE_EQ(c.factor(0), 0.1);
  EXPECT_DOUBLE_EQ(c.factor(5), 0.55);
  EXPECT_DOUBLE_EQ(c.factor(50), 1.0);
  o.name = "poly";
  o.warmup_iters = 0;
  o.constant_ending = 0.5;
  LrSchedule e(o);
  EXPECT_DOUBLE_EQ(e.factor(10), std::pow(0.9, 0.9));
  EXPECT_DOUBLE_EQ(e.factor(90), 0.5);
  o.name = "cosine";
  EXPECT_THROW(LrSchedule{o}, combo::Error);
}

TEST(LrScheduleTest, AppliesPerGroupBaseLr) {
  torch::nn::Sequential seq(torch::nn::Linear(2, 2),
                            torch::nn::LayerNorm(torch::nn::LayerNormOptions({2})));
  auto opt = build_optimizer(*seq, OptimizerOptions{});
  ASSERT_EQ(opt.groups.size(), 2u);
  opt.groups[1].lr = 3e-4;  // pretend a second lr
  LrScheduleOptions o;
  o.max_iter = 10;
  LrSchedule s(o);
  s.apply(*opt.adamw, opt.base_lrs(), 5);
  EXPECT_DOUBLE_EQ(opt.lr(0), 1e-4 * std::pow(0.5, 0.9));
  EXPECT_DOUBLE_EQ(opt.lr(1), 3e-4 * std::pow(0.5, 0.9));
  EXPECT_THROW(s.apply(*opt.adamw, {1e-4}, 5), combo::Error);
  Config c;
  c.solver.lr_scheduler = "step";
  EXPECT_THROW(lr_schedule_options_from_config(c), combo::Error);
}

// ---------------------------------------------------------------------------------------------
TEST(GradClipTest, FullModelClipsTheJointNorm) {
  auto a = torch::zeros({2}, torch::requires_grad());
  auto b = torch::zeros({1}, torch::requires_grad());
  a.mutable_grad() = torch::tensor({3.0f, 0.0f});
  b.mutable_grad() = torch::tensor({4.0f});
  GradClipOptions o;
  o.value = 0.01;
  const double norm = clip_gradients({a, b}, o);
  EXPECT_NEAR(norm, 5.0, 1e-6);
  const double coef = 0.01 / (5.0 + 1e-6);
  EXPECT_NEAR(a.grad()[0].item<double>(), 3.0 * coef, 1e-8);
  EXPECT_NEAR(b.grad()[0].item<double>(), 4.0 * coef, 1e-8);
  // A joint norm below max_norm leaves the gradients alone.
  o.value = 100.0;
  clip_gradients({a, b}, o);
  EXPECT_NEAR(b.grad()[0].item<double>(), 4.0 * coef, 1e-8);
}

TEST(GradClipTest, NormClipsEachParameterAndValueClamps) {
  auto a = torch::zeros({2}, torch::requires_grad());
  auto b = torch::zeros({1}, torch::requires_grad());
  auto c = torch::zeros({1}, torch::requires_grad());  // no gradient: ignored
  a.mutable_grad() = torch::tensor({3.0f, 4.0f});
  b.mutable_grad() = torch::tensor({0.5f});
  GradClipOptions o;
  o.type = "norm";
  o.value = 1.0;
  EXPECT_NEAR(clip_gradients({a, b, c}, o), 5.0, 1e-6);
  EXPECT_NEAR(a.grad().norm().item<double>(), 1.0, 1e-5);
  EXPECT_NEAR(b.grad()[0].item<double>(), 0.5, 1e-7);  // below its own max
  EXPECT_FALSE(c.grad().defined());
  o.type = "value";
  o.value = 0.3;
  a.mutable_grad() = torch::tensor({-3.0f, 0.1f});
  EXPECT_NEAR(clip_gradients({a}, o), 3.0, 1e-6);
  EXPECT_TRUE(torch::equal(a.grad(), torch::tensor({-0.3f, 0.1f})));
  o.enabled = false;
  EXPECT_EQ(clip_gradients({a}, o), -1.0);
}
