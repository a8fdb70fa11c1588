#pragma once
/// Building the COMBO model from the configuration (the network code never sees the config).
#include "combo/engine/config.h"
#include "combo/model/combo.h"

namespace combo::engine {

/// Model options from `config.model` (and the input normalisation).
model::ComboModelOptions model_options(const Config& config);

/// Builds the model and loads the weights the config names: `model.weights` (a full COMBO
/// checkpoint, strict), else `model.backbone.weights` into both encoders; `model.audio.weights`
/// into VGGish. Missing files are errors naming the key and the file.
model::ComboModel build_model(const Config& config);

}  // namespace combo::engine
