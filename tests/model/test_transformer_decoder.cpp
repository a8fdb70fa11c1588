#include <gtest/gtest.h>
#include <torch/torch.h>

#include <limits>
#include <map>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "combo/core/check.h"
#include "combo/core/state_dict.h"
#include "combo/model/transformer_decoder.h"
#include "combo/nn/attention.h"
#include "testing/testing.h"

using combo::model::AudioQueryLayout;
using combo::model::MultiScaleMaskedTransformerDecoder;
using combo::model::QueriesFuseType;
using combo::model::TransformerDecoderHooks;
using combo::model::TransformerDecoderOptions;
using combo::model::TransformerDecoderOutput;

namespace {

class TransformerDecoderTest : public combo::testing::SeededTest {};

std::vector<at::Tensor> tensor_list(const combo::testing::Fixture& fx, const std::string& key) {
  std::vector<at::Tensor> out;
  const auto list = fx.value(key).toList();
  for (size_t i = 0; i < list.size(); ++i) out.push_back(list.get(i).toTensor());
  return out;
}

// A small decoder with 3 layers over 3 levels, for unit tests.
TransformerDecoderOptions small_options() {
  return TransformerDecoderOptions(3)
      .in_channels(32)
      .hidden_dim(32)
      .num_queries(6)
      .nheads(4)
      .dim_feedforward(48)
      .dec_layers(4)
      .mask_dim(32)
      .audio_out_dim(32);
}

struct SmallInputs {
  std::vector<at::Tensor> x;
  at::Tensor mask_features;
  at::Tensor audio;
};

SmallInputs small_inputs(int64_t n, int64_t channels = 32, int64_t audio_dim = 32) {
  SmallInputs in;
  in.x = {torch::randn({n, channels, 2, 3}), torch::randn({n, channels, 3, 4}),
          torch::randn({n, channels, 5, 6})};
  in.mask_features = torch::randn({n, 32, 9, 11});
  in.audio = torch::randn({n, 1, audio_dim});
  return in;
}

// Official decoder loss of the fixture: sum over all predictions of mean(logits^2) +
// mean(masks^2).
at::Tensor fixture_loss(const TransformerDecoderOutput& out) {
  auto loss = out.pred_logits.pow(2).mean() + out.pred_masks.pow(2).mean();
  for (const auto& p : out.aux_outputs) {
    loss = loss + p.pred_logits.pow(2).mean() + p.pred_masks.pow(2).mean();
  }
  return loss;
}

}  // namespace

