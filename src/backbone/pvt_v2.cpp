#include "combo/backbone/pvt_v2.h"

#include <torch/torch.h>
#include <torch/version.h>

#include <cmath>
#include <ostream>
#include <sstream>

#include "combo/core/autocast.h"
#include "combo/core/check.h"
#include "combo/nn/checkpoint.h"

namespace combo::backbone {
namespace {

constexpr double kPatchNormEps = 1e-5;  // nn.LayerNorm default (patch embed, attn.norm)
constexpr double kBlockNormEps = 1e-6;  // norm_layer=partial(nn.LayerNorm, eps=1e-6)

// The official `_init_weights`: Linear trunc_normal(std 0.02) with zero bias, LayerNorm (1, 0),
// Conv2d normal(0, sqrt(2 / fan_out)) with fan_out = k_h * k_w * out / groups and zero bias.
void init_linear(torch::nn::Linear& linear) {
  torch::NoGradGuard no_grad;
  // timm's trunc_normal_ cuts at +-2 (absolute), i.e. 100 standard deviations: a plain normal.
  linear->weight.normal_(0.0, 0.02).clamp_(-2.0, 2.0);
  if (linear->bias.defined()) linear->bias.zero_();
}

void init_conv(torch::nn::Conv2d& conv) {
  torch::NoGradGuard no_grad;
  const auto& w = conv->weight;
  const int64_t fan_out = w.size(0) * w.size(2) * w.size(3) / conv->options.groups();
  w.normal_(0.0, std::sqrt(2.0 / static_cast<double>(fan_out)));
  if (conv->bias.defined()) conv->bias.zero_();
}

torch::nn::LayerNorm layer_norm(int64_t dim, double eps) {
  return torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim}).eps(eps));
}

// Tokens [B, H*W, C] (contiguous) seen as an image [B, C, H, W] in channels-last memory, which
// the convolutions read without a copy.
at::Tensor tokens_as_image(const at::Tensor& tokens, int64_t h, int64_t w) {
  return tokens.reshape({tokens.size(0), h, w, tokens.size(2)}).permute({0, 3, 1, 2});
}

// [B, C, H, W] -> [B, H*W, C]; a view when the image is channels-last.
at::Tensor image_as_tokens(const at::Tensor& image) { return image.flatten(2).transpose(1, 2); }

bool grad_recording() { return at::GradMode::is_enabled(); }

// torch::nn::Linear (the C++ frontend's functional::linear) runs a 3-D input as matmul plus a
// separate bias pass; one addmm on the flattened tokens does both, as at::linear does.
// bias + tokens W^T for contiguous tokens [B, L, C] as one addmm -> [B, L, out].
at::Tensor addmm_tokens(const at::Tensor& bias, const at::Tensor& x, const at::Tensor& weight) {
  return at::addmm(bias, x.view({-1, x.size(2)}), weight.t())
      .view({x.size(0), x.size(1), weight.size(0)});
}

// The gradients autograd computes for addmm_tokens: W^T is column-major, so the weight's
// gradient is (grad^T x2)^T computed as grad^T x2, and the tokens' gradient is grad W.
struct AddmmTokensGrads {
  at::Tensor x, weight, bias;
};
AddmmTokensGrads addmm_tokens_backward(const at::Tensor& grad_out, const at::Tensor& x,
                                       const at::Tensor& weight, const at::Tensor& bias) {
  const at::Tensor grad = grad_out.reshape({-1, weight.size(0)});
  AddmmTokensGrads g;
  g.weight = grad.t().mm(x.view({-1, x.size(2)}));
  g.bias = at::sum_to(grad, bias.sizes());
  g.x = grad.mm(weight).reshape(x.sizes());
  return g;
}

at::Tensor linear_tokens(torch::nn::Linear& fc, const at::Tensor& x) {
  if (x.dim() == 3 && x.is_contiguous() && fc->bias.defined()) {
    return addmm_tokens(fc->bias, x, fc->weight);
  }
  return fc->forward(x);
}

