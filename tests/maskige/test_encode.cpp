// Maskige encoding: ordering, overlaps, palette, official wrap and tie order, safe mode.
#include <torch/torch.h>

#include <cstdint>
#include <vector>

#include "combo/core/check.h"
#include "combo/maskige/encode.h"
#include "testing/testing.h"

namespace cm = combo::maskige;
using cm::LabelMode;

namespace {

// Polynomial hash of an index sequence (the expected values come from numpy 1.24.2).
uint64_t order_hash(const std::vector<int64_t>& order) {
  constexpr uint64_t kMod = (uint64_t{1} << 61) - 1;
  unsigned __int128 s = 0;
  for (int64_t x : order) s = (s * 1000003 + static_cast<uint64_t>(x)) % kMod;
  return static_cast<uint64_t>(s);
}

// n disjoint single-pixel masks on a 1 x n image, all of area 1.
torch::Tensor single_pixel_masks(int64_t n) {
  torch::Tensor m = torch::zeros({n, 1, n}, torch::kBool);
  for (int64_t k = 0; k < n; ++k) m[k][0][k] = true;
  return m;
}

}  // namespace

TEST(MaskigeEncode, SmallestMaskPaintedFirstAndWinsOverlaps) {
  // A 4x4 frame: mask 0 covers everything, mask 1 the left half, mask 2 one pixel.
  torch::Tensor m = torch::zeros({3, 4, 4}, torch::kBool);
  m[0].fill_(true);
  m[1].slice(1, 0, 2).fill_(true);
  m[2][0][0] = true;
  for (LabelMode mode : {LabelMode::kOfficial, LabelMode::kSafe}) {
    const torch::Tensor l = cm::masks_to_labels(m, mode);
    ASSERT_EQ(l.scalar_type(), torch::kUInt8);
    ASSERT_EQ(l.sizes(), (torch::IntArrayRef{4, 4}));
    EXPECT_EQ(l[0][0].item<int>(), 1);  // smallest
    EXPECT_EQ(l[1][0].item<int>(), 2);  // left half minus the pixel
    EXPECT_EQ(l[3][1].item<int>(), 2);
    EXPECT_EQ(l[0][2].item<int>(), 3);  // the rest: largest
    EXPECT_EQ(l[3][3].item<int>(), 3);
  }
}

TEST(MaskigeEncode, UncoveredPixelsStayZeroAndEmptyStackGivesZeros) {
  torch::Tensor m = torch::zeros({2, 3, 5}, torch::kUInt8);
  m[0][0][0] = 1;
  m[1][2].fill_(1);
  const torch::Tensor l = cm::masks_to_labels(m, LabelMode::kOfficial);
  EXPECT_EQ(l[0][0].item<int>(), 1);
  EXPECT_EQ(l[2][4].item<int>(), 2);
  EXPECT_EQ(l[1].sum().item<int>(), 0);
  const torch::Tensor e = cm::masks_to_labels(torch::zeros({0, 7, 9}, torch::kBool));
  EXPECT_EQ(e.sizes(), (torch::IntArrayRef{7, 9}));
  EXPECT_EQ(e.sum().item<int>(), 0);
}

TEST(MaskigeEncode, InputOrderDoesNotMatterWithoutTies) {
  torch::Tensor m = torch::zeros({3, 6, 6}, torch::kFloat);
  m[0].slice(0, 0, 4).fill_(1.0);  // area 24
  m[1].slice(0, 0, 1).fill_(1.0);  // area 6
  m[2].slice(0, 0, 2).fill_(1.0);  // area 12
  const torch::Tensor a = cm::masks_to_labels(m, LabelMode::kOfficial);
  const torch::Tensor b = cm::masks_to_labels(m.flip(0), LabelMode::kOfficial);
  EXPECT_TENSOR_EQ(a, b);
  EXPECT_EQ(a[0][0].item<int>(), 1);
  EXPECT_EQ(a[1][0].item<int>(), 2);
  EXPECT_EQ(a[3][0].item<int>(), 3);
  EXPECT_EQ(a[5][0].item<int>(), 0);
}

