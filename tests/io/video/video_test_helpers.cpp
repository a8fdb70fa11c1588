#include "io/video/video_test_helpers.h"

#include <sys/wait.h>

#include <cmath>
#include <cstdio>
#include <exception>

namespace combo::testing {

std::vector<cv::Mat> index_frames(int64_t count, int width, int height) {
  std::vector<cv::Mat> frames;
  for (int64_t i = 0; i < count; ++i) {
    const int r = static_cast<int>(i % 6), g = static_cast<int>((i / 6) % 6),
              b = static_cast<int>((i / 36) % 6);
    frames.emplace_back(height, width, CV_8UC3, cv::Scalar(51 * r, 51 * g, 51 * b));
  }
  return frames;
}

int64_t decode_index(const cv::Mat& rgb) {
  const cv::Vec3b px = rgb.at<cv::Vec3b>(rgb.rows / 2, rgb.cols / 2);
  int64_t digits[3];
  for (int c = 0; c < 3; ++c) {
    const int d = static_cast<int>(std::lround(px[c] / 51.0));
    if (std::abs(px[c] - 51 * d) > 12) return -1;
    digits[c] = d;
  }
  return digits[0] + 6 * digits[1] + 36 * digits[2];
}

at::Tensor tone(double seconds, int64_t rate, int64_t channels) {
  const int64_t n = static_cast<int64_t>(std::llround(seconds * static_cast<double>(rate)));
  const at::Tensor t = at::arange(n, at::kDouble).div(static_cast<double>(rate));
  std::vector<at::Tensor> rows;
  for (int64_t c = 0; c < channels; ++c) {
    rows.push_back(t.mul(2.0 * M_PI * 440.0 * static_cast<double>(c + 1)).sin().mul(0.5));
  }
  return at::stack(rows).to(at::kFloat);
}

int run_shell(const std::string& command, std::string* output) {
  output->clear();
  FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
  if (!pipe) return -1;
  char buf[4096];
  size_t n = 0;
  while ((n = std::fread(buf, 1, sizeof(buf), pipe)) > 0) output->append(buf, n);
  const int status = ::pclose(pipe);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::string thrown_message(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const std::exception& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected an exception";
  return "";
}

}  // namespace combo::testing
