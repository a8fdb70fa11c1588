// Maskige files: mask stacks in, palette PNGs out (COMBO_SPEC 9.2).
#include "combo/maskige/maskige_io.h"

#include <ATen/ATen.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <opencv2/imgcodecs.hpp>

#include "combo/core/check.h"
#include "combo/io/image.h"
#include "combo/io/npy.h"

namespace fs = std::filesystem;

namespace combo::maskige {

std::string maskige_file_name(const std::string& frame_stem) {
  return frame_stem + "_mask_color.png";
}

std::vector<int64_t> pil_nearest_indices(int64_t src, int64_t dst) {
  COMBO_CHECK(src > 0 && dst > 0, "pil_nearest_indices: sizes must be positive, got ", src, " -> ",
              dst);
  // Pillow's ImagingScaleAffine (Geometry.c): xo = a[2] + a[0] * 0.5, then xo += a[0] per
  // output pixel, index = (int)xo.
  const double scale = static_cast<double>(src) / static_cast<double>(dst);
  std::vector<int64_t> idx(static_cast<size_t>(dst));
  double xo = scale * 0.5;
  for (int64_t x = 0; x < dst; ++x) {
    idx[x] = std::min<int64_t>(static_cast<int64_t>(xo), src - 1);
    xo += scale;
  }
  return idx;
}

at::Tensor resize_labels_nearest(const at::Tensor& labels, int64_t out_h, int64_t out_w) {
  COMBO_CHECK(labels.defined() && labels.dim() == 2 && labels.scalar_type() == at::kByte,
              "resize_labels_nearest: expected uint8 labels [H, W]");
  const at::Tensor l = labels.contiguous().cpu();
  const int64_t h = l.size(0), w = l.size(1);
  if (h == out_h && w == out_w) return l.clone();
  const std::vector<int64_t> ys = pil_nearest_indices(h, out_h);
  const std::vector<int64_t> xs = pil_nearest_indices(w, out_w);
  at::Tensor out = at::empty({out_h, out_w}, at::kByte);
  const uint8_t* pi = l.data_ptr<uint8_t>();
  uint8_t* po = out.data_ptr<uint8_t>();
  for (int64_t y = 0; y < out_h; ++y) {
    const uint8_t* row = pi + ys[y] * w;
    for (int64_t x = 0; x < out_w; ++x) po[y * out_w + x] = row[xs[x]];
  }
  return out;
}

namespace {

uint32_t crc32(const uint8_t* data, size_t n, uint32_t crc = 0) {
  static const auto table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  crc = ~crc;
  for (size_t i = 0; i < n; ++i) crc = table[(crc ^ data[i]) & 0xFF] ^ (crc >> 8);
  return ~crc;
}

uint32_t read_be32(const uint8_t* p) {
  return (static_cast<uint32_t>(p[0]) << 24) | (static_cast<uint32_t>(p[1]) << 16) |
         (static_cast<uint32_t>(p[2]) << 8) | p[3];
}

void append_be32(std::vector<uint8_t>& out, uint32_t v) {
  out.push_back(static_cast<uint8_t>(v >> 24));
  out.push_back(static_cast<uint8_t>(v >> 16));
  out.push_back(static_cast<uint8_t>(v >> 8));
  out.push_back(static_cast<uint8_t>(v));
}

void append_chunk(std::vector<uint8_t>& out, const char type[4], const uint8_t* data, size_t n) {
  append_be32(out, static_cast<uint32_t>(n));
  const size_t start = out.size();
  out.insert(out.end(), type, type + 4);
  out.insert(out.end(), data, data + n);
  append_be32(out, crc32(out.data() + start, n + 4));
}

}  // namespace

std::vector<uint8_t> encode_palette_png(const at::Tensor& labels, LabelMode mode) {
  COMBO_CHECK(labels.defined() && labels.dim() == 2 && labels.scalar_type() == at::kByte &&
                  labels.numel() > 0,
              "encode_palette_png: expected non-empty uint8 labels [H, W]");
  const at::Tensor l = labels.contiguous().cpu();
  const cv::Mat grey(static_cast<int>(l.size(0)), static_cast<int>(l.size(1)), CV_8UC1,
                     const_cast<uint8_t*>(l.data_ptr<uint8_t>()));
  // OpenCV writes 8-bit greyscale PNGs; a greyscale and a palette image of 8 bits share the
  // same IDAT stream (one byte per pixel, same filters), so re-labelling the colour type and
  // inserting a PLTE turns it into the palette PNG PIL would write, without libpng here.
  std::vector<uint8_t> grey_png;
  COMBO_CHECK(cv::imencode(".png", grey, grey_png, {cv::IMWRITE_PNG_COMPRESSION, 6}),
              "encode_palette_png: OpenCV failed to encode a PNG");
  static const uint8_t kSignature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  COMBO_CHECK(grey_png.size() > 8 && std::equal(kSignature, kSignature + 8, grey_png.begin()),
              "encode_palette_png: OpenCV returned no PNG");

  std::vector<uint8_t> out(kSignature, kSignature + 8);
  bool seen_ihdr = false, seen_iend = false;
  size_t pos = 8;
  while (pos + 12 <= grey_png.size() && !seen_iend) {
    const uint32_t len = read_be32(&grey_png[pos]);
    COMBO_CHECK(pos + 12 + len <= grey_png.size(), "encode_palette_png: malformed PNG chunk");
    const char* type = reinterpret_cast<const char*>(&grey_png[pos + 4]);
    const uint8_t* data = &grey_png[pos + 8];
    if (std::equal(type, type + 4, "IHDR")) {
      COMBO_CHECK(len == 13 && data[8] == 8 && data[9] == 0,
                  "encode_palette_png: expected an 8-bit greyscale IHDR from OpenCV");
      uint8_t ihdr[13];
      std::copy(data, data + 13, ihdr);
      ihdr[9] = 3;  // colour type 3: palette
      append_chunk(out, "IHDR", ihdr, 13);
      const auto lut = label_colors(mode);
      uint8_t plte[256 * 3];
      for (int i = 0; i < 256; ++i) {
        for (int c = 0; c < 3; ++c) plte[3 * i + c] = lut[i][c];
      }
      append_chunk(out, "PLTE", plte, sizeof(plte));
      seen_ihdr = true;
    } else if (std::equal(type, type + 4, "IDAT")) {
      out.insert(out.end(), grey_png.begin() + pos, grey_png.begin() + pos + 12 + len);
    } else if (std::equal(type, type + 4, "IEND")) {
      out.insert(out.end(), grey_png.begin() + pos, grey_png.begin() + pos + 12 + len);
      seen_iend = true;
    }
    // Ancillary chunks of a greyscale image (gAMA, sRGB, ...) are dropped.
    pos += 12 + len;
  }
  COMBO_CHECK(seen_ihdr && seen_iend, "encode_palette_png: incomplete PNG from OpenCV");
  return out;
}

void write_label_png(const std::string& path, const at::Tensor& labels, LabelMode mode) {
  const std::vector<uint8_t> png = encode_palette_png(labels, mode);
  const fs::path target(path);
  if (target.has_parent_path()) {
    std::error_code ec;
    fs::create_directories(target.parent_path(), ec);
    COMBO_CHECK(!ec, "write_label_png: cannot create the folder of ", path, ": ", ec.message());
  }
  static std::atomic<uint64_t> counter{0};
  const std::string tmp =
      path + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter.fetch_add(1));
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    COMBO_CHECK(out.good(), "write_label_png: cannot create ", tmp);
    out.write(reinterpret_cast<const char*>(png.data()), static_cast<std::streamsize>(png.size()));
    out.close();
    if (!out.good()) {
      std::remove(tmp.c_str());
      COMBO_FAIL("write_label_png: failed writing ", tmp);
    }
  }
  std::error_code ec;
  fs::rename(tmp, target, ec);
  if (ec) {
    std::remove(tmp.c_str());
    COMBO_FAIL("write_label_png: cannot rename ", tmp, " to ", path, ": ", ec.message());
  }
}

