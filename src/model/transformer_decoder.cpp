#include "combo/model/transformer_decoder.h"

#include <torch/torch.h>

#include "combo/core/check.h"
#include "combo/nn/init.h"
#include "combo/nn/position_encoding.h"

namespace combo::model {

namespace {

torch::nn::LayerNorm layer_norm(int64_t dim) {
  return torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim}).eps(1e-5));
}

// The official layers run xavier_uniform_ over every parameter with more than one dimension.
void xavier_matrices(torch::nn::Module& module) {
  for (auto& p : module.parameters()) {
    if (p.dim() > 1) combo::nn::xavier_uniform_(p);
  }
}

}  // namespace

AudioQueryLayout audio_query_layout_from_string(const std::string& name) {
  if (name == "official") return AudioQueryLayout::kOfficial;
  if (name == "per_frame") return AudioQueryLayout::kPerFrame;
  COMBO_FAIL("TransformerDecoder: unknown audio_query_layout '", name,
             "'; expected official or per_frame");
}

std::string to_string(AudioQueryLayout layout) {
  return layout == AudioQueryLayout::kOfficial ? "official" : "per_frame";
}

QueriesFuseType queries_fuse_type_from_string(const std::string& name) {
  if (name == "add") return QueriesFuseType::kAdd;
  if (name == "dim") return QueriesFuseType::kConcat;
  if (name == "all") return QueriesFuseType::kAll;
  if (name == "none") return QueriesFuseType::kNone;
  COMBO_FAIL("TransformerDecoder: unknown queries_fuse_type '", name,
             "'; expected add, dim, all or none");
}

std::string to_string(QueriesFuseType type) {
  switch (type) {
    case QueriesFuseType::kAdd:
      return "add";
    case QueriesFuseType::kConcat:
      return "dim";
    case QueriesFuseType::kAll:
      return "all";
    case QueriesFuseType::kNone:
      return "none";
  }
  COMBO_FAIL("TransformerDecoder: invalid QueriesFuseType value ", static_cast<int>(type));
}

at::Tensor audio_for_queries(const at::Tensor& audio, int64_t num_queries,
                             AudioQueryLayout layout) {
  COMBO_CHECK(audio.defined() && audio.dim() == 3 && audio.size(1) == 1,
              "audio_for_queries: expected audio [N, 1, A], got ",
              audio.defined() ? audio.sizes() : at::IntArrayRef{});
  const int64_t n = audio.size(0);
  const int64_t a = audio.size(2);
  if (layout == AudioQueryLayout::kPerFrame) {
    return audio.transpose(0, 1).expand({num_queries, n, a});
  }
  // [N, Q, A] reinterpreted as [Q, N, A] without a transpose, exactly as the official code.
  return audio.expand({n, num_queries, a}).reshape({num_queries, n, a});
}

CrossAttentionLayerImpl::CrossAttentionLayerImpl(int64_t d_model_, int64_t nhead_,
                                                 bool normalize_before_)
    : d_model(d_model_), nhead(nhead_), normalize_before(normalize_before_) {
  reset();
}

void CrossAttentionLayerImpl::reset() {
  multihead_attn = register_module(
      "multihead_attn",
      combo::nn::MultiheadAttention(combo::nn::MultiheadAttentionOptions(d_model, nhead)));
  norm = register_module("norm", layer_norm(d_model));
  xavier_matrices(*this);
}

at::Tensor CrossAttentionLayerImpl::forward(const at::Tensor& tgt, const at::Tensor& memory_key,
                                            const at::Tensor& memory, const at::Tensor& query_pos,
                                            const at::Tensor& attn_mask) {
  if (normalize_before) {
    auto t = norm->forward(tgt);
    return tgt + multihead_attn->forward(t + query_pos, memory_key, memory, attn_mask);
  }
  auto t = multihead_attn->forward(tgt + query_pos, memory_key, memory, attn_mask);
  return norm->forward(tgt + t);
}

SelfAttentionLayerImpl::SelfAttentionLayerImpl(int64_t d_model_, int64_t nhead_,
                                               bool normalize_before_)
    : d_model(d_model_), nhead(nhead_), normalize_before(normalize_before_) {
  reset();
}