template <typename T>
std::string join(const std::vector<T>& v) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < v.size(); ++i) os << (i ? ", " : "") << v[i];
  os << "]";
  return os.str();
}

}  // namespace

std::vector<double> drop_path_rates(double rate, int64_t total) {
  COMBO_CHECK(total >= 1, "drop_path_rates: expected at least one block, got ", total);
  std::vector<double> rates(static_cast<size_t>(total), 0.0);
  // torch.linspace in float32, as the official `[x.item() for x in torch.linspace(...)]`.
  const at::Tensor lin = torch::linspace(0.0, rate, total, torch::kFloat32);
  for (int64_t i = 0; i < total; ++i) rates[static_cast<size_t>(i)] = lin[i].item<float>();
  return rates;
}

at::Tensor add_drop_path(const at::Tensor& residual, at::Tensor branch, double p, bool training) {
  if (training && p > 0.0) {
    const double keep = 1.0 - p;
    std::vector<int64_t> shape(static_cast<size_t>(branch.dim()), 1);
    shape[0] = branch.size(0);
    at::Tensor mask = at::empty(shape, branch.options()).bernoulli_(keep);
    if (keep > 0.0) mask.div_(keep);
    return at::addcmul(residual, branch, mask);
  }
  // Without autograd the branch is a dead temporary: add in place and skip an allocation.
  if (!grad_recording()) return branch.add_(residual);
  return at::add(residual, branch);
}

namespace {

// GELU(depth-wise conv(hidden)) as tokens [B, h*w, C]; the same calls as DWConv + at::gelu.
at::Tensor dwconv_gelu(const at::Tensor& hidden, int64_t h, int64_t w, const at::Tensor& dw_weight,
                       const at::Tensor& dw_bias) {
  const at::Tensor conv =
      at::conv2d(tokens_as_image(hidden, h, w), dw_weight, dw_bias, 1, 1, 1, hidden.size(2));
  return at::gelu(image_as_tokens(conv));
}

// fc2(GELU(dwconv(hidden))) that saves only `hidden` (and the weights) for backward and runs
// the convolution and the GELU again there. Each gradient is the call autograd makes for the
// unfused ops (addmm's mm_mat1/mm_mat2 backward, sum_to for the broadcast bias, gelu_backward,
// convolution_backward), on the same values, so the results are bit-identical.
class DwconvGeluLinearFunction : public torch::autograd::Function<DwconvGeluLinearFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& hidden,
                            const at::Tensor& dw_weight, const at::Tensor& dw_bias,
                            const at::Tensor& fc_weight, const at::Tensor& fc_bias, int64_t h,
                            int64_t w) {
    const at::Tensor g = dwconv_gelu(hidden, h, w, dw_weight, dw_bias);
    ctx->save_for_backward({hidden, dw_weight, dw_bias, fc_weight, fc_bias});
    ctx->saved_data["h"] = h;
    ctx->saved_data["w"] = w;
    return addmm_tokens(fc_bias, g, fc_weight);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor& hidden = saved[0];
    const at::Tensor& dw_weight = saved[1];
    const at::Tensor& dw_bias = saved[2];
    const at::Tensor& fc_weight = saved[3];
    const at::Tensor& fc_bias = saved[4];
    const int64_t h = ctx->saved_data["h"].toInt();
    const int64_t w = ctx->saved_data["w"].toInt();
    const int64_t c = hidden.size(2);

    at::Tensor conv;
    at::Tensor g;
    {
      at::NoGradGuard no_grad;
      conv = image_as_tokens(
          at::conv2d(tokens_as_image(hidden, h, w), dw_weight, dw_bias, 1, 1, 1, c));
      g = at::gelu(conv);
    }
    const auto fc = addmm_tokens_backward(grad_outputs[0], g, fc_weight, fc_bias);
    const at::Tensor grad_conv = at::gelu_backward(fc.x, conv);
    auto [grad_image, grad_dw_weight, grad_dw_bias] = at::convolution_backward(
        tokens_as_image(grad_conv, h, w), tokens_as_image(hidden, h, w), dw_weight,
        at::OptionalIntArrayRef(dw_bias.sizes()), {1, 1}, {1, 1}, {1, 1}, /*transposed=*/false,
        {0, 0}, c, {true, true, true});
    const at::Tensor grad_hidden = grad_image.permute({0, 2, 3, 1}).reshape(hidden.sizes());
    return {grad_hidden, grad_dw_weight, grad_dw_bias, fc.weight,
            fc.bias,     at::Tensor(),   at::Tensor()};
  }
};

