#include "combo/audio/audio_mlp.h"

#include <torch/torch.h>

#include "combo/core/check.h"

namespace combo::audio {

AudioMlpImpl::AudioMlpImpl(AudioMlpOptions options_) : options(std::move(options_)) { reset(); }

void AudioMlpImpl::reset() {
  COMBO_CHECK(options.in_dim() > 0 && options.middle_dim() > 0 && options.out_dim() > 0,
              "AudioMlp: expected positive dimensions, got in_dim=", options.in_dim(),
              " middle_dim=", options.middle_dim(), " out_dim=", options.out_dim());
  embeddings = register_module(
      "embeddings",
      torch::nn::Sequential(
          torch::nn::Linear(options.in_dim(), options.middle_dim()), torch::nn::ReLU(),
          torch::nn::Linear(options.middle_dim(), options.middle_dim()), torch::nn::ReLU(),
          torch::nn::Linear(options.middle_dim(), options.out_dim())));
}

at::Tensor AudioMlpImpl::forward(const at::Tensor& x) {
  COMBO_CHECK(x.dim() >= 1 && x.size(-1) == options.in_dim(), "AudioMlp: expected [..., ",
              options.in_dim(), "], got shape ", x.sizes());
  return embeddings->forward(x);
}

}  // namespace combo::audio