void SelfAttentionLayerImpl::reset() {
  self_attn = register_module(
      "self_attn",
      combo::nn::MultiheadAttention(combo::nn::MultiheadAttentionOptions(d_model, nhead)));
  norm = register_module("norm", layer_norm(d_model));
  xavier_matrices(*this);
}

at::Tensor SelfAttentionLayerImpl::forward(const at::Tensor& tgt, const at::Tensor& query_pos) {
  if (normalize_before) {
    auto t = norm->forward(tgt);
    auto q = t + query_pos;
    return tgt + self_attn->forward(q, q, t);
  }
  auto q = tgt + query_pos;
  return norm->forward(tgt + self_attn->forward(q, q, tgt));
}

FFNLayerImpl::FFNLayerImpl(int64_t d_model_, int64_t dim_feedforward_, bool normalize_before_)
    : d_model(d_model_), dim_feedforward(dim_feedforward_), normalize_before(normalize_before_) {
  reset();
}

void FFNLayerImpl::reset() {
  linear1 = register_module("linear1", torch::nn::Linear(d_model, dim_feedforward));
  linear2 = register_module("linear2", torch::nn::Linear(dim_feedforward, d_model));
  norm = register_module("norm", layer_norm(d_model));
  xavier_matrices(*this);
}

at::Tensor FFNLayerImpl::forward(const at::Tensor& tgt) {
  if (normalize_before) {
    return tgt + linear2->forward(linear1->forward(norm->forward(tgt)).relu_());
  }
  return norm->forward(tgt + linear2->forward(linear1->forward(tgt).relu_()));
}

MaskEmbedMlpImpl::MaskEmbedMlpImpl(int64_t input_dim_, int64_t hidden_dim_, int64_t output_dim_,
                                   int64_t num_layers_)
    : input_dim(input_dim_),
      hidden_dim(hidden_dim_),
      output_dim(output_dim_),
      num_layers(num_layers_) {
  reset();
}

void MaskEmbedMlpImpl::reset() {
  COMBO_CHECK(num_layers >= 1, "MaskEmbedMlp: expected at least one layer, got ", num_layers);
  layers = register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < num_layers; ++i) {
    const int64_t in = i == 0 ? input_dim : hidden_dim;
    const int64_t out = i == num_layers - 1 ? output_dim : hidden_dim;
    layers->push_back(torch::nn::Linear(in, out));
  }
}

at::Tensor MaskEmbedMlpImpl::forward(const at::Tensor& x) {
  auto y = x;
  for (int64_t i = 0; i < num_layers; ++i) {
    y = layers->ptr<torch::nn::LinearImpl>(i)->forward(y);
    if (i < num_layers - 1) y = y.relu_();
  }
  return y;
}

MultiScaleMaskedTransformerDecoderImpl::MultiScaleMaskedTransformerDecoderImpl(
    TransformerDecoderOptions options_)
    : options(std::move(options_)) {
  reset();
}

