#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <set>
#include <string>
#include <vector>

#include "combo/core/check.h"
#include "combo/core/state_dict.h"
#include "combo/model/bilateral_fusion.h"
#include "combo/nn/position_encoding.h"
#include "testing/testing.h"

using combo::model::BilateralFusion;
using combo::model::BilateralFusionOptions;
using combo::model::FusionType;

namespace {

class BilateralFusionTest : public combo::testing::SeededTest {};

const std::vector<FusionType> kAllTypes = {FusionType::kBidirectional, FusionType::kVisualToAudio,
                                           FusionType::kAudioOnly, FusionType::kNone};

std::set<std::string> keys_of(const combo::TensorDict& dict) {
  std::set<std::string> keys;
  for (const auto& kv : dict) keys.insert(kv.first);
  return keys;
}

// Replaces every parameter by random values (layer scales around 1 so that the attention branch
// is visible) and returns the state dict in float64 for the reference computations.
combo::TensorDict randomise(torch::nn::Module& module) {
  torch::NoGradGuard no_grad;
  for (auto& kv : module.named_parameters()) {
    auto& p = kv.value();
    if (kv.key().find("gamma") != std::string::npos) {
      p.uniform_(0.5, 1.5);
    } else if (p.dim() == 1) {
      p.copy_(0.1 * torch::randn_like(p) + (kv.key().find("norm") != std::string::npos &&
                                                    kv.key().find("weight") != std::string::npos
                                                ? 1.0
                                                : 0.0));
    } else {
      p.normal_(0.0, 1.0 / std::sqrt(static_cast<double>(p.size(1))));
    }
  }
  combo::TensorDict sd = combo::module_state_dict(module);
  for (auto& kv : sd) kv.second = kv.second.to(torch::kFloat64);
  return sd;
}

at::Tensor lin(const combo::TensorDict& sd, const std::string& name, const at::Tensor& x) {
  return at::linear(x, sd.at(name + ".weight"), sd.at(name + ".bias"));
}

at::Tensor ln(const combo::TensorDict& sd, const std::string& name, const at::Tensor& x) {
  return at::layer_norm(x, {x.size(-1)}, sd.at(name + ".weight"), sd.at(name + ".bias"), 1e-5);
}

// [N, T, C] -> [N*heads, T, C/heads], head h = channels h*hd..(h+1)*hd-1 (official `_shape`).
at::Tensor split_heads(const at::Tensor& t, int64_t heads) {
  const int64_t n = t.size(0), len = t.size(1), c = t.size(2);
  return t.view({n, len, heads, c / heads}).transpose(1, 2).reshape({n * heads, len, c / heads});
}

at::Tensor merge_heads(const at::Tensor& t, int64_t n, int64_t heads) {
  const int64_t len = t.size(1), hd = t.size(2);
  return t.view({n, heads, len, hd}).transpose(1, 2).reshape({n, len, heads * hd});
}

struct Reference {
  at::Tensor visual;
  at::Tensor audio;
};

// COMBO_SPEC 4.3 written the way the official BiMultiHeadAttention computes it (full projections,
// per-head bmm), in float64.
Reference reference_bidirectional(const combo::TensorDict& sd, const at::Tensor& visual_f,
                                  const at::Tensor& audio_f, int64_t heads) {
  const auto visual = visual_f.to(torch::kFloat64);
  const auto audio = audio_f.to(torch::kFloat64);
  const int64_t n = visual.size(0), c = visual.size(1), h = visual.size(2), w = visual.size(3);
  const std::string p = "b_attn.attn_list.0.";
  auto x = visual + sd.at("level_embed.weight")[0].view({1, c, 1, 1});
  auto v = ln(sd, "b_attn.layer_norm_v_list.0", x.flatten(2).transpose(1, 2));
  auto a = ln(sd, "b_attn.layer_norm_a_list.0", audio);
  auto pos =
      combo::nn::sine_position_encoding(h, w, c / 2).to(torch::kFloat64).flatten(2).transpose(1, 2);
  const double scale = std::pow(static_cast<double>(c / heads), -0.5);
  auto q = split_heads(lin(sd, p + "v_proj", v + pos) * scale, heads);
  auto k = split_heads(lin(sd, p + "a_proj", a + sd.at("audio_pos.weight")[0]), heads);
  auto vv = split_heads(lin(sd, p + "values_v_proj", v), heads);
  auto va = split_heads(lin(sd, p + "values_a_proj", a), heads);
  auto s = at::bmm(q, k.transpose(1, 2)).clamp(-50000, 50000);  // [N*h, L, 1]
  auto st = s.transpose(1, 2);
  auto beta = (st - std::get<0>(st.max(-1, true))).clamp(-50000, 50000).softmax(-1);
  auto alpha = s.softmax(1);
  auto out_v = lin(sd, p + "out_v_proj", merge_heads(at::bmm(alpha, va), n, heads));
  auto out_a = lin(sd, p + "out_a_proj", merge_heads(at::bmm(beta, vv), n, heads));
  Reference r;
  r.visual = (v + sd.at("b_attn.gamma_v_list.0") * out_v).transpose(1, 2).reshape({n, c, h, w});
  r.audio = a + sd.at("b_attn.gamma_a") * out_a;
  return r;
}

}  // namespace

