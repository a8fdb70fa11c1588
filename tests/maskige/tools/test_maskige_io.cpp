// Maskige I/O: the .npy reader, PIL-exact nearest resizing, palette PNG output, mask folders.
#include <torch/torch.h>

#include <cstring>
#include <fstream>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <string>
#include <vector>

#include "combo/core/check.h"
#include "combo/io/npy.h"
#include "combo/maskige/encode.h"
#include "combo/maskige/maskige_io.h"
#include "testing/testing.h"

namespace cm = combo::maskige;
using cm::LabelMode;
using combo::testing::TempDir;

namespace {

// A version 1.0 .npy file with the given header dict and raw data bytes.
void write_raw_npy(const std::string& path, const std::string& dict, const std::string& data,
                   char major = 1) {
  std::string header = dict;
  const size_t prefix = major == 1 ? 10 : 12;
  while ((prefix + header.size() + 1) % 64 != 0) header.push_back(' ');
  header.push_back('\n');
  std::ofstream out(path, std::ios::binary);
  out.write("\x93NUMPY", 6);
  out.put(major);
  out.put(0);
  const uint32_t len = static_cast<uint32_t>(header.size());
  out.put(static_cast<char>(len & 0xFF));
  out.put(static_cast<char>((len >> 8) & 0xFF));
  if (major != 1) {
    out.put(static_cast<char>((len >> 16) & 0xFF));
    out.put(static_cast<char>((len >> 24) & 0xFF));
  }
  out << header << data;
}

std::string bytes_of(const void* p, size_t n) {
  return std::string(static_cast<const char*>(p), n);
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const combo::Error& e) {
    return e.what();
  }
  return "";
}

// Decodes a PNG with OpenCV into RGB uint8 [H, W, 3].
torch::Tensor decode_rgb(const std::string& path) {
  cv::Mat bgr = cv::imread(path, cv::IMREAD_COLOR);
  EXPECT_FALSE(bgr.empty()) << path;
  cv::Mat rgb;
  cv::cvtColor(bgr, rgb, cv::COLOR_BGR2RGB);
  return torch::from_blob(rgb.data, {rgb.rows, rgb.cols, 3}, torch::kUInt8).clone();
}

std::vector<uint8_t> file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(in)),
                              std::istreambuf_iterator<char>());
}

}  // namespace

TEST(MaskigeNpy, ReadsBoolUint8Float32Float64) {
  TempDir dir;
  const uint8_t b[6] = {1, 0, 0, 1, 1, 1};
  write_raw_npy(dir.file("b.npy"), "{'descr': '|b1', 'fortran_order': False, 'shape': (1, 2, 3), }",
                bytes_of(b, 6));
  torch::Tensor t = combo::io::read_npy(dir.file("b.npy"));
  EXPECT_EQ(t.scalar_type(), torch::kBool);
  EXPECT_EQ(t.sizes(), (torch::IntArrayRef{1, 2, 3}));
  EXPECT_EQ(t.sum().item<int64_t>(), 4);
  EXPECT_TRUE(t[0][1][0].item<bool>());

  write_raw_npy(dir.file("u.npy"), "{'descr': '|u1', 'fortran_order': False, 'shape': (6,), }",
                bytes_of(b, 6));
  EXPECT_EQ(combo::io::read_npy(dir.file("u.npy")).scalar_type(), torch::kUInt8);

  const float f[4] = {0.f, 1.f, 0.5f, -2.f};
  write_raw_npy(dir.file("f.npy"), "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }",
                bytes_of(f, sizeof f));
  t = combo::io::read_npy(dir.file("f.npy"));
  EXPECT_EQ(t.scalar_type(), torch::kFloat);
  EXPECT_FLOAT_EQ(t[1][1].item<float>(), -2.f);

  const double d[3] = {1.0, 0.0, 3.5};
  // Format 2.0 (4-byte header length) and double-quoted keys are accepted too.
  write_raw_npy(dir.file("d.npy"),
                "{\"descr\": \"<f8\", \"fortran_order\": False, \"shape\": (3,)}",
                bytes_of(d, sizeof d), 2);
  t = combo::io::read_npy(dir.file("d.npy"));
  EXPECT_EQ(t.scalar_type(), torch::kDouble);
  EXPECT_DOUBLE_EQ(t[2].item<double>(), 3.5);

  // A scalar and an empty stack.
  write_raw_npy(dir.file("e.npy"), "{'descr': '|b1', 'fortran_order': False, 'shape': (0, 4, 5), }",
                "");
  EXPECT_EQ(combo::io::read_npy(dir.file("e.npy")).sizes(), (torch::IntArrayRef{0, 4, 5}));
}

