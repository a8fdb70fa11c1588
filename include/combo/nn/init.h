#pragma once
/// Weight initialisations used by the official COMBO / Mask2Former / detectron2 code, as free
/// functions on LibTorch modules and tensors. All of them run under no-grad.
#include <ATen/core/Tensor.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>

namespace combo::nn {

/// detectron2 `c2_xavier_fill`: weight ~ kaiming-uniform with a = 1 (U(-b, b), b = sqrt(3 /
/// fan_in)), bias (if any) = 0. Despite the name this is Caffe2's "XavierFill".
void c2_xavier_fill(torch::nn::Conv2d& conv);
void c2_xavier_fill(torch::nn::Linear& linear);

/// Xavier-uniform weight (gain 1: U(-b, b), b = sqrt(6 / (fan_in + fan_out))) and bias (if any) 0,
/// as `nn.init.xavier_uniform_(m.weight); nn.init.constant_(m.bias, 0.)`.
void xavier_uniform_fill(torch::nn::Conv2d& conv);
void xavier_uniform_fill(torch::nn::Linear& linear);

/// In-place tensor versions (any tensor with >= 2 dims; fans computed as PyTorch does:
/// fan_in = size(1) * receptive field, fan_out = size(0) * receptive field).
void xavier_uniform_(const at::Tensor& weight, double gain = 1.0);
void kaiming_uniform_a1_(const at::Tensor& weight);

}  // namespace combo::nn
