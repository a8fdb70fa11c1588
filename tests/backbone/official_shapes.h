#pragma once
// Key names and shapes of the official encoders' state dicts, written out from the official
// layer definitions (pvtv2.py, detectron2's ResNet) independently of the modules under test, so
// that loading them strictly checks the modules' names and shapes.
#include <torch/torch.h>

#include <map>
#include <string>
#include <vector>

namespace combo::testing {

using ShapeTable = std::map<std::string, std::vector<int64_t>>;

struct PvtSpec {
  std::vector<int64_t> embed_dims;
  std::vector<int64_t> hidden_dims;  // int(dim * mlp_ratio) per stage
  std::vector<int64_t> depths;
  std::vector<int64_t> sr_ratios;
  int64_t in_chans = 3;
};

inline ShapeTable official_pvt_v2_shapes(const PvtSpec& s) {
  ShapeTable t;
  for (size_t i = 0; i < s.embed_dims.size(); ++i) {
    const std::string id = std::to_string(i + 1);
    const int64_t d = s.embed_dims[i];
    const int64_t hd = s.hidden_dims[i];
    const int64_t in = i == 0 ? s.in_chans : s.embed_dims[i - 1];
    const int64_t k = i == 0 ? 7 : 3;
    const std::string pe = "patch_embed" + id + ".";
    t[pe + "proj.weight"] = {d, in, k, k};
    t[pe + "proj.bias"] = {d};
    t[pe + "norm.weight"] = {d};
    t[pe + "norm.bias"] = {d};
    for (int64_t j = 0; j < s.depths[i]; ++j) {
      const std::string b = "block" + id + "." + std::to_string(j) + ".";
      for (const char* n : {"norm1", "norm2"}) {
        t[b + n + ".weight"] = {d};
        t[b + n + ".bias"] = {d};
      }
      t[b + "attn.q.weight"] = {d, d};
      t[b + "attn.q.bias"] = {d};
      t[b + "attn.kv.weight"] = {2 * d, d};
      t[b + "attn.kv.bias"] = {2 * d};
      t[b + "attn.proj.weight"] = {d, d};
      t[b + "attn.proj.bias"] = {d};
      if (s.sr_ratios[i] > 1) {
        const int64_t r = s.sr_ratios[i];
        t[b + "attn.sr.weight"] = {d, d, r, r};
        t[b + "attn.sr.bias"] = {d};
        t[b + "attn.norm.weight"] = {d};
        t[b + "attn.norm.bias"] = {d};
      }
      t[b + "mlp.fc1.weight"] = {hd, d};
      t[b + "mlp.fc1.bias"] = {hd};
      t[b + "mlp.dwconv.dwconv.weight"] = {hd, 1, 3, 3};
      t[b + "mlp.dwconv.dwconv.bias"] = {hd};
      t[b + "mlp.fc2.weight"] = {d, hd};
      t[b + "mlp.fc2.bias"] = {d};
    }
    t["norm" + id + ".weight"] = {d};
    t["norm" + id + ".bias"] = {d};
  }
  return t;
}

// The official b0 and b5 builders' numbers (pvt_v2.py): b0 widths 32/64/160/256 with MLP ratios
// 8/8/4/4 and depths 2/2/2/2; b5 widths 64/128/320/512, ratios 4/4/4/4, depths 3/6/40/3.
inline PvtSpec official_pvt_v2_b0() {
  return {{32, 64, 160, 256}, {256, 512, 640, 1024}, {2, 2, 2, 2}, {8, 4, 2, 1}};
}
inline PvtSpec official_pvt_v2_b5() {
  return {{64, 128, 320, 512}, {256, 512, 1280, 2048}, {3, 6, 40, 3}, {8, 4, 2, 1}};
}

// detectron2 ResNet-50 (BottleneckBlock, FrozenBN, STRIDE_IN_1X1 False): conv weights plus the
// four FrozenBN buffers under `<conv>.norm`.
inline ShapeTable official_resnet50_shapes() {
  ShapeTable t;
  auto conv = [&t](const std::string& name, int64_t out, int64_t in, int64_t k) {
    t[name + ".weight"] = {out, in, k, k};
    for (const char* b : {"weight", "bias", "running_mean", "running_var"}) {
      t[name + ".norm." + b] = {out};
    }
  };
  conv("stem.conv1", 64, 3, 7);
  const std::vector<int64_t> blocks = {3, 4, 6, 3};
  int64_t in = 64;
  for (size_t s = 0; s < blocks.size(); ++s) {
    const int64_t out = 256 << s;
    const int64_t mid = out / 4;
    for (int64_t b = 0; b < blocks[s]; ++b) {
      const std::string p = "res" + std::to_string(s + 2) + "." + std::to_string(b) + ".";
      const int64_t block_in = b == 0 ? in : out;
      if (b == 0) conv(p + "shortcut", out, block_in, 1);
      conv(p + "conv1", mid, block_in, 1);
      conv(p + "conv2", mid, mid, 3);
      conv(p + "conv3", out, mid, 1);
    }
    in = out;
  }
  return t;
}

inline bool is_frozen_bn_buffer(const std::string& key) {
  return key.find(".norm.") != std::string::npos;
}

// Random tensors of the given shapes (a synthetic checkpoint).
inline std::map<std::string, at::Tensor> random_state_dict(const ShapeTable& shapes) {
  std::map<std::string, at::Tensor> d;
  for (const auto& [k, s] : shapes) d[k] = torch::randn(s);
  return d;
}

inline int64_t numel_of(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  return n;
}

}  // namespace combo::testing