// fc(LayerNorm(x)) that saves x and the LayerNorm statistics, not the normalised tensor, and
// normalises again in backward. The gradients are the calls autograd makes for the unfused ops
// (addmm's backward as above, native_layer_norm_backward), on the same values.
class LayerNormLinearFunction : public torch::autograd::Function<LayerNormLinearFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                            const at::Tensor& ln_weight, const at::Tensor& ln_bias, double eps,
                            const at::Tensor& fc_weight, const at::Tensor& fc_bias) {
    const int64_t c = x.size(2);
    auto [normed, mean, rstd] = at::native_layer_norm(x, {c}, ln_weight, ln_bias, eps);
    ctx->save_for_backward({x, mean, rstd, ln_weight, ln_bias, fc_weight, fc_bias});
    ctx->saved_data["eps"] = eps;
    return addmm_tokens(fc_bias, normed, fc_weight);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor& x = saved[0];
    const at::Tensor& mean = saved[1];
    const at::Tensor& rstd = saved[2];
    const at::Tensor& ln_weight = saved[3];
    const at::Tensor& ln_bias = saved[4];
    const at::Tensor& fc_weight = saved[5];
    const at::Tensor& fc_bias = saved[6];
    const double eps = ctx->saved_data["eps"].toDouble();
    const int64_t c = x.size(2);
    at::Tensor normed;
    {
      at::NoGradGuard no_grad;
      normed = std::get<0>(at::native_layer_norm(x, {c}, ln_weight, ln_bias, eps));
    }
    const auto fc = addmm_tokens_backward(grad_outputs[0], normed, fc_weight, fc_bias);
    auto [grad_x, grad_ln_weight, grad_ln_bias] = at::native_layer_norm_backward(
        fc.x, x, {c}, mean, rstd, ln_weight, ln_bias, {true, true, true});
    return {grad_x, grad_ln_weight, grad_ln_bias, at::Tensor(), fc.weight, fc.bias};
  }
};

}  // namespace

namespace {
/// Whether the recomputing MLP functions apply: as nn::checkpoint, but not under autocast (they
/// compute in their inputs' dtype; under autocast the plain ops run, which autocast casts).
bool fused_recompute_applies(const std::vector<at::Tensor>& inputs) {
  return nn::checkpoint_applies(inputs) && !AutocastState::current().any();
}
}  // namespace

at::Tensor layer_norm_linear(const at::Tensor& x, const at::Tensor& ln_weight,
                             const at::Tensor& ln_bias, double eps, const at::Tensor& fc_weight,
                             const at::Tensor& fc_bias) {
  COMBO_CHECK(x.dim() == 3 && ln_weight.defined() && ln_bias.defined() && fc_weight.defined() &&
                  fc_bias.defined() && fc_weight.dim() == 2 && fc_weight.size(1) == x.size(2),
              "layer_norm_linear: expected x [B, L, C] and defined weights and biases, got x ",
              x.sizes());
  if (x.is_contiguous() && fused_recompute_applies({x, ln_weight, ln_bias, fc_weight, fc_bias})) {
    return LayerNormLinearFunction::apply(x, ln_weight, ln_bias, eps, fc_weight, fc_bias);
  }
  const at::Tensor normed = at::layer_norm(x, {x.size(2)}, ln_weight, ln_bias, eps);
  if (normed.is_contiguous()) return addmm_tokens(fc_bias, normed, fc_weight);
  return at::linear(normed, fc_weight, fc_bias);
}

