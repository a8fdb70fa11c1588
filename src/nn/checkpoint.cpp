#include "combo/nn/checkpoint.h"

#include <ATen/Context.h>
#include <ATen/core/Generator.h>
#include <ATen/core/ivalue.h>
#include <torch/autograd.h>
#include <torch/version.h>

#include <mutex>
#include <optional>
#include <utility>

#include "combo/core/autocast.h"
#include "combo/core/check.h"

namespace combo::nn {

namespace {

at::Tensor generator_state(at::Generator gen) {
  std::lock_guard<std::mutex> lock(gen.mutex());
  return gen.get_state();
}

void set_generator_state(at::Generator gen, const at::Tensor& state) {
  std::lock_guard<std::mutex> lock(gen.mutex());
  gen.set_state(state);
}

/// What the backward pass needs besides the saved inputs.
struct CheckpointState : torch::CustomClassHolder {
  CheckpointFn fn;
  std::vector<bool> needs_grad;      ///< per input
  at::Tensor cpu_rng;                ///< CPU generator state at the forward call
  std::optional<at::Device> device;  ///< an accelerator the inputs live on
  at::Tensor device_rng;             ///< its generator state at the forward call
  AutocastState autocast;            ///< autocast at the forward call, replayed in backward
};

/// Puts the generators back to the forward call's states for its lifetime, then restores the
/// states they had (so the recomputation does not shift later random draws).
class ForwardRngScope {
 public:
  explicit ForwardRngScope(const CheckpointState& s) : s_(s) {
    auto& ctx = at::globalContext();
    cpu_now_ = generator_state(ctx.defaultGenerator(at::kCPU));
    set_generator_state(ctx.defaultGenerator(at::kCPU), s_.cpu_rng);
    if (s_.device) {
      device_now_ = generator_state(ctx.defaultGenerator(*s_.device));
      set_generator_state(ctx.defaultGenerator(*s_.device), s_.device_rng);
    }
  }
  ~ForwardRngScope() {
    auto& ctx = at::globalContext();
    set_generator_state(ctx.defaultGenerator(at::kCPU), cpu_now_);
    if (s_.device) set_generator_state(ctx.defaultGenerator(*s_.device), device_now_);
  }
  ForwardRngScope(const ForwardRngScope&) = delete;
  ForwardRngScope& operator=(const ForwardRngScope&) = delete;

 private:
  const CheckpointState& s_;
  at::Tensor cpu_now_;
  at::Tensor device_now_;
};

class CheckpointFunction : public torch::autograd::Function<CheckpointFunction> {
 public:
  // `inputs` as a TensorList: apply() makes each element an input of the node (a
  // std::vector would count as one non-tensor argument, leaving the output without a graph).
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, at::TensorList inputs,
                            const c10::intrusive_ptr<CheckpointState>& state) {
    std::vector<at::Tensor> list(inputs.begin(), inputs.end());
    ctx->save_for_backward(list);
    ctx->saved_data["state"] = c10::IValue::make_capsule(state);
    // Autograd does not record here: fn's intermediate tensors die as it returns.
    return state->fn(list);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    auto state =
        c10::static_intrusive_pointer_cast<CheckpointState>(ctx->saved_data["state"].toCapsule());
    const auto saved = ctx->get_saved_variables();
    std::vector<at::Tensor> inputs;
    inputs.reserve(saved.size());
    for (size_t i = 0; i < saved.size(); ++i) {
      at::Tensor x = saved[i].defined() ? saved[i].detach() : saved[i];
      if (x.defined() && state->needs_grad[i]) x.requires_grad_(true);
      inputs.push_back(std::move(x));
    }
    torch::autograd::variable_list grads(saved.size() + 1);  // + the state argument
    if (!grad_outputs.at(0).defined()) return grads;
    at::Tensor out;
    {
      ForwardRngScope rng(*state);
      // The same precision choices as the forward call (the backward pass runs on autograd's
      // thread, whose autocast state is its own).
      AutocastScope autocast(state->autocast);
      at::AutoGradMode record(true);
      out = state->fn(inputs);
    }
    COMBO_CHECK(out.requires_grad(),
                "checkpoint: the recomputed output does not require a gradient (fn must compute "
                "it from its inputs or parameters)");
    torch::autograd::backward({out}, {grad_outputs[0]});
    for (size_t i = 0; i < inputs.size(); ++i)
      if (inputs[i].defined() && state->needs_grad[i]) grads[i] = inputs[i].grad();
    return grads;
  }
};

}  // namespace

bool checkpoint_applies(const std::vector<at::Tensor>& inputs) {
  if (!at::GradMode::is_enabled()) return false;
  for (const auto& t : inputs)
    if (t.defined() && t.requires_grad()) return true;
  return false;
}

at::Tensor checkpoint(const CheckpointFn& fn, const std::vector<at::Tensor>& inputs) {
  if (!checkpoint_applies(inputs)) return fn(inputs);
  auto state = c10::make_intrusive<CheckpointState>();
  state->fn = fn;
  state->needs_grad.reserve(inputs.size());
  for (const auto& t : inputs) {
    state->needs_grad.push_back(t.defined() && t.requires_grad());
    if (t.defined() && !t.is_cpu() && !state->device) state->device = t.device();
  }
  state->autocast = AutocastState::current();
  auto& ctx = at::globalContext();
  state->cpu_rng = generator_state(ctx.defaultGenerator(at::kCPU));
  if (state->device) state->device_rng = generator_state(ctx.defaultGenerator(*state->device));
  return CheckpointFunction::apply(at::TensorList(inputs), state);
}

}  // namespace combo::nn
