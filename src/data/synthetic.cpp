#include "combo/data/synthetic.h"

#include <ATen/ATen.h>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <exception>
#include <filesystem>
#include <iomanip>
#include <mutex>
#include <random>
#include <sstream>
#include <thread>

#include "combo/audio/log_mel.h"
#include "combo/core/check.h"
#include "combo/core/state_dict.h"
#include "combo/io/video.h"
#include "combo/loss/criterion.h"

namespace combo::data {
namespace {

namespace fs = std::filesystem;

constexpr int64_t kRawVideoFps = 25;

// A continuous 8-bit matrix as a tensor (a copy) and back.
at::Tensor mat_u8(const cv::Mat& m) {
  at::Tensor t = at::empty({m.rows, m.cols, m.channels()}, at::kByte);
  std::memcpy(t.data_ptr<uint8_t>(), m.data, static_cast<size_t>(t.numel()));
  return m.channels() == 1 ? t.squeeze(2) : t;
}

cv::Mat tensor_mat(const at::Tensor& t) {
  const at::Tensor c = t.contiguous();
  const int channels = c.dim() == 3 ? static_cast<int>(c.size(2)) : 1;
  cv::Mat m(static_cast<int>(c.size(0)), static_cast<int>(c.size(1)), CV_8UC(channels));
  std::memcpy(m.data, c.data_ptr<uint8_t>(), static_cast<size_t>(c.numel()));
  return m;
}

// The place of a geometric op in COMBO's offline AVSS resizing (COMBO_SPEC 10.5).
cv::Mat avss_process(const cv::Mat& image, int64_t size, bool train, bool nearest) {
  const int s = static_cast<int>(size);
  const int interp = nearest ? cv::INTER_NEAREST_EXACT : cv::INTER_AREA;
  cv::Mat out;
  if (!train) {
    if (image.cols == s && image.rows == s) return image.clone();
    cv::resize(image, out, cv::Size(s, s), 0, 0, interp);
    return out;
  }
  int ow, oh;
  if (image.cols > image.rows) {
    oh = s;
    ow = static_cast<int>(1.0 * image.cols * oh / image.rows);
  } else {
    ow = s;
    oh = static_cast<int>(1.0 * image.rows * ow / image.cols);
  }
  cv::Mat resized = image;
  if (ow != image.cols || oh != image.rows)
    cv::resize(image, resized, cv::Size(ow, oh), 0, 0,
               nearest ? cv::INTER_NEAREST_EXACT : cv::INTER_LINEAR);
  // Python's round(): half to even (nearbyint under the default rounding mode).
  const int x1 = static_cast<int>(std::nearbyint((ow - s) / 2.0));
  const int y1 = static_cast<int>(std::nearbyint((oh - s) / 2.0));
  return resized(cv::Rect(x1, y1, s, s)).clone();
}

// ---------------------------------------------------------------------------------------------
// Files.

std::string encode_image(const cv::Mat& image, const std::string& ext,
                         const std::vector<int>& params = {}) {
  cv::Mat bgr = image;
  if (image.channels() == 3) cv::cvtColor(image, bgr, cv::COLOR_RGB2BGR);
  std::vector<uchar> buf;
  COMBO_CHECK(cv::imencode(ext, bgr, buf, params), "combo-synth: OpenCV cannot encode ", ext);
  return std::string(buf.begin(), buf.end());
}

std::string png_bytes(const cv::Mat& image) { return encode_image(image, ".png"); }
std::string jpeg_bytes(const cv::Mat& rgb) {
  return encode_image(rgb, ".jpg", {cv::IMWRITE_JPEG_QUALITY, 95});
}

class Writer {
 public:
  void put(const fs::path& path, const std::string& bytes) {
    make_parent(path);
    write_file_atomic(path.string(), bytes);
    ++files_;
  }
  void make_parent(const fs::path& path) {
    std::error_code ec;
    fs::create_directories(path.parent_path(), ec);
    COMBO_CHECK(!ec, "combo-synth: cannot create folder '", path.parent_path().string(),
                "': ", ec.message());
  }
  void count() { ++files_; }
  int64_t files() const { return files_.load(); }

