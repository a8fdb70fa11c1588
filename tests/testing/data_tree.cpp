#include "testing/data_tree.h"

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <cmath>
#include <cstdint>
#include <fstream>

#include "combo/data/avsbench.h"
#include "combo/io/image.h"

namespace combo::testing {
namespace fs = std::filesystem;

void write_test_wav(const fs::path& path, double seconds, double hz, int sample_rate) {
  fs::create_directories(path.parent_path());
  const int64_t n = static_cast<int64_t>(seconds * sample_rate);
  std::ofstream out(path, std::ios::binary);
  auto u32 = [&](uint32_t v) { out.write(reinterpret_cast<const char*>(&v), 4); };
  auto u16 = [&](uint16_t v) { out.write(reinterpret_cast<const char*>(&v), 2); };
  out.write("RIFF", 4);
  u32(static_cast<uint32_t>(36 + n * 2));
  out.write("WAVEfmt ", 8);
  u32(16);
  u16(1);
  u16(1);
  u32(sample_rate);
  u32(sample_rate * 2);
  u16(2);
  u16(16);
  out.write("data", 4);
  u32(static_cast<uint32_t>(n * 2));
  for (int64_t i = 0; i < n; ++i) {
    const auto v =
        static_cast<int16_t>(std::lround(16000.0 * std::sin(2 * M_PI * hz * i / sample_rate)));
    out.write(reinterpret_cast<const char*>(&v), 2);
  }
}

// Split letters: t(rain), v(al), s (te-s-t), so names never collide across splits.
static char split_letter(const std::string& split) {
  return split == "train" ? 't' : split == "val" ? 'v' : 's';
}

static cv::Rect square(int video, int frame, int h, int w) {
  const int side = std::max(4, h / 3);
  const int x = (video * 7 + frame * 3) % std::max(1, w - side);
  const int y = (video * 5 + frame * 2) % std::max(1, h - side);
  return {x, y, side, side};
}

cv::Mat test_frame(int video, int frame, int h, int w) {
  cv::Mat m(h, w, CV_8UC3);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      m.at<cv::Vec3b>(y, x) = {static_cast<uint8_t>((x * 255) / std::max(1, w - 1)),
                               static_cast<uint8_t>((y * 255) / std::max(1, h - 1)),
                               static_cast<uint8_t>(20 * video + frame)};
  cv::rectangle(m, square(video, frame, h, w), cv::Scalar(250, 10, 200), cv::FILLED);
  return m;
}

cv::Mat test_mask(int video, int frame, int h, int w) {
  cv::Mat m(h, w, CV_8UC1, cv::Scalar(0));
  cv::rectangle(m, square(video, frame, h, w), cv::Scalar(255), cv::FILLED);
  return m;
}

static cv::Mat maskige_of(const cv::Mat& mask) {
  cv::Mat rgb(mask.rows, mask.cols, CV_8UC3, cv::Scalar(120, 120, 120));
  rgb.setTo(cv::Scalar(180, 120, 120), mask);
  return rgb;
}

std::vector<std::string> write_s4_tree(const fs::path& root, const TreeSpec& spec) {
  const fs::path data = root / "s4_data";
  std::vector<std::string> names;
  std::ofstream csv;
  if (spec.csv) {
    fs::create_directories(root);
    csv.open(root / "s4_meta_data.csv");
    csv << "name,start,category,split\n";
  }
  const std::pair<const char*, int> splits[] = {
      {"train", spec.train}, {"val", spec.val}, {"test", spec.test}};
  int video = 0;
  for (const auto& [split, count] : splits) {
    for (int i = 0; i < count; ++i, ++video) {
      const std::string name = std::string("v") + split_letter(split) + std::to_string(i);
      const std::string cat = i % 2 ? "cat_b" : "cat_a";
      names.push_back(name);
      if (spec.csv) csv << name << ",0," << cat << "," << split << "\n";
      const fs::path rel = fs::path(split) / cat / name;
      const bool train = std::string(split) == "train";
      for (int k = 1; k <= 5; ++k) {
        const std::string stem = name + "_" + std::to_string(k);
        io::write_png((data / "visual_frames" / rel / (stem + ".png")).string(),
                      test_frame(video, k, spec.size, spec.size));
        const cv::Mat mask = test_mask(video, k, spec.size, spec.size);
        if (!train || k == 1)
          io::write_png((data / "gt_masks" / rel / (stem + ".png")).string(), mask);
        io::write_png((data / "pre_SAM_mask" / rel / (stem + "_mask_color.png")).string(),
                      maskige_of(mask));
      }
      write_test_wav(data / "audio_wav" / split / cat / (name + ".wav"), 5.0, 300.0 + 50 * video);
    }
  }
  return names;
}

std::vector<std::string> write_ms3_tree(const fs::path& root, const TreeSpec& spec) {
  const fs::path data = root / "ms3_data";
  std::vector<std::string> names;
  std::ofstream csv;
  if (spec.csv) {
    fs::create_directories(root);
    csv.open(root / "ms3_meta_data.csv");
    csv << "video_id,split\n";
  }
  const std::pair<const char*, int> splits[] = {
      {"train", spec.train}, {"val", spec.val}, {"test", spec.test}};
  int video = 0;
  for (const auto& [split, count] : splits) {
    for (int i = 0; i < count; ++i, ++video) {
      const std::string name = std::string("m") + split_letter(split) + std::to_string(i);
      names.push_back(name);
      if (spec.csv) csv << name << "," << split << "\n";
      for (int k = 1; k <= 5; ++k) {
        io::write_png(
            (data / "visual_frames" / name / (name + ".mp4_" + std::to_string(k) + ".png"))
                .string(),
            test_frame(video, k, spec.size, spec.size));
        const cv::Mat mask = test_mask(video, k, spec.size, spec.size);
        io::write_png(
            (data / "gt_masks" / split / name / (name + "_" + std::to_string(k) + ".png")).string(),
            mask);
        io::write_png((data / "pre_SAM_mask" / name /
                       (name + ".mp4_" + std::to_string(k) + "_mask_color.png"))
                          .string(),
                      maskige_of(mask));
      }
      write_test_wav(data / "audio_wav" / split / (name + ".wav"), 5.0, 440.0);
    }
  }
  return names;
}

void write_avss_tree(const fs::path& root, int size, bool processed) {
  fs::create_directories(root);
  std::ofstream csv(root / "metadata.csv");
  csv << "vid,uid,s_min,s_sec,a_obj,split,label\n";
  std::ofstream l2i(root / "label2idx.json");
  const auto pal = data::avss_palette(71);
  l2i << "{";
  for (int c = 0; c < 71; ++c) l2i << (c ? ", " : "") << "\"class" << c << "\": " << c;
  l2i << "}\n";
  int video = 0;
  for (const char* split : {"train", "val", "test"}) {
    for (const char* label : {"v1s", "v1m", "v2"}) {
      const std::string uid = std::string("u") + split_letter(split) + label;
      csv << video << "," << uid << ",0,0,axe," << split << "," << label << "\n";
      const int frames = std::string(label) == "v2" ? 10 : 5;
      const bool first_only = std::string(label) == "v1s" && std::string(split) == "train";
      const fs::path dir = root / label / uid;
      const int w = size * 3 / 2, h = size;
      for (int k = 0; k < frames; ++k) {
        const cv::Mat frame = test_frame(video, k, h, w);
        io::write_jpeg((dir / "frames" / (std::to_string(k) + ".jpg")).string(), frame, 95);
        const cv::Mat mask = test_mask(video, k, h, w);
        cv::Mat ids(h, w, CV_8UC1, cv::Scalar(0));
        ids.setTo(cv::Scalar(k % 2 ? 7 : 3), mask);
        if (!first_only || k == 0) {
          cv::Mat rgb(h, w, CV_8UC3);
          for (int y = 0; y < h; ++y)
            for (int x = 0; x < w; ++x) {
              const auto& c = pal[ids.at<uint8_t>(y, x)];
              rgb.at<cv::Vec3b>(y, x) = {c[0], c[1], c[2]};
            }
          io::write_png((dir / "labels_rgb" / (std::to_string(k) + ".png")).string(), rgb);
        }
        if (processed) {
          cv::Mat pf, pl;
          cv::resize(frame, pf, cv::Size(size, size), 0, 0, cv::INTER_LINEAR);
          cv::resize(ids, pl, cv::Size(size, size), 0, 0, cv::INTER_NEAREST);
          io::write_jpeg((dir / "processed_frames" / (std::to_string(k) + ".jpg")).string(), pf,
                         95);
          if (!first_only || k == 0)
            io::write_png(
                (dir / "processed_labels_semantic" / (std::to_string(k) + ".png")).string(), pl);
          cv::Mat maskige(size, size, CV_8UC3, cv::Scalar(120, 120, 120));
          maskige.setTo(cv::Scalar(6, 230, 230), pl != 0);
          io::write_png((root / "pre_SAM_mask" / "AVSBench_semantic" / label / uid /
                         "processed_frames" / (std::to_string(k) + "_mask_color.png"))
                            .string(),
                        maskige);
        }
        cv::Mat maskige(h, w, CV_8UC3, cv::Scalar(120, 120, 120));
        maskige.setTo(cv::Scalar(6, 230, 230), mask);
        io::write_png((root / "pre_SAM_mask" / "AVSBench_semantic" / label / uid / "frames" /
                       (std::to_string(k) + "_mask_color.png"))
                          .string(),
                      maskige);
      }
      write_test_wav(dir / "audio.wav", frames, 500.0);
      ++video;
    }
  }
}

}  // namespace combo::testing

namespace combo::testing {
std::string read_bytes_for_test(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}
}  // namespace combo::testing
