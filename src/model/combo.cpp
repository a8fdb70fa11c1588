#include "combo/model/combo.h"

#include <torch/torch.h>

#include <iomanip>
#include <sstream>
#include <string_view>

#include "combo/core/check.h"
#include "combo/core/profile.h"
#include "combo/model/siam_encoder.h"

namespace combo::model {

FusionPlacement fusion_placement_from_string(const std::string& name) {
  if (name == "late") return FusionPlacement::kLate;
  if (name == "early") return FusionPlacement::kEarly;
  COMBO_FAIL("unknown fusion placement '", name, "' (late, early)");
}

namespace {

BilateralFusionOptions fusion_options(const ComboModelOptions& o, int64_t visual_dim) {
  return BilateralFusionOptions(o.fusion_type())
      .visual_dim(visual_dim)
      .audio_dim(o.audio_dim())
      .num_heads(o.fusion_heads())
      .dropout(o.fusion_dropout())
      .layer_scale_init(o.fusion_layer_scale_init());
}

audio::AudioMlpOptions audio_mlp_options(const ComboModelOptions& o) {
  return audio::AudioMlpOptions(o.audio_dim(), o.audio_mlp_dim(), o.hidden_dim());
}

}  // namespace

SemSegHeadImpl::SemSegHeadImpl(const ComboModelOptions& options_,
                               const backbone::FeatureShapes& shapes_)
    : options(options_), shapes(shapes_) {
  reset();
}

void SemSegHeadImpl::reset() {
  PixelDecoderInputShapes in;
  for (const auto& [name, s] : shapes) in[name] = PixelDecoderInputShape{s.channels, s.stride};
  pixel_decoder = register_module(
      "pixel_decoder",
      MSDeformAttnPixelDecoder(MSDeformAttnPixelDecoderOptions(in)
                                   .conv_dim(options.conv_dim())
                                   .mask_dim(options.mask_dim())
                                   .transformer_dropout(options.enc_dropout())
                                   .transformer_nheads(options.enc_heads())
                                   .transformer_dim_feedforward(options.enc_dim_feedforward())
                                   .transformer_enc_layers(options.enc_layers())
                                   .transformer_n_points(options.enc_points())));
  if (options.fusion_placement() == FusionPlacement::kLate) {
    fusion_module = register_module("fusion_module",
                                    BilateralFusion(fusion_options(options, options.mask_dim())));
    audio_transformation =
        register_module("audio_transformation", audio::AudioMlp(audio_mlp_options(options)));
  }
  predictor = register_module(
      "predictor",
      MultiScaleMaskedTransformerDecoder(TransformerDecoderOptions(options.num_classes())
                                             .in_channels(options.conv_dim())
                                             .hidden_dim(options.hidden_dim())
                                             .num_queries(options.num_queries())
                                             .nheads(options.dec_heads())
                                             .dim_feedforward(options.dec_dim_feedforward())
                                             .dec_layers(options.dec_layers())
                                             .pre_norm(options.pre_norm())
                                             .mask_dim(options.mask_dim())
                                             .audio_out_dim(options.hidden_dim())
                                             .audio_query_layout(options.audio_query_layout())));
}

ComboModelImpl::ComboModelImpl(ComboModelOptions options_) : options(std::move(options_)) {
  reset();
}

void ComboModelImpl::reset() {
  const auto& o = options;
  COMBO_CHECK(o.pixel_mean().size() == 3 && o.pixel_std().size() == 3,
              "ComboModel: pixel_mean and pixel_std need 3 values, got ", o.pixel_mean().size(),
              " and ", o.pixel_std().size());
  const auto bopts = backbone::BackboneOptions().drop_path_rate(o.drop_path_rate());
  backbone = register_module("backbone", backbone::build_backbone(o.backbone(), bopts));
  const auto shapes = backbone->output_shapes();
  if (o.pre_sam()) {
    if (!o.shared_encoders()) {
      pre_sam_backbone =
          register_module("pre_sam_backbone", backbone::build_backbone(o.backbone(), bopts));
    }
    scale_factor_module =
        register_module("scale_factor_module", make_channel_weighted_blocks(shapes));
  }
  audio_backbone = register_module("audio_backbone", audio::Vggish());
  if (o.freeze_audio()) audio_backbone->freeze();
  if (o.fusion_placement() == FusionPlacement::kEarly) {
    fusion_module = register_module("fusion_module",
                                    BilateralFusion(fusion_options(o, shapes.at("res2").channels)));
    audio_transformation =
        register_module("audio_transformation", audio::AudioMlp(audio_mlp_options(o)));
  }
  sem_seg_head = register_module("sem_seg_head", SemSegHead(o, shapes));
  backbone->checkpoint_blocks = o.activation_checkpointing();
  if (pre_sam_backbone) pre_sam_backbone->checkpoint_blocks = o.activation_checkpointing();
  sem_seg_head->pixel_decoder->transformer->encoder->checkpoint_layers =
      o.activation_checkpointing();
  pixel_mean_ = torch::tensor(o.pixel_mean(), torch::kFloat32).view({1, 3, 1, 1});
  pixel_std_ = torch::tensor(o.pixel_std(), torch::kFloat32).view({1, 3, 1, 1});
}

namespace {
// Float32, as the official model; float64 once the model was converted to it (the reference
// run of the parity tests).
at::ScalarType compute_dtype(const torch::nn::Module& backbone) {
  for (const auto& p : backbone.parameters())
    if (p.scalar_type() == torch::kFloat64) return torch::kFloat64;
  return torch::kFloat32;
}
}  // namespace

at::Tensor ComboModelImpl::normalize(const at::Tensor& images) const {
  COMBO_CHECK(images.dim() == 4 && images.size(1) == 3,
              "ComboModel: expected images [N, 3, H, W], got ", images.sizes());
  const auto device = images.device();
  const auto dtype = compute_dtype(*backbone);
  if (!pixel_mean_device_.defined() || pixel_mean_device_.device() != device ||
      pixel_mean_device_.scalar_type() != dtype) {
    pixel_mean_device_ = pixel_mean_.to(device, dtype);
    pixel_std_device_ = pixel_std_.to(device, dtype);
  }
  auto x = (images.to(dtype) - pixel_mean_device_) / pixel_std_device_;
  const int64_t d = options.size_divisibility();
  if (d > 1) {
    const int64_t ph = (d - x.size(2) % d) % d;
    const int64_t pw = (d - x.size(3) % d) % d;
    if (ph > 0 || pw > 0) x = torch::constant_pad_nd(x, {0, pw, 0, ph}, 0.0);
  }
  return x;
}

at::Tensor ComboModelImpl::audio_embeddings(const at::Tensor& log_mel) {
  COMBO_PROFILE_SCOPE("VGGish");
  c10::optional<torch::NoGradGuard> no_grad;
  if (options.freeze_audio()) no_grad.emplace();
  const auto x = log_mel.to(compute_dtype(*backbone));
  if (!options.cache_audio() || !options.freeze_audio()) return audio_backbone->forward(x);

  // Entries belong to the weights they were computed with: loading new weights (an in-place
  // copy) bumps the parameters' version counters and empties the cache.
  int64_t version = 0;
  for (const auto& p : audio_backbone->parameters()) version += p._version();
  if (version != audio_cache_weights_version_ || audio_cache_.size() > (1u << 18)) {
    audio_cache_.clear();
    audio_cache_weights_version_ = version;
  }
  const auto host = x.to(torch::kCPU).contiguous();
  const int64_t n = host.size(0);
  const size_t example_bytes =
      static_cast<size_t>(host.numel() / std::max<int64_t>(n, 1)) * host.element_size();
  std::vector<at::Tensor> rows(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const auto* bytes = static_cast<const char*>(host.data_ptr()) + i * example_bytes;
    const size_t key = std::hash<std::string_view>{}(std::string_view(bytes, example_bytes));
    auto it = audio_cache_.find(key);
    if (it == audio_cache_.end()) {
      auto e = audio_backbone->forward(x.narrow(0, i, 1)).squeeze(0);
      it = audio_cache_.emplace(key, e).first;
    }
    rows[static_cast<size_t>(i)] = it->second;
  }
  return torch::stack(rows);
}

ComboOutputs ComboModelImpl::forward(const ComboInputs& in) {
  const int64_t n = in.images.size(0);
  COMBO_CHECK(in.log_mel.defined() && in.log_mel.dim() == 4 && in.log_mel.size(0) == n,
              "ComboModel: expected log_mel [", n, ", 1, 96, 64] (one example per frame), got ",
              in.log_mel.defined() ? in.log_mel.sizes() : at::IntArrayRef{});
  if (!in.frames_per_video.empty()) {
    int64_t total = 0;
    for (auto t : in.frames_per_video) total += t;
    COMBO_CHECK(total == n, "ComboModel: frames_per_video sums to ", total, " but there are ", n,
                " frames");
  }
  ComboOutputs out;
  out.input_height = in.images.size(2);
  out.input_width = in.images.size(3);
  const auto images = normalize(in.images);
  out.padded_height = images.size(2);
  out.padded_width = images.size(3);

  // Audio: VGGish is frozen and runs without autograd, as the official meta-architecture does.
  at::Tensor audio = audio_embeddings(in.log_mel).unsqueeze(1);  // [N, 1, 128]

  backbone::FeatureMap features;
  {
    COMBO_PROFILE_SCOPE("RGB encoder");
    features = backbone->forward(images);
  }
  if (options.pre_sam()) {
    COMBO_CHECK(in.maskiges.defined() && in.maskiges.sizes() == in.images.sizes(),
                "ComboModel: the Siam-Encoder needs maskiges shaped like the images ",
                in.images.sizes(), ", got ",
                in.maskiges.defined() ? in.maskiges.sizes() : at::IntArrayRef{});
    const auto maskiges = normalize(in.maskiges);
    auto& encoder = options.shared_encoders() ? backbone : pre_sam_backbone;
    COMBO_PROFILE_SCOPE("Maskige encoder");
    features = siam_fuse(features, encoder->forward(maskiges), scale_factor_module);
  }
  if (options.fusion_placement() == FusionPlacement::kEarly) {
    COMBO_PROFILE_SCOPE("Bilateral-Fusion");
    auto fused = fusion_module->forward(features.at("res2"), audio);
    features["res2"] = fused.visual;
    audio = fused.audio;
  }

  auto& head = *sem_seg_head;
  PixelDecoderOutput pd;
  {
    COMBO_PROFILE_SCOPE("pixel decoder");
    pd = head.pixel_decoder->forward(features);
  }
  at::Tensor mask_features = pd.mask_features;
  if (options.fusion_placement() == FusionPlacement::kLate) {
    at::Tensor fused_audio;
    {
      COMBO_PROFILE_SCOPE("Bilateral-Fusion");
      auto fused = head.fusion_module->forward(mask_features, audio);
      mask_features = fused.visual;
      fused_audio = fused.audio;
    }
    COMBO_PROFILE_SCOPE("audio MLP");
    audio = head.audio_transformation->forward(fused_audio);
  } else {
    COMBO_PROFILE_SCOPE("audio MLP");
    audio = audio_transformation->forward(audio);
  }
  COMBO_PROFILE_SCOPE("transformer decoder");
  out.decoder = head.predictor->forward(pd.multi_scale_features, mask_features, audio);
  return out;
}

ComboPrediction ComboModelImpl::postprocess(const ComboOutputs& outputs) const {
  COMBO_PROFILE_SCOPE("postprocess");
  const auto& d = outputs.decoder;
  const int64_t c = options.num_classes();
  const int64_t hp = outputs.padded_height, wp = outputs.padded_width;
  auto probs = torch::softmax(d.pred_logits, -1).narrow(-1, 0, c);  // [N, Q, C]
  const int64_t n = d.pred_masks.size(0), q = d.pred_masks.size(1);
  at::Tensor scores;  // [N, C, Hp * Wp]
  if (at::GradMode::is_enabled() && (d.pred_masks.requires_grad() || probs.requires_grad())) {
    // Differentiable: the whole batch at once with out-of-place ops.
    auto masks = torch::nn::functional::interpolate(d.pred_masks,
                                                    torch::nn::functional::InterpolateFuncOptions()
                                                        .size(std::vector<int64_t>{hp, wp})
                                                        .mode(torch::kBilinear)
                                                        .align_corners(false));
    scores = torch::bmm(probs.transpose(1, 2), torch::sigmoid(masks).view({n, q, -1}));
  } else {
    // One frame at a time through one reused [1, Q, Hp, Wp] buffer, the sigmoid in place: the
    // same per-element kernels and per-frame products as above (bit-identical scores), without
    // two fresh [N, Q, Hp, Wp] tensors. Those are large enough for the allocator to map and
    // unmap them on every call, and the page faults cost more than the arithmetic here.
    scores = at::empty({n, c, hp * wp}, d.pred_masks.options());
    auto masks = at::empty({1, q, hp, wp}, d.pred_masks.options());
    for (int64_t i = 0; i < n; ++i) {
      at::upsample_bilinear2d_out(masks, d.pred_masks.narrow(0, i, 1), {hp, wp},
                                  /*align_corners=*/false);
      masks.sigmoid_();
      at::Tensor frame_scores = scores.narrow(0, i, 1);
      at::bmm_out(frame_scores, probs.narrow(0, i, 1).transpose(1, 2), masks.view({1, q, hp * wp}));
    }
  }
  scores = scores.view({n, c, hp, wp})
               .narrow(2, 0, outputs.input_height)
               .narrow(3, 0, outputs.input_width);
  ComboPrediction p;
  p.scores = scores.contiguous();
  if (c == 2) {
    p.probs = torch::softmax(p.scores, 1).select(1, 1);
    p.masks = p.probs > 0.5;
  } else {
    p.masks = p.scores.argmax(1);
  }
  return p;
}

ComboPrediction ComboModelImpl::predict(const ComboInputs& inputs) {
  return postprocess(forward(inputs));
}

std::string ComboModelImpl::summary() const {
  std::ostringstream os;
  auto line = [&](const std::string& name, const torch::nn::Module& m) {
    os << "  " << std::left << std::setw(36) << name << std::right << std::setw(13)
       << count_parameters(m) << std::setw(13) << count_parameters(m, /*trainable_only=*/true)
       << "\n";
  };
  os << "ComboModel (" << options.backbone() << ", " << options.num_classes() << " classes, "
     << options.num_queries() << " queries)\n"
     << "  " << std::left << std::setw(36) << "module" << std::right << std::setw(13) << "params"
     << std::setw(13) << "trainable"
     << "\n";
  for (const auto& child : named_children()) {
    if (child.key() == "sem_seg_head") {
      for (const auto& sub : child.value()->named_children())
        line("sem_seg_head." + sub.key(), *sub.value());
    } else {
      line(child.key(), *child.value());
    }
  }
  line("total", *this);
  return os.str();
}

loss::ModelOutputs criterion_inputs(const ComboOutputs& outputs) {
  const auto& d = outputs.decoder;
  loss::ModelOutputs o;
  o.pred_logits = d.pred_logits;
  o.pred_masks = d.pred_masks;
  for (const auto& a : d.aux_outputs) o.aux.emplace_back(a.pred_logits, a.pred_masks);
  o.middles = d.middles_attn_mask;
  o.image_height = outputs.padded_height;
  o.image_width = outputs.padded_width;
  return o;
}

std::vector<std::string> ignored_checkpoint_prefixes(const ComboModelImpl& model) {
  std::vector<std::string> out{"criterion."};
  const std::string fusion_prefix = model.options.fusion_placement() == FusionPlacement::kLate
                                        ? "sem_seg_head.fusion_module."
                                        : "fusion_module.";
  const BilateralFusionImpl* fusion = model.options.fusion_placement() == FusionPlacement::kLate
                                          ? model.sem_seg_head->fusion_module.get()
                                          : model.fusion_module.get();
  for (const auto& p : fusion->official_only_prefixes()) out.push_back(fusion_prefix + p);
  // Every released checkpoint was trained with the bidirectional module; a run that selects
  // another type at test time (the official AVSS R50 test config selects "none") drops those
  // weights, as detectron2's non-strict load did.
  if (model.options.fusion_type() != FusionType::kBidirectional) {
    out.push_back(fusion_prefix + "b_attn.");
    out.push_back(fusion_prefix + "audio_pos.");
  }
  return out;
}

LoadReport load_combo_checkpoint(ComboModelImpl& model, const TensorDict& dict, bool strict,
                                 const std::string& source) {
  LoadOptions opts;
  opts.strict = strict;
  opts.source = source;
  opts.ignore_prefixes = ignored_checkpoint_prefixes(model);
  return load_state_dict_into(model, dict, opts);
}

void load_backbone_weights(ComboModelImpl& model, const TensorDict& dict,
                           const std::string& source) {
  LoadOptions opts;
  opts.source = source;
  backbone::load_backbone_state_dict(*model.backbone, dict, opts);
  if (model.pre_sam_backbone)
    backbone::load_backbone_state_dict(*model.pre_sam_backbone, dict, opts);
}

}  // namespace combo::model