TEST(BilateralFusionParity, OutputsAndGradsMatchOfficial) {
  COMBO_TEST_DEVICE_OR_SKIP(device);
  COMBO_LOAD_FIXTURE_OR_SKIP(fx, "avfuse.pt");
  const combo::TensorDict sd = fx.state_dict();
  // AVFuse hard-codes 8 heads; every width comes from the stored weights.
  BilateralFusionOptions options(FusionType::kBidirectional);
  options.visual_dim(sd.at("level_embed.weight").size(1));
  options.audio_dim(sd.at("audio_pos.weight").size(1));
  BilateralFusion model(options);
  const combo::LoadReport report =
      combo::load_state_dict_into(*model, sd, {true, {}, fx.path().string()});
  EXPECT_TRUE(report.clean()) << report.to_string();
  int64_t stored = 0;
  for (const auto& kv : sd) stored += kv.second.numel();
  EXPECT_EQ(combo::count_parameters(*model), stored);
  model->eval();
  model->to(device);

  // Float32 and float64 runs on the fixture's inputs; bounds from the measured float32 error.
  using combo::testing::parity_input;
  auto run = [&](at::ScalarType dtype) {
    combo::testing::parity_to(*model, dtype);
    const at::Tensor visual = parity_input(fx.tensor("inputs/visual_res2"), device, dtype, true);
    const at::Tensor audio = parity_input(fx.tensor("inputs/audio"), device, dtype, true);
    const auto out = model->forward(visual, audio);
    (out.visual.pow(2).mean() + out.audio.pow(2).mean()).backward();
    return std::vector<at::Tensor>{out.visual.detach(), out.audio.detach(), visual.grad(),
                                   audio.grad()};
  };
  const auto ours64 = run(torch::kFloat64);
  const auto ours32_1 = combo::testing::official_threads([&] { return run(torch::kFloat32); });
  const auto ours32 = run(torch::kFloat32);
  const std::vector<std::string> keys = {"outputs/visual_res2", "outputs/audio",
                                         "grads/visual_res2", "grads/audio"};
  for (size_t i = 0; i < keys.size(); ++i)
    EXPECT_FLOAT32_PARITY_RUNS(keys[i], fx.tensor(keys[i]), ours64[i], ours32[i], ours32_1[i]);
}

TEST_F(BilateralFusionTest, ParameterCountMatchesSpec) {
  BilateralFusion model;  // COMBO_SPEC 15(c): AVFuse MHA-B, 256-d mask features, 128-d audio
  EXPECT_EQ(combo::count_parameters(*model), 297856);
  EXPECT_EQ(combo::count_parameters(*model->b_attn->attn_list[0]), 296320);
}