void MultiScaleMaskedTransformerDecoderImpl::reset() {
  const auto& o = options;
  const int64_t e = o.hidden_dim();
  COMBO_CHECK(o.num_classes() >= 1, "TransformerDecoder: num_classes must be >= 1, got ",
              o.num_classes());
  COMBO_CHECK(e > 0 && o.nheads() > 0 && e % o.nheads() == 0 && e % 2 == 0,
              "TransformerDecoder: hidden_dim must be even and divisible by nheads, got "
              "hidden_dim=",
              e, " nheads=", o.nheads());
  COMBO_CHECK(o.dec_layers() >= 1, "TransformerDecoder: dec_layers must be >= 1, got ",
              o.dec_layers());
  COMBO_CHECK(o.num_queries() >= 1 && o.num_feature_levels() >= 1 && o.dim_feedforward() >= 1 &&
                  o.mask_dim() >= 1 && o.in_channels() >= 1,
              "TransformerDecoder: num_queries, num_feature_levels, dim_feedforward, mask_dim "
              "and in_channels must be positive");
  const bool audio_is_query_width = o.queries_fuse_type() == QueriesFuseType::kAdd ||
                                    o.queries_fuse_type() == QueriesFuseType::kAll;
  COMBO_CHECK(!audio_is_query_width || o.audio_out_dim() == e,
              "TransformerDecoder: queries_fuse_type ", to_string(o.queries_fuse_type()),
              " needs audio_out_dim == hidden_dim, got ", o.audio_out_dim(), " vs ", e);
  COMBO_CHECK(
      o.queries_fuse_type() != QueriesFuseType::kConcat ||
          (o.audio_out_dim() > 0 && o.audio_out_dim() < e),
      "TransformerDecoder: queries_fuse_type dim needs 0 < audio_out_dim < hidden_dim, got ",
      o.audio_out_dim(), " vs ", e);

  self_layers_.clear();
  cross_layers_.clear();
  ffn_layers_.clear();
  transformer_self_attention_layers =
      register_module("transformer_self_attention_layers", torch::nn::ModuleList());
  transformer_cross_attention_layers =
      register_module("transformer_cross_attention_layers", torch::nn::ModuleList());
  transformer_ffn_layers = register_module("transformer_ffn_layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < num_layers(); ++i) {
    self_layers_.push_back(std::make_shared<SelfAttentionLayerImpl>(e, o.nheads(), o.pre_norm()));
    cross_layers_.push_back(std::make_shared<CrossAttentionLayerImpl>(e, o.nheads(), o.pre_norm()));
    ffn_layers_.push_back(std::make_shared<FFNLayerImpl>(e, o.dim_feedforward(), o.pre_norm()));
    transformer_self_attention_layers->push_back(self_layers_.back());
    transformer_cross_attention_layers->push_back(cross_layers_.back());
    transformer_ffn_layers->push_back(ffn_layers_.back());
  }
  decoder_norm = register_module("decoder_norm", layer_norm(e));
  if (o.queries_fuse_type() != QueriesFuseType::kAll) {
    const int64_t feat_dim =
        o.queries_fuse_type() == QueriesFuseType::kConcat ? e - o.audio_out_dim() : e;
    query_feat = register_module("query_feat", torch::nn::Embedding(o.num_queries(), feat_dim));
  }
  query_embed = register_module("query_embed", torch::nn::Embedding(o.num_queries(), e));
  level_embed = register_module("level_embed", torch::nn::Embedding(o.num_feature_levels(), e));
  if (o.in_channels() != e || o.enforce_input_proj()) {
    input_proj = register_module("input_proj", torch::nn::ModuleList());
    for (int64_t i = 0; i < o.num_feature_levels(); ++i) {
      torch::nn::Conv2d conv(torch::nn::Conv2dOptions(o.in_channels(), e, 1));
      combo::nn::c2_xavier_fill(conv);
      input_proj->push_back(conv);
    }
  }
  class_embed = register_module("class_embed", torch::nn::Linear(e, o.num_classes() + 1));
  mask_embed = register_module("mask_embed", MaskEmbedMlp(e, e, o.mask_dim(), 3));
}

void MultiScaleMaskedTransformerDecoderImpl::pretty_print(std::ostream& stream) const {
  const auto& o = options;
  stream << "combo::model::MultiScaleMaskedTransformerDecoder(num_classes=" << o.num_classes()
         << ", hidden_dim=" << o.hidden_dim() << ", num_queries=" << o.num_queries()
         << ", nheads=" << o.nheads() << ", dim_feedforward=" << o.dim_feedforward()
         << ", dec_layers=" << o.dec_layers() << ", pre_norm=" << o.pre_norm()
         << ", mask_dim=" << o.mask_dim() << ", num_feature_levels=" << o.num_feature_levels()
         << ", queries_fuse_type=" << to_string(o.queries_fuse_type())
         << ", audio_query_layout=" << to_string(o.audio_query_layout()) << ")";
}

