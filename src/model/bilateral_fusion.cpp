#include "combo/model/bilateral_fusion.h"

#include <torch/torch.h>

#include "combo/core/check.h"
#include "combo/nn/init.h"
#include "combo/nn/position_encoding.h"

namespace combo::model {

namespace {

constexpr double kScoreClamp = 50000.0;

torch::nn::Linear xavier_linear(int64_t in, int64_t out) {
  torch::nn::Linear linear(in, out);
  combo::nn::xavier_uniform_fill(linear);
  return linear;
}

torch::nn::LayerNorm layer_norm(int64_t dim) {
  return torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim}).eps(1e-5));
}

// Per-pixel mix of one vector per head: out[n, l, :] = bias + sum_h w[n, l, h] * R[n, h, :] with
// R[n, h, :] = W_out[:, h-block] . value[n, h-block]. Equals out_proj(concat_h(w_h * value_h))
// but never forms the [N, L, embed] product.
at::Tensor mix_heads(const at::Tensor& w, const at::Tensor& value, const torch::nn::Linear& out,
                     int64_t num_heads) {
  const int64_t n = value.size(0);
  const int64_t embed = value.size(-1);
  const int64_t hd = embed / num_heads;
  const int64_t out_dim = out->weight.size(0);
  auto vh = value.reshape({n, num_heads, hd}).transpose(0, 1);              // [h, N, hd]
  auto wo = out->weight.view({out_dim, num_heads, hd}).permute({1, 2, 0});  // [h, hd, out]
  auto r = at::bmm(vh, wo).transpose(0, 1);                                 // [N, h, out]
  return at::baddbmm(out->bias.view({1, 1, out_dim}), w, r);                // [N, L, out]
}

}  // namespace

FusionType fusion_type_from_string(const std::string& name) {
  if (name == "MHA-B" || name == "bidirectional") return FusionType::kBidirectional;
  if (name == "MHA-S" || name == "visual_to_audio") return FusionType::kVisualToAudio;
  if (name == "MHA-S-Audio" || name == "audio_only") return FusionType::kAudioOnly;
  if (name == "MHA-None" || name == "none") return FusionType::kNone;
  COMBO_FAIL("BilateralFusion: unknown fusion type '", name,
             "'; expected one of bidirectional (MHA-B), visual_to_audio (MHA-S), audio_only "
             "(MHA-S-Audio), none (MHA-None)");
}

std::string to_string(FusionType type) {
  switch (type) {
    case FusionType::kBidirectional:
      return "bidirectional";
    case FusionType::kVisualToAudio:
      return "visual_to_audio";
    case FusionType::kAudioOnly:
      return "audio_only";
    case FusionType::kNone:
      return "none";
  }
  COMBO_FAIL("BilateralFusion: invalid FusionType value ", static_cast<int>(type));
}

BiMultiHeadAttentionImpl::BiMultiHeadAttentionImpl(int64_t v_dim_, int64_t a_dim_,
                                                   int64_t embed_dim_, bool visual_output_)
    : v_dim(v_dim_), a_dim(a_dim_), embed_dim(embed_dim_), visual_output(visual_output_) {
  reset();
}

void BiMultiHeadAttentionImpl::reset() {
  v_proj = register_module("v_proj", xavier_linear(v_dim, embed_dim));
  a_proj = register_module("a_proj", xavier_linear(a_dim, embed_dim));
  values_v_proj = register_module("values_v_proj", xavier_linear(v_dim, embed_dim));
  if (visual_output) {
    values_a_proj = register_module("values_a_proj", xavier_linear(a_dim, embed_dim));
    out_v_proj = register_module("out_v_proj", xavier_linear(embed_dim, v_dim));
  }
  out_a_proj = register_module("out_a_proj", xavier_linear(embed_dim, a_dim));
}

BiAttentionBlockImpl::BiAttentionBlockImpl(int64_t v_dim_, int64_t a_dim_, int64_t num_heads_,
                                           double layer_scale_init_, bool visual_output_)
    : v_dim(v_dim_),
      a_dim(a_dim_),
      num_heads(num_heads_),
      layer_scale_init(layer_scale_init_),
      visual_output(visual_output_) {
  reset();
}