TEST_F(BilateralFusionTest, BidirectionalKeysAreOfficial) {
  BilateralFusion model(BilateralFusionOptions().visual_dim(32).audio_dim(16).num_heads(4));
  const combo::TensorDict sd = combo::module_state_dict(*model);
  std::set<std::string> expected = {"audio_pos.weight", "level_embed.weight", "b_attn.gamma_a",
                                    "b_attn.gamma_v_list.0"};
  for (const std::string ln_name : {"layer_norm_v_list.0", "layer_norm_a_list.0"}) {
    expected.insert("b_attn." + ln_name + ".weight");
    expected.insert("b_attn." + ln_name + ".bias");
  }
  for (const std::string proj :
       {"v_proj", "a_proj", "values_v_proj", "values_a_proj", "out_v_proj", "out_a_proj"}) {
    expected.insert("b_attn.attn_list.0." + proj + ".weight");
    expected.insert("b_attn.attn_list.0." + proj + ".bias");
  }
  EXPECT_EQ(keys_of(sd), expected);
  EXPECT_EQ(sd.at("b_attn.attn_list.0.a_proj.weight").sizes(), (std::vector<int64_t>{32, 16}));
  EXPECT_EQ(sd.at("b_attn.attn_list.0.out_a_proj.weight").sizes(), (std::vector<int64_t>{16, 32}));
  EXPECT_EQ(sd.at("b_attn.gamma_a").sizes(), (std::vector<int64_t>{16}));
  EXPECT_EQ(sd.at("b_attn.gamma_v_list.0").sizes(), (std::vector<int64_t>{32}));
}

TEST_F(BilateralFusionTest, OfficialInitialisation) {
  BilateralFusion model(BilateralFusionOptions().layer_scale_init(0.25));
  const combo::TensorDict sd = combo::module_state_dict(*model);
  EXPECT_TRUE(torch::all(sd.at("b_attn.gamma_a") == 0.25).item<bool>());
  EXPECT_TRUE(torch::all(sd.at("b_attn.gamma_v_list.0") == 0.25).item<bool>());
  BilateralFusion def;
  EXPECT_NEAR(combo::module_state_dict(*def).at("b_attn.gamma_a")[0].item<double>(), 1e-4, 1e-10);
  for (const std::string proj :
       {"v_proj", "a_proj", "values_v_proj", "values_a_proj", "out_v_proj", "out_a_proj"}) {
    const auto w = sd.at("b_attn.attn_list.0." + proj + ".weight");
    const double bound = std::sqrt(6.0 / static_cast<double>(w.size(0) + w.size(1)));
    EXPECT_LE(w.abs().max().item<double>(), bound) << proj;
    EXPECT_GT(w.abs().max().item<double>(), 0.9 * bound) << proj;
    EXPECT_EQ(sd.at("b_attn.attn_list.0." + proj + ".bias").abs().max().item<double>(), 0.0);
  }
  // Embeddings N(0, 1).
  EXPECT_NEAR(sd.at("level_embed.weight").std().item<double>(), 1.0, 0.15);
  EXPECT_EQ(sd.at("b_attn.layer_norm_v_list.0.weight").min().item<double>(), 1.0);
}

TEST_F(BilateralFusionTest, BidirectionalMatchesOfficialFormulaOnRandomInputs) {
  for (const int64_t heads : {8, 4}) {
    BilateralFusion model(BilateralFusionOptions().visual_dim(64).audio_dim(24).num_heads(heads));
    const combo::TensorDict sd = randomise(*model);
    model->eval();
    const auto visual = torch::randn({3, 64, 5, 7});
    const auto audio = torch::randn({3, 1, 24});
    const auto out = model->forward(visual, audio);
    const auto ref = reference_bidirectional(sd, visual, audio, heads);
    EXPECT_TENSOR_NEAR_ABS(ref.visual.to(torch::kFloat32), out.visual, 2e-5);
    EXPECT_TENSOR_NEAR_ABS(ref.audio.to(torch::kFloat32), out.audio, 2e-5);
    EXPECT_TRUE(out.visual.is_contiguous());
  }
}

TEST_F(BilateralFusionTest, NoneOnlyAddsTheLevelEmbedding) {
  BilateralFusion model(BilateralFusionOptions(FusionType::kNone).visual_dim(16).audio_dim(8));
  const combo::TensorDict sd = combo::module_state_dict(*model);
  EXPECT_EQ(keys_of(sd), (std::set<std::string>{"level_embed.weight"}));
  const auto visual = torch::randn({2, 16, 3, 4});
  const auto audio = torch::randn({2, 1, 8});
  const auto out = model->forward(visual, audio);
  EXPECT_TENSOR_EQ(visual + sd.at("level_embed.weight")[0].view({1, 16, 1, 1}), out.visual);
  EXPECT_TENSOR_EQ(audio, out.audio);
}

