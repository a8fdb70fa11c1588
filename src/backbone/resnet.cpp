#include "combo/backbone/resnet.h"

#include <torch/torch.h>

#include <cmath>
#include <ostream>

#include "combo/core/check.h"
#include "combo/nn/checkpoint.h"

namespace combo::backbone {
namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool starts_with(const std::string& s, const std::string& prefix) {
  return s.rfind(prefix, 0) == 0;
}

}  // namespace

std::vector<int64_t> resnet_blocks_per_stage(int64_t depth) {
  switch (depth) {
    case 50:
      return {3, 4, 6, 3};
    case 101:
      return {3, 4, 23, 3};
    case 152:
      return {3, 8, 36, 3};
    default:
      COMBO_FAIL("ResNet: unsupported depth ", depth, "; expected 50, 101 or 152");
  }
}

// ---------------------------------------------------------------------------------------------
FrozenBNConv2dImpl::FrozenBNConv2dImpl(const FrozenBNConv2dOptions& options_) : options(options_) {
  reset();
}

void FrozenBNConv2dImpl::reset() {
  const int64_t k = options.kernel_size();
  weight = register_parameter("weight",
                              torch::empty({options.out_channels(), options.in_channels(), k, k}));
  norm = register_module("norm", nn::FrozenBatchNorm2d(options.out_channels()));
  // detectron2's c2_msra_fill: kaiming normal, fan_out, ReLU gain.
  torch::NoGradGuard no_grad;
  weight.normal_(0.0, std::sqrt(2.0 / static_cast<double>(options.out_channels() * k * k)));
}

void FrozenBNConv2dImpl::pretty_print(std::ostream& stream) const {
  stream << "combo::backbone::FrozenBNConv2d(" << options.in_channels() << ", "
         << options.out_channels() << ", kernel_size=" << options.kernel_size()
         << ", stride=" << options.stride() << ", padding=" << options.padding() << ")";
}

at::Tensor FrozenBNConv2dImpl::forward(const at::Tensor& x) {
  auto [scale, shift] = norm->scale_and_shift();
  const at::Tensor folded = weight * scale.to(weight.scalar_type()).view({-1, 1, 1, 1});
  const at::Tensor bias = shift.to(weight.scalar_type());
  const int64_t s = options.stride();
  const int64_t p = options.padding();
  // at::conv2d sends unstrided 1x1 convolutions of small batches to the slow THNN kernel when
  // one thread is used, which also copies channels-last input to NCHW; oneDNN is about twice
  // as fast there and is what at::conv2d picks in every other case.
  if (x.is_cpu() && x.scalar_type() == at::kFloat && folded.scalar_type() == at::kFloat &&
      x.is_contiguous(at::MemoryFormat::ChannelsLast) && at::hasMKLDNN() &&
      at::globalContext().userEnabledMkldnn()) {
    return at::mkldnn_convolution(x, folded, bias, {p, p}, {s, s}, {1, 1}, 1);
  }
  return at::conv2d(x, folded, bias, s, p);
}

// ---------------------------------------------------------------------------------------------
BottleneckBlockImpl::BottleneckBlockImpl(const BottleneckBlockOptions& options_)
    : options(options_) {
  reset();
}

void BottleneckBlockImpl::reset() {
  const int64_t in = options.in_channels();
  const int64_t mid = options.bottleneck_channels();
  const int64_t out = options.out_channels();
  if (in != out) {
    shortcut = register_module(
        "shortcut", FrozenBNConv2d(FrozenBNConv2dOptions(in, out, 1).stride(options.stride())));
  } else {
    COMBO_CHECK(options.stride() == 1, "BottleneckBlock: an identity shortcut needs stride 1, got ",
                options.stride());
    shortcut = nullptr;
  }
  conv1 = register_module("conv1", FrozenBNConv2d(FrozenBNConv2dOptions(in, mid, 1)));
  conv2 = register_module(
      "conv2",
      FrozenBNConv2d(FrozenBNConv2dOptions(mid, mid, 3).stride(options.stride()).padding(1)));
  conv3 = register_module("conv3", FrozenBNConv2d(FrozenBNConv2dOptions(mid, out, 1)));
}