at::Tensor dwconv_gelu_linear(const at::Tensor& hidden, int64_t h, int64_t w,
                              const at::Tensor& dw_weight, const at::Tensor& dw_bias,
                              const at::Tensor& fc_weight, const at::Tensor& fc_bias) {
  COMBO_CHECK(hidden.dim() == 3 && hidden.size(1) == h * w && dw_weight.defined() &&
                  dw_bias.defined() && fc_weight.defined() && fc_bias.defined() &&
                  fc_weight.dim() == 2 && fc_weight.size(1) == hidden.size(2),
              "dwconv_gelu_linear: expected hidden [B, ", h * w,
              ", C] and defined weights and biases, got hidden ", hidden.sizes());
  if (hidden.is_contiguous() &&
      fused_recompute_applies({hidden, dw_weight, dw_bias, fc_weight, fc_bias})) {
    return DwconvGeluLinearFunction::apply(hidden, dw_weight, dw_bias, fc_weight, fc_bias, h, w);
  }
  at::Tensor y = image_as_tokens(
      at::conv2d(tokens_as_image(hidden, h, w), dw_weight, dw_bias, 1, 1, 1, hidden.size(2)));
  // GELU's backward needs its input, so only go in place when nothing records gradients.
  if (grad_recording()) {
    y = at::gelu(y);
  } else {
    at::gelu_(y);
  }
  if (y.is_contiguous()) return addmm_tokens(fc_bias, y, fc_weight);
  return at::linear(y, fc_weight, fc_bias);
}

// ---------------------------------------------------------------------------------------------
PvtV2Options PvtV2Options::variant(const std::string& name) {
  std::string v = name;
  if (v.rfind("pvt_v2_", 0) == 0) v = v.substr(7);
  PvtV2Options o;
  const std::vector<int64_t> wide = {64, 128, 320, 512};
  if (v == "b0") {
    o.embed_dims({32, 64, 160, 256}).mlp_ratios({8, 8, 4, 4}).depths({2, 2, 2, 2});
  } else if (v == "b1") {
    o.embed_dims(wide).mlp_ratios({8, 8, 4, 4}).depths({2, 2, 2, 2});
  } else if (v == "b2") {
    o.embed_dims(wide).mlp_ratios({8, 8, 4, 4}).depths({3, 4, 6, 3});
  } else if (v == "b3") {
    o.embed_dims(wide).mlp_ratios({8, 8, 4, 4}).depths({3, 4, 18, 3});
  } else if (v == "b4") {
    o.embed_dims(wide).mlp_ratios({8, 8, 4, 4}).depths({3, 8, 27, 3});
  } else if (v == "b5") {
    o.embed_dims(wide).mlp_ratios({4, 4, 4, 4}).depths({3, 6, 40, 3});
  } else {
    COMBO_FAIL("PvtV2Options::variant: unknown PVT-v2 variant '", name,
               "'; expected one of b0, b1, b2, b3, b4, b5 (optionally prefixed pvt_v2_)");
  }
  o.num_heads({1, 2, 5, 8}).sr_ratios({8, 4, 2, 1}).qkv_bias(true);
  return o;
}

// ---------------------------------------------------------------------------------------------
OverlapPatchEmbedImpl::OverlapPatchEmbedImpl(const OverlapPatchEmbedOptions& options_)
    : options(options_) {
  reset();
}

void OverlapPatchEmbedImpl::reset() {
  const int64_t k = options.patch_size();
  proj = register_module(
      "proj", torch::nn::Conv2d(torch::nn::Conv2dOptions(options.in_chans(), options.embed_dim(), k)
                                    .stride(options.stride())
                                    .padding(k / 2)));
  norm = register_module("norm", layer_norm(options.embed_dim(), kPatchNormEps));
  init_conv(proj);
}

at::Tensor OverlapPatchEmbedImpl::forward(const at::Tensor& x, int64_t* h, int64_t* w) {
  at::Tensor y = proj->forward(x);
  *h = y.size(2);
  *w = y.size(3);
  return norm->forward(image_as_tokens(y));
}

// ---------------------------------------------------------------------------------------------
PvtAttentionImpl::PvtAttentionImpl(const PvtAttentionOptions& options_) : options(options_) {
  reset();
}

