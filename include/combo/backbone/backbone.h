#pragma once
/// The image-encoder interface of ComboAVS: a backbone maps normalised RGB frames to the named
/// feature maps "res2".."res5" and reports the channels and stride of each, so that the heads
/// are built from shapes rather than from backbone names.
#include <ATen/core/Tensor.h>
#include <torch/arg.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>
#include <torch/utils.h>

#include <map>
#include <string>
#include <vector>

#include "combo/core/state_dict.h"

namespace combo::backbone {

/// Channels and stride (input pixels per feature pixel) of one output map.
struct FeatureShape {
  int64_t channels = 0;
  int64_t stride = 0;
};
inline bool operator==(const FeatureShape& a, const FeatureShape& b) {
  return a.channels == b.channels && a.stride == b.stride;
}

/// Output maps by name, "res2".."res5"; map i is [N, C_i, ~H/s_i, ~W/s_i] (sizes rounded as the
/// strided convolutions round them; exact for H and W divisible by 32).
using FeatureMap = std::map<std::string, at::Tensor>;
/// Channels and stride of each output map, by the same names as FeatureMap.
using FeatureShapes = std::map<std::string, FeatureShape>;

/// The names of the four output maps, finest first.
const std::vector<std::string>& feature_names();

/// Base of every image encoder. Concrete encoders (PvtV2Impl, ResNetImpl) derive from
/// ClonableBackbone<Derived>; a model holds them as `Backbone` (a module holder of this base) and
/// registers them like any child module, so two encoders can live side by side under the names
/// `backbone` and `pre_sam_backbone`.
class BackboneImpl : public torch::nn::Module {
 public:
  /// x [N, 3, H, W] (normalised RGB) -> {"res2": [N, C2, H/4, W/4], ..., "res5": [N, C5, H/32,
  /// W/32]}, each contiguous NCHW.
  virtual FeatureMap forward_features(const at::Tensor& x) = 0;

  /// Channels and strides of the maps forward_features returns.
  virtual FeatureShapes output_shapes() const = 0;

  /// True for checkpoint keys of parts of the official network that this encoder omits (an
  /// ImageNet classifier, BatchNorm counters); load_backbone_state_dict drops them.
  virtual bool is_ignored_checkpoint_key(const std::string& key) const { return false; }

  /// Checks x ([N, 3, H, W], floating point) and calls forward_features.
  FeatureMap forward(const at::Tensor& x);

  /// Activation checkpointing of every block (nn::checkpoint): while training, a block keeps
  /// only its input for backward and runs again there. Same results, less memory, one more
  /// forward pass of the blocks per step.
  bool checkpoint_blocks = false;
};
TORCH_MODULE(Backbone);

namespace detail {
template <class A>
A clone_argument(std::shared_ptr<torch::nn::Module> (torch::nn::Module::*)(const A&) const);
}  // namespace detail
/// The device argument of torch::nn::Module::clone in this LibTorch (c10::optional in 1.x,
/// std::optional in 2.x).
using CloneDevice = decltype(detail::clone_argument(&torch::nn::Module::clone));

/// Copies every parameter and buffer of `from` into the module of the same structure `to` (by
/// name; deep copies, moved to `device` when given) with their requires_grad flags, and the
/// training flag.
void copy_module_state(const torch::nn::Module& from, torch::nn::Module& to,
                       const CloneDevice& device);

/// What torch::nn::Cloneable gives a module, for encoders: a deep clone() (a fresh Derived built
/// from `options`, then the source's parameters, buffers, training flag and checkpoint_blocks),
/// also when the encoder is cloned as the child of a cloned model. Cloneable itself cannot be
/// used: LibTorch 2.x derives it non-virtually from Module, which with BackboneImpl's Module
/// base would make two Module sub-objects.
template <class Derived>
class ClonableBackbone : public BackboneImpl {
 public:
  /// Builds the submodules from the options (the constructor and clone() call it).
  virtual void reset() = 0;

  std::shared_ptr<torch::nn::Module> clone(const CloneDevice& device = {}) const override {
    torch::NoGradGuard no_grad;
    const auto& self = static_cast<const Derived&>(*this);
    auto copy = std::make_shared<Derived>(self.options);
    copy_module_state(*this, *copy, device);
    copy->checkpoint_blocks = checkpoint_blocks;
    return copy;
  }

 private:
  // Called on the copy's child when a parent module is cloned (as Cloneable::clone_ does).
  void clone_(torch::nn::Module& other, const CloneDevice& device) override {
    auto copy = std::dynamic_pointer_cast<Derived>(other.clone(device));
    TORCH_CHECK(copy != nullptr, "cloning an encoder gave another type");
    static_cast<Derived&>(*this) = std::move(*copy);
  }
};

/// Options shared by the encoders that build_backbone makes.
struct BackboneOptions {
  /// Stochastic-depth rate of the last block (PVT-v2: linspace(0, rate, total depth) over the
  /// blocks in order; ResNet has none and ignores it). The official builders use 0.1.
  TORCH_ARG(double, drop_path_rate) = 0.1;
};

/// Names build_backbone accepts: "pvt_v2_b0" .. "pvt_v2_b5", "resnet50".
const std::vector<std::string>& backbone_names();

/// Builds the named encoder with random (official-style) initialisation. Unknown names throw
/// combo::Error listing the valid ones.
Backbone build_backbone(const std::string& name, const BackboneOptions& options = {});

/// Loads a pretrained state dict (official key names, no prefix) into an encoder after dropping
/// the keys the encoder ignores (is_ignored_checkpoint_key). Strict by default: any other
/// missing, unexpected or mis-shaped key is an error naming it.
LoadReport load_backbone_state_dict(BackboneImpl& backbone, const TensorDict& dict,
                                    const LoadOptions& options = {});

}  // namespace combo::backbone