void BiAttentionBlockImpl::reset() {
  layer_norm_v_list = register_module("layer_norm_v_list", torch::nn::ModuleList());
  layer_norm_a_list = register_module("layer_norm_a_list", torch::nn::ModuleList());
  attn_list = register_module("attn_list", torch::nn::ModuleList());
  gamma_v_list = register_module("gamma_v_list", torch::nn::ParameterList());
  layer_norm_v_list->push_back(layer_norm(v_dim));
  layer_norm_a_list->push_back(layer_norm(a_dim));
  attn_list->push_back(BiMultiHeadAttention(v_dim, a_dim, v_dim, visual_output));
  if (visual_output) {
    gamma_v_list->append(torch::full({v_dim}, layer_scale_init).requires_grad_());
  }
  gamma_a = register_parameter("gamma_a", torch::full({a_dim}, layer_scale_init));
}

A2IMultiHeadAttentionImpl::A2IMultiHeadAttentionImpl(int64_t q_dim_, int64_t k_dim_,
                                                     int64_t embed_dim_)
    : q_dim(q_dim_), k_dim(k_dim_), embed_dim(embed_dim_) {
  reset();
}

void A2IMultiHeadAttentionImpl::reset() {
  v_proj = register_module("v_proj", xavier_linear(k_dim, embed_dim));
  out_proj = register_module("out_proj", xavier_linear(embed_dim, q_dim));
}

AttentionA2IImpl::AttentionA2IImpl(int64_t q_dim_, int64_t k_dim_, int64_t num_heads_,
                                   double layer_scale_init_)
    : q_dim(q_dim_), k_dim(k_dim_), num_heads(num_heads_), layer_scale_init(layer_scale_init_) {
  reset();
}

void AttentionA2IImpl::reset() {
  layer_norm_q_1_list = register_module("layer_norm_q_1_list", torch::nn::ModuleList());
  layer_norm_k_1_list = register_module("layer_norm_k_1_list", torch::nn::ModuleList());
  attn_list = register_module("attn_list", torch::nn::ModuleList());
  gamma_list = register_module("gamma_list", torch::nn::ParameterList());
  layer_norm_q_1_list->push_back(layer_norm(q_dim));
  layer_norm_k_1_list->push_back(layer_norm(k_dim));
  attn_list->push_back(A2IMultiHeadAttention(q_dim, k_dim, q_dim));
  gamma_list->append(torch::full({q_dim}, layer_scale_init).requires_grad_());
}

BilateralFusionImpl::BilateralFusionImpl(BilateralFusionOptions options_)
    : options(std::move(options_)) {
  reset();
}

void BilateralFusionImpl::reset() {
  const int64_t c = options.visual_dim();
  const int64_t a = options.audio_dim();
  const int64_t h = options.num_heads();
  COMBO_CHECK(
      c > 0 && a > 0 && h > 0 && c % h == 0 && c % 2 == 0,
      "BilateralFusion: visual_dim must be even and divisible by num_heads, got visual_dim=", c,
      " audio_dim=", a, " num_heads=", h);
  COMBO_CHECK(options.dropout() >= 0.0 && options.dropout() < 1.0,
              "BilateralFusion: dropout must be in [0, 1), got ", options.dropout());
  const FusionType type = options.type();
  level_embed = register_module("level_embed", torch::nn::Embedding(1, c));
  if (type == FusionType::kBidirectional || type == FusionType::kAudioOnly) {
    audio_pos = register_module("audio_pos", torch::nn::Embedding(1, a));
    b_attn = register_module(
        "b_attn", BiAttentionBlock(c, a, h, options.layer_scale_init(),
                                   /*visual_output=*/type == FusionType::kBidirectional));
  } else if (type == FusionType::kVisualToAudio) {
    a2i_attn = register_module("a2i_attn", AttentionA2I(c, a, h, options.layer_scale_init()));
  }
}