TEST(MaskigeNpy, WriteReadRoundTrip) {
  TempDir dir;
  for (auto dtype : {torch::kBool, torch::kUInt8, torch::kInt32, torch::kInt64, torch::kFloat32,
                     torch::kFloat64}) {
    const torch::Tensor a = (torch::rand({3, 5, 7}) * 3).to(dtype);
    combo::io::write_npy(dir.file("a.npy"), a);
    const torch::Tensor back = combo::io::read_npy(dir.file("a.npy"));
    EXPECT_EQ(back.scalar_type(), dtype);
    EXPECT_TENSOR_EQ(a, back);
    // The header block is padded to a multiple of 64 bytes.
    const auto bytes = file_bytes(dir.file("a.npy"));
    EXPECT_EQ((bytes.size() - a.numel() * a.element_size()) % 64, 0u);
  }
}

TEST(MaskigeNpy, ErrorsNameTheFile) {
  TempDir dir;
  const uint8_t b[4] = {1, 0, 0, 1};
  const std::string fortran = dir.file("fortran.npy");
  write_raw_npy(fortran, "{'descr': '|b1', 'fortran_order': True, 'shape': (2, 2), }",
                bytes_of(b, 4));
  std::string e = error_of([&] { combo::io::read_npy(fortran); });
  EXPECT_NE(e.find(fortran), std::string::npos) << e;
  EXPECT_NE(e.find("Fortran"), std::string::npos) << e;

  const std::string complex = dir.file("complex.npy");
  write_raw_npy(complex, "{'descr': '<c8', 'fortran_order': False, 'shape': (1,), }",
                std::string(8, '\0'));
  e = error_of([&] { combo::io::read_npy(complex); });
  EXPECT_NE(e.find(complex), std::string::npos) << e;
  EXPECT_NE(e.find("unsupported dtype '<c8'"), std::string::npos) << e;

  const std::string object = dir.file("object.npy");
  write_raw_npy(object, "{'descr': '|O', 'fortran_order': False, 'shape': (1,), }",
                std::string(8, '\0'));
  EXPECT_NE(error_of([&] { combo::io::read_npy(object); }).find(object), std::string::npos);

  const std::string big = dir.file("big.npy");
  write_raw_npy(big, "{'descr': '>f4', 'fortran_order': False, 'shape': (1,), }",
                std::string(4, '\0'));
  e = error_of([&] { combo::io::read_npy(big); });
  EXPECT_NE(e.find("big-endian"), std::string::npos) << e;

  const std::string truncated = dir.file("truncated.npy");
  write_raw_npy(truncated, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }",
                std::string(10, '\0'));
  e = error_of([&] { combo::io::read_npy(truncated); });
  EXPECT_NE(e.find(truncated), std::string::npos) << e;
  EXPECT_NE(e.find("truncated data: expected 24 bytes"), std::string::npos) << e;

  const std::string not_npy = dir.file("not.npy");
  std::ofstream(not_npy) << "hello, world, this is not numpy";
  EXPECT_NE(error_of([&] { combo::io::read_npy(not_npy); }).find("bad magic"), std::string::npos);
  EXPECT_NE(error_of([&] { combo::io::read_npy(dir.file("missing.npy")); }).find("missing.npy"),
            std::string::npos);
}

TEST(MaskigeResize, MatchesPillowNearest) {
  // Values from Pillow 9.4: Image.resize((dst, 1), Image.NEAREST) of a ramp.
  auto idx = cm::pil_nearest_indices(640, 224);
  EXPECT_EQ(std::vector<int64_t>(idx.begin(), idx.begin() + 12),
            (std::vector<int64_t>{1, 4, 7, 10, 12, 15, 18, 21, 24, 27, 30, 32}));
  EXPECT_EQ(idx[17], 49);  // floor((17 + 0.5) * 640 / 224) would be 50
  int64_t sum = 0;
  for (int64_t v : idx) sum += v;
  EXPECT_EQ(sum, 71564);
  EXPECT_EQ(cm::pil_nearest_indices(7, 3), (std::vector<int64_t>{1, 3, 5}));
  EXPECT_EQ(cm::pil_nearest_indices(3, 7), (std::vector<int64_t>{0, 0, 1, 1, 1, 2, 2}));
  EXPECT_EQ(cm::pil_nearest_indices(8, 7)[3], 3);  // Pillow: 3, the product formula: 4

  torch::Tensor l = torch::arange(12, torch::kUInt8).view({3, 4});
  torch::Tensor r = cm::resize_labels_nearest(l, 7, 2);
  ASSERT_EQ(r.sizes(), (torch::IntArrayRef{7, 2}));
  // rows 0,0,1,1,1,2,2; columns of 4 -> 2: 1, 3.
  EXPECT_EQ(r[0][0].item<int>(), 1);
  EXPECT_EQ(r[0][1].item<int>(), 3);
  EXPECT_EQ(r[4][1].item<int>(), 7);
  EXPECT_EQ(r[6][0].item<int>(), 9);
}

