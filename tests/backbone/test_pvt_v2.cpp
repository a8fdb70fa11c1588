#include <gtest/gtest.h>
#include <torch/torch.h>

#include <regex>
#include <set>

#include "backbone/official_shapes.h"
#include "backbone_parity.h"
#include "combo/backbone/pvt_v2.h"
#include "combo/core/check.h"
#include "testing/testing.h"

using combo::backbone::FeatureMap;
using combo::backbone::PvtV2;
using combo::backbone::PvtV2Options;
using combo::testing::SeededTest;

namespace {

// Official conv arithmetic: out = floor((in + 2 * pad - k) / stride) + 1.
int64_t conv_out(int64_t in, int64_t k, int64_t stride) {
  return (in + 2 * (k / 2) - k) / stride + 1;
}

// Every hyper-parameter that shows in the weights: widths, depths, MLP widths, reduction
// ratios, qkv bias, input channels. The head count leaves no trace in the weights; it is read
// from the fixture when stored, else the value of every official variant is used.
PvtV2Options infer_pvt_options(const combo::TensorDict& sd, const combo::testing::Fixture& fx) {
  PvtV2Options o;
  std::vector<int64_t> dims, depths, srs;
  std::vector<double> ratios;
  for (int i = 1; sd.count("patch_embed" + std::to_string(i) + ".proj.weight"); ++i) {
    const std::string id = std::to_string(i);
    const at::Tensor proj = sd.at("patch_embed" + id + ".proj.weight");
    EXPECT_EQ(proj.size(2), i == 1 ? 7 : 3) << "official patch sizes are 7 then 3";
    dims.push_back(proj.size(0));
    if (i == 1) o.in_chans(proj.size(1));
    int64_t depth = 0;
    while (sd.count("block" + id + "." + std::to_string(depth) + ".norm1.weight")) ++depth;
    depths.push_back(depth);
    const std::string b0 = "block" + id + ".0.";
    ratios.push_back(static_cast<double>(sd.at(b0 + "mlp.fc1.weight").size(0)) /
                     static_cast<double>(proj.size(0)));
    srs.push_back(sd.count(b0 + "attn.sr.weight") ? sd.at(b0 + "attn.sr.weight").size(3) : 1);
  }
  o.embed_dims(dims).depths(depths).mlp_ratios(ratios).sr_ratios(srs);
  o.qkv_bias(sd.count("block1.0.attn.q.bias") > 0);
  if (fx.has("info/num_heads")) {
    const at::Tensor h = fx.tensor("info/num_heads").to(torch::kInt64).contiguous();
    o.num_heads(std::vector<int64_t>(h.data_ptr<int64_t>(), h.data_ptr<int64_t>() + h.numel()));
  } else {
    o.num_heads({1, 2, 5, 8});
  }
  return o;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
TEST(PvtV2Parity, OutputsAndInputGradientsMatchOfficial) {
  COMBO_TEST_DEVICE_OR_SKIP(device);
  COMBO_LOAD_FIXTURE_OR_SKIP(fx, "pvt_v2_b0.pt");
  const combo::TensorDict sd = fx.state_dict();
  PvtV2 model(infer_pvt_options(sd, fx));
  model->eval();
  auto report = combo::backbone::load_backbone_state_dict(*model, sd, {true, {}, "pvt_v2_b0.pt"});
  EXPECT_TRUE(report.clean()) << report.to_string();
  EXPECT_EQ(report.loaded, static_cast<int64_t>(sd.size()));

  model->to(device);
  combo::testing::expect_backbone_parity(*model, fx);
}

TEST(PvtV2Parity, ParameterCountsMatchOfficialBuilders) {
  COMBO_LOAD_FIXTURE_OR_SKIP(fx, "pvt_v2_b0.pt");
  const combo::TensorDict sd = fx.state_dict();
  int64_t stored = 0;
  for (const auto& [k, t] : sd) stored += t.numel();
  EXPECT_EQ(combo::count_parameters(*PvtV2(infer_pvt_options(sd, fx))), stored);
  if (fx.has("info/b0_num_params")) {
    EXPECT_EQ(combo::count_parameters(*PvtV2(PvtV2Options::variant("b0"))),
              fx.integer("info/b0_num_params"));
  }
  if (fx.has("info/b5_num_params")) {
    PvtV2 b5(PvtV2Options::variant("b5"));
    EXPECT_EQ(combo::count_parameters(*b5), fx.integer("info/b5_num_params"));
    EXPECT_EQ(static_cast<int64_t>(combo::module_state_dict(*b5).size()),
              fx.integer("info/b5_num_state_dict_entries"));
  }
}

// ---------------------------------------------------------------------------------------------
class PvtV2Test : public SeededTest {};

TEST_F(PvtV2Test, SyntheticOfficialStateDictsLoadStrictly) {
  // COMBO_SPEC 15(c) and the official b0 count.
  const std::vector<std::tuple<std::string, combo::testing::PvtSpec, int64_t, size_t>> cases = {
      {"b0", combo::testing::official_pvt_v2_b0(), 3409760, 176},
      {"b5", combo::testing::official_pvt_v2_b5(), 81443008, 1052}};
  for (const auto& [name, spec, params, entries] : cases) {
    SCOPED_TRACE(name);
    const auto shapes = combo::testing::official_pvt_v2_shapes(spec);
    int64_t total = 0;
    for (const auto& [k, s] : shapes) total += combo::testing::numel_of(s);
    EXPECT_EQ(total, params);
    EXPECT_EQ(shapes.size(), entries);

    PvtV2 model(PvtV2Options::variant(name));
    EXPECT_EQ(combo::count_parameters(*model), params);
    const auto sd = combo::testing::random_state_dict(shapes);
    const auto report = combo::backbone::load_backbone_state_dict(*model, sd);
    EXPECT_TRUE(report.clean()) << report.to_string();
    EXPECT_EQ(report.loaded, static_cast<int64_t>(entries));
    const auto params_by_name = model->named_parameters();
    EXPECT_TENSOR_EQ(sd.at("block1.0.attn.sr.weight"), params_by_name["block1.0.attn.sr.weight"]);
    EXPECT_TENSOR_EQ(sd.at("norm4.bias"), params_by_name["norm4.bias"]);
  }
}

TEST_F(PvtV2Test, VariantsHaveTheOfficialHyperParameters) {
  const std::vector<int64_t> wide = {64, 128, 320, 512};
  const std::map<std::string, std::pair<std::vector<int64_t>, std::vector<double>>> table = {
      {"b0", {{2, 2, 2, 2}, {8, 8, 4, 4}}},  {"b1", {{2, 2, 2, 2}, {8, 8, 4, 4}}},
      {"b2", {{3, 4, 6, 3}, {8, 8, 4, 4}}},  {"b3", {{3, 4, 18, 3}, {8, 8, 4, 4}}},
      {"b4", {{3, 8, 27, 3}, {8, 8, 4, 4}}}, {"b5", {{3, 6, 40, 3}, {4, 4, 4, 4}}}};
  for (const auto& [name, dm] : table) {
    const auto o = PvtV2Options::variant("pvt_v2_" + name);
    EXPECT_EQ(o.depths(), dm.first) << name;
    EXPECT_EQ(o.mlp_ratios(), dm.second) << name;
    EXPECT_EQ(o.embed_dims(), (name == "b0" ? std::vector<int64_t>{32, 64, 160, 256} : wide));
    EXPECT_EQ(o.num_heads(), (std::vector<int64_t>{1, 2, 5, 8}));
    EXPECT_EQ(o.sr_ratios(), (std::vector<int64_t>{8, 4, 2, 1}));
  }
  EXPECT_THROW(PvtV2Options::variant("b6"), combo::Error);
}

TEST_F(PvtV2Test, OutputShapesForSquareNonSquareAndOddInputs) {
  PvtV2 model(PvtV2Options::variant("b0"));
  model->eval();
  torch::NoGradGuard no_grad;
  const auto shapes = model->output_shapes();
  for (const auto& hw :
       std::vector<std::pair<int64_t, int64_t>>{{224, 224}, {96, 160}, {100, 130}}) {
    SCOPED_TRACE(std::to_string(hw.first) + "x" + std::to_string(hw.second));
    const FeatureMap out = model->forward(torch::randn({2, 3, hw.first, hw.second}));
    ASSERT_EQ(out.size(), shapes.size());
    int64_t h = conv_out(hw.first, 7, 4);
    int64_t w = conv_out(hw.second, 7, 4);
    for (const std::string name : {"res2", "res3", "res4", "res5"}) {
      ASSERT_TRUE(out.count(name) && shapes.count(name)) << name;
      const at::Tensor& t = out.at(name);
      EXPECT_EQ(t.sizes(), (std::vector<int64_t>{2, shapes.at(name).channels, h, w})) << name;
      EXPECT_TRUE(t.is_contiguous()) << name;
      if (hw.first % 32 == 0 && hw.second % 32 == 0) {
        EXPECT_EQ(h * shapes.at(name).stride, hw.first) << name;
        EXPECT_EQ(w * shapes.at(name).stride, hw.second) << name;
      }
      h = conv_out(h, 3, 2);
      w = conv_out(w, 3, 2);
    }
  }
  EXPECT_EQ(shapes.at("res2").channels, 32);
  EXPECT_EQ(shapes.at("res5").channels, 256);
  EXPECT_EQ(shapes.at("res2").stride, 4);
  EXPECT_EQ(shapes.at("res5").stride, 32);
}

TEST_F(PvtV2Test, BatchElementsAreIndependent) {
  PvtV2 model(PvtV2Options::variant("b0"));
  model->eval();
  torch::NoGradGuard no_grad;
  const at::Tensor x = torch::randn({3, 3, 64, 96});
  const FeatureMap all = model->forward(x);
  const FeatureMap one = model->forward(x.narrow(0, 1, 1));
  for (const auto& [name, t] : one) EXPECT_TENSOR_NEAR_ABS(all.at(name).narrow(0, 1, 1), t, 1e-5);
}

TEST_F(PvtV2Test, InferenceModeMatchesGradMode) {
  // The no-grad path works in place; it must compute the same numbers.
  PvtV2 model(PvtV2Options::variant("b0"));
  model->eval();
  const at::Tensor x = torch::randn({2, 3, 64, 64});
  const FeatureMap with_grad = model->forward(x.clone().requires_grad_(true));
  FeatureMap inference;
  {
    c10::InferenceMode guard;
    inference = model->forward(x);
  }
  for (const auto& [name, t] : with_grad) EXPECT_TENSOR_NEAR_ABS(t, inference.at(name), 1e-6);
}

namespace {
// A recomputing autograd function against autograd through the unfused ops: its node is the
// output's grad_fn, and after backward(grad_out) the output and every input's gradient are
// bit-identical to the reference's.
void expect_recomputing_function_matches(const at::Tensor& fused_out, const std::string& node,
                                         const at::Tensor& grad_out,
                                         const std::vector<at::Tensor>& fused,
                                         const at::Tensor& ref_out,
                                         const std::vector<at::Tensor>& ref) {
  ASSERT_NE(fused_out.grad_fn(), nullptr);
  EXPECT_NE(fused_out.grad_fn()->name().find(node), std::string::npos)
      << fused_out.grad_fn()->name();
  fused_out.backward(grad_out);
  EXPECT_TRUE(torch::equal(fused_out, ref_out));
  for (size_t i = 0; i < ref.size(); ++i) {
    ASSERT_TRUE(fused[i].grad().defined()) << "input " << i;
    EXPECT_TRUE(torch::equal(fused[i].grad(), ref[i].grad())) << "gradient of input " << i;
  }
}
}  // namespace

TEST_F(PvtV2Test, FusedMlpTailIsBitIdenticalToTheUnfusedOps) {
  // dwconv_gelu_linear keeps only its input for backward and recomputes the convolution and
  // the GELU; outputs and every gradient must equal autograd's through the separate ops.
  const int64_t b = 2, h = 7, w = 5, c = 24, out = 10;
  const at::Tensor hidden = torch::randn({b, h * w, c});
  const at::Tensor dw_weight = torch::randn({c, 1, 3, 3}) * 0.3;
  const at::Tensor dw_bias = torch::randn({c}) * 0.1;
  const at::Tensor fc_weight = torch::randn({out, c}) * 0.2;
  const at::Tensor fc_bias = torch::randn({out}) * 0.1;
  const at::Tensor grad_out = torch::randn({b, h * w, out});
  auto leaves = [&] {
    return std::vector<at::Tensor>{
        hidden.clone().requires_grad_(true), dw_weight.clone().requires_grad_(true),
        dw_bias.clone().requires_grad_(true), fc_weight.clone().requires_grad_(true),
        fc_bias.clone().requires_grad_(true)};
  };
  // The unfused ops, as PvtMlp ran them: channels-last view, conv, GELU, addmm on tokens.
  auto ref = leaves();
  const at::Tensor image = ref[0].reshape({b, h, w, c}).permute({0, 3, 1, 2});
  const at::Tensor conv = at::conv2d(image, ref[1], ref[2], 1, 1, 1, c).flatten(2).transpose(1, 2);
  const at::Tensor ref_out =
      at::addmm(ref[4], at::gelu(conv).view({-1, c}), ref[3].t()).view({b, h * w, out});
  ref_out.backward(grad_out);

  auto fused = leaves();
  const at::Tensor fused_out =
      combo::backbone::dwconv_gelu_linear(fused[0], h, w, fused[1], fused[2], fused[3], fused[4]);
  expect_recomputing_function_matches(fused_out, "DwconvGeluLinear", grad_out, fused, ref_out, ref);
  // Without autograd the same numbers come from the in-place path.
  c10::InferenceMode guard;
  EXPECT_TRUE(torch::equal(
      combo::backbone::dwconv_gelu_linear(hidden, h, w, dw_weight, dw_bias, fc_weight, fc_bias),
      ref_out.detach()));
}

TEST_F(PvtV2Test, FusedLayerNormLinearIsBitIdenticalToTheUnfusedOps) {
  // layer_norm_linear normalises again in backward instead of keeping the normalised tokens;
  // outputs and every gradient must equal autograd's through LayerNorm + Linear.
  const int64_t b = 2, l = 35, c = 24, out = 40;
  const double eps = 1e-6;
  const at::Tensor x = torch::randn({b, l, c}) * 3 + 1;
  const at::Tensor ln_weight = torch::randn({c});
  const at::Tensor ln_bias = torch::randn({c});
  const at::Tensor fc_weight = torch::randn({out, c}) * 0.2;
  const at::Tensor fc_bias = torch::randn({out}) * 0.1;
  const at::Tensor grad_out = torch::randn({b, l, out});
  auto leaves = [&] {
    return std::vector<at::Tensor>{
        x.clone().requires_grad_(true), ln_weight.clone().requires_grad_(true),
        ln_bias.clone().requires_grad_(true), fc_weight.clone().requires_grad_(true),
        fc_bias.clone().requires_grad_(true)};
  };
  auto ref = leaves();
  const at::Tensor normed = torch::nn::functional::layer_norm(
      ref[0],
      torch::nn::functional::LayerNormFuncOptions({c}).weight(ref[1]).bias(ref[2]).eps(eps));
  const at::Tensor ref_out = at::addmm(ref[4], normed.view({-1, c}), ref[3].t()).view({b, l, out});
  ref_out.backward(grad_out);

  auto fused = leaves();
  const at::Tensor fused_out =
      combo::backbone::layer_norm_linear(fused[0], fused[1], fused[2], eps, fused[3], fused[4]);
  expect_recomputing_function_matches(fused_out, "LayerNormLinear", grad_out, fused, ref_out, ref);
  c10::InferenceMode guard;
  EXPECT_TRUE(torch::equal(
      combo::backbone::layer_norm_linear(x, ln_weight, ln_bias, eps, fc_weight, fc_bias),
      ref_out.detach()));
}

TEST_F(PvtV2Test, GradientsReachEveryParameter) {
  PvtV2 model(PvtV2Options::variant("b0").drop_path_rate(0.0));
  model->train();
  const FeatureMap out = model->forward(torch::randn({2, 3, 64, 64}));
  combo::testing::feature_loss(out).backward();
  for (const auto& p : model->named_parameters()) {
    ASSERT_TRUE(p.value().grad().defined()) << p.key();
    EXPECT_TRUE(torch::isfinite(p.value().grad()).all().item<bool>()) << p.key();
    EXPECT_GT(p.value().grad().abs().sum().item<double>(), 0.0) << p.key();
  }
}

TEST_F(PvtV2Test, DropPathOnlyInTraining) {
  PvtV2 model(PvtV2Options::variant("b0").drop_path_rate(0.5));
  const at::Tensor x = torch::randn({4, 3, 64, 64});
  torch::NoGradGuard no_grad;
  model->eval();
  const FeatureMap e1 = model->forward(x);
  const FeatureMap e2 = model->forward(x);
  model->train();
  const FeatureMap t1 = model->forward(x);
  const FeatureMap t2 = model->forward(x);
  EXPECT_TENSOR_EQ(e1.at("res5"), e2.at("res5"));
  EXPECT_FALSE(torch::allclose(t1.at("res5"), t2.at("res5")));
  EXPECT_FALSE(torch::allclose(e1.at("res5"), t1.at("res5")));

  PvtV2 plain(PvtV2Options::variant("b0").drop_path_rate(0.0));
  plain->eval();
  const FeatureMap pe = plain->forward(x);
  plain->train();
  const FeatureMap pt = plain->forward(x);
  for (const auto& [name, t] : pe) EXPECT_TENSOR_EQ(t, pt.at(name));
}

TEST_F(PvtV2Test, DropPathKeepsOrDropsWholeSamples) {
  const int64_t n = 4000;
  const double p = 0.25;
  const at::Tensor residual = torch::zeros({n, 3, 2});
  const at::Tensor out = combo::backbone::add_drop_path(residual, torch::ones({n, 3, 2}), p, true);
  // Each sample is either dropped (0) or kept and rescaled by 1 / (1 - p).
  const at::Tensor first = out.select(2, 0).select(1, 0);
  EXPECT_TENSOR_EQ(out, first.view({n, 1, 1}).expand({n, 3, 2}));
  const at::Tensor kept = first.gt(0);
  EXPECT_TRUE(torch::allclose(first.masked_select(kept), torch::full({}, 1.0 / (1.0 - p))));
  const double kept_fraction = kept.to(torch::kFloat64).mean().item<double>();
  EXPECT_NEAR(kept_fraction, 1.0 - p, 0.03);
  // Eval: a plain residual sum.
  const at::Tensor branch = torch::randn({5, 7});
  EXPECT_TENSOR_EQ(combo::backbone::add_drop_path(branch, branch.clone(), p, false), branch * 2);
}

TEST_F(PvtV2Test, DropPathRatesAreLinspaceOverAllBlocks) {
  const auto rates = combo::backbone::drop_path_rates(0.1, 52);
  ASSERT_EQ(rates.size(), 52u);
  EXPECT_EQ(rates.front(), 0.0);
  EXPECT_NEAR(rates.back(), 0.1, 1e-7);
  for (size_t i = 0; i < rates.size(); ++i) EXPECT_NEAR(rates[i], 0.1 * i / 51.0, 1e-7);
  PvtV2 model(PvtV2Options::variant("b5"));
  const auto& last = model->blocks[3]->ptr(2)->as<combo::backbone::PvtBlockImpl>();
  EXPECT_NEAR(last->options.drop_path(), 0.1, 1e-7);
  EXPECT_EQ(model->blocks[0]->ptr(0)->as<combo::backbone::PvtBlockImpl>()->options.drop_path(),
            0.0);
}

TEST_F(PvtV2Test, ImageNetHeadKeysAreIgnoredOnLoad) {
  PvtV2 source(PvtV2Options::variant("b0"));
  combo::TensorDict sd = combo::module_state_dict(*source);
  sd["head.weight"] = torch::randn({1000, 256});
  sd["head.bias"] = torch::randn({1000});
  PvtV2 target(PvtV2Options::variant("b0"));
  EXPECT_THROW(combo::load_state_dict_into(*target, sd), combo::Error);
  const auto report = combo::backbone::load_backbone_state_dict(*target, sd);
  EXPECT_TRUE(report.clean()) << report.to_string();
  EXPECT_TENSOR_EQ(source->named_parameters()["block2.1.mlp.fc2.weight"],
                   target->named_parameters()["block2.1.mlp.fc2.weight"]);
  // Only the head is forgiven: a stray key still fails a strict load.
  sd["block9.weight"] = torch::zeros({1});
  try {
    combo::backbone::load_backbone_state_dict(*target, sd);
    ADD_FAILURE() << "expected combo::Error";
  } catch (const combo::Error& e) {
    EXPECT_NE(std::string(e.what()).find("block9.weight"), std::string::npos) << e.what();
  }
}

TEST_F(PvtV2Test, AttentionMatchesNaiveMultiHeadAttention) {
  // Independent reference: per-head loop over explicit q, k, v slices.
  combo::backbone::PvtAttention attn(combo::backbone::PvtAttentionOptions(40, 4).sr_ratio(2));
  attn->eval();
  torch::NoGradGuard no_grad;
  const int64_t h = 6, w = 4;
  const at::Tensor x = torch::randn({2, h * w, 40});
  const at::Tensor got = attn->forward(x, h, w);

  const at::Tensor q = torch::nn::functional::linear(x, attn->q->weight, attn->q->bias);
  at::Tensor reduced = x.transpose(1, 2).reshape({2, 40, h, w});
  reduced = torch::conv2d(reduced, attn->sr->weight, attn->sr->bias, 2).flatten(2).transpose(1, 2);
  reduced = torch::layer_norm(reduced, {40}, attn->norm->weight, attn->norm->bias, 1e-5);
  const at::Tensor kv = torch::nn::functional::linear(reduced, attn->kv->weight, attn->kv->bias);
  std::vector<at::Tensor> heads;
  for (int64_t i = 0; i < 4; ++i) {
    const at::Tensor qi = q.narrow(2, 10 * i, 10);
    const at::Tensor ki = kv.narrow(2, 10 * i, 10);
    const at::Tensor vi = kv.narrow(2, 40 + 10 * i, 10);
    heads.push_back(torch::softmax(qi.matmul(ki.transpose(1, 2)) / std::sqrt(10.0), -1).matmul(vi));
  }
  const at::Tensor ref =
      torch::nn::functional::linear(torch::cat(heads, 2), attn->proj->weight, attn->proj->bias);
  EXPECT_TENSOR_NEAR_ABS(ref, got, 1e-5);
}

TEST_F(PvtV2Test, CloneIsDeepAndEqual) {
  PvtV2 model(PvtV2Options::variant("b0"));
  model->eval();
  auto copy = std::dynamic_pointer_cast<combo::backbone::PvtV2Impl>(model->clone());
  ASSERT_TRUE(copy);
  copy->eval();
  torch::NoGradGuard no_grad;
  const at::Tensor x = torch::randn({1, 3, 64, 64});
  EXPECT_TENSOR_EQ(model->forward(x).at("res4"), copy->forward(x).at("res4"));
  copy->named_parameters()["norm4.weight"].add_(1.0);
  EXPECT_FALSE(torch::equal(model->named_parameters()["norm4.weight"],
                            copy->named_parameters()["norm4.weight"]));
  EXPECT_EQ(copy->patch_embeds.size(), 4u);
  EXPECT_EQ(static_cast<torch::nn::Module*>(copy->patch_embeds[0].get()),
            copy->named_children()["patch_embed1"].get());
}

TEST_F(PvtV2Test, RejectsBadInputs) {
  PvtV2 model(PvtV2Options::variant("b0"));
  EXPECT_THROW(model->forward(torch::randn({1, 1, 64, 64})), combo::Error);
  EXPECT_THROW(model->forward(torch::randn({3, 64, 64})), combo::Error);
  try {
    model->forward(torch::randn({1, 3, 16, 16}));
    ADD_FAILURE() << "expected combo::Error";
  } catch (const combo::Error& e) {
    EXPECT_NE(std::string(e.what()).find("too small"), std::string::npos) << e.what();
  }
}
