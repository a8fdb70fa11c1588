#include "combo/io/image.h"

#include <ATen/ATen.h>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <filesystem>
#include <fstream>
#include <vector>

#include "combo/core/check.h"
#include "combo/core/state_dict.h"

namespace combo::io {
namespace {

namespace fs = std::filesystem;

// imdecode from our own read so that a missing file, an empty file and undecodable bytes
// give three different messages (cv::imread returns an empty matrix for all of them).
std::vector<uchar> read_bytes(const std::string& path) {
  std::error_code ec;
  COMBO_CHECK(fs::exists(path, ec), "image file not found: ", path);
  COMBO_CHECK(fs::is_regular_file(path, ec), "not a regular file: ", path);
  std::ifstream in(path, std::ios::binary);
  COMBO_CHECK(in.good(), "cannot open image file: ", path);
  std::vector<uchar> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  COMBO_CHECK(!bytes.empty(), "image file is empty (0 bytes): ", path);
  return bytes;
}

// PNG and JPEG decoders of OpenCV accept some truncated files silently (libpng warns and
// returns a partly grey image; libjpeg pads). Check the end markers ourselves.
void check_complete(const std::vector<uchar>& b, const std::string& path) {
  static const uchar kPng[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  if (b.size() >= 8 && std::equal(kPng, kPng + 8, b.begin())) {
    static const uchar kIend[8] = {'I', 'E', 'N', 'D', 0xae, 0x42, 0x60, 0x82};
    const bool ok =
        b.size() >= 20 && std::search(b.end() - 20, b.end(), kIend, kIend + 8) != b.end();
    COMBO_CHECK(ok, "truncated or corrupt PNG (no IEND chunk at the end): ", path);
  } else if (b.size() >= 3 && b[0] == 0xff && b[1] == 0xd8 && b[2] == 0xff) {
    // A JPEG must end with EOI (FF D9); allow trailing padding bytes after it.
    bool ok = false;
    const size_t from = b.size() > 64 ? b.size() - 64 : 1;
    for (size_t i = b.size() - 1; i >= from; --i) {
      if (b[i - 1] == 0xff && b[i] == 0xd9) {
        ok = true;
        break;
      }
    }
    COMBO_CHECK(ok, "truncated or corrupt JPEG (no end-of-image marker): ", path);
  }
}

cv::Mat decode(const std::string& path, int flags) {
  const auto bytes = read_bytes(path);
  check_complete(bytes, path);
  cv::Mat m;
  try {
    m = cv::imdecode(bytes, flags);
  } catch (const cv::Exception& e) {
    COMBO_FAIL("cannot decode image ", path, ": ", e.what());
  }
  COMBO_CHECK(!m.empty(), "cannot decode image (corrupt or not an image): ", path);
  return m;
}

cv::Mat to_8bit(const cv::Mat& m) {
  if (m.depth() == CV_8U) return m;
  COMBO_CHECK(m.depth() == CV_16U, "unsupported image depth ", m.depth());
  cv::Mat out;
  m.convertTo(out, CV_8U, 1.0 / 257.0);
  return out;
}

void write_atomic(const std::string& path, const std::string& ext, const cv::Mat& image,
                  const std::vector<int>& params) {
  std::vector<uchar> buf;
  bool ok = false;
  try {
    ok = cv::imencode(ext, image, buf, params);
  } catch (const cv::Exception& e) {
    COMBO_FAIL("cannot encode ", path, ": ", e.what());
  }
  COMBO_CHECK(ok, "cannot encode ", path);
  const fs::path parent = fs::path(path).parent_path();
  if (!parent.empty()) {
    std::error_code ec;
    fs::create_directories(parent, ec);
    COMBO_CHECK(!ec, "cannot create folder ", parent.string(), ": ", ec.message());
  }
  write_file_atomic(path, std::string(buf.begin(), buf.end()));
}

}  // namespace

cv::Mat read_rgb(const std::string& path) {
  cv::Mat m = to_8bit(decode(path, cv::IMREAD_UNCHANGED));
  cv::Mat rgb;
  switch (m.channels()) {
    case 1:
      cv::cvtColor(m, rgb, cv::COLOR_GRAY2RGB);
      break;
    case 3:
      cv::cvtColor(m, rgb, cv::COLOR_BGR2RGB);
      break;
    case 4:
      cv::cvtColor(m, rgb, cv::COLOR_BGRA2RGB);
      break;
    default:
      COMBO_FAIL("unsupported channel count ", m.channels(), " in ", path);
  }
  return rgb;
}

cv::Mat read_label_map(const std::string& path) {
  // IMREAD_UNCHANGED keeps grey values as stored; libpng expands 1-bit grey to 0/255.
  cv::Mat m = decode(path, cv::IMREAD_UNCHANGED);
  COMBO_CHECK(m.depth() == CV_8U, "label map must be 8-bit, got a ", (m.depth() == CV_16U ? 16 : 0),
              "-bit image: ", path);
  if (m.channels() == 1) return m;
  COMBO_CHECK(m.channels() == 3 || m.channels() == 4, "unsupported channel count ", m.channels(),
              " in label map ", path);
  std::vector<cv::Mat> ch;
  cv::split(m, ch);
  const bool grey = cv::countNonZero(ch[0] != ch[1]) == 0 && cv::countNonZero(ch[1] != ch[2]) == 0;
  COMBO_CHECK(grey, "label map must be single-channel (or grey), got a colour image: ", path);
  return ch[0];
}

void write_png(const std::string& path, const cv::Mat& image) {
  COMBO_CHECK(image.depth() == CV_8U && (image.channels() == 1 || image.channels() == 3),
              "write_png: expected an 8-bit 1- or 3-channel image for ", path);
  cv::Mat out = image;
  if (image.channels() == 3) cv::cvtColor(image, out, cv::COLOR_RGB2BGR);
  write_atomic(path, ".png", out, {cv::IMWRITE_PNG_COMPRESSION, 3});
}

void write_jpeg(const std::string& path, const cv::Mat& rgb, int quality) {
  COMBO_CHECK(rgb.type() == CV_8UC3, "write_jpeg: expected an 8-bit RGB image for ", path);
  cv::Mat bgr;
  cv::cvtColor(rgb, bgr, cv::COLOR_RGB2BGR);
  write_atomic(path, ".jpg", bgr, {cv::IMWRITE_JPEG_QUALITY, quality});
}

at::Tensor mat_to_chw(const cv::Mat& image) {
  COMBO_CHECK(image.depth() == CV_8U, "mat_to_chw: expected an 8-bit image");
  cv::Mat m = image.isContinuous() ? image : image.clone();
  const int64_t c = m.channels();
  auto hwc = at::from_blob(m.data, {m.rows, m.cols, c}, at::kByte);
  return hwc.permute({2, 0, 1}).contiguous();
}

cv::Mat chw_to_mat(const at::Tensor& t) {
  COMBO_CHECK(t.scalar_type() == at::kByte, "chw_to_mat: expected uint8, got ", t.scalar_type());
  at::Tensor hwc;
  if (t.dim() == 2) {
    hwc = t.unsqueeze(-1);
  } else {
    COMBO_CHECK(t.dim() == 3 && (t.size(0) == 1 || t.size(0) == 3),
                "chw_to_mat: expected [C, H, W] with C = 1 or 3, got ", t.sizes());
    hwc = t.permute({1, 2, 0});
  }
  hwc = hwc.contiguous().cpu();
  const int type = hwc.size(2) == 1 ? CV_8UC1 : CV_8UC3;
  cv::Mat view(static_cast<int>(hwc.size(0)), static_cast<int>(hwc.size(1)), type, hwc.data_ptr());
  return view.clone();
}

}  // namespace combo::io
