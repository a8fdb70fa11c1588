#include "combo/engine/build_model.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <filesystem>

#include "combo/core/check.h"
#include "combo/core/device.h"
#include "combo/core/state_dict.h"

namespace combo::engine {

bool default_activation_checkpointing(const c10::Device& device) {
  // CPU (2 cores, S4 clip of 5 frames at 224): 0.3-1.3 GB less peak memory for 13-25 % more
  // time per step (README "Speed"). GPU: memory decides whether the paper's batch fits a card
  // (AVSS, 8 videos of 10 frames in fp16 AMP); see bench/gpu/h200.md for the H200 figures.
  (void)device;
  return true;
}

bool activation_checkpointing(const Config& config) {
  const std::string& v = config.model.activation_checkpointing;
  if (v == "true") return true;
  if (v == "false") return false;
  COMBO_CHECK(v == "auto", "model.activation_checkpointing: expected auto | true | false, got '", v,
              "'");
  return default_activation_checkpointing(resolve_device(config.runtime.device));
}

model::ComboModelOptions model_options(const Config& config) {
  const auto& m = config.model;
  return model::ComboModelOptions()
      .backbone(m.backbone.name)
      .drop_path_rate(m.backbone.drop_path_rate)
      .activation_checkpointing(activation_checkpointing(config))
      .pre_sam(m.pre_sam.enabled)
      .shared_encoders(m.pre_sam.shared)
      .audio_dim(m.audio.dim)
      .freeze_audio(m.audio.freeze)
      .cache_audio(m.audio.cache)
      .audio_mlp_dim(m.audio.mlp_dim)
      .conv_dim(m.pixel_decoder.conv_dim)
      .mask_dim(m.pixel_decoder.mask_dim)
      .enc_layers(m.pixel_decoder.enc_layers)
      .enc_heads(m.pixel_decoder.n_heads)
      .enc_points(m.pixel_decoder.n_points)
      .enc_dim_feedforward(m.pixel_decoder.dim_feedforward)
      .enc_dropout(m.pixel_decoder.dropout)
      .fusion_type(model::fusion_type_from_string(m.fusion.type))
      .fusion_placement(model::fusion_placement_from_string(m.fusion.placement))
      .fusion_heads(m.fusion.n_heads)
      .fusion_dropout(m.fusion.dropout)
      .fusion_layer_scale_init(m.fusion.layer_scale_init)
      .num_classes(m.num_classes)
      .num_queries(m.decoder.num_queries)
      .hidden_dim(m.decoder.hidden_dim)
      .dec_heads(m.decoder.n_heads)
      .dec_dim_feedforward(m.decoder.dim_feedforward)
      .dec_layers(m.decoder.dec_layers)
      .pre_norm(m.decoder.pre_norm)
      .audio_query_layout(model::audio_query_layout_from_string(m.decoder.audio_query_layout))
      .pixel_mean(m.pixel_mean)
      .pixel_std(m.pixel_std);
}

namespace {
TensorDict read_weights(const std::string& key, const std::string& path) {
  COMBO_CHECK(std::filesystem::exists(path), "config key '", key, "': weights file '", path,
              "' does not exist");
  return load_state_dict(path);
}
}  // namespace

model::ComboModel build_model(const Config& config) {
  model::ComboModel model(model_options(config));
  const auto& m = config.model;
  if (!m.weights.empty()) {
    // A converted official checkpoint or a combo-train checkpoint (fine-tuning from a run).
    load_model_weights(*model, m.weights, "model.weights");
    return model;
  }
  if (!m.backbone.weights.empty()) {
    model::load_backbone_weights(*model, read_weights("model.backbone.weights", m.backbone.weights),
                                 m.backbone.weights);
    spdlog::info("loaded encoder weights from {} into {} encoder(s)", m.backbone.weights,
                 model->pre_sam_backbone ? 2 : 1);
  }
  if (m.audio.weights.empty() && m.audio.init == "he") {
    torch::NoGradGuard no_grad;
    for (auto& p : model->audio_backbone->named_parameters()) {
      if (p.key().size() >= 6 && p.key().compare(p.key().size() - 6, 6, "weight") == 0) {
        torch::nn::init::kaiming_normal_(p.value(), 0.0, torch::kFanIn, torch::kReLU);
      } else {
        p.value().zero_();
      }
    }
    spdlog::info("VGGish: random He-normal initialisation (model.audio.init=he)");
  }
  if (!m.audio.weights.empty()) {
    LoadOptions opts;
    opts.source = m.audio.weights;
    load_state_dict_into(*model->audio_backbone,
                         read_weights("model.audio.weights", m.audio.weights), opts);
    spdlog::info("loaded VGGish weights from {}", m.audio.weights);
  }
  return model;
}

loss::SetCriterionOptions criterion_options(const Config& config) {
  const auto& l = config.loss;
  return loss::SetCriterionOptions(config.model.num_classes)
      .class_weight(l.class_weight)
      .mask_weight(l.mask_weight)
      .dice_weight(l.dice_weight)
      .no_object_weight(l.no_object_weight)
      .deep_supervision(l.deep_supervision)
      .num_points(l.train_num_points)
      .oversample_ratio(l.oversample_ratio)
      .importance_sample_ratio(l.importance_sample_ratio)
      .consistency(loss::ConsistencyOptions()
                       .type(loss::parse_consistency_type(l.consistency.type))
                       .grouping(loss::parse_consistency_grouping(l.consistency.grouping))
                       .weight(l.consistency.weight));
}

loss::SetCriterion build_criterion(const Config& config) {
  return loss::SetCriterion(criterion_options(config));
}

void load_model_weights(model::ComboModelImpl& model, const std::string& path,
                        const std::string& what) {
  TensorDict dict = read_weights(what, path);
  // combo-train checkpoints (marked by checkpoint.version) hold the model under "model."
  // next to the optimiser and RNG state.
  if (dict.count("checkpoint.version")) {
    TensorDict inner;
    for (const auto& [k, v] : dict)
      if (k.rfind("model.", 0) == 0) inner[k.substr(6)] = v;
    dict = std::move(inner);
  }
  auto report = model::load_combo_checkpoint(model, dict, /*strict=*/true, path);
  spdlog::info("loaded {} tensors from {}", report.loaded, path);
}

}  // namespace combo::engine
