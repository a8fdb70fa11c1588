// Maskige encoding: mask stack -> label map -> ADE20K colours (COMBO_SPEC 9.2).
#include "combo/maskige/encode.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <numeric>
#include <utility>

#include "combo/core/check.h"

namespace combo::maskige {

const std::array<std::array<uint8_t, 3>, 150>& ade20k_palette() {
  // Verbatim from `ade_palette()` in avs_tools/pre_mask2rgb/mask_precess_*.py (= mmseg's
  // ADE20KDataset palette).
  static const std::array<std::array<uint8_t, 3>, 150> kPalette = {{
      {120, 120, 120}, {180, 120, 120}, {6, 230, 230},   {80, 50, 50},    {4, 200, 3},
      {120, 120, 80},  {140, 140, 140}, {204, 5, 255},   {230, 230, 230}, {4, 250, 7},
      {224, 5, 255},   {235, 255, 7},   {150, 5, 61},    {120, 120, 70},  {8, 255, 51},
      {255, 6, 82},    {143, 255, 140}, {204, 255, 4},   {255, 51, 7},    {204, 70, 3},
      {0, 102, 200},   {61, 230, 250},  {255, 6, 51},    {11, 102, 255},  {255, 7, 71},
      {255, 9, 224},   {9, 7, 230},     {220, 220, 220}, {255, 9, 92},    {112, 9, 255},
      {8, 255, 214},   {7, 255, 224},   {255, 184, 6},   {10, 255, 71},   {255, 41, 10},
      {7, 255, 255},   {224, 255, 8},   {102, 8, 255},   {255, 61, 6},    {255, 194, 7},
      {255, 122, 8},   {0, 255, 20},    {255, 8, 41},    {255, 5, 153},   {6, 51, 255},
      {235, 12, 255},  {160, 150, 20},  {0, 163, 255},   {140, 140, 140}, {250, 10, 15},
      {20, 255, 0},    {31, 255, 0},    {255, 31, 0},    {255, 224, 0},   {153, 255, 0},
      {0, 0, 255},     {255, 71, 0},    {0, 235, 255},   {0, 173, 255},   {31, 0, 255},
      {11, 200, 200},  {255, 82, 0},    {0, 255, 245},   {0, 61, 255},    {0, 255, 112},
      {0, 255, 133},   {255, 0, 0},     {255, 163, 0},   {255, 102, 0},   {194, 255, 0},
      {0, 143, 255},   {51, 255, 0},    {0, 82, 255},    {0, 255, 41},    {0, 255, 173},
      {10, 0, 255},    {173, 255, 0},   {0, 255, 153},   {255, 92, 0},    {255, 0, 255},
      {255, 0, 245},   {255, 0, 102},   {255, 173, 0},   {255, 0, 20},    {255, 184, 184},
      {0, 31, 255},    {0, 255, 61},    {0, 71, 255},    {255, 0, 204},   {0, 255, 194},
      {0, 255, 82},    {0, 10, 255},    {0, 112, 255},   {51, 0, 255},    {0, 194, 255},
      {0, 122, 255},   {0, 255, 163},   {255, 153, 0},   {0, 255, 10},    {255, 112, 0},
      {143, 255, 0},   {82, 0, 255},    {163, 255, 0},   {255, 235, 0},   {8, 184, 170},
      {133, 0, 255},   {0, 255, 92},    {184, 0, 255},   {255, 0, 31},    {0, 184, 255},
      {0, 214, 255},   {255, 0, 112},   {92, 255, 0},    {0, 224, 255},   {112, 224, 255},
      {70, 184, 160},  {163, 0, 255},   {153, 0, 255},   {71, 255, 0},    {255, 0, 163},
      {255, 204, 0},   {255, 0, 143},   {0, 255, 235},   {133, 255, 0},   {255, 0, 235},
      {245, 0, 255},   {255, 0, 122},   {255, 245, 0},   {10, 190, 212},  {214, 255, 0},
      {0, 204, 255},   {20, 0, 255},    {255, 255, 0},   {0, 153, 255},   {0, 41, 255},
      {0, 255, 204},   {41, 0, 255},    {41, 255, 0},    {173, 0, 255},   {0, 245, 255},
      {71, 0, 255},    {122, 0, 255},   {0, 255, 184},   {0, 92, 255},    {184, 255, 0},
      {0, 133, 255},   {255, 214, 0},   {25, 194, 194},  {102, 255, 0},   {92, 0, 255},
  }};
  return kPalette;
}

namespace {

// numpy's npy_get_msb: floor(log2(n)) for n >= 1.
int msb(uint64_t n) {
  int depth = 0;
  while (n >>= 1) ++depth;
  return depth;
}

// numpy's aheapsort_ on the index range a[0, n) (1-based indexing as in numpy).
void numpy_aheapsort(const std::vector<uint64_t>& v, int64_t* tosort, int64_t n) {
  int64_t* a = tosort - 1;
  int64_t i, j, l, tmp;
  for (l = n >> 1; l > 0; --l) {
    tmp = a[l];
    for (i = l, j = l << 1; j <= n;) {
      if (j < n && v[a[j]] < v[a[j + 1]]) j += 1;
      if (v[tmp] < v[a[j]]) {
        a[i] = a[j];
        i = j;
        j += j;
      } else {
        break;
      }
    }
    a[i] = tmp;
  }
  for (; n > 1;) {
    tmp = a[n];
    a[n] = a[1];
    n -= 1;
    for (i = 1, j = 2; j <= n;) {
      if (j < n && v[a[j]] < v[a[j + 1]]) j++;
      if (v[tmp] < v[a[j]]) {
        a[i] = a[j];
        i = j;
        j += j;
      } else {
        break;
      }
    }
    a[i] = tmp;
  }
}

}  // namespace

std::vector<int64_t> numpy_argsort(const std::vector<uint64_t>& v) {
  // numpy/core/src/npysort/quicksort.cpp, aquicksort_ (SMALL_QUICKSORT = 15, PYA_QS_STACK =
  // 128), transcribed with the same pointer moves so that ties land where numpy puts them.
  constexpr int64_t kSmallQuicksort = 15;
  const int64_t num = static_cast<int64_t>(v.size());
  std::vector<int64_t> order(v.size());
  std::iota(order.begin(), order.end(), int64_t{0});
  if (num <= 1) return order;
  int64_t* t = order.data();
  int64_t* pl = t;
  int64_t* pr = t + num - 1;
  std::vector<std::pair<int64_t*, int64_t*>> stack;
  std::vector<int> depth;
  int cdepth = msb(static_cast<uint64_t>(num)) * 2;
  for (;;) {
    if (cdepth < 0) {
      numpy_aheapsort(v, pl, pr - pl + 1);
    } else {
      while ((pr - pl) > kSmallQuicksort) {
        int64_t* pm = pl + ((pr - pl) >> 1);
        if (v[*pm] < v[*pl]) std::swap(*pm, *pl);
        if (v[*pr] < v[*pm]) std::swap(*pr, *pm);
        if (v[*pm] < v[*pl]) std::swap(*pm, *pl);
        const uint64_t vp = v[*pm];
        int64_t* pi = pl;
        int64_t* pj = pr - 1;
        std::swap(*pm, *pj);
        for (;;) {
          do {
            ++pi;
          } while (v[*pi] < vp);
          do {
            --pj;
          } while (vp < v[*pj]);
          if (pi >= pj) break;
          std::swap(*pi, *pj);
        }
        int64_t* pk = pr - 1;
        std::swap(*pi, *pk);
        // The larger partition goes on the stack.
        if (pi - pl < pr - pi) {
          stack.emplace_back(pi + 1, pr);
          pr = pi - 1;
        } else {
          stack.emplace_back(pl, pi - 1);
          pl = pi + 1;
        }
        depth.push_back(--cdepth);
      }
      // Insertion sort (stable) on the small partition.
      for (int64_t* pi = pl + 1; pi <= pr; ++pi) {
        const int64_t vi = *pi;
        const uint64_t vv = v[vi];
        int64_t* pj = pi;
        int64_t* pk = pi - 1;
        while (pj > pl && vv < v[*pk]) *pj-- = *pk--;
        *pj = vi;
      }
    }
    if (stack.empty()) break;
    pl = stack.back().first;
    pr = stack.back().second;
    stack.pop_back();
    cdepth = depth.back();
    depth.pop_back();
  }
  return order;
}

namespace {

void check_masks(const at::Tensor& masks) {
  COMBO_CHECK(masks.defined(), "masks_to_labels: undefined mask tensor");
  COMBO_CHECK(masks.dim() == 3, "masks_to_labels: expected masks [n, H, W], got shape ",
              masks.sizes());
  const auto st = masks.scalar_type();
  COMBO_CHECK(st == at::kBool || st == at::kByte || st == at::kFloat || st == at::kDouble ||
                  st == at::kChar || st == at::kShort || st == at::kInt || st == at::kLong ||
                  st == at::kHalf || st == at::kBFloat16,
              "masks_to_labels: unsupported mask dtype ", st);
}

// The official painting: pre_int_mask = masks.astype(uint8); areas = sum over (H, W); order =
// argsort(areas); m = sorted[0]; m = where(m == 0, sorted[idx] * (idx + 1), m); m.astype(uint8).
at::Tensor labels_official(const at::Tensor& masks) {
  const int64_t n = masks.size(0), h = masks.size(1), w = masks.size(2), hw = h * w;
  // numpy's astype(uint8): bool -> 0/1, floats truncate toward zero, wider ints wrap.
  at::Tensor values = masks.scalar_type() == at::kByte ? masks : masks.to(at::kByte);
  values = values.contiguous().cpu();
  const uint8_t* pv = values.data_ptr<uint8_t>();
  std::vector<uint64_t> areas(n, 0);
  for (int64_t k = 0; k < n; ++k) {
    uint64_t s = 0;
    const uint8_t* p = pv + k * hw;
    for (int64_t i = 0; i < hw; ++i) s += p[i];
    areas[k] = s;
  }
  const std::vector<int64_t> order = numpy_argsort(areas);
  // Labels before the final cast. The product `mask * (idx + 1)` is uint8 while idx + 1 fits a
  // uint8 and uint16 / uint32 beyond (numpy 1.x value-based casting); a product that wraps to 0
  // leaves the pixel free for later masks, exactly as in numpy.
  std::vector<uint64_t> m(hw, 0);
  for (int64_t idx = 0; idx < n; ++idx) {
    const uint64_t label = static_cast<uint64_t>(idx) + 1;
    const uint64_t wrap = label <= 0xFF ? 0xFF : (label <= 0xFFFF ? 0xFFFF : 0xFFFFFFFFull);
    const uint8_t* p = pv + order[idx] * hw;
    for (int64_t i = 0; i < hw; ++i) {
      if (m[i] == 0 && p[i] != 0) m[i] = (p[i] * label) & wrap;
    }
  }
  at::Tensor out = at::empty({h, w}, at::kByte);
  uint8_t* po = out.data_ptr<uint8_t>();
  for (int64_t i = 0; i < hw; ++i) po[i] = static_cast<uint8_t>(m[i] & 0xFF);
  return out;
}

at::Tensor labels_safe(const at::Tensor& masks) {
  const int64_t n = masks.size(0), h = masks.size(1), w = masks.size(2), hw = h * w;
  const at::Tensor inside = masks.ne(0).contiguous().cpu();
  const bool* pin = inside.data_ptr<bool>();
  std::vector<int64_t> areas(n, 0);
  for (int64_t k = 0; k < n; ++k) {
    const bool* p = pin + k * hw;
    areas[k] = std::count(p, p + hw, true);
  }
  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), int64_t{0});
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return areas[a] < areas[b]; });
  const int64_t painted = std::min<int64_t>(n, 255);
  at::Tensor out = at::zeros({h, w}, at::kByte);
  uint8_t* po = out.data_ptr<uint8_t>();
  for (int64_t k = 0; k < painted; ++k) {
    const bool* p = pin + order[k] * hw;
    const auto label = static_cast<uint8_t>(k + 1);
    for (int64_t i = 0; i < hw; ++i) {
      if (po[i] == 0 && p[i]) po[i] = label;
    }
  }
  return out;
}

}  // namespace