TEST(TransformerDecoderParity, MasksOutputsAndGradsMatchOfficial) {
  COMBO_TEST_DEVICE_OR_SKIP(device);
  COMBO_LOAD_FIXTURE_OR_SKIP(fx, "transformer_decoder.pt");
  const combo::TensorDict sd = fx.state_dict();
  const std::regex layer_key(R"(transformer_ffn_layers\.(\d+)\.linear1\.weight)");
  int64_t layers = 0;
  for (const auto& kv : sd) {
    if (std::regex_match(kv.first, layer_key)) ++layers;
  }
  ASSERT_GT(layers, 0);
  const int64_t levels = sd.at("level_embed.weight").size(0);
  std::vector<at::Tensor> x;
  for (int64_t i = 0; i < levels; ++i)
    x.push_back(fx.tensor("inputs/ms" + std::to_string(i)).to(device));
  const at::Tensor mask_features = fx.tensor("inputs/mask_features").to(device);
  const at::Tensor audio = fx.tensor("inputs/audio_features").to(device);
  const std::vector<at::Tensor> ref_masks = tensor_list(fx, "attn_masks");
  const int64_t n = mask_features.size(0);
  const int64_t nq = sd.at("query_feat.weight").size(0);
  ASSERT_EQ(static_cast<int64_t>(ref_masks.size()), layers + 1);
  const int64_t nheads = ref_masks[0].size(0) / n;

  TransformerDecoderOptions options(sd.at("class_embed.weight").size(0) - 1);
  options.in_channels(x[0].size(1))
      .hidden_dim(sd.at("query_feat.weight").size(1))
      .num_queries(nq)
      .nheads(nheads)
      .dim_feedforward(sd.at("transformer_ffn_layers.0.linear1.weight").size(0))
      .dec_layers(layers + 1)
      .mask_dim(sd.at("mask_embed.layers.2.weight").size(0))
      .num_feature_levels(levels)
      .audio_out_dim(audio.size(2));
  MultiScaleMaskedTransformerDecoder model(options);
  const combo::LoadReport report =
      combo::load_state_dict_into(*model, sd, {true, {}, fx.path().string()});
  ASSERT_TRUE(report.clean()) << report.to_string();
  model->eval();
  model->to(device);

  std::vector<at::Tensor> ref_pred_masks = tensor_list(fx, "outputs/aux_pred_masks");
  ref_pred_masks.push_back(fx.tensor("outputs/pred_masks"));
  const std::vector<at::Tensor> ref_aux_logits = tensor_list(fx, "outputs/aux_pred_logits");
  ASSERT_EQ(static_cast<int64_t>(ref_aux_logits.size()), layers);

  // 1. Attention masks. A bit may flip only where the official resized logit is ~0.
  TransformerDecoderHooks hooks;
  hooks.return_attn_masks = true;
  TransformerDecoderOutput out = model->forward(x, mask_features, audio, hooks);
  ASSERT_EQ(static_cast<int64_t>(out.attn_masks.size()), layers + 1);
  auto check_masks = [&](const TransformerDecoderOutput& o, const std::string& run) {
    int64_t used = 0;
    for (int64_t j = 0; j <= layers; ++j) {
      const auto& ref = ref_masks[j];
      EXPECT_EQ(o.attn_masks[j].sizes(), ref.sizes()) << run << " mask " << j;
      if (o.attn_masks[j].sizes() != ref.sizes()) return layers * ref.numel();
      const auto flipped = o.attn_masks[j].cpu() != ref;
      const int64_t flips = flipped.sum().item<int64_t>();
      if (flips == 0) continue;
      const auto& lvl = x[j % levels];
      const auto logits = at::upsample_bilinear2d(ref_pred_masks[j], {lvl.size(2), lvl.size(3)},
                                                  /*align_corners=*/false)
                              .flatten(2)
                              .unsqueeze(1)
                              .expand({n, nheads, nq, lvl.size(2) * lvl.size(3)})
                              .reshape(ref.sizes());
      EXPECT_LT(logits.abs().masked_select(flipped).max().item<double>(), 1e-4)
          << run << " mask " << j << " flips a bit where the logit is not ~0";
      EXPECT_LE(flips, ref.numel() / 1000 + nheads) << run << " mask " << j;
      std::cout << "[ INFO ] " << run << " attention mask " << j << ": " << flips / nheads
                << " query-pixel flips next to logit 0" << std::endl;
      if (j < layers) used += flips;
    }
    return used;
  };
  const int64_t flips_used = check_masks(out, "full");
  // 2. Float32 and float64 runs with bounds from the measured float32 error. The float32 run
  // uses its own masks unless a bit flipped (then the official ones); the float64 run always
  // uses the official masks, which are the float32 run's where none flipped: the thresholding
  // at ~0 logits must not decide differently in float64.
  const int64_t inputs_count = levels + 2;
  auto run = [&](at::ScalarType dtype, bool aux, bool inject) {
    combo::testing::parity_to(*model, dtype);
    model->options.aux_outputs(aux);
    TransformerDecoderHooks h;
    if (inject)
      for (int64_t j = 0; j < layers; ++j) h.attn_masks.push_back(ref_masks[j].to(device));
    std::vector<at::Tensor> in;
    for (int64_t i = 0; i < levels; ++i) in.push_back(x[i]);
    in.push_back(mask_features);
    in.push_back(audio);
    for (auto& t : in) t = combo::testing::parity_input(t, device, dtype, /*requires_grad=*/aux);
    const std::vector<at::Tensor> xg(in.begin(), in.begin() + levels);
    const auto o = model->forward(xg, in[levels], in[levels + 1], h);
    std::map<std::string, at::Tensor> got;
    got["outputs/pred_logits"] = o.pred_logits.detach();
    got["outputs/pred_masks"] = o.pred_masks.detach();
    if (!aux) {
      EXPECT_TRUE(o.aux_outputs.empty());
      return got;
    }
    EXPECT_EQ(static_cast<int64_t>(o.aux_outputs.size()), layers);
    EXPECT_EQ(static_cast<int64_t>(o.middles_attn_mask.size()),
              fx.integer("info/num_middles_attn_mask"));
    for (size_t i = 0; i < o.aux_outputs.size(); ++i) {
      got["aux_pred_logits/" + std::to_string(i)] = o.aux_outputs[i].pred_logits.detach();
      got["aux_pred_masks/" + std::to_string(i)] = o.aux_outputs[i].pred_masks.detach();
      got["middles_attn_mask/" + std::to_string(i)] = o.middles_attn_mask[i].detach();
    }
    fixture_loss(o).backward();
    for (int64_t i = 0; i < levels; ++i) got["grads/ms" + std::to_string(i)] = in[i].grad();
    got["grads/mask_features"] = in[levels].grad();
    got["grads/audio_features"] = in[levels + 1].grad();
    EXPECT_EQ(got.size(), 2 + 3 * static_cast<size_t>(layers) + inputs_count);
    return got;
  };
  auto reference = [&](const std::string& key) {
    const auto slash = key.find('/');
    const std::string list = key.substr(0, slash);
    const int64_t i = key.rfind("outputs/", 0) == 0 || key.rfind("grads/", 0) == 0
                          ? -1
                          : std::stoll(key.substr(slash + 1));
    if (list == "aux_pred_logits") return ref_aux_logits[i];
    if (list == "aux_pred_masks") return ref_pred_masks[i];
    if (list == "middles_attn_mask") return ref_pred_masks[i].reshape({n, nq, -1});
    return fx.tensor(key);
  };
  const auto ours64 = run(torch::kFloat64, true, true);
  const auto ours32_1 =
      combo::testing::official_threads([&] { return run(torch::kFloat32, true, true); });
  const auto ours32 = run(torch::kFloat32, true, flips_used > 0);
  for (const auto& [key, got] : ours32) {
    ASSERT_TRUE(got.defined()) << key;
    EXPECT_FLOAT32_PARITY_RUNS(key, reference(key), ours64.at(key), got, ours32_1.at(key));
  }

  // 3. Without aux outputs (inference) the final prediction is the same.
  model->options.aux_outputs(false);
  TransformerDecoderHooks lean_hooks;
  lean_hooks.return_attn_masks = true;
  const auto lean = model->forward(x, mask_features, audio, lean_hooks);
  ASSERT_EQ(static_cast<int64_t>(lean.attn_masks.size()), layers + 1);
  EXPECT_TRUE(lean.aux_outputs.empty());
  const bool lean_flips = check_masks(lean, "aux_outputs off") > 0;
  const auto lean64 = run(torch::kFloat64, false, true);
  const auto lean32 = run(torch::kFloat32, false, lean_flips);
  for (const auto& [key, got] : lean32)
    EXPECT_FLOAT32_PARITY("aux_outputs off: " + key, fx.tensor(key), got, lean64.at(key));
}

