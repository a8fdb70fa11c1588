#include "combo/nn/attention.h"

#include <torch/torch.h>

#include <cmath>
#include <limits>

#include "combo/core/check.h"
#include "combo/nn/init.h"

namespace combo::nn {

MultiheadAttentionImpl::MultiheadAttentionImpl(MultiheadAttentionOptions options_)
    : options(std::move(options_)) {
  reset();
}

void MultiheadAttentionImpl::reset() {
  const int64_t e = options.embed_dim();
  const int64_t h = options.num_heads();
  COMBO_CHECK(e > 0 && h > 0 && e % h == 0,
              "MultiheadAttention: embed_dim must be a positive multiple of num_heads, got "
              "embed_dim=",
              e, " num_heads=", h);
  COMBO_CHECK(options.dropout() >= 0.0 && options.dropout() < 1.0,
              "MultiheadAttention: dropout must be in [0, 1), got ", options.dropout());
  in_proj_weight = register_parameter("in_proj_weight", torch::empty({3 * e, e}));
  in_proj_bias = register_parameter("in_proj_bias", torch::zeros({3 * e}));
  out_proj = register_module("out_proj", torch::nn::Linear(e, e));
  xavier_uniform_(in_proj_weight);
  torch::NoGradGuard no_grad;
  out_proj->bias.zero_();
}

namespace {

// Brings a mask to [N or 1, H or 1, L, S] so that it broadcasts over the [N, H, L, S] scores.
at::Tensor mask_as_4d(const at::Tensor& mask, int64_t n, int64_t h, int64_t l, int64_t s) {
  switch (mask.dim()) {
    case 2:
      COMBO_CHECK(mask.size(0) == l && mask.size(1) == s, "MultiheadAttention: expected a [", l,
                  ", ", s, "] attn_mask, got ", mask.sizes());
      return mask.view({1, 1, l, s});
    case 3:
      COMBO_CHECK(mask.size(0) == n * h && mask.size(1) == l && mask.size(2) == s,
                  "MultiheadAttention: expected a [", n * h, ", ", l, ", ", s,
                  "] attn_mask (N*num_heads, L, S), got ", mask.sizes());
      return mask.view({n, h, l, s});
    case 4:
      COMBO_CHECK((mask.size(0) == n || mask.size(0) == 1) &&
                      (mask.size(1) == h || mask.size(1) == 1) && mask.size(2) == l &&
                      mask.size(3) == s,
                  "MultiheadAttention: expected a [", n, ", ", h, " or 1, ", l, ", ", s,
                  "] attn_mask, got ", mask.sizes());
      return mask;
    default:
      COMBO_FAIL("MultiheadAttention: attn_mask must have 2, 3 or 4 dims, got ", mask.sizes());
  }
}

}  // namespace

at::Tensor MultiheadAttentionImpl::forward(const at::Tensor& query, const at::Tensor& key,
                                           const at::Tensor& value, const at::Tensor& attn_mask) {
  const int64_t e = options.embed_dim();
  const int64_t h = options.num_heads();
  const int64_t hd = e / h;
  COMBO_CHECK(query.dim() == 3 && query.size(2) == e, "MultiheadAttention: expected query [L, N, ",
              e, "], got ", query.sizes());
  COMBO_CHECK(key.dim() == 3 && key.size(1) == query.size(1) && key.size(2) == e,
              "MultiheadAttention: expected key [S, ", query.size(1), ", ", e, "], got ",
              key.sizes());
  COMBO_CHECK(value.sizes() == key.sizes(), "MultiheadAttention: value ", value.sizes(),
              " must have the shape of key ", key.sizes());
  const int64_t l = query.size(0);
  const int64_t n = query.size(1);
  const int64_t s = key.size(0);

  // Three separate projections, as PyTorch does when key and value are different tensors.
  auto q = at::linear(query, in_proj_weight.narrow(0, 0, e), in_proj_bias.narrow(0, 0, e));
  auto k = at::linear(key, in_proj_weight.narrow(0, e, e), in_proj_bias.narrow(0, e, e));
  auto v = at::linear(value, in_proj_weight.narrow(0, 2 * e, e), in_proj_bias.narrow(0, 2 * e, e));
  // PyTorch 1.13 divides q by sqrt(head_dim) before the product.
  q = q.div(std::sqrt(static_cast<double>(hd)));
  // [L, N, E] -> [N*H, L, hd] as strided views; bmm takes them without copies.
  q = q.view({l, n * h, hd}).transpose(0, 1);
  k = k.view({s, n * h, hd}).transpose(0, 1);
  v = v.view({s, n * h, hd}).transpose(0, 1);

  auto scores = at::bmm(q, k.transpose(1, 2));  // [N*H, L, S]
  if (attn_mask.defined()) {
    const auto mask = mask_as_4d(attn_mask, n, h, l, s);
    auto scores4 = scores.view({n, h, l, s});
    if (mask.scalar_type() == at::kBool) {
      scores4.masked_fill_(mask, -std::numeric_limits<double>::infinity());
    } else {
      scores4.add_(mask);
    }
  }
  auto attn = at::softmax(scores, -1);
  if (is_training() && options.dropout() > 0.0) {
    attn = at::dropout(attn, options.dropout(), /*train=*/true);
  }
  auto out = at::bmm(attn, v);                    // [N*H, L, hd]
  out = out.transpose(0, 1).reshape({l * n, e});  // [L*N, E], heads concatenated
  return at::linear(out, out_proj->weight, out_proj->bias).view({l, n, e});
}

}  // namespace combo::nn
