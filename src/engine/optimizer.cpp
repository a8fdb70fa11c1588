#include "combo/engine/optimizer.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <iomanip>
#include <sstream>
#include <unordered_set>

#include "combo/core/check.h"
#include "combo/engine/config.h"

namespace combo::engine {
namespace {

// detectron2's norm_module_types (the parameter-free LocalResponseNorm and FrozenBatchNorm have
// nothing to decay).
bool is_norm_module(const torch::nn::Module& m) {
  return dynamic_cast<const torch::nn::LayerNormImpl*>(&m) != nullptr ||
         dynamic_cast<const torch::nn::GroupNormImpl*>(&m) != nullptr ||
         dynamic_cast<const torch::nn::BatchNorm1dImpl*>(&m) != nullptr ||
         dynamic_cast<const torch::nn::BatchNorm2dImpl*>(&m) != nullptr ||
         dynamic_cast<const torch::nn::BatchNorm3dImpl*>(&m) != nullptr ||
         dynamic_cast<const torch::nn::InstanceNorm1dImpl*>(&m) != nullptr ||
         dynamic_cast<const torch::nn::InstanceNorm2dImpl*>(&m) != nullptr ||
         dynamic_cast<const torch::nn::InstanceNorm3dImpl*>(&m) != nullptr;
}

bool is_embedding_module(const torch::nn::Module& m) {
  return dynamic_cast<const torch::nn::EmbeddingImpl*>(&m) != nullptr;
}

std::string join(const std::string& prefix, const std::string& name) {
  return prefix.empty() ? name : prefix + "." + name;
}

}  // namespace

OptimizerOptions optimizer_options_from_config(const Config& config) {
  const auto& s = config.solver;
  COMBO_CHECK(s.optimizer == "adamw", "solver.optimizer: only 'adamw' is implemented, got '",
              s.optimizer, "'");
  COMBO_CHECK(s.betas.size() == 2, "solver.betas: expected two values [beta1, beta2], got ",
              s.betas.size());
  OptimizerOptions o;
  o.base_lr = s.base_lr;
  o.weight_decay = s.weight_decay;
  o.weight_decay_norm = s.weight_decay_norm;
  o.weight_decay_embed = s.weight_decay_embed;
  o.backbone_multiplier = s.backbone_multiplier;
  o.beta1 = s.betas[0];
  o.beta2 = s.betas[1];
  o.eps = s.eps;
  return o;
}

std::vector<ParamGroupSpec> make_param_groups(const torch::nn::Module& model,
                                              const OptimizerOptions& options) {
  std::vector<ParamGroupSpec> groups;
  std::unordered_set<const void*> seen;
  auto add_module = [&](const std::string& module_name, const torch::nn::Module& module) {
    const bool norm = is_norm_module(module);
    const bool embed = is_embedding_module(module);
    // The official rule tests the module path, not the parameter name.
    const double mult =
        module_name.find("backbone") != std::string::npos ? options.backbone_multiplier : 1.0;
    for (const auto& item : module.named_parameters(/*recurse=*/false)) {
      const at::Tensor& p = item.value();
      if (!p.requires_grad()) continue;
      if (!seen.insert(p.unsafeGetTensorImpl()).second) continue;
      double wd = options.weight_decay;
      if (item.key() == "relative_position_bias_table" || item.key() == "absolute_pos_embed")
        wd = 0.0;
      if (norm) wd = options.weight_decay_norm;
      if (embed) wd = options.weight_decay_embed;
      const double lr = options.base_lr * mult;
      auto it = std::find_if(groups.begin(), groups.end(), [&](const ParamGroupSpec& g) {
        return g.lr == lr && g.weight_decay == wd;
      });
      if (it == groups.end()) {
        groups.push_back(ParamGroupSpec{lr, wd, mult, {}, {}});
        it = groups.end() - 1;
      }
      it->names.push_back(join(module_name, item.key()));
      it->params.push_back(p);
    }
  };
  add_module("", model);
  for (const auto& item : model.named_modules("", /*include_self=*/false))
    add_module(item.key(), *item.value());
  return groups;
}

std::vector<ParamDescription> describe_param_groups(const std::vector<ParamGroupSpec>& groups) {
  std::vector<ParamDescription> out;
  for (size_t g = 0; g < groups.size(); ++g)
    for (size_t i = 0; i < groups[g].names.size(); ++i)
      out.push_back({groups[g].names[i], static_cast<int64_t>(g), groups[g].lr,
                     groups[g].weight_decay, groups[g].params[i].numel()});
  return out;
}

std::string param_groups_summary(const std::vector<ParamGroupSpec>& groups) {
  std::ostringstream os;
  os << "AdamW param groups (" << groups.size() << "):";
  for (size_t g = 0; g < groups.size(); ++g) {
    int64_t numel = 0;
    for (const auto& p : groups[g].params) numel += p.numel();
    os << "\n  group " << g << ": lr " << groups[g].lr << " (x" << groups[g].lr_multiplier
       << "), weight_decay " << groups[g].weight_decay << ", " << groups[g].params.size()
       << " tensors, " << numel << " elements";
  }
  return os.str();
}

std::vector<double> NamedOptimizer::base_lrs() const {
  std::vector<double> out;
  for (const auto& g : groups) out.push_back(g.lr);
  return out;
}

double NamedOptimizer::lr(size_t group) const {
  COMBO_CHECK(adamw && group < adamw->param_groups().size(), "NamedOptimizer: no group ", group);
  return adamw->param_groups()[group].options().get_lr();
}

std::vector<at::Tensor> NamedOptimizer::parameters() const {
  std::vector<at::Tensor> out;
  for (const auto& g : groups) out.insert(out.end(), g.params.begin(), g.params.end());
  return out;
}

NamedOptimizer build_optimizer(const torch::nn::Module& model, const OptimizerOptions& options) {
  NamedOptimizer out;
  out.groups = make_param_groups(model, options);
  COMBO_CHECK(!out.groups.empty(), "build_optimizer: the model has no trainable parameter");
  auto defaults = torch::optim::AdamWOptions(options.base_lr)
                      .betas({options.beta1, options.beta2})
                      .eps(options.eps)
                      .weight_decay(options.weight_decay)
                      .amsgrad(options.amsgrad);
  std::vector<torch::optim::OptimizerParamGroup> groups;
  for (const auto& g : out.groups) {
    auto o = std::make_unique<torch::optim::AdamWOptions>(defaults);
    o->lr(g.lr).weight_decay(g.weight_decay);
    groups.emplace_back(g.params, std::move(o));
  }
  out.adamw = std::make_unique<torch::optim::AdamW>(std::move(groups), defaults);
  return out;
}

GradClipOptions grad_clip_options_from_config(const Config& config) {
  const auto& c = config.solver.clip_gradients;
  COMBO_CHECK(c.type == "full_model" || c.type == "norm" || c.type == "value",
              "solver.clip_gradients.type: expected full_model | norm | value, got '", c.type, "'");
  COMBO_CHECK(c.value > 0 || !c.enabled, "solver.clip_gradients.value: must be > 0, got ", c.value);
  GradClipOptions o;
  o.enabled = c.enabled;
  o.type = c.type;
  o.value = c.value;
  o.norm_type = c.norm_type;
  return o;
}

double clip_gradients(const std::vector<at::Tensor>& params, const GradClipOptions& options) {
  if (!options.enabled) return -1.0;
  std::vector<at::Tensor> with_grad;
  for (const auto& p : params)
    if (p.grad().defined()) with_grad.push_back(p);
  if (with_grad.empty()) return 0.0;
  if (options.type == "full_model")
    return torch::nn::utils::clip_grad_norm_(with_grad, options.value, 2.0);
  double largest = 0.0;
  if (options.type == "norm") {
    for (const auto& p : with_grad)
      largest =
          std::max(largest, torch::nn::utils::clip_grad_norm_(std::vector<at::Tensor>{p},
                                                              options.value, options.norm_type));
    return largest;
  }
  COMBO_CHECK(options.type == "value", "clip_gradients: unknown type '", options.type,
              "' (full_model | norm | value)");
  for (const auto& p : with_grad) largest = std::max(largest, p.grad().abs().max().item<double>());
  torch::nn::utils::clip_grad_value_(with_grad, options.value);
  return largest;
}

}  // namespace combo::engine