TEST_F(TransformerDecoderTest, ParameterCountsMatchSpec) {
  // COMBO_SPEC 15(c): S4/MS3 (2 classes) and AVSS (71 classes).
  MultiScaleMaskedTransformerDecoder s4(TransformerDecoderOptions(2));
  EXPECT_EQ(combo::count_parameters(*s4), 14459395);
  EXPECT_EQ(combo::count_parameters(*s4->transformer_ffn_layers[0]) +
                combo::count_parameters(*s4->transformer_self_attention_layers[0]) +
                combo::count_parameters(*s4->transformer_cross_attention_layers[0]),
            1578752);
  EXPECT_EQ(s4->num_layers(), 9);
  MultiScaleMaskedTransformerDecoder avss(TransformerDecoderOptions(71));
  EXPECT_EQ(combo::count_parameters(*avss), 14477128);
}

TEST_F(TransformerDecoderTest, KeysAreOfficial) {
  MultiScaleMaskedTransformerDecoder model(small_options());
  std::set<std::string> expected;
  auto add = [&](const std::string& prefix, std::initializer_list<const char*> names) {
    for (const char* name : names) expected.insert(prefix + name);
  };
  for (int i = 0; i < 3; ++i) {
    const std::string s = "transformer_self_attention_layers." + std::to_string(i) + ".";
    const std::string c = "transformer_cross_attention_layers." + std::to_string(i) + ".";
    const std::string f = "transformer_ffn_layers." + std::to_string(i) + ".";
    add(s, {"self_attn.in_proj_weight", "self_attn.in_proj_bias", "self_attn.out_proj.weight",
            "self_attn.out_proj.bias", "norm.weight", "norm.bias"});
    add(c, {"multihead_attn.in_proj_weight", "multihead_attn.in_proj_bias",
            "multihead_attn.out_proj.weight", "multihead_attn.out_proj.bias", "norm.weight",
            "norm.bias"});
    add(f, {"linear1.weight", "linear1.bias", "linear2.weight", "linear2.bias", "norm.weight",
            "norm.bias"});
  }
  add("", {"decoder_norm.weight", "decoder_norm.bias", "query_feat.weight", "query_embed.weight",
           "level_embed.weight", "class_embed.weight", "class_embed.bias"});
  for (int i = 0; i < 3; ++i) {
    add("mask_embed.layers." + std::to_string(i) + ".", {"weight", "bias"});
  }
  std::set<std::string> got;
  const auto sd = combo::module_state_dict(*model);
  for (const auto& kv : sd) got.insert(kv.first);
  EXPECT_EQ(got, expected);
  EXPECT_EQ(sd.at("transformer_cross_attention_layers.0.multihead_attn.in_proj_weight").sizes(),
            (std::vector<int64_t>{96, 32}));
  EXPECT_EQ(sd.at("class_embed.weight").sizes(), (std::vector<int64_t>{4, 32}));
  // Input projections appear only when asked for (or when the widths differ).
  MultiScaleMaskedTransformerDecoder proj(small_options().enforce_input_proj(true));
  const auto psd = combo::module_state_dict(*proj);
  EXPECT_EQ(psd.size(), sd.size() + 6);
  EXPECT_EQ(psd.at("input_proj.2.weight").sizes(), (std::vector<int64_t>{32, 32, 1, 1}));
}

