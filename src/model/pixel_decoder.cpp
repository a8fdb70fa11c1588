#include "combo/model/pixel_decoder.h"
#include "combo/nn/checkpoint.h"

#include <c10/core/DispatchKeySet.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>

#include "combo/core/check.h"
#include "combo/nn/init.h"
#include "combo/nn/position_encoding.h"

namespace combo::model {

namespace {

// The official decoder always hands three levels to the transformer decoder.
constexpr int64_t kMaskformerNumFeatureLevels = 3;
constexpr double kPositionTemperature = 10000.0;

// Names sorted by stride, finest first (the official `sorted(..., key=stride)`; std::stable_sort
// keeps name order for equal strides as Python's stable sort keeps dict order, which is by name
// for a std::map).
std::vector<std::string> sorted_by_stride(const PixelDecoderInputShapes& shapes,
                                          const std::vector<std::string>& names) {
  std::vector<std::string> out = names;
  std::stable_sort(out.begin(), out.end(), [&](const std::string& a, const std::string& b) {
    return shapes.at(a).stride < shapes.at(b).stride;
  });
  return out;
}

}  // namespace

Conv2dNormImpl::Conv2dNormImpl(const Conv2dNormOptions& options_) : options(options_) { reset(); }

void Conv2dNormImpl::reset() {
  COMBO_CHECK(options.in_channels() > 0 && options.out_channels() > 0 && options.kernel_size() > 0,
              "Conv2dNorm: channels and kernel size must be positive, got ", options.in_channels(),
              " -> ", options.out_channels(), ", kernel ", options.kernel_size());
  weight =
      register_parameter("weight", torch::empty({options.out_channels(), options.in_channels(),
                                                 options.kernel_size(), options.kernel_size()}));
  if (options.bias()) {
    bias = register_parameter("bias", torch::empty({options.out_channels()}));
  } else {
    bias = at::Tensor();
  }
  norm = register_module("norm", torch::nn::GroupNorm(torch::nn::GroupNormOptions(
                                     options.norm_groups(), options.out_channels())));
  nn::kaiming_uniform_a1_(weight);
  if (bias.defined()) {
    torch::NoGradGuard no_grad;
    bias.zero_();
  }
}

void Conv2dNormImpl::pretty_print(std::ostream& stream) const {
  stream << "combo::model::Conv2dNorm(" << options.in_channels() << ", " << options.out_channels()
         << ", kernel_size=" << options.kernel_size() << ", padding=" << options.padding()
         << ", bias=" << (options.bias() ? "true" : "false") << ", norm=GroupNorm("
         << options.norm_groups() << ")" << (options.relu() ? ", activation=relu" : "") << ")";
}

at::Tensor Conv2dNormImpl::forward(const at::Tensor& x) {
  auto y = torch::conv2d(x, weight, bias, /*stride=*/1, /*padding=*/options.padding());
  y = norm->forward(y);
  return options.relu() ? torch::relu(y) : y;
}

MSDeformAttnEncoderLayerImpl::MSDeformAttnEncoderLayerImpl(
    const MSDeformAttnEncoderLayerOptions& options_)
    : options(options_) {
  reset();
}

void MSDeformAttnEncoderLayerImpl::reset() {
  const int64_t c = options.d_model();
  self_attn =
      register_module("self_attn", nn::MSDeformAttn(nn::MSDeformAttnOptions()
                                                        .d_model(c)
                                                        .n_levels(options.n_levels())
                                                        .n_heads(options.n_heads())
                                                        .n_points(options.n_points())
                                                        .fused_kernel(options.fused_kernel())));
  dropout1 = register_module("dropout1", torch::nn::Dropout(options.dropout()));
  norm1 = register_module("norm1", torch::nn::LayerNorm(torch::nn::LayerNormOptions({c})));
  linear1 = register_module("linear1", torch::nn::Linear(c, options.dim_feedforward()));
  dropout2 = register_module("dropout2", torch::nn::Dropout(options.dropout()));
  linear2 = register_module("linear2", torch::nn::Linear(options.dim_feedforward(), c));
  dropout3 = register_module("dropout3", torch::nn::Dropout(options.dropout()));
  norm2 = register_module("norm2", torch::nn::LayerNorm(torch::nn::LayerNormOptions({c})));
}

at::Tensor MSDeformAttnEncoderLayerImpl::forward(const at::Tensor& src, const at::Tensor& pos,
                                                 const at::Tensor& reference_points,
                                                 const nn::SpatialShapes& spatial_shapes,
                                                 const std::vector<int64_t>& level_start_index) {
  auto attn =
      self_attn->forward(src + pos, reference_points, src, spatial_shapes, level_start_index);
  auto x = norm1->forward(src + dropout1->forward(attn));
  auto ffn = linear2->forward(dropout2->forward(torch::relu(linear1->forward(x))));
  return norm2->forward(x + dropout3->forward(ffn));
}

MSDeformAttnEncoderImpl::MSDeformAttnEncoderImpl(
    const MSDeformAttnEncoderLayerOptions& layer_options_, int64_t num_layers_)
    : layer_options(layer_options_), num_layers(num_layers_) {
  reset();
}

void MSDeformAttnEncoderImpl::reset() {
  COMBO_CHECK(num_layers > 0, "MSDeformAttnEncoder: num_layers must be positive, got ", num_layers);
  layers = register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < num_layers; ++i) {
    layers->push_back(MSDeformAttnEncoderLayer(layer_options));
  }
}

