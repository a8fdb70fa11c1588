#include "combo/audio/vggish.h"

#include <torch/torch.h>

#include "combo/audio/log_mel.h"
#include "combo/core/check.h"

namespace combo::audio {

namespace {

constexpr int64_t kEmbeddingDim = 128;
constexpr int64_t kFlatDim = 512 * 6 * 4;

torch::nn::Conv2d conv3x3(int64_t in, int64_t out) {
  return torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, 3).padding(1));
}

torch::nn::MaxPool2d max_pool() {
  return torch::nn::MaxPool2d(torch::nn::MaxPool2dOptions(2).stride(2));
}

}  // namespace

VggishImpl::VggishImpl() { reset(); }

void VggishImpl::reset() {
  // The indices of the Sequential children are the official key names: convolutions at
  // 0, 3, 6, 8, 11, 13 and linears at 0, 2, 4.
  features = register_module(
      "features",
      torch::nn::Sequential(conv3x3(1, 64), torch::nn::ReLU(), max_pool(), conv3x3(64, 128),
                            torch::nn::ReLU(), max_pool(), conv3x3(128, 256), torch::nn::ReLU(),
                            conv3x3(256, 256), torch::nn::ReLU(), max_pool(), conv3x3(256, 512),
                            torch::nn::ReLU(), conv3x3(512, 512), torch::nn::ReLU(), max_pool()));
  embeddings = register_module(
      "embeddings",
      torch::nn::Sequential(torch::nn::Linear(kFlatDim, 4096), torch::nn::ReLU(),
                            torch::nn::Linear(4096, 4096), torch::nn::ReLU(),
                            torch::nn::Linear(4096, kEmbeddingDim), torch::nn::ReLU()));
}

at::Tensor VggishImpl::forward(const at::Tensor& x) {
  COMBO_CHECK(x.dim() == 4 && x.size(1) == 1 && x.size(2) == kExampleWindowFrames &&
                  x.size(3) == kNumMelBins,
              "Vggish: expected log-mel examples [N, 1, ", kExampleWindowFrames, ", ", kNumMelBins,
              "], got shape ", x.sizes());
  at::Tensor y = features->forward(x);
  // The TF weights expect (time, frequency, channel) order when flattening.
  y = y.permute({0, 2, 3, 1}).reshape({y.size(0), kFlatDim});
  return embeddings->forward(y);
}

void VggishImpl::freeze() {
  for (auto& p : parameters()) {
    p.set_requires_grad(false);
  }
  eval();
}

}  // namespace combo::audio