void BilateralFusionImpl::pretty_print(std::ostream& stream) const {
  stream << "combo::model::BilateralFusion(type=" << to_string(options.type())
         << ", visual_dim=" << options.visual_dim() << ", audio_dim=" << options.audio_dim()
         << ", num_heads=" << options.num_heads() << ", dropout=" << options.dropout()
         << ", layer_scale_init=" << options.layer_scale_init() << ")";
}

std::vector<std::string> BilateralFusionImpl::official_only_prefixes() const {
  switch (options.type()) {
    case FusionType::kBidirectional:
      return {};
    case FusionType::kVisualToAudio:
      return {"audio_pos.", "a2i_attn.attn_list.0.q_proj.", "a2i_attn.attn_list.0.k_proj."};
    case FusionType::kAudioOnly:
      return {"b_attn.gamma_v_list.", "b_attn.attn_list.0.values_a_proj.",
              "b_attn.attn_list.0.out_v_proj."};
    case FusionType::kNone:
      return {"audio_pos."};
  }
  return {};
}

BilateralFusionOutput BilateralFusionImpl::forward(const at::Tensor& visual,
                                                   const at::Tensor& audio) {
  const int64_t c = options.visual_dim();
  const int64_t a = options.audio_dim();
  COMBO_CHECK(visual.dim() == 4 && visual.size(1) == c, "BilateralFusion: expected visual [N, ", c,
              ", H, W], got ", visual.sizes());
  COMBO_CHECK(audio.dim() == 3 && audio.size(0) == visual.size(0) && audio.size(1) == 1 &&
                  audio.size(2) == a,
              "BilateralFusion: expected audio [", visual.size(0), ", 1, ", a, "], got ",
              audio.sizes());
  // Step 1 of every type: the level embedding, broadcast over H and W.
  auto x = visual + level_embed->weight[0].view({1, c, 1, 1});
  switch (options.type()) {
    case FusionType::kBidirectional:
      return forward_bidirectional(x, audio, /*visual_output=*/true);
    case FusionType::kAudioOnly:
      return forward_bidirectional(x, audio, /*visual_output=*/false);
    case FusionType::kVisualToAudio:
      return {forward_visual_to_audio(x, audio), audio};
    case FusionType::kNone:
      return {x, audio};
  }
  COMBO_FAIL("BilateralFusion: invalid fusion type");
}

