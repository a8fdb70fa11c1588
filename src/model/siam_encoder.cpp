#include "combo/model/siam_encoder.h"

#include <torch/torch.h>

#include "combo/core/check.h"

namespace combo::model {

ChannelWeightedBlockImpl::ChannelWeightedBlockImpl(const ChannelWeightedBlockOptions& options_)
    : options(options_) {
  reset();
}

void ChannelWeightedBlockImpl::reset() {
  const int64_t c = options.channels();
  COMBO_CHECK(c >= options.reduction() && options.reduction() > 0, "ChannelWeightedBlock: ", c,
              " channels cannot be reduced by ", options.reduction());
  fc1 = register_module("fc1", torch::nn::Linear(c, c / options.reduction()));
  fc2 = register_module("fc2", torch::nn::Linear(c / options.reduction(), c));
}

at::Tensor ChannelWeightedBlockImpl::forward(const at::Tensor& m) {
  COMBO_CHECK(m.dim() == 4 && m.size(1) == options.channels(),
              "ChannelWeightedBlock: expected [N, ", options.channels(), ", H, W], got ",
              m.sizes());
  auto pooled = m.mean({2, 3});  // GAP -> [N, C]
  auto alpha = torch::sigmoid(fc2->forward(torch::relu(fc1->forward(pooled))));
  return alpha.unsqueeze(-1).unsqueeze(-1);
}

torch::nn::ModuleList make_channel_weighted_blocks(const backbone::FeatureShapes& shapes) {
  torch::nn::ModuleList blocks;
  for (const auto& name : backbone::feature_names()) {
    auto it = shapes.find(name);
    COMBO_CHECK(it != shapes.end(), "Siam-Encoder: the encoder has no '", name, "' map");
    blocks->push_back(ChannelWeightedBlock(ChannelWeightedBlockOptions(it->second.channels)));
  }
  return blocks;
}

backbone::FeatureMap siam_fuse(const backbone::FeatureMap& rgb, const backbone::FeatureMap& maskige,
                               torch::nn::ModuleList& blocks) {
  backbone::FeatureMap out;
  const auto& names = backbone::feature_names();
  COMBO_CHECK(blocks->size() == names.size(), "Siam-Encoder: ", blocks->size(),
              " channel-weighted blocks for ", names.size(), " levels");
  for (size_t l = 0; l < names.size(); ++l) {
    const auto& f = rgb.at(names[l]);
    const auto& m = maskige.at(names[l]);
    COMBO_CHECK(f.sizes() == m.sizes(), "Siam-Encoder: level ", names[l], " RGB ", f.sizes(),
                " vs Maskige ", m.sizes());
    auto alpha = blocks[l]->as<ChannelWeightedBlock>()->forward(m);
    out[names[l]] = torch::addcmul(f, alpha, m);
  }
  return out;
}

}  // namespace combo::model