TEST_F(TransformerDecoderTest, OfficialAudioIndexMap) {
  for (const auto& [n, q] : std::vector<std::pair<int64_t, int64_t>>{
           {1, 7}, {2, 100}, {5, 100}, {3, 7}, {40, 100}, {7, 3}}) {
    const auto audio = torch::randn({n, 1, 4});
    const auto official = combo::model::audio_for_queries(audio, q, AudioQueryLayout::kOfficial);
    const auto per_frame = combo::model::audio_for_queries(audio, q, AudioQueryLayout::kPerFrame);
    ASSERT_EQ(official.sizes(), (std::vector<int64_t>{q, n, 4}));
    ASSERT_EQ(per_frame.sizes(), (std::vector<int64_t>{q, n, 4}));
    for (int64_t qi = 0; qi < q; ++qi) {
      for (int64_t ni = 0; ni < n; ++ni) {
        // COMBO_SPEC 6.3: query q of frame n receives frame floor((q*N + n) / Q).
        const int64_t src = (qi * n + ni) / q;
        ASSERT_TRUE(torch::equal(official[qi][ni], audio[src][0]))
            << "N=" << n << " Q=" << q << " q=" << qi << " n=" << ni;
        ASSERT_TRUE(torch::equal(per_frame[qi][ni], audio[ni][0]));
      }
    }
  }
}