at::Tensor MultiScaleMaskedTransformerDecoderImpl::initial_queries(const at::Tensor& audio,
                                                                   int64_t n) {
  const int64_t q = options.num_queries();
  const int64_t e = options.hidden_dim();
  const auto fuse = options.queries_fuse_type();
  if (fuse == QueriesFuseType::kNone) {
    return query_feat->weight.unsqueeze(1).expand({q, n, e}).contiguous();
  }
  COMBO_CHECK(audio.defined() && audio.dim() == 3 && audio.size(0) == n && audio.size(1) == 1 &&
                  audio.size(2) == options.audio_out_dim(),
              "TransformerDecoder: expected audio [", n, ", 1, ", options.audio_out_dim(),
              "], got ", audio.defined() ? audio.sizes() : at::IntArrayRef{});
  auto audio_q = audio_for_queries(audio, q, options.audio_query_layout());  // [Q, N, A]
  switch (fuse) {
    case QueriesFuseType::kAdd:
      return query_feat->weight.unsqueeze(1) + audio_q;
    case QueriesFuseType::kConcat:
      return at::cat(
          {query_feat->weight.unsqueeze(1).expand({q, n, query_feat->weight.size(1)}), audio_q},
          -1);
    case QueriesFuseType::kAll:
      return audio_q.contiguous();
    case QueriesFuseType::kNone:
      break;
  }
  COMBO_FAIL("TransformerDecoder: invalid queries_fuse_type");
}

MultiScaleMaskedTransformerDecoderImpl::Heads
MultiScaleMaskedTransformerDecoderImpl::forward_prediction_heads(const at::Tensor& output,
                                                                 const at::Tensor& mask_features,
                                                                 at::IntArrayRef attn_mask_size,
                                                                 bool want_attn_mask) {
  const int64_t n = mask_features.size(0);
  const int64_t h = mask_features.size(2);
  const int64_t w = mask_features.size(3);
  // LayerNorm is per query, so normalising the [N, Q, E] view gives the transposed result
  // directly in batch-first memory.
  auto d = decoder_norm->forward(output.transpose(0, 1));  // [N, Q, E]
  Heads heads;
  heads.logits = class_embed->forward(d);
  auto embed = mask_embed->forward(d);  // [N, Q, mask_dim]
  heads.masks = at::bmm(embed, mask_features.reshape({n, options.mask_dim(), h * w}))
                    .view({n, options.num_queries(), h, w});
  if (want_attn_mask) {
    torch::NoGradGuard no_grad;
    auto resized = at::upsample_bilinear2d(heads.masks.detach(), attn_mask_size,
                                           /*align_corners=*/false);
    heads.attn_mask = (resized.sigmoid().flatten(2) < 0.5).unsqueeze(1);  // [N, 1, Q, h*w]
  }
  return heads;
}