at::Tensor BottleneckBlockImpl::forward(const at::Tensor& x) {
  // In-place ReLU/add are safe under autograd: the convolutions do not keep their outputs.
  at::Tensor y = conv1->forward(x).relu_();
  y = conv2->forward(y).relu_();
  y = conv3->forward(y);
  y.add_(shortcut ? shortcut->forward(x) : x);
  return y.relu_();
}

// ---------------------------------------------------------------------------------------------
BasicStemImpl::BasicStemImpl(int64_t in_channels_, int64_t out_channels_)
    : in_channels(in_channels_), out_channels(out_channels_) {
  reset();
}

void BasicStemImpl::reset() {
  conv1 = register_module(
      "conv1",
      FrozenBNConv2d(FrozenBNConv2dOptions(in_channels, out_channels, 7).stride(2).padding(3)));
}

at::Tensor BasicStemImpl::forward(const at::Tensor& x) {
  return at::max_pool2d(conv1->forward(x).relu_(), {3, 3}, {2, 2}, {1, 1});
}

// ---------------------------------------------------------------------------------------------
ResNetImpl::ResNetImpl(const ResNetOptions& options_) : options(options_) { reset(); }

void ResNetImpl::reset() {
  const std::vector<int64_t> blocks = resnet_blocks_per_stage(options.depth());
  stem = register_module("stem", BasicStem(options.in_channels(), options.stem_out_channels()));
  // reset() may run on a built encoder: start afresh.
  stages.clear();
  int64_t in = options.stem_out_channels();
  int64_t out = options.res2_out_channels();
  for (size_t s = 0; s < blocks.size(); ++s) {
    torch::nn::ModuleList list;
    for (int64_t b = 0; b < blocks[s]; ++b) {
      const int64_t stride = (b == 0 && s > 0) ? 2 : 1;
      list->push_back(
          BottleneckBlock(BottleneckBlockOptions(b == 0 ? in : out, out / 4, out).stride(stride)));
    }
    stages.push_back(register_module("res" + std::to_string(s + 2), list));
    in = out;
    out *= 2;
  }
}

void ResNetImpl::pretty_print(std::ostream& stream) const {
  stream << "combo::backbone::ResNet(depth=" << options.depth()
         << ", stem_out_channels=" << options.stem_out_channels()
         << ", res2_out_channels=" << options.res2_out_channels() << ", norm=FrozenBN)";
}

FeatureMap ResNetImpl::forward_features(const at::Tensor& x) {
  COMBO_CHECK(x.dim() == 4 && x.size(1) == options.in_channels(), "ResNet: expected [N, ",
              options.in_channels(), ", H, W], got shape ", x.sizes());
  const auto& names = feature_names();
  FeatureMap out;
  at::Tensor y = stem->forward(x.contiguous(at::MemoryFormat::ChannelsLast));
  for (size_t s = 0; s < stages.size(); ++s) {
    for (const auto& block : *stages[s]) {
      auto* b = block->as<BottleneckBlockImpl>();
      if (checkpoint_blocks) {
        y = nn::checkpoint([b](const std::vector<at::Tensor>& in) { return b->forward(in[0]); },
                           {y});
      } else {
        y = b->forward(y);
      }
    }
    out[names[s]] = y.contiguous();
  }
  return out;
}

FeatureShapes ResNetImpl::output_shapes() const {
  FeatureShapes shapes;
  const auto& names = feature_names();
  int64_t channels = options.res2_out_channels();
  int64_t stride = 4;
  for (size_t s = 0; s < names.size(); ++s, channels *= 2, stride *= 2) {
    shapes[names[s]] = FeatureShape{channels, stride};
  }
  return shapes;
}

bool ResNetImpl::is_ignored_checkpoint_key(const std::string& key) const {
  return starts_with(key, "fc.") || starts_with(key, "linear.") || starts_with(key, "stem.fc.") ||
         ends_with(key, ".num_batches_tracked");
}

}  // namespace combo::backbone