TEST_F(BilateralFusionTest, AudioOnlyFusesAudioAndKeepsTheEmbeddedVisualMap) {
  const auto base = BilateralFusionOptions().visual_dim(32).audio_dim(16).num_heads(4);
  BilateralFusion bi(base);
  randomise(*bi);
  BilateralFusion audio_only(BilateralFusionOptions(base).type(FusionType::kAudioOnly));
  // The official MHA-S-Audio module holds the bidirectional keys; the unused ones are listed.
  const auto report = combo::load_state_dict_into(
      *audio_only, combo::module_state_dict(*bi),
      {true, audio_only->official_only_prefixes(), "bidirectional weights"});
  EXPECT_TRUE(report.clean()) << report.to_string();
  const auto sd = combo::module_state_dict(*audio_only);
  EXPECT_FALSE(sd.count("b_attn.gamma_v_list.0"));
  EXPECT_FALSE(sd.count("b_attn.attn_list.0.values_a_proj.weight"));
  EXPECT_FALSE(sd.count("b_attn.attn_list.0.out_v_proj.weight"));
  bi->eval();
  audio_only->eval();
  const auto visual = torch::randn({2, 32, 4, 6});
  const auto audio = torch::randn({2, 1, 16});
  const auto ref = bi->forward(visual, audio);
  const auto out = audio_only->forward(visual, audio);
  EXPECT_TENSOR_EQ(ref.audio, out.audio);
  EXPECT_TENSOR_EQ(visual + sd.at("level_embed.weight")[0].view({1, 32, 1, 1}), out.visual);
  EXPECT_GT((ref.audio - audio).abs().max().item<double>(), 1e-3);
}

TEST_F(BilateralFusionTest, VisualToAudioMatchesTheSingleDirectionFormula) {
  const int64_t c = 32, a = 16, heads = 4;
  BilateralFusion model(BilateralFusionOptions(FusionType::kVisualToAudio)
                            .visual_dim(c)
                            .audio_dim(a)
                            .num_heads(heads));
  const combo::TensorDict sd = randomise(*model);
  std::set<std::string> expected = {"level_embed.weight", "a2i_attn.gamma_list.0"};
  for (const std::string name : {"layer_norm_q_1_list.0", "layer_norm_k_1_list.0",
                                 "attn_list.0.v_proj", "attn_list.0.out_proj"}) {
    expected.insert("a2i_attn." + name + ".weight");
    expected.insert("a2i_attn." + name + ".bias");
  }
  EXPECT_EQ(keys_of(sd), expected);
  model->eval();
  const auto visual = torch::randn({2, c, 3, 5});
  const auto audio = torch::randn({2, 1, a});
  const auto out = model->forward(visual, audio);
  EXPECT_TENSOR_EQ(audio, out.audio);

  // The official AttentionA2I with arbitrary q_proj/k_proj: a softmax over the one audio key.
  const auto v64 = visual.to(torch::kFloat64);
  const auto q_in =
      ln(sd, "a2i_attn.layer_norm_q_1_list.0",
         (v64 + sd.at("level_embed.weight")[0].view({1, c, 1, 1})).flatten(2).transpose(1, 2));
  const auto k_in = ln(sd, "a2i_attn.layer_norm_k_1_list.0", audio.to(torch::kFloat64));
  const auto wq = torch::randn({c, c}, torch::kFloat64);
  const auto wk = torch::randn({c, a}, torch::kFloat64);
  auto q = split_heads(at::linear(q_in, wq) * std::pow(c / heads, -0.5), heads);
  auto k = split_heads(at::linear(k_in, wk), heads);
  auto v = split_heads(lin(sd, "a2i_attn.attn_list.0.v_proj", k_in), heads);
  auto w = at::bmm(q, k.transpose(1, 2)).clamp(-50000, 50000).softmax(-1);
  auto delta = lin(sd, "a2i_attn.attn_list.0.out_proj", merge_heads(at::bmm(w, v), 2, heads));
  auto ref = (q_in + sd.at("a2i_attn.gamma_list.0") * delta).transpose(1, 2).reshape({2, c, 3, 5});
  EXPECT_TENSOR_NEAR_ABS(ref.to(torch::kFloat32), out.visual, 1e-5);
}