void PvtAttentionImpl::reset() {
  const int64_t dim = options.dim();
  COMBO_CHECK(options.num_heads() > 0 && dim % options.num_heads() == 0, "PvtAttention: dim ", dim,
              " must be divisible by num_heads ", options.num_heads());
  COMBO_CHECK(options.sr_ratio() >= 1, "PvtAttention: sr_ratio must be >= 1, got ",
              options.sr_ratio());
  q = register_module(
      "q", torch::nn::Linear(torch::nn::LinearOptions(dim, dim).bias(options.qkv_bias())));
  kv = register_module(
      "kv", torch::nn::Linear(torch::nn::LinearOptions(dim, 2 * dim).bias(options.qkv_bias())));
  proj = register_module("proj", torch::nn::Linear(dim, dim));
  init_linear(q);
  init_linear(kv);
  init_linear(proj);
  if (options.sr_ratio() > 1) {
    const int64_t r = options.sr_ratio();
    sr = register_module("sr", torch::nn::Conv2d(torch::nn::Conv2dOptions(dim, dim, r).stride(r)));
    norm = register_module("norm", layer_norm(dim, kPatchNormEps));
    init_conv(sr);
  } else {
    sr = nullptr;
    norm = nullptr;
  }
}

at::Tensor PvtAttentionImpl::forward(const at::Tensor& x, int64_t h, int64_t w) {
  const int64_t b = x.size(0);
  const int64_t n = x.size(1);
  const int64_t c = options.dim();
  const int64_t heads = options.num_heads();
  const int64_t d = c / heads;
  COMBO_CHECK(x.dim() == 3 && x.size(2) == c && n == h * w, "PvtAttention: expected [B, ", h * w,
              ", ", c, "] tokens for a ", h, "x", w, " grid, got shape ", x.sizes());

  at::Tensor queries = linear_tokens(q, x);  // [B, N, C]
  at::Tensor kv_in = x;
  if (options.sr_ratio() > 1) {
    const int64_t r = options.sr_ratio();
    COMBO_CHECK(h >= r && w >= r, "PvtAttention: a ", h, "x", w,
                " token grid is smaller than the spatial-reduction ratio ", r,
                " (input image too small)");
    kv_in = norm->forward(image_as_tokens(sr->forward(tokens_as_image(x, h, w))));
  }
  const at::Tensor keys_values = linear_tokens(kv, kv_in);  // [B, M, 2C]: keys then values
  const int64_t m = keys_values.size(1);
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));

  if (heads == 1) {
    // One head: plain batched products on views, no head split.
    at::Tensor k = keys_values.narrow(2, 0, c);
    at::Tensor v = keys_values.narrow(2, c, c);
    at::Tensor attn = at::matmul(queries, k.transpose(1, 2)).mul_(scale);
    attn = at::softmax(attn, -1);
    return linear_tokens(proj, at::matmul(attn, v));
  }
  at::Tensor q4 = queries.view({b, n, heads, d}).transpose(1, 2);  // [B, h, N, d]
  at::Tensor kv5 = keys_values.view({b, m, 2, heads, d});
  at::Tensor k4 = kv5.select(2, 0).transpose(1, 2);  // [B, h, M, d]
  at::Tensor v4 = kv5.select(2, 1).transpose(1, 2);
  at::Tensor out;
#if TORCH_VERSION_MAJOR >= 2
  // Fused kernels (flash / memory-efficient on CUDA, flash on CPU); default scale d^-0.5.
  out = at::scaled_dot_product_attention(q4, k4, v4);
#else
  at::Tensor attn = at::matmul(q4, k4.transpose(-2, -1)).mul_(scale);
  attn = at::softmax(attn, -1);
  out = at::matmul(attn, v4);  // [B, h, N, d]
#endif
  return linear_tokens(proj, out.transpose(1, 2).reshape({b, n, c}));
}

// ---------------------------------------------------------------------------------------------
DWConvImpl::DWConvImpl(int64_t dim_) : dim(dim_) { reset(); }

void DWConvImpl::reset() {
  dwconv = register_module(
      "dwconv", torch::nn::Conv2d(torch::nn::Conv2dOptions(dim, dim, 3).padding(1).groups(dim)));
  init_conv(dwconv);
}