TEST_F(TransformerDecoderTest, FirstPredictionUsesTheAudioLayout) {
  for (const auto layout : {AudioQueryLayout::kOfficial, AudioQueryLayout::kPerFrame}) {
    MultiScaleMaskedTransformerDecoder model(small_options().audio_query_layout(layout));
    model->eval();
    const int64_t n = 3, nq = 6;
    const auto in = small_inputs(n);
    const auto out = model->forward(in.x, in.mask_features, in.audio);
    const auto sd = combo::module_state_dict(*model);
    for (int64_t qi = 0; qi < nq; ++qi) {
      for (int64_t ni = 0; ni < n; ++ni) {
        const int64_t src = layout == AudioQueryLayout::kOfficial ? (qi * n + ni) / nq : ni;
        const auto query = sd.at("query_feat.weight")[qi] + in.audio[src][0];
        const auto d = at::layer_norm(query, {32}, sd.at("decoder_norm.weight"),
                                      sd.at("decoder_norm.bias"), 1e-5);
        const auto logits = at::linear(d, sd.at("class_embed.weight"), sd.at("class_embed.bias"));
        EXPECT_TENSOR_NEAR_ABS(logits, out.aux_outputs[0].pred_logits[ni][qi], 1e-5)
            << combo::model::to_string(layout) << " q=" << qi << " n=" << ni;
      }
    }
  }
}

TEST_F(TransformerDecoderTest, LayoutsAgreeForOneFrameAndDifferForSeveral) {
  MultiScaleMaskedTransformerDecoder official(small_options());
  MultiScaleMaskedTransformerDecoder per_frame(
      small_options().audio_query_layout(AudioQueryLayout::kPerFrame));
  combo::load_state_dict_into(*per_frame, combo::module_state_dict(*official));
  official->eval();
  per_frame->eval();
  const auto one = small_inputs(1);
  EXPECT_TENSOR_EQ(official->forward(one.x, one.mask_features, one.audio).pred_logits,
                   per_frame->forward(one.x, one.mask_features, one.audio).pred_logits);
  const auto three = small_inputs(3);
  const auto a = official->forward(three.x, three.mask_features, three.audio);
  const auto b = per_frame->forward(three.x, three.mask_features, three.audio);
  EXPECT_GT((a.pred_logits - b.pred_logits).abs().max().item<double>(), 1e-4);
  EXPECT_GT(
      (a.aux_outputs[0].pred_logits - b.aux_outputs[0].pred_logits).abs().max().item<double>(),
      1e-4);
}

TEST_F(TransformerDecoderTest, OutputStructure) {
  MultiScaleMaskedTransformerDecoder model(small_options());
  const auto in = small_inputs(2);
  TransformerDecoderHooks hooks;
  hooks.return_attn_masks = true;
  const auto out = model->forward(in.x, in.mask_features, in.audio, hooks);
  EXPECT_EQ(out.pred_logits.sizes(), (std::vector<int64_t>{2, 6, 4}));
  EXPECT_EQ(out.pred_masks.sizes(), (std::vector<int64_t>{2, 6, 9, 11}));
  ASSERT_EQ(out.aux_outputs.size(), 3u);
  ASSERT_EQ(out.middles_attn_mask.size(), 3u);
  ASSERT_EQ(out.attn_masks.size(), 4u);
  const std::vector<int64_t> hw = {6, 12, 30, 6};
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(out.middles_attn_mask[i].sizes(), (std::vector<int64_t>{2, 6, 99}));
    EXPECT_TENSOR_EQ(out.aux_outputs[i].pred_masks.reshape({2, 6, 99}), out.middles_attn_mask[i]);
  }
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(out.attn_masks[i].sizes(), (std::vector<int64_t>{8, 6, hw[i]})) << i;
    EXPECT_EQ(out.attn_masks[i].scalar_type(), torch::kBool);
  }
  // The mask of prediction i thresholds its logits resized to level i mod 3, per head.
  const auto logits = at::upsample_bilinear2d(out.aux_outputs[1].pred_masks.detach(), {3, 4},
                                              /*align_corners=*/false);
  const auto expected = (logits.sigmoid() < 0.5).flatten(2).unsqueeze(1).expand({2, 4, 6, 12});
  EXPECT_TENSOR_EQ(expected.reshape({8, 6, 12}), out.attn_masks[1]);
}