 private:
  std::atomic<int64_t> files_{0};
};

// Maskige of one frame: object masks + background regions -> label map -> ADE20K colours.
cv::Mat maskige_image(const std::vector<cv::Mat>& masks) {
  COMBO_CHECK(!masks.empty(), "combo-synth: a frame without any mask");
  const int h = masks[0].rows, w = masks[0].cols;
  std::vector<at::Tensor> stack;
  for (const auto& m : masks) {
    COMBO_CHECK(m.isContinuous() && m.type() == CV_8UC1, "combo-synth: bad mask");
    stack.push_back(mat_u8(m));
  }
  const at::Tensor rgb = synth_maskige(stack);
  cv::Mat out(h, w, CV_8UC3);
  std::memcpy(out.data, rgb.data_ptr<uint8_t>(), static_cast<size_t>(h) * w * 3);
  return out;
}

std::vector<cv::Mat> frame_masks(const SynthVideo& video, size_t t) {
  std::vector<cv::Mat> masks;
  for (const auto& o : video.objects)
    if (cv::countNonZero(o.masks[t]) > 0) masks.push_back(o.masks[t]);
  for (const auto& r : video.regions[t]) masks.push_back(r);
  return masks;
}

at::Tensor audio_tensor(const std::vector<float>& audio) {
  return at::from_blob(const_cast<float*>(audio.data()), {static_cast<int64_t>(audio.size())},
                       at::kFloat)
      .clone();
}

void write_log_mel(Writer& w, const fs::path& path, const std::vector<float>& audio, int64_t count,
                   audio::PadMode pad) {
  const at::Tensor examples =
      audio::waveform_to_examples(audio_tensor(audio).to(at::kDouble), kSynthSampleRate);
  const at::Tensor padded =
      audio::pad_examples(examples, count, pad, audio::ExcessMode::kTruncate).contiguous();
  w.make_parent(path);
  save_pickle_file(path.string(), padded);
  w.count();
}

void write_raw_video(Writer& w, const fs::path& path, const SynthVideo& video) {
  std::vector<cv::Mat> frames;
  frames.reserve(video.frames.size() * kRawVideoFps);
  // Frame k covers second k-1, so the AVSBench frame rule (frame int((k-1+15/16)*fps)) picks it.
  for (const auto& f : video.frames)
    for (int64_t i = 0; i < kRawVideoFps; ++i) frames.push_back(f);
  io::VideoWriterOptions opt;
  opt.fps = static_cast<double>(kRawVideoFps);
  opt.audio_sample_rate = kSynthSampleRate;
  opt.audio_channels = 1;
  w.make_parent(path);
  io::write_video(path.string(), frames, audio_tensor(video.audio), opt);
  w.count();
}

std::string frame_name(int64_t k) { return std::to_string(k); }

// What the metadata needs from a written video.
struct VideoRecordOut {
  std::string name, group, split;
  std::vector<std::string> sounding_names;
  int64_t frames = 0;
};

void write_s4(Writer& w, const SynthOptions& o, const fs::path& root, const SynthVideo& v) {
  const fs::path base = root / "s4_data";
  const fs::path rel = fs::path(v.split) / v.group;
  const fs::path frames = base / "visual_frames" / rel / v.name;
  const fs::path gts = base / "gt_masks" / rel / v.name;
  const fs::path maskiges = base / "pre_SAM_mask" / rel / v.name;
  const int64_t gt_count = v.split == "train" ? 1 : static_cast<int64_t>(v.frames.size());
  for (size_t t = 0; t < v.frames.size(); ++t) {
    const std::string stem = v.name + "_" + std::to_string(t + 1);
    w.put(frames / (stem + ".png"), png_bytes(v.frames[t]));
    if (static_cast<int64_t>(t) < gt_count)
      w.put(gts / (stem + ".png"), png_bytes(synth_ground_truth(o, v, static_cast<int64_t>(t))));
    w.put(maskiges / (stem + "_mask_color.png"), png_bytes(maskige_image(frame_masks(v, t))));
  }
  w.put(base / "audio_wav" / rel / (v.name + ".wav"), wav_bytes(v.audio, kSynthSampleRate));
  if (o.write_pkl)
    write_log_mel(w, base / "audio_log_mel" / rel / (v.name + ".pkl"), v.audio,
                  static_cast<int64_t>(v.frames.size()), audio::PadMode::kRepeatLast);
  if (o.write_raw_videos) write_raw_video(w, base / "raw_videos" / rel / (v.name + ".mp4"), v);
}

void write_ms3(Writer& w, const SynthOptions& o, const fs::path& root, const SynthVideo& v) {
  const fs::path base = root / "ms3_data";
  for (size_t t = 0; t < v.frames.size(); ++t) {
    const std::string k = std::to_string(t + 1);
    w.put(base / "visual_frames" / v.name / (v.name + ".mp4_" + k + ".png"),
          png_bytes(v.frames[t]));
    w.put(base / "gt_masks" / v.split / v.name / (v.name + "_" + k + ".png"),
          png_bytes(synth_ground_truth(o, v, static_cast<int64_t>(t))));
    w.put(base / "pre_SAM_mask" / v.name / (v.name + ".mp4_" + k + "_mask_color.png"),
          png_bytes(maskige_image(frame_masks(v, t))));
  }
  w.put(base / "audio_wav" / v.split / (v.name + ".wav"), wav_bytes(v.audio, kSynthSampleRate));
  if (o.write_pkl)
    write_log_mel(w, base / "audio_log_mel" / v.split / (v.name + ".pkl"), v.audio,
                  static_cast<int64_t>(v.frames.size()), audio::PadMode::kRepeatLast);
  if (o.write_raw_videos) write_raw_video(w, base / "raw_videos" / (v.name + ".mp4"), v);
}

void write_avss(Writer& w, const SynthOptions& o, const fs::path& root, const SynthVideo& v) {
  const fs::path dir = root / v.group / v.name;
  const fs::path maskiges =
      root / "pre_SAM_mask" / "AVSBench_semantic" / v.group / v.name / "processed_frames";
  const bool train = v.split == "train";
  // AVSBench: train v1s videos carry only the first frame's labels (AVSBENCH_SPEC 1.7).
  const int64_t label_count =
      (train && v.group == "v1s") ? 1 : static_cast<int64_t>(v.frames.size());
  for (size_t t = 0; t < v.frames.size(); ++t) {
    const std::string n = frame_name(static_cast<int64_t>(t));
    w.put(dir / "frames" / (n + ".jpg"), jpeg_bytes(v.frames[t]));
    w.put(dir / "processed_frames" / (n + ".jpg"),
          jpeg_bytes(avss_process(v.frames[t], o.size, train, false)));
    if (static_cast<int64_t>(t) < label_count) {
      const cv::Mat labels = synth_ground_truth(o, v, static_cast<int64_t>(t));
      cv::Mat rgb(labels.rows, labels.cols, CV_8UC3);
      for (int y = 0; y < labels.rows; ++y)
        for (int x = 0; x < labels.cols; ++x) {
          const auto c = avss_palette_color(labels.at<uint8_t>(y, x));
          rgb.at<cv::Vec3b>(y, x) = cv::Vec3b(c[0], c[1], c[2]);
        }
      w.put(dir / "labels_rgb" / (n + ".png"), png_bytes(rgb));
      w.put(dir / "labels_semantic" / (n + ".png"), png_bytes(labels));
      w.put(dir / "processed_labels_semantic" / (n + ".png"),
            png_bytes(avss_process(labels, o.size, train, true)));
    }
    // COMBO computes the AVSS masks on the processed (size x size) frames.
    std::vector<cv::Mat> masks;
    for (const auto& m : frame_masks(v, t)) {
      cv::Mat p = avss_process(m, o.size, train, true);
      if (cv::countNonZero(p) > 0) masks.push_back(p);
    }
    if (masks.empty())
      masks.push_back(cv::Mat::ones(static_cast<int>(o.size), static_cast<int>(o.size), CV_8UC1));
    w.put(maskiges / (n + "_mask_color.png"), png_bytes(maskige_image(masks)));
  }
  w.put(dir / "audio.wav", wav_bytes(v.audio, kSynthSampleRate));
  if (o.write_pkl) write_log_mel(w, dir / "audio.pkl", v.audio, 10, audio::PadMode::kZeros);
}

std::string csv_escape(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) out += (c == '"') ? std::string("\"\"") : std::string(1, c);
  return out + "\"";
}

// The paths synthesize() owns under `out`.
std::vector<fs::path> owned_paths(loss::DatasetKind kind, const fs::path& out) {
  switch (kind) {
    case loss::DatasetKind::kS4:
      return {out / "s4_meta_data.csv", out / "s4_data"};
    case loss::DatasetKind::kMS3:
      return {out / "ms3_meta_data.csv", out / "ms3_data"};
    default:
      return {out / "metadata.csv", out / "label2idx.json",
              out / "v1s",          out / "v1m",
              out / "v2",           out / "pre_SAM_mask" / "AVSBench_semantic"};
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------

SynthVideo synth_video(const SynthOptions& options, const std::string& split, int64_t index) {
  const SynthScene s = synth_scene(options, split, index);
  SynthVideo video;
  video.split = s.split;
  video.index = s.index;
  video.name = s.name;
  video.group = s.group;
  video.audio = s.audio;
  for (int64_t t = 0; t < s.num_frames(); ++t) {
    video.frames.push_back(tensor_mat(s.frames[t]));
    std::vector<cv::Mat> regions;
    for (const auto& r : s.regions[static_cast<size_t>(t)]) regions.push_back(tensor_mat(r));
    video.regions.push_back(std::move(regions));
  }
  for (const auto& o : s.objects) {
    SynthObject obj;
    obj.class_index = o.class_index;
    obj.sounding = o.sounding;
    for (int64_t t = 0; t < s.num_frames(); ++t) obj.masks.push_back(tensor_mat(o.masks[t]));
    video.objects.push_back(std::move(obj));
  }
  return video;
}

cv::Mat synth_ground_truth(const SynthOptions& options, const SynthVideo& video, int64_t frame) {
  COMBO_CHECK(frame >= 0 && frame < static_cast<int64_t>(video.frames.size()),
              "synth_ground_truth: frame ", frame, " of ", video.frames.size());
  const bool semantic = loss::parse_dataset_kind(options.dataset) == loss::DatasetKind::kAVSS;
  const cv::Mat& f = video.frames[static_cast<size_t>(frame)];
  cv::Mat gt = cv::Mat::zeros(f.rows, f.cols, CV_8UC1);
  for (const auto& o : video.objects)
    if (o.sounding)
      gt.setTo(semantic ? static_cast<double>(o.class_index + 1) : 255.0,
               o.masks[static_cast<size_t>(frame)]);
  return gt;
}

SynthReport synthesize(const SynthOptions& options) {
  validate_synth_options(options);
  COMBO_CHECK(!options.out.empty(), "combo-synth: no output folder given");
  const loss::DatasetKind kind = loss::parse_dataset_kind(options.dataset);
  const fs::path out(options.out);

  std::vector<fs::path> existing;
  for (const auto& p : owned_paths(kind, out))
    if (fs::exists(p)) existing.push_back(p);
  if (!existing.empty()) {
    if (!options.overwrite) {
      std::string list;
      for (const auto& p : existing) list += " '" + p.string() + "'";
      COMBO_FAIL("combo-synth: refusing to write over existing", list,
                 " (pass overwrite / --overwrite to replace them)");
    }
    for (const auto& p : existing) {
      std::error_code ec;
      fs::remove_all(p, ec);
      COMBO_CHECK(!ec, "combo-synth: cannot remove '", p.string(), "': ", ec.message());
    }
  }

  struct Job {
    std::string split;
    int64_t index;
  };
  std::vector<Job> jobs;
  const std::array<int64_t, 3> counts = {options.train_videos, options.val_videos,
                                         options.test_videos};
  const std::array<const char*, 3> splits = {"train", "val", "test"};
  for (size_t s = 0; s < splits.size(); ++s)
    for (int64_t i = 0; i < counts[s]; ++i) jobs.push_back({splits[s], i});

  Writer writer;
  std::vector<VideoRecordOut> records(jobs.size());
  const auto names = synth_class_names(options.num_classes);
  std::atomic<size_t> next{0};
  std::atomic<bool> failed{false};
  std::exception_ptr error;
  std::mutex error_mutex;
  auto work = [&] {
    while (!failed) {
      const size_t j = next++;
      if (j >= jobs.size()) break;
      try {
        const SynthVideo v = synth_video(options, jobs[j].split, jobs[j].index);
        if (kind == loss::DatasetKind::kS4) {
          write_s4(writer, options, out, v);
        } else if (kind == loss::DatasetKind::kMS3) {
          write_ms3(writer, options, out, v);
        } else {
          write_avss(writer, options, out, v);
        }
        VideoRecordOut& r = records[j];
        r.name = v.name;
        r.group = v.group;
        r.split = v.split;
        r.frames = static_cast<int64_t>(v.frames.size());
        for (const auto& o : v.objects)
          if (o.sounding) r.sounding_names.push_back(names[static_cast<size_t>(o.class_index)]);
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mutex);
        if (!error) error = std::current_exception();
        failed = true;
      }
    }
  };
  int64_t threads = options.threads > 0 ? options.threads
                                        : static_cast<int64_t>(std::thread::hardware_concurrency());
  threads =
      std::clamp<int64_t>(threads, 1, std::max<int64_t>(1, static_cast<int64_t>(jobs.size())));
  if (threads == 1) {
    work();
  } else {
    std::vector<std::thread> pool;
    for (int64_t i = 0; i < threads; ++i) pool.emplace_back(work);
    for (auto& t : pool) t.join();
  }
  if (error) std::rethrow_exception(error);

  // Metadata last: a reader never sees a row whose files are not all there.
  std::ostringstream csv;
  if (kind == loss::DatasetKind::kS4) {
    csv << "name,start,category,split\n";
    for (const auto& r : records)
      csv << csv_escape(r.name) << ",0," << csv_escape(r.group) << "," << r.split << "\n";
    writer.put(out / "s4_meta_data.csv", csv.str());
  } else if (kind == loss::DatasetKind::kMS3) {
    csv << "name,split\n";
    for (const auto& r : records) csv << csv_escape(r.name) << "," << r.split << "\n";
    writer.put(out / "ms3_meta_data.csv", csv.str());
  } else {
    std::ostringstream json;
    json << "{\n  \"background\": 0";
    for (size_t c = 0; c < names.size(); ++c) json << ",\n  \"" << names[c] << "\": " << c + 1;
    json << "\n}\n";
    writer.put(out / "label2idx.json", json.str());
    csv << "vid,uid,s_min,s_sec,a_obj,split,label\n";
    int64_t vid = 0;
    for (const auto& r : records) {
      std::string a_obj;
      for (const auto& s : r.sounding_names) a_obj += (a_obj.empty() ? "" : "_") + s;
      csv << ++vid << "," << csv_escape(r.name) << ",0,0," << csv_escape(a_obj) << "," << r.split
          << "," << r.group << "\n";
    }
    writer.put(out / "metadata.csv", csv.str());
  }

  SynthReport report;
  report.root = out.string();
  report.videos = static_cast<int64_t>(records.size());
  for (const auto& r : records) report.frames += r.frames;
  report.files = writer.files();
  return report;
}

}  // namespace combo::data