TEST(MaskigePng, PalettePngDecodesToTheColorizedLabels) {
  TempDir dir;
  torch::Tensor labels = torch::randint(0, 256, {37, 53}, torch::kInt64).to(torch::kUInt8);
  labels[0][0] = 0;
  labels[0][1] = 149;
  labels[0][2] = 150;
  for (LabelMode mode : {LabelMode::kOfficial, LabelMode::kSafe}) {
    const std::string path = dir.file(mode == LabelMode::kOfficial ? "o.png" : "s.png");
    cm::write_label_png(path, labels, mode);
    EXPECT_TENSOR_EQ(cm::colorize_labels(labels, mode), decode_rgb(path));
    // A true palette PNG: IHDR bit depth 8, colour type 3, then a 256-entry PLTE.
    const auto bytes = file_bytes(path);
    ASSERT_GT(bytes.size(), 41u);
    EXPECT_EQ(bytes[24], 8);
    EXPECT_EQ(bytes[25], 3);
    EXPECT_EQ(std::string(bytes.begin() + 37, bytes.begin() + 41), "PLTE");
    EXPECT_EQ((bytes[33] << 24) | (bytes[34] << 16) | (bytes[35] << 8) | bytes[36], 768);
    EXPECT_EQ(bytes[41], 120);  // palette entry 0 = (120, 120, 120)
  }
  EXPECT_FALSE(std::filesystem::exists(dir.file("o.png.tmp")));
}

TEST(MaskigePng, WriteMaskigeResizesAndHandlesEmptyStacks) {
  TempDir dir;
  torch::Tensor masks = torch::zeros({2, 10, 20}, torch::kBool);
  masks[0].slice(1, 0, 10).fill_(true);
  masks[1][0][0] = true;
  const torch::Tensor labels =
      cm::write_maskige(dir.file("sub/a_mask_color.png"), masks, {224, LabelMode::kOfficial});
  ASSERT_EQ(labels.sizes(), (torch::IntArrayRef{224, 224}));
  const torch::Tensor expected =
      cm::resize_labels_nearest(cm::masks_to_labels(masks, LabelMode::kOfficial), 224, 224);
  EXPECT_TENSOR_EQ(expected, labels);
  EXPECT_TENSOR_EQ(cm::colorize_labels(expected, LabelMode::kOfficial),
                   decode_rgb(dir.file("sub/a_mask_color.png")));
  // size 0 keeps the resolution.
  EXPECT_EQ(cm::write_maskige(dir.file("b.png"), masks, {0, LabelMode::kSafe}).sizes(),
            (torch::IntArrayRef{10, 20}));
  // The official fallback for an empty stack: zeros of 640 x 640 (then resized).
  EXPECT_EQ(cm::write_maskige(dir.file("c.png"), torch::zeros({0, 5, 5}, torch::kBool),
                              {0, LabelMode::kOfficial})
                .sizes(),
            (torch::IntArrayRef{640, 640}));
  EXPECT_EQ(cm::maskige_file_name("vid_1"), "vid_1_mask_color.png");
}

TEST(MaskigePng, ReadsMaskFoldersAndNpyStacks) {
  TempDir dir;
  std::filesystem::create_directories(dir.path() / "masks");
  cv::Mat a = cv::Mat::zeros(6, 8, CV_8UC1), b = cv::Mat::zeros(6, 8, CV_8UC1);
  a(cv::Rect(0, 0, 4, 6)).setTo(255);
  b.at<uint8_t>(2, 7) = 1;
  cv::imwrite(dir.file("masks/0.png"), a);
  cv::imwrite(dir.file("masks/1.png"), b);
  const torch::Tensor m = cm::read_mask_stack(dir.file("masks"));
  ASSERT_EQ(m.sizes(), (torch::IntArrayRef{2, 6, 8}));
  EXPECT_EQ(m.scalar_type(), torch::kBool);
  EXPECT_EQ(m[0].sum().item<int64_t>(), 24);
  EXPECT_TRUE(m[1][2][7].item<bool>());
  cv::imwrite(dir.file("masks/2.png"), cv::Mat::zeros(5, 8, CV_8UC1));
  const std::string e = error_of([&] { cm::read_mask_stack(dir.file("masks")); });
  EXPECT_NE(e.find("2.png"), std::string::npos) << e;

  combo::io::write_npy(dir.file("one.npy"), torch::ones({3, 4}, torch::kBool));
  EXPECT_EQ(cm::read_mask_stack(dir.file("one.npy")).sizes(), (torch::IntArrayRef{1, 3, 4}));
  EXPECT_NE(error_of([&] { cm::read_mask_stack(dir.file("nothing")); }).find("nothing"),
            std::string::npos);
}
