#include "combo/nn/init.h"

#include <torch/torch.h>

#include "combo/core/check.h"

namespace combo::nn {

namespace {

void zero_if_defined(const at::Tensor& bias) {
  if (bias.defined()) {
    torch::NoGradGuard no_grad;
    bias.zero_();
  }
}

}  // namespace

void xavier_uniform_(const at::Tensor& weight, double gain) {
  COMBO_CHECK(weight.defined() && weight.dim() >= 2,
              "xavier_uniform_: expected a weight with >= 2 dims, got ",
              weight.defined() ? weight.sizes() : at::IntArrayRef{});
  torch::NoGradGuard no_grad;
  torch::nn::init::xavier_uniform_(weight, gain);
}

void kaiming_uniform_a1_(const at::Tensor& weight) {
  COMBO_CHECK(weight.defined() && weight.dim() >= 2,
              "kaiming_uniform_a1_: expected a weight with >= 2 dims, got ",
              weight.defined() ? weight.sizes() : at::IntArrayRef{});
  torch::NoGradGuard no_grad;
  torch::nn::init::kaiming_uniform_(weight, /*a=*/1.0, torch::kFanIn, torch::kLeakyReLU);
}

void c2_xavier_fill(torch::nn::Conv2d& conv) {
  kaiming_uniform_a1_(conv->weight);
  zero_if_defined(conv->bias);
}

void c2_xavier_fill(torch::nn::Linear& linear) {
  kaiming_uniform_a1_(linear->weight);
  zero_if_defined(linear->bias);
}

void xavier_uniform_fill(torch::nn::Conv2d& conv) {
  xavier_uniform_(conv->weight);
  zero_if_defined(conv->bias);
}

void xavier_uniform_fill(torch::nn::Linear& linear) {
  xavier_uniform_(linear->weight);
  zero_if_defined(linear->bias);
}

}  // namespace combo::nn