TEST_F(BilateralFusionTest, OfficialOnlyPrefixesCoverTheOfficialKeys) {
  // Official key sets per type (AVFuse creates audio_pos and level_embed for every type).
  const int64_t c = 32, a = 16;
  BilateralFusion bi(BilateralFusionOptions().visual_dim(c).audio_dim(a).num_heads(4));
  const auto bi_sd = combo::module_state_dict(*bi);
  combo::TensorDict official_none = {{"audio_pos.weight", bi_sd.at("audio_pos.weight")},
                                     {"level_embed.weight", bi_sd.at("level_embed.weight")}};
  combo::TensorDict official_a2i = official_none;
  official_a2i["a2i_attn.gamma_list.0"] = torch::ones({c});
  for (const std::string n : {"layer_norm_q_1_list.0", "layer_norm_k_1_list.0"}) {
    const int64_t d = n == "layer_norm_q_1_list.0" ? c : a;
    official_a2i["a2i_attn." + n + ".weight"] = torch::ones({d});
    official_a2i["a2i_attn." + n + ".bias"] = torch::zeros({d});
  }
  const std::vector<std::tuple<std::string, int64_t, int64_t>> projs = {
      {"q_proj", c, c}, {"k_proj", c, a}, {"v_proj", c, a}, {"out_proj", c, c}};
  for (const auto& [name, out, in] : projs) {
    official_a2i["a2i_attn.attn_list.0." + name + ".weight"] = torch::randn({out, in});
    official_a2i["a2i_attn.attn_list.0." + name + ".bias"] = torch::randn({out});
  }
  const std::vector<std::pair<FusionType, combo::TensorDict>> cases = {
      {FusionType::kBidirectional, bi_sd},
      {FusionType::kAudioOnly, bi_sd},
      {FusionType::kNone, official_none},
      {FusionType::kVisualToAudio, official_a2i}};
  for (const auto& [type, official] : cases) {
    BilateralFusion model(BilateralFusionOptions(type).visual_dim(c).audio_dim(a).num_heads(4));
    const auto report = combo::load_state_dict_into(
        *model, official, {true, model->official_only_prefixes(), combo::model::to_string(type)});
    EXPECT_TRUE(report.clean()) << combo::model::to_string(type) << ": " << report.to_string();
    // Nothing listed may be a key the module has.
    for (const auto& kv : combo::module_state_dict(*model)) {
      for (const auto& prefix : model->official_only_prefixes()) {
        EXPECT_NE(kv.first.rfind(prefix, 0), 0u) << kv.first;
      }
    }
  }
}

TEST_F(BilateralFusionTest, GradientsReachEveryParameterOfEveryType) {
  for (const auto type : kAllTypes) {
    BilateralFusion model(
        BilateralFusionOptions(type).visual_dim(32).audio_dim(16).num_heads(4).dropout(0.0));
    randomise(*model);
    model->train();
    const auto visual = torch::randn({2, 32, 3, 4});
    const auto audio = torch::randn({2, 1, 16});
    const auto out = model->forward(visual, audio);
    (out.visual * torch::randn_like(out.visual))
        .sum()
        .add((out.audio * torch::randn_like(out.audio)).sum())
        .backward();
    for (const auto& kv : model->named_parameters()) {
      ASSERT_TRUE(kv.value().grad().defined())
          << combo::model::to_string(type) << ": no gradient for " << kv.key();
      EXPECT_GT(kv.value().grad().abs().max().item<double>(), 0.0)
          << combo::model::to_string(type) << ": zero gradient for " << kv.key();
    }
  }
}

