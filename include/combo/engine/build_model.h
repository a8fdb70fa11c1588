#pragma once
/// Building the COMBO model from the configuration (the network code never sees the config).
#include <c10/core/Device.h>

#include "combo/engine/config.h"
#include "combo/loss/criterion.h"
#include "combo/model/combo.h"

namespace combo::engine {

/// Whether activation checkpointing is on by default on `device` (model.activation_checkpointing
/// = auto). The one definition of that default; see its comment in build_model.cpp for the
/// measurements behind it.
bool default_activation_checkpointing(const c10::Device& device);

/// model.activation_checkpointing resolved: true | false as given, auto by the default of the
/// device runtime.device names (auto resolved as combo::resolve_device does).
bool activation_checkpointing(const Config& config);

/// Model options from `config.model` (and the input normalisation).
model::ComboModelOptions model_options(const Config& config);

/// Builds the model and loads the weights the config names: `model.weights` (a full COMBO
/// checkpoint, strict), else `model.backbone.weights` into both encoders; `model.audio.weights`
/// into VGGish. Missing files are errors naming the key and the file.
model::ComboModel build_model(const Config& config);

/// Criterion options from `config.loss` and `model.num_classes` (COMBO_SPEC 7.1).
loss::SetCriterionOptions criterion_options(const Config& config);

/// The training objective the config describes.
loss::SetCriterion build_criterion(const Config& config);

/// Loads a weights file into `model`, strictly (an error lists every missing, unexpected or
/// mis-shaped key, e.g. after a class-count change): a converted COMBO checkpoint with the
/// official key names, or a combo-train checkpoint (model tensors under the `model.` prefix).
/// `what` names the source in errors (the option or config key).
void load_model_weights(model::ComboModelImpl& model, const std::string& path,
                        const std::string& what = "--weights");

}  // namespace combo::engine