at::Tensor masks_to_labels(const at::Tensor& masks, LabelMode mode) {
  check_masks(masks);
  if (masks.size(0) == 0) return at::zeros({masks.size(1), masks.size(2)}, at::kByte);
  return mode == LabelMode::kOfficial ? labels_official(masks) : labels_safe(masks);
}

std::array<std::array<uint8_t, 3>, 256> label_colors(LabelMode mode) {
  const auto& palette = ade20k_palette();
  std::array<std::array<uint8_t, 3>, 256> lut{};
  for (int label = 0; label < 256; ++label) {
    if (label < 150) {
      lut[label] = palette[label];
    } else if (mode == LabelMode::kSafe) {
      lut[label] = palette[1 + (label - 1) % 149];
    } else {
      // The official PNG has a 150-entry PLTE; Pillow fills the missing entries with its default
      // grey ramp, so `convert('RGB')` (detectron2's read_image) decodes index L as (L, L, L).
      const auto v = static_cast<uint8_t>(label);
      lut[label] = {v, v, v};
    }
  }
  return lut;
}

at::Tensor colorize_labels(const at::Tensor& labels, LabelMode mode) {
  COMBO_CHECK(labels.defined() && labels.dim() == 2 && labels.scalar_type() == at::kByte,
              "colorize_labels: expected uint8 labels [H, W], got ",
              labels.defined() ? labels.sizes() : at::IntArrayRef{}, " ",
              labels.defined() ? labels.scalar_type() : at::kByte);
  const at::Tensor l = labels.contiguous().cpu();
  const int64_t hw = l.numel();
  const auto lut = label_colors(mode);
  at::Tensor out = at::empty({l.size(0), l.size(1), 3}, at::kByte);
  const uint8_t* pl = l.data_ptr<uint8_t>();
  uint8_t* po = out.data_ptr<uint8_t>();
  for (int64_t i = 0; i < hw; ++i) {
    const auto& c = lut[pl[i]];
    po[3 * i] = c[0];
    po[3 * i + 1] = c[1];
    po[3 * i + 2] = c[2];
  }
  return out;
}

at::Tensor encode_maskige(const at::Tensor& masks, LabelMode mode) {
  return colorize_labels(masks_to_labels(masks, mode), mode);
}

}  // namespace combo::maskige