at::Tensor DWConvImpl::forward(const at::Tensor& x, int64_t h, int64_t w) {
  return image_as_tokens(dwconv->forward(tokens_as_image(x, h, w)));
}

// ---------------------------------------------------------------------------------------------
PvtMlpImpl::PvtMlpImpl(int64_t dim_, int64_t hidden_dim_) : dim(dim_), hidden_dim(hidden_dim_) {
  reset();
}

void PvtMlpImpl::reset() {
  fc1 = register_module("fc1", torch::nn::Linear(dim, hidden_dim));
  dwconv = register_module("dwconv", DWConv(hidden_dim));
  fc2 = register_module("fc2", torch::nn::Linear(hidden_dim, dim));
  init_linear(fc1);
  init_linear(fc2);
}

at::Tensor PvtMlpImpl::forward(const at::Tensor& x, int64_t h, int64_t w) {
  return forward_hidden(linear_tokens(fc1, x), h, w);
}

at::Tensor PvtMlpImpl::forward_hidden(const at::Tensor& hidden, int64_t h, int64_t w) {
  const auto& conv = dwconv->dwconv;
  if (conv->bias.defined() && fc2->bias.defined()) {
    return dwconv_gelu_linear(hidden, h, w, conv->weight, conv->bias, fc2->weight, fc2->bias);
  }
  at::Tensor y = dwconv->forward(hidden, h, w);
  // GELU's backward needs its input, so only go in place when nothing records gradients.
  if (grad_recording()) {
    y = at::gelu(y);
  } else {
    at::gelu_(y);
  }
  return linear_tokens(fc2, y);
}

// ---------------------------------------------------------------------------------------------
PvtBlockImpl::PvtBlockImpl(const PvtBlockOptions& options_) : options(options_) { reset(); }

void PvtBlockImpl::reset() {
  const int64_t dim = options.dim();
  norm1 = register_module("norm1", layer_norm(dim, kBlockNormEps));
  attn = register_module("attn", PvtAttention(PvtAttentionOptions(dim, options.num_heads())
                                                  .qkv_bias(options.qkv_bias())
                                                  .sr_ratio(options.sr_ratio())));
  norm2 = register_module("norm2", layer_norm(dim, kBlockNormEps));
  const auto hidden = static_cast<int64_t>(static_cast<double>(dim) * options.mlp_ratio());
  COMBO_CHECK(hidden > 0, "PvtBlock: mlp_ratio ", options.mlp_ratio(), " gives no hidden units");
  mlp = register_module("mlp", PvtMlp(dim, hidden));
}

at::Tensor PvtBlockImpl::forward(const at::Tensor& x, int64_t h, int64_t w) {
  const double p = options.drop_path();
  at::Tensor y = add_drop_path(x, attn->forward(norm1->forward(x), h, w), p, is_training());
  at::Tensor branch;
  if (norm2->weight.defined() && norm2->bias.defined() && mlp->fc1->bias.defined()) {
    // norm2 and fc1 in one step that does not keep the normalised tokens for backward.
    branch =
        mlp->forward_hidden(layer_norm_linear(y, norm2->weight, norm2->bias, norm2->options.eps(),
                                              mlp->fc1->weight, mlp->fc1->bias),
                            h, w);
  } else {
    branch = mlp->forward(norm2->forward(y), h, w);
  }
  return add_drop_path(y, branch, p, is_training());
}

// ---------------------------------------------------------------------------------------------
PvtV2Impl::PvtV2Impl(const PvtV2Options& options_) : options(options_) { reset(); }