TEST(MaskigeEncode, NumpyArgsortMatchesNumpyIncludingTies) {
  // n <= 16: insertion sort, stable.
  std::vector<uint64_t> ones16(16, 1);
  std::vector<int64_t> identity(16);
  for (int i = 0; i < 16; ++i) identity[i] = i;
  EXPECT_EQ(cm::numpy_argsort(ones16), identity);
  // n = 17 and 20 all equal: the partition step reorders ties (np.argsort(np.ones(n, uint64))).
  EXPECT_EQ(cm::numpy_argsort(std::vector<uint64_t>(17, 1)),
            (std::vector<int64_t>{0, 14, 13, 12, 11, 10, 9, 15, 8, 6, 5, 4, 3, 2, 1, 7, 16}));
  EXPECT_EQ(
      cm::numpy_argsort(std::vector<uint64_t>(20, 1)),
      (std::vector<int64_t>{0, 17, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 18, 19}));
  std::vector<uint64_t> mod3(20);
  for (int i = 0; i < 20; ++i) mod3[i] = i % 3;
  EXPECT_EQ(cm::numpy_argsort(mod3), (std::vector<int64_t>{0,  15, 12, 18, 6, 9,  3, 4,  7,  10,
                                                           13, 1,  16, 19, 8, 11, 2, 14, 17, 5}));
  // An organ pipe of 190 drives numpy into its heapsort fallback.
  std::vector<uint64_t> organ(190);
  for (int i = 0; i < 190; ++i) organ[i] = static_cast<uint64_t>(std::abs(95 - i));
  EXPECT_EQ(order_hash(cm::numpy_argsort(organ)), 715349631378610813ull);
  std::vector<uint64_t> quad(300);
  for (int i = 0; i < 300; ++i) quad[i] = static_cast<uint64_t>((i * i * 7 + 3) % 11);
  EXPECT_EQ(order_hash(cm::numpy_argsort(quad)), 1460648718882491099ull);
  EXPECT_TRUE(cm::numpy_argsort({}).empty());
}

TEST(MaskigeEncode, OfficialTieOrderFollowsNumpySafeIsStable) {
  // 20 single-pixel masks, all of area 1: pixel k gets 1 + (position of k in the order).
  const torch::Tensor m = single_pixel_masks(20);
  const std::vector<int64_t> numpy_order{0, 17, 16, 15, 14, 13, 12, 11, 10, 9,
                                         8, 7,  6,  5,  4,  3,  2,  1,  18, 19};
  const torch::Tensor official = cm::masks_to_labels(m, LabelMode::kOfficial);
  const torch::Tensor safe = cm::masks_to_labels(m, LabelMode::kSafe);
  for (int64_t pos = 0; pos < 20; ++pos) {
    EXPECT_EQ(official[0][numpy_order[pos]].item<int>(), pos + 1) << "position " << pos;
    EXPECT_EQ(safe[0][pos].item<int>(), pos + 1) << "mask " << pos;
  }
  // Up to 16 masks both modes agree (numpy's insertion sort is stable).
  const torch::Tensor m16 = single_pixel_masks(16);
  EXPECT_TENSOR_EQ(cm::masks_to_labels(m16, LabelMode::kOfficial),
                   cm::masks_to_labels(m16, LabelMode::kSafe));
}

TEST(MaskigeEncode, OfficialLabelsWrapPast255AsNumpyDoes) {
  // Mask k covers pixels [k, 300): mask 299 is the smallest. Pixel k ends with label 300 - k.
  const int64_t n = 300;
  torch::Tensor m = torch::zeros({n, 1, n}, torch::kBool);
  for (int64_t k = 0; k < n; ++k) m[k][0].slice(0, k, n).fill_(true);
  const torch::Tensor l = cm::masks_to_labels(m, LabelMode::kOfficial);
  for (int64_t k = 0; k < n; ++k) {
    EXPECT_EQ(l[0][k].item<int>(), (300 - k) % 256) << "pixel " << k;
  }
  // Label 256 (pixel 44) is non-zero before the final cast, so the larger masks do not repaint
  // it: it ends as 0, not as 257 % 256 = 1.
  EXPECT_EQ(l[0][44].item<int>(), 0);
  EXPECT_EQ(l[0][43].item<int>(), 1);

  // kSafe: only the 255 smallest masks (k >= 45) are painted.
  const torch::Tensor s = cm::masks_to_labels(m, LabelMode::kSafe);
  for (int64_t k = 0; k < n; ++k) {
    EXPECT_EQ(s[0][k].item<int>(), k >= 45 ? 300 - k : 0) << "pixel " << k;
  }
}

TEST(MaskigeEncode, OfficialCastsLikeAstypeUint8) {
  // Floats truncate: 0.7 is outside in the official script, inside in kSafe.
  torch::Tensor m = torch::zeros({2, 2, 2}, torch::kFloat);
  m[0][0][0] = 0.7f;
  m[1].fill_(1.0f);
  const torch::Tensor o = cm::masks_to_labels(m, LabelMode::kOfficial);
  // Mask 0 casts to all zeros (area 0): sorted first, it paints nothing, and mask 1 is label 2.
  EXPECT_EQ(o[0][0].item<int>(), 2);
  EXPECT_EQ(o[1][1].item<int>(), 2);
  const torch::Tensor s = cm::masks_to_labels(m, LabelMode::kSafe);
  EXPECT_EQ(s[0][0].item<int>(), 1);
  EXPECT_EQ(s[1][1].item<int>(), 2);
  // A uint8 mask of value 2 paints value * (k + 1) and counts 2 per pixel in its area.
  torch::Tensor v = torch::zeros({2, 1, 4}, torch::kUInt8);
  v[0][0][0] = 2;                   // area 2
  v[1][0].slice(0, 1, 4).fill_(1);  // area 3
  const torch::Tensor ov = cm::masks_to_labels(v, LabelMode::kOfficial);
  EXPECT_EQ(ov[0][0].item<int>(), 2);
  EXPECT_EQ(ov[0][1].item<int>(), 2);
  EXPECT_EQ(cm::masks_to_labels(v, LabelMode::kSafe)[0][0].item<int>(), 1);
}

