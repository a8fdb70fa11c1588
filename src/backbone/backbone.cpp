#include "combo/backbone/backbone.h"

#include <torch/torch.h>

#include <algorithm>
#include <sstream>

#include "combo/backbone/pvt_v2.h"
#include "combo/backbone/resnet.h"
#include "combo/core/check.h"

namespace combo::backbone {

const std::vector<std::string>& feature_names() {
  static const std::vector<std::string> names = {"res2", "res3", "res4", "res5"};
  return names;
}

void copy_module_state(const torch::nn::Module& from, torch::nn::Module& to,
                       const CloneDevice& device) {
  torch::NoGradGuard no_grad;
  auto copy_into = [&](const torch::OrderedDict<std::string, at::Tensor>& src,
                       torch::OrderedDict<std::string, at::Tensor> dst, const char* what) {
    COMBO_CHECK(src.size() == dst.size(), "clone: ", src.size(), " ", what, " in the source, ",
                dst.size(), " in the copy");
    for (const auto& item : src) {
      at::Tensor* target = dst.find(item.key());
      COMBO_CHECK(target != nullptr, "clone: ", what, " '", item.key(), "' missing in the copy");
      const at::Tensor& t = item.value();
      if (!t.defined()) continue;
      at::Tensor data = device && t.device() != *device ? t.to(*device) : t.clone();
      target->set_data(data);
      if (target->requires_grad() != t.requires_grad()) target->requires_grad_(t.requires_grad());
    }
  };
  copy_into(from.named_parameters(), to.named_parameters(), "parameters");
  copy_into(from.named_buffers(), to.named_buffers(), "buffers");
  to.train(from.is_training());
}

FeatureMap BackboneImpl::forward(const at::Tensor& x) {
  COMBO_CHECK(x.defined() && x.dim() == 4 && x.size(1) == 3, name(),
              ": expected images [N, 3, H, W], got shape ",
              x.defined() ? x.sizes() : at::IntArrayRef{});
  COMBO_CHECK(at::isFloatingType(x.scalar_type()), name(),
              ": expected floating-point images, got dtype ", x.scalar_type());
  return forward_features(x);
}

const std::vector<std::string>& backbone_names() {
  static const std::vector<std::string> names = {"pvt_v2_b0", "pvt_v2_b1", "pvt_v2_b2", "pvt_v2_b3",
                                                 "pvt_v2_b4", "pvt_v2_b5", "resnet50"};
  return names;
}

Backbone build_backbone(const std::string& name, const BackboneOptions& options) {
  if (name.rfind("pvt_v2_b", 0) == 0) {
    const auto& names = backbone_names();
    if (std::find(names.begin(), names.end(), name) != names.end()) {
      std::shared_ptr<BackboneImpl> impl = std::make_shared<PvtV2Impl>(
          PvtV2Options::variant(name).drop_path_rate(options.drop_path_rate()));
      return Backbone(impl);
    }
  }
  if (name == "resnet50") {
    std::shared_ptr<BackboneImpl> impl = std::make_shared<ResNetImpl>(ResNetOptions().depth(50));
    return Backbone(impl);
  }
  std::ostringstream valid;
  for (const auto& n : backbone_names()) valid << (valid.tellp() > 0 ? ", " : "") << n;
  COMBO_FAIL("build_backbone: unknown backbone '", name, "'; valid names: ", valid.str());
}

LoadReport load_backbone_state_dict(BackboneImpl& backbone, const TensorDict& dict,
                                    const LoadOptions& options) {
  TensorDict kept;
  for (const auto& [key, tensor] : dict) {
    if (!backbone.is_ignored_checkpoint_key(key)) kept.emplace(key, tensor);
  }
  return load_state_dict_into(backbone, kept, options);
}

}  // namespace combo::backbone