at::Tensor MSDeformAttnEncoderImpl::reference_points(const nn::SpatialShapes& spatial_shapes,
                                                     const at::TensorOptions& options) {
  const auto f32 = options.dtype(torch::kFloat32);
  std::vector<at::Tensor> per_level;
  for (const auto& [h, w] : spatial_shapes) {
    // linspace(0.5, H - 0.5, H) / H as the official get_reference_points (valid ratio 1).
    const auto ys = torch::linspace(0.5, static_cast<double>(h) - 0.5, h, f32);
    const auto xs = torch::linspace(0.5, static_cast<double>(w) - 0.5, w, f32);
    const auto ref_y = ys.view({h, 1}).expand({h, w}).reshape({-1}) / static_cast<double>(h);
    const auto ref_x = xs.view({1, w}).expand({h, w}).reshape({-1}) / static_cast<double>(w);
    per_level.push_back(torch::stack({ref_x, ref_y}, -1));
  }
  const auto ref = torch::cat(per_level, 0);  // [S, 2]
  const auto levels = static_cast<int64_t>(spatial_shapes.size());
  return ref.view({1, ref.size(0), 1, 2}).expand({1, ref.size(0), levels, 2}).contiguous();
}

at::Tensor MSDeformAttnEncoderImpl::forward(const at::Tensor& src, const at::Tensor& pos,
                                            const nn::SpatialShapes& spatial_shapes,
                                            const std::vector<int64_t>& level_start_index) {
  const auto ref = reference_points(spatial_shapes, src.options());
  auto out = src;
  for (const auto& layer : *layers) {
    auto* l = layer->as<MSDeformAttnEncoderLayerImpl>();
    if (checkpoint_layers) {
      out = nn::checkpoint(
          [l, spatial_shapes, level_start_index](const std::vector<at::Tensor>& in) {
            return l->forward(in[0], in[1], in[2], spatial_shapes, level_start_index);
          },
          {out, pos, ref});
    } else {
      out = l->forward(out, pos, ref, spatial_shapes, level_start_index);
    }
  }
  return out;
}

MSDeformAttnTransformerEncoderOnlyImpl::MSDeformAttnTransformerEncoderOnlyImpl(
    const MSDeformAttnEncoderLayerOptions& layer_options_, int64_t num_layers_)
    : layer_options(layer_options_), num_layers(num_layers_) {
  reset();
}

void MSDeformAttnTransformerEncoderOnlyImpl::reset() {
  encoder = register_module("encoder", MSDeformAttnEncoder(layer_options, num_layers));
  level_embed = register_parameter(
      "level_embed", torch::empty({layer_options.n_levels(), layer_options.d_model()}));
  torch::NoGradGuard no_grad;
  for (auto& p : parameters()) {
    if (p.dim() > 1) torch::nn::init::xavier_uniform_(p);
  }
  for (auto& module : modules(/*include_self=*/false)) {
    if (auto* attn = module->as<nn::MSDeformAttnImpl>()) attn->reset_parameters();
  }
  level_embed.normal_();
}

at::Tensor MSDeformAttnTransformerEncoderOnlyImpl::forward(
    const std::vector<at::Tensor>& srcs, const std::vector<at::Tensor>& pos_embeds) {
  const auto levels = static_cast<int64_t>(srcs.size());
  COMBO_CHECK(levels == layer_options.n_levels() && pos_embeds.size() == srcs.size(),
              "MSDeformAttnTransformerEncoderOnly: expected ", layer_options.n_levels(),
              " levels of sources and position embeddings, got ", srcs.size(), " and ",
              pos_embeds.size());
  nn::SpatialShapes shapes;
  std::vector<at::Tensor> src_flatten, pos_flatten;
  for (int64_t l = 0; l < levels; ++l) {
    const auto& src = srcs[l];
    COMBO_CHECK(src.dim() == 4 && src.size(1) == layer_options.d_model(),
                "MSDeformAttnTransformerEncoderOnly: level ", l, " expected [N, ",
                layer_options.d_model(), ", H, W], got ", src.sizes());
    shapes.emplace_back(src.size(2), src.size(3));
    src_flatten.push_back(src.flatten(2).transpose(1, 2));
    pos_flatten.push_back(pos_embeds[l].flatten(2).transpose(1, 2) +
                          level_embed[l].view({1, 1, -1}));
  }
  return encoder->forward(torch::cat(src_flatten, 1), torch::cat(pos_flatten, 1), shapes,
                          nn::level_start_index(shapes));
}

