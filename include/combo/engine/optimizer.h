#pragma once
/// AdamW with COMBO's parameter groups (COMBO_SPEC 8.1; official `train_net.py build_optimizer`)
/// and gradient clipping (detectron2 `CLIP_GRADIENTS`).
///
/// Group rules, applied per parameter in `named_modules()` order (the first module that owns a
/// shared parameter names it, as detectron2's `memo` set does):
///   - parameters with requires_grad false (the frozen VGGish) are left out entirely;
///   - lr = base_lr * backbone_multiplier when the owning module's path contains "backbone"
///     (`backbone.*` and `pre_sam_backbone.*`). This is the official substring rule, so an
///     unfrozen `audio_backbone` (VGGish) would also get the multiplier, as in the official code;
///   - weight decay = weight_decay_norm for parameters of normalisation modules (LayerNorm,
///     GroupNorm, BatchNorm1d/2d/3d, InstanceNorm1d/2d/3d), weight_decay_embed for Embedding
///     modules and for parameters named `relative_position_bias_table` / `absolute_pos_embed`
///     (the official Swin rule), weight_decay everywhere else: biases and plain parameters
///     (level_embed, the BFM gammas) included.
/// Parameters with equal (lr, weight decay) share one AdamW group; groups are in order of first
/// appearance.
#include <torch/nn/module.h>
#include <torch/optim/adamw.h>

#include <memory>
#include <string>
#include <vector>

namespace combo::engine {

struct Config;

/// AdamW settings (the `solver.*` keys without the schedule).
struct OptimizerOptions {
  double base_lr = 1e-4;
  double weight_decay = 0.05;
  double weight_decay_norm = 0.0;
  double weight_decay_embed = 0.0;
  double backbone_multiplier = 0.1;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  bool amsgrad = false;
};

/// `solver.*` of the config; throws combo::Error when `solver.optimizer` is not "adamw" or
/// `solver.betas` does not hold two values.
OptimizerOptions optimizer_options_from_config(const Config& config);

/// One AdamW group: its parameters with their names, and its hyper-parameters.
struct ParamGroupSpec {
  double lr = 0.0;  ///< base lr of the group (before the schedule)
  double weight_decay = 0.0;
  double lr_multiplier = 1.0;      ///< lr / base_lr
  std::vector<std::string> names;  ///< dotted parameter names, same order as `params`
  std::vector<at::Tensor> params;
};

/// The groups of `model` under the rules above.
std::vector<ParamGroupSpec> make_param_groups(const torch::nn::Module& model,
                                              const OptimizerOptions& options);

/// One line per trainable parameter, for logs and tests.
struct ParamDescription {
  std::string name;
  int64_t group = 0;  ///< index into the optimizer's param groups
  double lr = 0.0;    ///< base lr (before the schedule)
  double weight_decay = 0.0;
  int64_t numel = 0;
};
std::vector<ParamDescription> describe_param_groups(const std::vector<ParamGroupSpec>& groups);

/// Multi-line summary: per group its lr, weight decay, parameter count and element count.
std::string param_groups_summary(const std::vector<ParamGroupSpec>& groups);

/// AdamW together with the names of its parameters (checkpoints key the optimizer state by
/// parameter name) and the base lr of each group (the schedule scales these).
struct NamedOptimizer {
  std::unique_ptr<torch::optim::AdamW> adamw;
  std::vector<ParamGroupSpec> groups;  ///< same order as adamw->param_groups()

  /// Base lr of each group.
  std::vector<double> base_lrs() const;
  /// Current lr of group g (what the last schedule update set).
  double lr(size_t group = 0) const;
  /// Every parameter, group by group.
  std::vector<at::Tensor> parameters() const;
};

/// Builds the groups of `model` and the AdamW over them. Throws combo::Error when the model has
/// no trainable parameter.
NamedOptimizer build_optimizer(const torch::nn::Module& model, const OptimizerOptions& options);

/// Gradient clipping before every optimizer step (detectron2 `SOLVER.CLIP_GRADIENTS`).
struct GradClipOptions {
  bool enabled = true;
  /// full_model: one clip_grad_norm_ over every parameter at once (Mask2Former's
  ///   FullModelGradientClippingOptimizer; the official code always uses the L2 norm here and
  ///   ignores norm_type); norm: clip_grad_norm_ per parameter with norm_type; value:
  ///   clip_grad_value_ per parameter.
  std::string type = "full_model";
  double value = 0.01;
  double norm_type = 2.0;
};

/// `solver.clip_gradients.*`; throws combo::Error naming the key for an unknown type.
GradClipOptions grad_clip_options_from_config(const Config& config);

/// Clips the gradients of `params` in place. Returns the total L2 gradient norm before clipping
/// for full_model, the largest per-parameter norm for norm, the largest |gradient| for value,
/// and -1 when disabled. Parameters without a gradient are ignored.
double clip_gradients(const std::vector<at::Tensor>& params, const GradClipOptions& options);

}  // namespace combo::engine