TEST(MaskigeEncode, PaletteIsTheAde20kList) {
  const auto& p = cm::ade20k_palette();
  ASSERT_EQ(p.size(), 150u);
  using C = std::array<uint8_t, 3>;
  EXPECT_EQ(p[0], (C{120, 120, 120}));
  EXPECT_EQ(p[1], (C{180, 120, 120}));
  EXPECT_EQ(p[2], (C{6, 230, 230}));
  EXPECT_EQ(p[3], (C{80, 50, 50}));
  EXPECT_EQ(p[7], (C{204, 5, 255}));
  EXPECT_EQ(p[48], (C{140, 140, 140}));
  EXPECT_EQ(p[66], (C{255, 0, 0}));
  EXPECT_EQ(p[100], (C{143, 255, 0}));
  EXPECT_EQ(p[149], (C{92, 0, 255}));
  // Sum and position-weighted checksum of all 450 bytes of the official list.
  uint64_t sum = 0, weighted = 0;
  for (size_t i = 0; i < p.size(); ++i) {
    for (size_t j = 0; j < 3; ++j) {
      sum += p[i][j];
      weighted = (weighted * 131 + p[i][j] + i * 7 + j) % 1000000007ull;
    }
  }
  EXPECT_EQ(sum, 58427u);
  EXPECT_EQ(weighted, 469235662u);
}

TEST(MaskigeEncode, ColorizeOfficialAndSafe) {
  torch::Tensor l = torch::tensor({0, 1, 149, 150, 255}, torch::kUInt8).view({1, 5});
  const auto& p = cm::ade20k_palette();
  const torch::Tensor o = cm::colorize_labels(l, LabelMode::kOfficial);
  ASSERT_EQ(o.sizes(), (torch::IntArrayRef{1, 5, 3}));
  auto rgb = [](const torch::Tensor& img, int64_t x) {
    return std::array<uint8_t, 3>{img[0][x][0].item<uint8_t>(), img[0][x][1].item<uint8_t>(),
                                  img[0][x][2].item<uint8_t>()};
  };
  using C = std::array<uint8_t, 3>;
  EXPECT_EQ(rgb(o, 0), (C{120, 120, 120}));
  EXPECT_EQ(rgb(o, 1), p[1]);
  EXPECT_EQ(rgb(o, 2), p[149]);
  // Past the palette Pillow decodes the official PNG with its grey ramp.
  EXPECT_EQ(rgb(o, 3), (C{150, 150, 150}));
  EXPECT_EQ(rgb(o, 4), (C{255, 255, 255}));
  const torch::Tensor s = cm::colorize_labels(l, LabelMode::kSafe);
  EXPECT_EQ(rgb(s, 0), (C{120, 120, 120}));
  EXPECT_EQ(rgb(s, 2), p[149]);
  EXPECT_EQ(rgb(s, 3), p[1]);    // 1 + 149 % 149
  EXPECT_EQ(rgb(s, 4), p[106]);  // 1 + 254 % 149
  // kSafe never shows the uncovered grey for a covered pixel.
  const auto lut = cm::label_colors(LabelMode::kSafe);
  for (int label = 1; label < 256; ++label) {
    EXPECT_NE(lut[label], p[0]) << "label " << label;
  }
  // encode_maskige = colorize(masks_to_labels).
  torch::Tensor m = torch::zeros({1, 2, 2}, torch::kBool);
  m[0][0][0] = true;
  const torch::Tensor e = cm::encode_maskige(m, LabelMode::kOfficial);
  EXPECT_EQ(rgb(e, 0), p[1]);
  EXPECT_EQ(rgb(e, 1), p[0]);
}

TEST(MaskigeEncode, RejectsBadShapesAndDtypes) {
  EXPECT_THROW(cm::masks_to_labels(torch::zeros({4, 4})), combo::Error);
  EXPECT_THROW(cm::masks_to_labels(torch::zeros({1, 4, 4}, torch::kComplexFloat)), combo::Error);
  EXPECT_THROW(cm::colorize_labels(torch::zeros({4, 4}, torch::kInt)), combo::Error);
  EXPECT_THROW(cm::colorize_labels(torch::zeros({1, 4, 4}, torch::kUInt8)), combo::Error);
}