TransformerDecoderOutput MultiScaleMaskedTransformerDecoderImpl::forward(
    const std::vector<at::Tensor>& x, const at::Tensor& mask_features, const at::Tensor& audio,
    const TransformerDecoderHooks& hooks) {
  const int64_t levels = options.num_feature_levels();
  const int64_t e = options.hidden_dim();
  const int64_t nh = options.nheads();
  const int64_t nq = options.num_queries();
  const int64_t layers = num_layers();
  COMBO_CHECK(static_cast<int64_t>(x.size()) == levels, "TransformerDecoder: expected ", levels,
              " multi-scale feature maps, got ", x.size());
  COMBO_CHECK(mask_features.dim() == 4 && mask_features.size(1) == options.mask_dim(),
              "TransformerDecoder: expected mask_features [N, ", options.mask_dim(),
              ", H, W], got ", mask_features.sizes());
  const int64_t n = mask_features.size(0);
  COMBO_CHECK(hooks.attn_masks.empty() || static_cast<int64_t>(hooks.attn_masks.size()) >= layers,
              "TransformerDecoder: injected attn_masks must hold at least ", layers, " masks, got ",
              hooks.attn_masks.size());

  // Per level: values src [S, N, E], keys src + pos [S, N, E] (shared by the layers of a level).
  std::vector<at::Tensor> src(levels);
  std::vector<at::Tensor> src_key(levels);
  std::vector<std::vector<int64_t>> sizes(levels);
  for (int64_t i = 0; i < levels; ++i) {
    const auto& xi = x[i];
    COMBO_CHECK(xi.dim() == 4 && xi.size(0) == n && xi.size(1) == options.in_channels(),
                "TransformerDecoder: expected multi-scale map ", i, " as [", n, ", ",
                options.in_channels(), ", h, w], got ", xi.sizes());
    sizes[i] = {xi.size(2), xi.size(3)};
    auto proj = input_proj ? input_proj->ptr<torch::nn::Conv2dImpl>(i)->forward(xi) : xi;
    src[i] =
        (proj.flatten(2) + level_embed->weight[i].view({1, e, 1})).permute({2, 0, 1}).contiguous();
    auto pos =
        combo::nn::sine_position_encoding(xi.size(2), xi.size(3), e / 2, 10000.0, xi.options())
            .flatten(2)
            .permute({2, 0, 1});  // [S, 1, E]
    src_key[i] = src[i] + pos;
  }
  auto query_pos = query_embed->weight.unsqueeze(1);  // [Q, 1, E]
  auto output = initial_queries(audio, n);            // [Q, N, E]

  const bool injected = !hooks.attn_masks.empty();
  const bool aux = options.aux_outputs();
  // Without aux outputs, the intermediate predictions only feed attention masks; bilinear
  // resizing commutes with the product over channels, so the masks are computed from the mask
  // features resized once per level instead of from full-resolution masks.
  std::vector<at::Tensor> level_features;
  if (!aux) {
    torch::NoGradGuard no_grad;
    for (int64_t i = 0; i < levels; ++i) {
      level_features.push_back(
          at::upsample_bilinear2d(mask_features.detach(), sizes[i], /*align_corners=*/false)
              .flatten(2));
    }
  }

  TransformerDecoderOutput out;
  // Prediction j (0 = learnable queries, j = after layer j - 1); its attention mask is sized for
  // level j mod levels and used by layer j.
  auto predict = [&](int64_t j) {
    const bool final = j == layers;
    const bool want_mask = hooks.return_attn_masks || (!injected && !final);
    Heads heads;
    if (final || aux) {
      heads = forward_prediction_heads(output, mask_features, sizes[j % levels], want_mask);
      if (!final) out.aux_outputs.push_back({heads.logits, heads.masks});
    } else if (want_mask) {
      torch::NoGradGuard no_grad;
      auto d = decoder_norm->forward(output.detach().transpose(0, 1));
      auto logits = at::bmm(mask_embed->forward(d), level_features[j % levels]);
      heads.attn_mask = (logits.sigmoid() < 0.5).unsqueeze(1);
    }
    if (hooks.return_attn_masks) {
      const auto& m = heads.attn_mask;
      out.attn_masks.push_back(m.expand({n, nh, nq, m.size(3)}).reshape({n * nh, nq, m.size(3)}));
    }
    return heads;
  };

  Heads heads = predict(0);
  for (int64_t i = 0; i < layers; ++i) {
    const int64_t level = i % levels;
    const int64_t s = sizes[level][0] * sizes[level][1];
    at::Tensor mask;
    if (injected) {
      const auto& m = hooks.attn_masks[i];
      COMBO_CHECK(m.scalar_type() == at::kBool && m.dim() == 3 && m.size(0) == n * nh &&
                      m.size(1) == nq && m.size(2) == s,
                  "TransformerDecoder: injected attn_mask ", i, " must be bool [", n * nh, ", ", nq,
                  ", ", s, "], got ", m.scalar_type(), " ", m.sizes());
      mask = m.to(mask_features.device()).reshape({n, nh, nq, s});
    } else {
      mask = heads.attn_mask;
    }
    // A query whose mask blocks every key attends to all of them instead.
    mask = mask.logical_and(mask.all(-1, /*keepdim=*/true).logical_not());
    output = cross_layers_[i]->forward(output, src_key[level], src[level], query_pos, mask);
    output = self_layers_[i]->forward(output, query_pos);
    output = ffn_layers_[i]->forward(output);
    heads = predict(i + 1);
  }
  out.pred_logits = heads.logits;
  out.pred_masks = heads.masks;
  for (const auto& p : out.aux_outputs) {
    out.middles_attn_mask.push_back(p.pred_masks.view({n, nq, -1}));
  }
  return out;
}

}  // namespace combo::model
