#pragma once
// What the PVT-v2 and ResNet parity tests share: the fixtures' scalar loss over the four maps,
// and the comparison of outputs and input gradients with a fixture.
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

enum class Tolerance { kAbs, kRel };

/// Runs `model` on inputs/x (on the model's device), compares every map of outputs/ (at `output_tol`, absolute or in the
/// fixtures' rel measure) and grads/x (rel 1e-3, and 1e-3 of the gradient's own scale: the rel
/// measure floors the scale at 1, which says nothing about gradients far below 1).
inline void expect_backbone_parity(backbone::BackboneImpl& model, const Fixture& fx, Tolerance kind,
                                   double output_tol) {
  const at::Device device = model.parameters().front().device();
  at::Tensor x = fx.tensor("inputs/x").clone().to(device).requires_grad_(true);
  const backbone::FeatureMap out = model.forward(x);
  const TensorDict ref = fx.tensors("outputs");
  ASSERT_EQ(ref.size(), out.size());
  for (const auto& [name, r] : ref) {
    ASSERT_TRUE(out.count(name)) << name;
    if (kind == Tolerance::kAbs) {
      EXPECT_TENSOR_NEAR_ABS(r, out.at(name), output_tol) << name;
    } else {
      EXPECT_TENSOR_NEAR_REL(r, out.at(name), output_tol) << name;
    }
  }
  feature_loss(out).backward();
  const at::Tensor ref_grad = fx.tensor("grads/x");
  EXPECT_TENSOR_NEAR_REL(ref_grad, x.grad(), 1e-3);
  EXPECT_LE(max_abs_diff(ref_grad, x.grad()), 1e-3 * ref_grad.abs().max().item<double>());
  if (!device.is_cpu())
    std::cout << "[ INFO ] ran on " << device.str() << ": grad rel error "
              << rel_error(ref_grad, x.grad()) << std::endl;
}

}  // namespace combo::testing