TEST_F(TransformerDecoderTest, MasksSteerTheCrossAttention) {
  MultiScaleMaskedTransformerDecoder model(small_options());
  model->eval();
  const auto in = small_inputs(2);
  const auto none = model->forward(in.x, in.mask_features, in.audio);
  const std::vector<int64_t> hw = {6, 12, 30};
  auto inject = [&](bool value) {
    TransformerDecoderHooks hooks;
    for (int64_t i = 0; i < 3; ++i) {
      hooks.attn_masks.push_back(torch::full({8, 6, hw[i]}, value, torch::kBool));
    }
    return model->forward(in.x, in.mask_features, in.audio, hooks).pred_logits;
  };
  const auto open = inject(false);
  // Fully blocked rows are cleared, so blocking everything equals blocking nothing.
  EXPECT_TENSOR_EQ(open, inject(true));
  // The computed masks block part of the keys, which changes the result.
  EXPECT_GT((open - none.pred_logits).abs().max().item<double>(), 1e-4);
}

TEST_F(TransformerDecoderTest, AttentionMatchesTorchMultiheadAttention) {
  const int64_t e = 32, h = 4, l = 5, s = 7, n = 3;
  combo::nn::MultiheadAttention ours(combo::nn::MultiheadAttentionOptions(e, h));
  torch::nn::MultiheadAttention theirs(torch::nn::MultiheadAttentionOptions(e, h));
  {
    torch::NoGradGuard no_grad;
    ours->in_proj_bias.normal_();
    ours->out_proj->bias.normal_();
    theirs->in_proj_weight.copy_(ours->in_proj_weight);
    theirs->in_proj_bias.copy_(ours->in_proj_bias);
    theirs->out_proj->weight.copy_(ours->out_proj->weight);
    theirs->out_proj->bias.copy_(ours->out_proj->bias);
  }
  const auto q = torch::randn({l, n, e});
  const auto k = torch::randn({s, n, e});
  const auto v = torch::randn({s, n, e});
  auto block = torch::rand({l, s}) < 0.4;
  block.select(1, 0).fill_(false);  // keep a key per row
  const auto additive =
      torch::zeros({l, s}).masked_fill(block, -std::numeric_limits<float>::infinity());
  EXPECT_TENSOR_NEAR_ABS(std::get<0>(theirs->forward(q, k, v)), ours->forward(q, k, v), 1e-5);
  const auto ref = std::get<0>(theirs->forward(q, k, v, {}, true, additive));
  EXPECT_TENSOR_NEAR_ABS(ref, ours->forward(q, k, v, additive), 1e-5);
  EXPECT_TENSOR_NEAR_ABS(ref, ours->forward(q, k, v, block), 1e-5);
  EXPECT_TENSOR_NEAR_ABS(ref, ours->forward(q, k, v, block.expand({n * h, l, s}).contiguous()),
                         1e-5);
  EXPECT_TENSOR_NEAR_ABS(ref, ours->forward(q, k, v, block.view({1, 1, l, s})), 1e-5);
  // Per-(frame, head) masks follow PyTorch's batch order n * num_heads + h.
  auto per_head = torch::rand({n * h, l, s}) < 0.4;
  per_head.select(2, 0).fill_(false);
  const auto got = ours->forward(q, k, v, per_head);
  const auto split = per_head.view({n, h, l, s});
  for (int64_t b = 0; b < n; ++b) {
    const auto one = ours->forward(q.narrow(1, b, 1), k.narrow(1, b, 1), v.narrow(1, b, 1),
                                   split.narrow(0, b, 1));
    EXPECT_TENSOR_NEAR_ABS(one, got.narrow(1, b, 1), 1e-5) << "frame " << b;
  }
}

TEST_F(TransformerDecoderTest, GradientsReachEveryParameter) {
  for (const auto fuse : {QueriesFuseType::kAdd, QueriesFuseType::kConcat, QueriesFuseType::kAll,
                          QueriesFuseType::kNone}) {
    auto options = small_options().queries_fuse_type(fuse).enforce_input_proj(true);
    if (fuse == QueriesFuseType::kConcat) options.audio_out_dim(8);
    MultiScaleMaskedTransformerDecoder model(options);
    model->train();
    const auto in = small_inputs(2, 32, options.audio_out_dim());
    const auto out = model->forward(in.x, in.mask_features, in.audio);
    auto loss = (out.pred_logits * torch::randn_like(out.pred_logits)).sum() +
                (out.pred_masks * torch::randn_like(out.pred_masks)).sum();
    loss.backward();
    for (const auto& kv : model->named_parameters()) {
      ASSERT_TRUE(kv.value().grad().defined())
          << combo::model::to_string(fuse) << ": no gradient for " << kv.key();
      EXPECT_GT(kv.value().grad().abs().max().item<double>(), 0.0)
          << combo::model::to_string(fuse) << ": zero gradient for " << kv.key();
    }
  }
}