MSDeformAttnPixelDecoderImpl::MSDeformAttnPixelDecoderImpl(
    const MSDeformAttnPixelDecoderOptions& options_)
    : options(options_) {
  reset();
}

void MSDeformAttnPixelDecoderImpl::reset() {
  const auto& shapes = options.input_shape();
  COMBO_CHECK(!shapes.empty(), "MSDeformAttnPixelDecoder: input_shape is empty");
  std::vector<std::string> names;
  for (const auto& [name, shape] : shapes) {
    COMBO_CHECK(shape.channels > 0 && shape.stride > 0, "MSDeformAttnPixelDecoder: input '", name,
                "' needs positive channels and stride, got ", shape.channels, " and ",
                shape.stride);
    names.push_back(name);
  }
  in_features_ = sorted_by_stride(shapes, names);
  for (const auto& name : options.transformer_in_features()) {
    COMBO_CHECK(shapes.count(name) == 1, "MSDeformAttnPixelDecoder: transformer input '", name,
                "' is not in input_shape");
  }
  // Python iterates input_shape (a name-sorted dict) and keeps the names it lists.
  std::vector<std::string> transformer_names;
  for (const auto& name : names) {
    const auto& wanted = options.transformer_in_features();
    if (std::find(wanted.begin(), wanted.end(), name) != wanted.end()) {
      transformer_names.push_back(name);
    }
  }
  transformer_in_features_ = sorted_by_stride(shapes, transformer_names);
  const auto levels = static_cast<int64_t>(transformer_in_features_.size());
  COMBO_CHECK(levels > 0, "MSDeformAttnPixelDecoder: transformer_in_features is empty");
  const int64_t conv_dim = options.conv_dim();
  COMBO_CHECK(conv_dim % 2 == 0 && conv_dim % options.norm_groups() == 0,
              "MSDeformAttnPixelDecoder: conv_dim ", conv_dim,
              " must be even and divisible by norm_groups ", options.norm_groups());

  input_proj = register_module("input_proj", torch::nn::ModuleList());
  // Low resolution first (res5 -> res3).
  for (auto it = transformer_in_features_.rbegin(); it != transformer_in_features_.rend(); ++it) {
    torch::nn::Conv2d conv(
        torch::nn::Conv2dOptions(shapes.at(*it).channels, conv_dim, 1).bias(true));
    nn::xavier_uniform_fill(conv);
    input_proj->push_back(torch::nn::Sequential(
        conv, torch::nn::GroupNorm(torch::nn::GroupNormOptions(options.norm_groups(), conv_dim))));
  }

  transformer = register_module(
      "transformer",
      MSDeformAttnTransformerEncoderOnly(MSDeformAttnEncoderLayerOptions()
                                             .d_model(conv_dim)
                                             .dim_feedforward(options.transformer_dim_feedforward())
                                             .dropout(options.transformer_dropout())
                                             .n_levels(levels)
                                             .n_heads(options.transformer_nheads())
                                             .n_points(options.transformer_n_points())
                                             .fused_kernel(options.fused_kernel()),
                                         options.transformer_enc_layers()));

  mask_features = register_module(
      "mask_features",
      torch::nn::Conv2d(torch::nn::Conv2dOptions(conv_dim, options.mask_dim(), 1).bias(true)));
  nn::c2_xavier_fill(mask_features);

  int64_t min_stride = shapes.at(transformer_in_features_.front()).stride;
  COMBO_CHECK(min_stride >= options.common_stride() && options.common_stride() > 0,
              "MSDeformAttnPixelDecoder: common_stride ", options.common_stride(),
              " must be positive and at most the finest transformer stride ", min_stride);
  num_fpn_levels_ = static_cast<int64_t>(std::log2(static_cast<double>(min_stride)) -
                                         std::log2(static_cast<double>(options.common_stride())));
  COMBO_CHECK(num_fpn_levels_ <= static_cast<int64_t>(in_features_.size()),
              "MSDeformAttnPixelDecoder: ", num_fpn_levels_,
              " extra FPN levels need as many inputs", " finer than the transformer ones, got ",
              in_features_.size(), " inputs");
  lateral_convs_.clear();
  output_convs_.clear();
  for (int64_t idx = 0; idx < num_fpn_levels_; ++idx) {
    const int64_t in_channels = shapes.at(in_features_[idx]).channels;
    auto lateral = register_module(
        "adapter_" + std::to_string(idx + 1),
        Conv2dNorm(Conv2dNormOptions(in_channels, conv_dim, 1).norm_groups(options.norm_groups())));
    auto output = register_module("layer_" + std::to_string(idx + 1),
                                  Conv2dNorm(Conv2dNormOptions(conv_dim, conv_dim, 3)
                                                 .padding(1)
                                                 .norm_groups(options.norm_groups())
                                                 .relu(true)));
    lateral_convs_.insert(lateral_convs_.begin(), lateral);
    output_convs_.insert(output_convs_.begin(), output);
  }
}