TEST_F(BilateralFusionTest, DropoutOnlyInTraining) {
  for (const auto type :
       {FusionType::kBidirectional, FusionType::kVisualToAudio, FusionType::kAudioOnly}) {
    const auto name = combo::model::to_string(type);
    BilateralFusion model(BilateralFusionOptions(type).visual_dim(32).audio_dim(16).num_heads(4));
    randomise(*model);
    const auto visual = torch::randn({2, 32, 4, 4});
    const auto audio = torch::randn({2, 1, 16});
    model->eval();
    const auto e1 = model->forward(visual, audio);
    const auto e2 = model->forward(visual, audio);
    EXPECT_TENSOR_EQ(e1.visual, e2.visual);
    EXPECT_TENSOR_EQ(e1.audio, e2.audio);
    model->train();
    torch::manual_seed(1);
    const auto t1 = model->forward(visual, audio);
    torch::manual_seed(2);
    const auto t2 = model->forward(visual, audio);
    // Audio-side dropout (bidirectional, audio_only) and visual-side dropout (visual_to_audio,
    // bidirectional) must each change the result.
    const bool audio_side = type != FusionType::kVisualToAudio;
    const auto& e = audio_side ? e1.audio : e1.visual;
    const auto& a = audio_side ? t1.audio : t1.visual;
    const auto& b = audio_side ? t2.audio : t2.visual;
    EXPECT_GT((a - e).abs().max().item<double>(), 1e-4) << name;
    EXPECT_GT((a - b).abs().max().item<double>(), 1e-4) << name;
    if (type == FusionType::kBidirectional) {
      EXPECT_GT((t1.visual - e1.visual).abs().max().item<double>(), 1e-6) << name;
    }
    // p = 0: training computes what evaluation computes.
    model->options.dropout(0.0);
    const auto t0 = model->forward(visual, audio);
    EXPECT_TENSOR_NEAR_ABS(e1.visual, t0.visual, 1e-6);
    EXPECT_TENSOR_NEAR_ABS(e1.audio, t0.audio, 1e-6);
  }
}

TEST_F(BilateralFusionTest, AppliesToAnyMapSizeAndWidth) {
  // Early fusion puts the module on a backbone level, e.g. PVT res2 with 64 channels.
  BilateralFusion model(BilateralFusionOptions().visual_dim(64).audio_dim(128));
  model->eval();
  const auto out = model->forward(torch::randn({3, 64, 7, 9}), torch::randn({3, 1, 128}));
  EXPECT_EQ(out.visual.sizes(), (std::vector<int64_t>{3, 64, 7, 9}));
  EXPECT_EQ(out.audio.sizes(), (std::vector<int64_t>{3, 1, 128}));
}

TEST_F(BilateralFusionTest, FusionTypeNames) {
  for (const auto type : kAllTypes) {
    EXPECT_EQ(combo::model::fusion_type_from_string(combo::model::to_string(type)), type);
  }
  EXPECT_EQ(combo::model::fusion_type_from_string("MHA-B"), FusionType::kBidirectional);
  EXPECT_EQ(combo::model::fusion_type_from_string("MHA-S"), FusionType::kVisualToAudio);
  EXPECT_EQ(combo::model::fusion_type_from_string("MHA-S-Audio"), FusionType::kAudioOnly);
  EXPECT_EQ(combo::model::fusion_type_from_string("MHA-None"), FusionType::kNone);
  try {
    combo::model::fusion_type_from_string("SCAN");
    FAIL() << "expected combo::Error";
  } catch (const combo::Error& e) {
    EXPECT_NE(std::string(e.what()).find("SCAN"), std::string::npos) << e.what();
  }
}

TEST_F(BilateralFusionTest, RejectsWrongShapes) {
  BilateralFusion model(BilateralFusionOptions().visual_dim(32).audio_dim(16).num_heads(4));
  try {
    model->forward(torch::zeros({2, 31, 4, 4}), torch::zeros({2, 1, 16}));
    FAIL() << "expected combo::Error";
  } catch (const combo::Error& e) {
    EXPECT_NE(std::string(e.what()).find("[2, 31, 4, 4]"), std::string::npos) << e.what();
  }
  try {
    model->forward(torch::zeros({2, 32, 4, 4}), torch::zeros({2, 16}));
    FAIL() << "expected combo::Error";
  } catch (const combo::Error& e) {
    EXPECT_NE(std::string(e.what()).find("[2, 16]"), std::string::npos) << e.what();
  }
  EXPECT_THROW(BilateralFusion(BilateralFusionOptions().visual_dim(30).num_heads(8)), combo::Error);
}