TEST_F(TransformerDecoderTest, WithoutAuxOutputsTheFinalPredictionIsUnchanged) {
  MultiScaleMaskedTransformerDecoder full(small_options());
  MultiScaleMaskedTransformerDecoder lean(small_options().aux_outputs(false));
  combo::load_state_dict_into(*lean, combo::module_state_dict(*full));
  full->eval();
  lean->eval();
  const auto in = small_inputs(3);
  TransformerDecoderHooks hooks;
  hooks.return_attn_masks = true;
  const auto a = full->forward(in.x, in.mask_features, in.audio, hooks);
  const auto b = lean->forward(in.x, in.mask_features, in.audio, hooks);
  EXPECT_TRUE(b.aux_outputs.empty());
  EXPECT_TRUE(b.middles_attn_mask.empty());
  ASSERT_EQ(a.attn_masks.size(), b.attn_masks.size());
  const std::vector<std::vector<int64_t>> sizes = {{2, 3}, {3, 4}, {5, 6}};
  for (size_t j = 0; j + 1 < a.attn_masks.size(); ++j) {
    const auto flipped = a.attn_masks[j] != b.attn_masks[j];
    if (!flipped.any().item<bool>()) continue;
    const auto logits = at::upsample_bilinear2d(a.aux_outputs[j].pred_masks.detach(), sizes[j % 3],
                                                /*align_corners=*/false)
                            .flatten(2)
                            .unsqueeze(1)
                            .expand({3, 4, 6, sizes[j % 3][0] * sizes[j % 3][1]})
                            .reshape(a.attn_masks[j].sizes());
    EXPECT_LT(logits.abs().masked_select(flipped).max().item<double>(), 1e-4) << "mask " << j;
  }
  EXPECT_TENSOR_NEAR_ABS(a.pred_logits, b.pred_logits, 1e-5);
  EXPECT_TENSOR_NEAR_ABS(a.pred_masks, b.pred_masks, 1e-5);
  // Gradients still reach the inputs through the final prediction.
  MultiScaleMaskedTransformerDecoder train(small_options().aux_outputs(false));
  const auto mf = in.mask_features.clone().set_requires_grad(true);
  train->forward(in.x, mf, in.audio).pred_masks.sum().backward();
  EXPECT_GT(mf.grad().abs().max().item<double>(), 0.0);
}

TEST_F(TransformerDecoderTest, QueriesFuseTypes) {
  // "none" ignores the audio; "all" has no query_feat; "dim" concatenates.
  MultiScaleMaskedTransformerDecoder none(
      small_options().queries_fuse_type(QueriesFuseType::kNone));
  none->eval();
  const auto in = small_inputs(2);
  const auto a = none->forward(in.x, in.mask_features, in.audio).pred_logits;
  const auto b = none->forward(in.x, in.mask_features, torch::randn({2, 1, 32})).pred_logits;
  EXPECT_TENSOR_EQ(a, b);
  EXPECT_TENSOR_EQ(a, none->forward(in.x, in.mask_features, at::Tensor()).pred_logits);

  MultiScaleMaskedTransformerDecoder all(small_options().queries_fuse_type(QueriesFuseType::kAll));
  EXPECT_FALSE(combo::module_state_dict(*all).count("query_feat.weight"));

  MultiScaleMaskedTransformerDecoder dim(
      small_options().queries_fuse_type(QueriesFuseType::kConcat).audio_out_dim(8));
  dim->eval();
  const auto sd = combo::module_state_dict(*dim);
  EXPECT_EQ(sd.at("query_feat.weight").sizes(), (std::vector<int64_t>{6, 24}));
  const auto audio = torch::randn({2, 1, 8});
  const auto out = dim->forward(in.x, in.mask_features, audio);
  // Prediction 0 of query 1, frame 1: official layout takes frame (1*2 + 1) / 6 = 0.
  const auto query = torch::cat({sd.at("query_feat.weight")[1], audio[0][0]});
  const auto d =
      at::layer_norm(query, {32}, sd.at("decoder_norm.weight"), sd.at("decoder_norm.bias"), 1e-5);
  EXPECT_TENSOR_NEAR_ABS(at::linear(d, sd.at("class_embed.weight"), sd.at("class_embed.bias")),
                         out.aux_outputs[0].pred_logits[1][1], 1e-5);
  EXPECT_THROW(MultiScaleMaskedTransformerDecoder(small_options().audio_out_dim(16)), combo::Error);
}