void PvtV2Impl::reset() {
  const size_t stages = options.embed_dims().size();
  COMBO_CHECK(stages == 4, "PvtV2: expected 4 stages (res2..res5), got ", stages, " embed_dims");
  COMBO_CHECK(options.num_heads().size() == stages && options.mlp_ratios().size() == stages &&
                  options.depths().size() == stages && options.sr_ratios().size() == stages,
              "PvtV2: embed_dims, num_heads, mlp_ratios, depths and sr_ratios need one entry per "
              "stage; got sizes ",
              stages, ", ", options.num_heads().size(), ", ", options.mlp_ratios().size(), ", ",
              options.depths().size(), ", ", options.sr_ratios().size());
  int64_t total = 0;
  for (int64_t d : options.depths()) {
    COMBO_CHECK(d >= 1, "PvtV2: every stage needs at least one block, got depths ",
                join(options.depths()));
    total += d;
  }
  const std::vector<double> dpr = drop_path_rates(options.drop_path_rate(), total);

  // reset() may run on a built encoder: start afresh.
  patch_embeds.clear();
  blocks.clear();
  norms.clear();
  size_t cur = 0;
  for (size_t i = 0; i < stages; ++i) {
    const std::string id = std::to_string(i + 1);
    const int64_t dim = options.embed_dims()[i];
    const int64_t in = i == 0 ? options.in_chans() : options.embed_dims()[i - 1];
    patch_embeds.push_back(register_module(
        "patch_embed" + id,
        OverlapPatchEmbed(OverlapPatchEmbedOptions(in, dim, i == 0 ? 7 : 3, i == 0 ? 4 : 2))));
    torch::nn::ModuleList list;
    for (int64_t j = 0; j < options.depths()[i]; ++j) {
      list->push_back(PvtBlock(PvtBlockOptions(dim, options.num_heads()[i])
                                   .mlp_ratio(options.mlp_ratios()[i])
                                   .qkv_bias(options.qkv_bias())
                                   .sr_ratio(options.sr_ratios()[i])
                                   .drop_path(dpr[cur++])));
    }
    blocks.push_back(register_module("block" + id, list));
    norms.push_back(register_module("norm" + id, layer_norm(dim, kBlockNormEps)));
  }
}

void PvtV2Impl::pretty_print(std::ostream& stream) const {
  stream << "combo::backbone::PvtV2(embed_dims=" << join(options.embed_dims())
         << ", num_heads=" << join(options.num_heads())
         << ", mlp_ratios=" << join(options.mlp_ratios()) << ", depths=" << join(options.depths())
         << ", sr_ratios=" << join(options.sr_ratios())
         << ", drop_path_rate=" << options.drop_path_rate() << ")";
}

FeatureMap PvtV2Impl::forward_features(const at::Tensor& x) {
  COMBO_CHECK(x.dim() == 4 && x.size(1) == options.in_chans(), "PvtV2: expected [N, ",
              options.in_chans(), ", H, W], got shape ", x.sizes());
  const auto& names = feature_names();
  FeatureMap out;
  // The first convolution is several times faster on channels-last input, and every later
  // stage then stays channels-last.
  at::Tensor image = x.contiguous(at::MemoryFormat::ChannelsLast);
  for (size_t i = 0; i < patch_embeds.size(); ++i) {
    int64_t h = 0;
    int64_t w = 0;
    at::Tensor tokens = patch_embeds[i]->forward(image, &h, &w);
    for (const auto& block : *blocks[i]) {
      auto* b = block->as<PvtBlockImpl>();
      if (checkpoint_blocks) {
        tokens = nn::checkpoint(
            [b, h, w](const std::vector<at::Tensor>& in) { return b->forward(in[0], h, w); },
            {tokens});
      } else {
        tokens = b->forward(tokens, h, w);
      }
    }
    tokens = norms[i]->forward(tokens);
    image = tokens_as_image(tokens, h, w);
    out[names[i]] = image.contiguous();
  }
  return out;
}

FeatureShapes PvtV2Impl::output_shapes() const {
  FeatureShapes shapes;
  const auto& names = feature_names();
  int64_t stride = 4;
  for (size_t i = 0; i < names.size(); ++i, stride *= 2) {
    shapes[names[i]] = FeatureShape{options.embed_dims()[i], stride};
  }
  return shapes;
}

bool PvtV2Impl::is_ignored_checkpoint_key(const std::string& key) const {
  return key.rfind("head.", 0) == 0;
}

}  // namespace combo::backbone