// COMBO_SPEC 4.3. The products are re-associated so that nothing of size [N, L, embed] is
// projected: with one audio token, q_l . k_h = (v_l + p_l) . (W_q,h^T k_h) + b_q,h . k_h, the
// audio update sum_l beta_l (W_vv v_l + b_vv) = W_vv (sum_l beta_l v_l) + b_vv sum_l beta_l, and
// the visual update is a per-pixel mix of one out_v_proj(value) vector per head. The result is the
// official one up to float summation order, at about 1/30 of the multiply-adds.
BilateralFusionOutput BilateralFusionImpl::forward_bidirectional(const at::Tensor& x,
                                                                 const at::Tensor& audio,
                                                                 bool visual_output) {
  const int64_t n = x.size(0);
  const int64_t c = options.visual_dim();
  const int64_t height = x.size(2);
  const int64_t width = x.size(3);
  const int64_t heads = options.num_heads();
  const int64_t hd = c / heads;
  const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
  auto& ln_v = *b_attn->layer_norm_v_list->ptr<torch::nn::LayerNormImpl>(0);
  auto& ln_a = *b_attn->layer_norm_a_list->ptr<torch::nn::LayerNormImpl>(0);
  auto& attn = *b_attn->attn_list->ptr<BiMultiHeadAttentionImpl>(0);

  auto v = ln_v.forward(x.flatten(2).transpose(1, 2));  // [N, L, C]
  auto a_hat = ln_a.forward(audio);                     // [N, 1, A]
  auto pos = combo::nn::sine_position_encoding(height, width, c / 2, 10000.0, x.options())
                 .flatten(2)
                 .transpose(1, 2)
                 .contiguous();  // [1, L, C]

  // Scores [N, L, heads] = scale * ((v + pos) . M + cb), M[n, :, h] = W_q,h^T k[n, h].
  auto key = attn.a_proj->forward(a_hat + audio_pos->weight[0]).view({n, heads, hd});
  auto m = at::bmm(key.transpose(0, 1), attn.v_proj->weight.view({heads, hd, c}))
               .permute({1, 2, 0})
               .mul(scale);                                                     // [N, C, h]
  auto cb = (key * attn.v_proj->bias.view({1, heads, hd})).sum(-1).mul(scale);  // [N, h]
  auto scores = at::baddbmm(cb.unsqueeze(1), v + pos, m).clamp(-kScoreClamp, kScoreClamp);

  // Both directions normalise over the L pixels (official softmax(dim=1) and max-subtracted
  // softmax of the transposed scores).
  auto scores_t = scores.transpose(1, 2);  // [N, h, L]
  auto beta = (scores_t - std::get<0>(scores_t.max(-1, /*keepdim=*/true)))
                  .clamp(-kScoreClamp, kScoreClamp)
                  .softmax(-1);
  const bool drop = is_training() && options.dropout() > 0.0;
  if (drop) beta = at::dropout(beta, options.dropout(), /*train=*/true);

  // Audio update: out_a_proj(concat_h(W_vv,h (sum_l beta_hl v_l) + b_vv,h sum_l beta_hl)).
  auto pooled = at::bmm(beta, v);                                              // [N, h, C]
  auto wvv = attn.values_v_proj->weight.view({heads, hd, c}).transpose(1, 2);  // [h, C, hd]
  auto beta_sum = beta.sum(-1).transpose(0, 1).unsqueeze(-1);                  // [h, N, 1]
  auto av = at::baddbmm(attn.values_v_proj->bias.view({heads, 1, hd}) * beta_sum,
                        pooled.transpose(0, 1), wvv);  // [h, N, hd]
  auto delta_a = attn.out_a_proj->forward(av.transpose(0, 1).reshape({n, 1, c}));
  auto audio_out = at::addcmul(a_hat, b_attn->gamma_a, delta_a);

  if (!visual_output) return {x, audio_out};

  auto alpha = scores.softmax(1);  // [N, L, h]
  if (drop) alpha = at::dropout(alpha, options.dropout(), /*train=*/true);
  auto value_a = attn.values_a_proj->forward(a_hat);  // [N, 1, C]
  auto delta_v = mix_heads(alpha, value_a, attn.out_v_proj, heads);
  auto visual_out = at::addcmul(v, b_attn->gamma_v_list[0], delta_v)
                        .transpose(1, 2)
                        .reshape({n, c, height, width});
  return {visual_out.contiguous(), audio_out};
}

at::Tensor BilateralFusionImpl::forward_visual_to_audio(const at::Tensor& x,
                                                        const at::Tensor& audio) {
  const int64_t n = x.size(0);
  const int64_t c = options.visual_dim();
  const int64_t height = x.size(2);
  const int64_t width = x.size(3);
  auto& ln_q = *a2i_attn->layer_norm_q_1_list->ptr<torch::nn::LayerNormImpl>(0);
  auto& ln_k = *a2i_attn->layer_norm_k_1_list->ptr<torch::nn::LayerNormImpl>(0);
  auto& attn = *a2i_attn->attn_list->ptr<A2IMultiHeadAttentionImpl>(0);
  auto q = ln_q.forward(x.flatten(2).transpose(1, 2));     // [N, L, C]
  auto value = attn.v_proj->forward(ln_k.forward(audio));  // [N, 1, C]
  at::Tensor delta;
  if (is_training() && options.dropout() > 0.0) {
    // The attention weight of the single key is 1; dropout acts on it per pixel and head.
    auto w = at::dropout(at::ones({n, q.size(1), options.num_heads()}, q.options()),
                         options.dropout(), /*train=*/true);
    delta = mix_heads(w, value, attn.out_proj, options.num_heads());
  } else {
    delta = attn.out_proj->forward(value);  // [N, 1, C], the same for every pixel
  }
  return at::addcmul(q, a2i_attn->gamma_list[0], delta)
      .transpose(1, 2)
      .reshape({n, c, height, width})
      .contiguous();
}

}  // namespace combo::model