at::Tensor write_maskige(const std::string& path, const at::Tensor& masks,
                         const MaskigeWriteOptions& options) {
  COMBO_CHECK(masks.defined() && masks.dim() == 3, "write_maskige: ", path,
              ": expected masks [n, H, W], got ",
              masks.defined() ? masks.sizes() : at::IntArrayRef{});
  COMBO_CHECK(options.size >= 0, "write_maskige: size must be >= 0, got ", options.size);
  at::Tensor labels;
  if (masks.size(0) == 0 && options.mode == LabelMode::kOfficial) {
    // `pre_mask[0].dtype` raises on an empty stack and the script falls back to zeros(1, 640,
    // 640).
    labels = at::zeros({640, 640}, at::kByte);
  } else {
    COMBO_CHECK(masks.size(1) > 0 && masks.size(2) > 0, "write_maskige: ", path,
                ": empty masks of shape ", masks.sizes());
    labels = masks_to_labels(masks, options.mode);
  }
  if (options.size > 0) labels = resize_labels_nearest(labels, options.size, options.size);
  write_label_png(path, labels, options.mode);
  return labels;
}

at::Tensor read_mask_stack(const std::string& path) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    std::vector<fs::path> files;
    for (const auto& e : fs::directory_iterator(path)) {
      if (e.is_regular_file() && e.path().extension() == ".png") files.push_back(e.path());
    }
    std::sort(files.begin(), files.end());
    COMBO_CHECK(!files.empty(), "read_mask_stack: no *.png masks in folder ", path);
    std::vector<at::Tensor> masks;
    int rows = -1, cols = -1;
    for (const auto& f : files) {
      const cv::Mat m = combo::io::read_label_map(f.string());
      if (rows < 0) {
        rows = m.rows;
        cols = m.cols;
      }
      COMBO_CHECK(m.rows == rows && m.cols == cols, "read_mask_stack: ", f.string(), " is ", m.cols,
                  "x", m.rows, " but the first mask of ", path, " is ", cols, "x", rows);
      at::Tensor t = at::empty({rows, cols}, at::kBool);
      bool* pt = t.data_ptr<bool>();
      for (int y = 0; y < rows; ++y) {
        const uint8_t* row = m.ptr<uint8_t>(y);
        for (int x = 0; x < cols; ++x) pt[y * cols + x] = row[x] != 0;
      }
      masks.push_back(t);
    }
    return at::stack(masks);
  }
  COMBO_CHECK(fs::exists(path, ec), "read_mask_stack: no such file or folder: ", path);
  at::Tensor a = combo::io::read_npy(path);
  if (a.dim() == 2) a = a.unsqueeze(0);
  COMBO_CHECK(a.dim() == 3, "read_mask_stack: ", path, ": expected masks [n, H, W], got shape ",
              a.sizes());
  return a;
}

}  // namespace combo::maskige