void MSDeformAttnPixelDecoderImpl::pretty_print(std::ostream& stream) const {
  stream << "combo::model::MSDeformAttnPixelDecoder(inputs=[";
  for (size_t i = 0; i < in_features_.size(); ++i) {
    const auto& shape = options.input_shape().at(in_features_[i]);
    stream << (i ? ", " : "") << in_features_[i] << ": " << shape.channels << "@" << shape.stride;
  }
  stream << "], conv_dim=" << options.conv_dim() << ", mask_dim=" << options.mask_dim()
         << ", enc_layers=" << options.transformer_enc_layers()
         << ", nheads=" << options.transformer_nheads()
         << ", n_points=" << options.transformer_n_points()
         << ", dim_feedforward=" << options.transformer_dim_feedforward()
         << ", common_stride=" << options.common_stride() << ")";
}

PixelDecoderOutput MSDeformAttnPixelDecoderImpl::forward(
    const std::map<std::string, at::Tensor>& features) {
  // The official forward runs under @autocast(enabled=False): deformable attention in fp32.
  c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
  int64_t batch = -1;
  auto input = [&](const std::string& name) {
    auto it = features.find(name);
    COMBO_CHECK(it != features.end(), "MSDeformAttnPixelDecoder: feature map '", name,
                "' is missing from the input");
    const auto& x = it->second;
    const int64_t channels = options.input_shape().at(name).channels;
    COMBO_CHECK(
        x.defined() && x.dim() == 4 && x.size(1) == channels && x.size(2) > 0 && x.size(3) > 0,
        "MSDeformAttnPixelDecoder: feature map '", name, "' expected [N, ", channels,
        ", H, W], got ", x.defined() ? x.sizes() : at::IntArrayRef{});
    COMBO_CHECK(batch < 0 || x.size(0) == batch, "MSDeformAttnPixelDecoder: feature map '", name,
                "' has batch ", x.size(0), ", other maps have ", batch);
    batch = x.size(0);
    // Half inputs are computed in float32; float64 (a reference run) stays float64.
    return x.scalar_type() == torch::kFloat64 ? x : x.to(torch::kFloat32);
  };

  std::vector<at::Tensor> srcs, pos;
  nn::SpatialShapes shapes;
  const int64_t levels = static_cast<int64_t>(transformer_in_features_.size());
  for (int64_t idx = 0; idx < levels; ++idx) {
    const auto x = input(transformer_in_features_[levels - 1 - idx]);
    srcs.push_back(input_proj->ptr<torch::nn::SequentialImpl>(idx)->forward(x));
    shapes.emplace_back(x.size(2), x.size(3));
    pos.push_back(nn::sine_position_encoding(x.size(2), x.size(3), options.conv_dim() / 2,
                                             kPositionTemperature, x.options()));
  }
  const auto memory = transformer->forward(srcs, pos);  // [N, S, conv_dim]

  std::vector<at::Tensor> out;
  const auto starts = nn::level_start_index(shapes);
  for (int64_t l = 0; l < levels; ++l) {
    const auto [h, w] = shapes[l];
    out.push_back(memory.narrow(1, starts[l], h * w).transpose(1, 2).view({batch, -1, h, w}));
  }
  for (int64_t idx = 0; idx < num_fpn_levels_; ++idx) {
    const auto x = input(in_features_[num_fpn_levels_ - 1 - idx]);
    const auto lateral = lateral_convs_[idx]->forward(x);
    const auto up = torch::nn::functional::interpolate(
        out.back(), torch::nn::functional::InterpolateFuncOptions()
                        .size(std::vector<int64_t>{lateral.size(2), lateral.size(3)})
                        .mode(torch::kBilinear)
                        .align_corners(false));
    out.push_back(output_convs_[idx]->forward(lateral + up));
  }

  PixelDecoderOutput result;
  result.mask_features = mask_features->forward(out.back());
  result.transformer_encoder_features = out.front();
  const auto kept = std::min<int64_t>(kMaskformerNumFeatureLevels, out.size());
  result.multi_scale_features.assign(out.begin(), out.begin() + kept);
  return result;
}

}  // namespace combo::model
