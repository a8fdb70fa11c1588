#include "combo/engine/amp.h"

#include <torch/torch.h>
#include <torch/version.h>

#include "combo/core/check.h"

namespace combo::engine {

namespace {
AutocastState cuda_autocast(at::ScalarType dtype) {
  AutocastState s = AutocastState::current();
  s.cuda_enabled = true;
  s.cuda_dtype = dtype;
  return s;
}
}  // namespace

AutocastGuard::AutocastGuard(at::ScalarType dtype) : scope_(cuda_autocast(dtype)) {}

at::ScalarType amp_dtype_from_string(const std::string& name) {
  if (name == "fp16") return at::kHalf;
  if (name == "bf16") return at::kBFloat16;
  COMBO_FAIL("solver.amp.dtype: expected fp16 | bf16, got '", name, "'");
}

LossScaler::LossScaler(LossScalerOptions options, at::Device device) : options_(options) {
  COMBO_CHECK(options_.init_scale > 0 && options_.growth_factor > 1 &&
                  options_.backoff_factor > 0 && options_.backoff_factor < 1 &&
                  options_.growth_interval > 0,
              "LossScaler: invalid options (init_scale ", options_.init_scale, ", growth ",
              options_.growth_factor, ", backoff ", options_.backoff_factor, ", interval ",
              options_.growth_interval, ")");
  scale_ = torch::full({1}, options_.init_scale, torch::dtype(torch::kFloat32).device(device));
  growth_tracker_ = torch::zeros({1}, torch::dtype(torch::kInt32).device(device));
  found_inf_ = torch::zeros({1}, torch::dtype(torch::kFloat32).device(device));
}

at::Tensor LossScaler::scale(const at::Tensor& loss) const {
  return loss * scale_.to(loss.device());
}

bool LossScaler::unscale(const std::vector<at::Tensor>& params) {
  found_inf_.zero_();
  std::vector<at::Tensor> grads;
  for (const auto& p : params)
    if (p.grad().defined()) grads.push_back(p.grad());
  if (grads.empty()) return false;
  // GradScaler computes the inverse in double, then rounds it to float.
  const auto inv = scale_.to(torch::kFloat64).reciprocal().to(torch::kFloat32);
  if (scale_.is_cuda()) {
    // The fused kernel wants every gradient on the scale's device (grouped by dtype inside).
    at::_amp_foreach_non_finite_check_and_unscale_(grads, found_inf_, inv);
  } else {
    for (auto& g : grads) {
      if (!torch::isfinite(g).all().item<bool>()) found_inf_.fill_(1.0);
      g.mul_(inv.to(g.scalar_type()));
    }
  }
  return found_inf_.item<float>() != 0.0f;
}

void LossScaler::update() {
  if (scale_.is_cuda()) {
    at::_amp_update_scale_(scale_, growth_tracker_, found_inf_, options_.growth_factor,
                           options_.backoff_factor, options_.growth_interval);
    return;
  }
  // The CPU path of _amp_update_scale_ (absent on the CPU in LibTorch 1.13).
  if (found_inf_.item<float>() != 0.0f) {
    scale_.mul_(options_.backoff_factor);
    growth_tracker_.zero_();
    return;
  }
  const int64_t successful = growth_tracker_.item<int32_t>() + 1;
  if (successful == options_.growth_interval) {
    const auto grown = scale_ * options_.growth_factor;
    if (torch::isfinite(grown).all().item<bool>()) scale_.copy_(grown);
    growth_tracker_.zero_();
  } else {
    growth_tracker_.fill_(successful);
  }
}

double LossScaler::scale_value() const { return scale_.item<double>(); }

TensorDict LossScaler::state_dict() const {
  return {{"amp_scale", scale_.cpu().clone()},
          {"amp_growth_tracker", growth_tracker_.cpu().clone()}};
}

void LossScaler::load_state_dict(const TensorDict& dict) {
  auto s = dict.find("amp_scale");
  auto g = dict.find("amp_growth_tracker");
  COMBO_CHECK(s != dict.end() && g != dict.end(),
              "LossScaler: the checkpoint has no amp_scale / amp_growth_tracker");
  scale_.copy_(s->second.to(scale_.dtype()).view({1}));
  growth_tracker_.copy_(g->second.to(growth_tracker_.dtype()).view({1}));
}

}  // namespace combo::engine
