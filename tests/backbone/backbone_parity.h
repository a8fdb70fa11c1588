#pragma once
// What the PVT-v2 and ResNet parity tests share: the fixtures' scalar loss over the four maps,
// and the comparison of outputs and input gradients with a fixture at float32-derived bounds.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "combo/backbone/backbone.h"
#include "testing/testing.h"

namespace combo::testing {

/// L = sum over the maps of mean(out^2), the loss the backbone fixtures' grads/x come from.
inline at::Tensor feature_loss(const backbone::FeatureMap& out) {
  at::Tensor loss = torch::zeros({}, out.begin()->second.options());
  for (const auto& [name, t] : out) loss = loss + t.pow(2).mean();
  return loss;
}

/// Runs `model` on inputs/x (on the model's device) in float32 and, converted to float64, in
/// float64, and compares every map of outputs/ and grads/x with the fixture at bounds derived
/// from the float32 error measured on that very input (Float32Budget, testing.h). Every shape
/// comes from the fixture. The model is back in float32 afterwards. `grad_budget` applies to
/// grads/x.
inline void expect_backbone_parity(backbone::BackboneImpl& model, const Fixture& fx,
                                   const Float32Budget& grad_budget = {}) {
  const at::Device device = model.parameters().front().device();
  const TensorDict ref = fx.tensors("outputs");
  auto run = [&](at::ScalarType dtype) {
    parity_to(model, dtype);
    at::Tensor x = parity_input(fx.tensor("inputs/x"), device, dtype, /*requires_grad=*/true);
    backbone::FeatureMap out = model.forward(x);
    feature_loss(out).backward();
    for (auto& [name, t] : out) t = t.detach();
    out["grads/x"] = x.grad();
    return out;
  };
  const backbone::FeatureMap ours64 = run(torch::kFloat64);
  const backbone::FeatureMap ours32_1 = official_threads([&] { return run(torch::kFloat32); });
  const backbone::FeatureMap ours32 = run(torch::kFloat32);
  ASSERT_EQ(ref.size() + 1, ours32.size());
  for (const auto& [name, r] : ref) {
    ASSERT_TRUE(ours32.count(name)) << name;
    EXPECT_FLOAT32_PARITY_RUNS(name, r, ours64.at(name), ours32.at(name), ours32_1.at(name));
  }
  EXPECT_TRUE(float32_parity("grads/x", fx.tensor("grads/x"),
                             {ours32.at("grads/x"), ours32_1.at("grads/x")}, ours64.at("grads/x"),
                             grad_budget));
  if (!device.is_cpu()) std::cout << "[ INFO ] ran on " << device.str() << std::endl;
}

}  // namespace combo::testing