TEST_F(TransformerDecoderTest, PreNormRunsAndDiffers) {
  MultiScaleMaskedTransformerDecoder post(small_options());
  MultiScaleMaskedTransformerDecoder pre(small_options().pre_norm(true));
  combo::load_state_dict_into(*pre, combo::module_state_dict(*post));
  post->eval();
  pre->eval();
  const auto in = small_inputs(2);
  const auto a = post->forward(in.x, in.mask_features, in.audio);
  const auto b = pre->forward(in.x, in.mask_features, in.audio);
  // Prediction 0 precedes every layer; later ones differ.
  EXPECT_TENSOR_EQ(a.aux_outputs[0].pred_logits, b.aux_outputs[0].pred_logits);
  EXPECT_GT((a.pred_logits - b.pred_logits).abs().max().item<double>(), 1e-4);
}

TEST_F(TransformerDecoderTest, OfficialInitialisation) {
  MultiScaleMaskedTransformerDecoder model(TransformerDecoderOptions(2));
  const auto sd = combo::module_state_dict(*model);
  for (const std::string key :
       {"transformer_self_attention_layers.0.self_attn.in_proj_weight",
        "transformer_cross_attention_layers.4.multihead_attn.out_proj.weight",
        "transformer_ffn_layers.8.linear1.weight"}) {
    const auto w = sd.at(key);
    const double bound = std::sqrt(6.0 / static_cast<double>(w.size(0) + w.size(1)));
    EXPECT_LE(w.abs().max().item<double>(), bound) << key;
    EXPECT_GT(w.abs().max().item<double>(), 0.95 * bound) << key;
  }
  EXPECT_EQ(sd.at("transformer_self_attention_layers.0.self_attn.in_proj_bias")
                .abs()
                .max()
                .item<double>(),
            0.0);
  EXPECT_EQ(sd.at("transformer_cross_attention_layers.0.multihead_attn.out_proj.bias")
                .abs()
                .max()
                .item<double>(),
            0.0);
  EXPECT_NEAR(sd.at("query_feat.weight").std().item<double>(), 1.0, 0.05);
  EXPECT_NEAR(sd.at("level_embed.weight").std().item<double>(), 1.0, 0.15);
}

TEST_F(TransformerDecoderTest, RejectsBadInputs) {
  MultiScaleMaskedTransformerDecoder model(small_options());
  const auto in = small_inputs(2);
  try {
    model->forward({in.x[0], in.x[1]}, in.mask_features, in.audio);
    FAIL() << "expected combo::Error";
  } catch (const combo::Error& e) {
    EXPECT_NE(std::string(e.what()).find("expected 3 multi-scale feature maps, got 2"),
              std::string::npos)
        << e.what();
  }
  try {
    model->forward(in.x, in.mask_features, torch::zeros({2, 32}));
    FAIL() << "expected combo::Error";
  } catch (const combo::Error& e) {
    EXPECT_NE(std::string(e.what()).find("[2, 32]"), std::string::npos) << e.what();
  }
  TransformerDecoderHooks hooks;
  hooks.attn_masks = {torch::zeros({8, 6, 6}, torch::kBool)};
  EXPECT_THROW(model->forward(in.x, in.mask_features, in.audio, hooks), combo::Error);
}
