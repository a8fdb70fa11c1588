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
#include "combo/maskige/encode.h"

namespace combo::data {
namespace {

namespace fs = std::filesystem;

constexpr double kPi = 3.14159265358979323846;
constexpr int64_t kRawVideoFps = 25;

// AVSBench-semantic's class names, ids 1..70 (AVSBENCH_SPEC 4.2).
constexpr std::array<const char*, 70> kAvssClassNames = {
    "accordion",      "airplane",   "axe",       "baby",          "bassoon",    "bell",
    "bird",           "boat",       "boy",       "bus",           "car",        "cat",
    "cello",          "clarinet",   "clipper",   "clock",         "dog",        "donkey",
    "drum",           "duck",       "elephant",  "emergency-car", "erhu",       "flute",
    "frying-food",    "girl",       "goose",     "guitar",        "gun",        "guzheng",
    "hair-dryer",     "handpan",    "harmonica", "harp",          "helicopter", "hen",
    "horse",          "keyboard",   "leopard",   "lion",          "man",        "marimba",
    "missile-rocket", "motorcycle", "mower",     "parrot",        "piano",      "pig",
    "pipa",           "saw",        "saxophone", "sheep",         "sitar",      "sorna",
    "squirrel",       "tabla",      "tank",      "tiger",         "tractor",    "train",
    "trombone",       "truck",      "trumpet",   "tuba",          "ukulele",    "utv",
    "vacuum-cleaner", "violin",     "wolf",      "woman"};

enum class Kind { kS4, kMs3, kAvss };

Kind parse_kind(const std::string& dataset) {
  if (dataset == "s4") return Kind::kS4;
  if (dataset == "ms3") return Kind::kMs3;
  if (dataset == "avss") return Kind::kAvss;
  COMBO_FAIL("combo-synth: dataset must be s4, ms3 or avss, got '", dataset, "'");
}

const std::array<const char*, 3> kSplits = {"train", "val", "test"};

int64_t split_id(const std::string& split) {
  for (size_t i = 0; i < kSplits.size(); ++i)
    if (split == kSplits[i]) return static_cast<int64_t>(i);
  COMBO_FAIL("combo-synth: split must be train, val or test, got '", split, "'");
}

// SplitMix64 finaliser: turns (seed, split, index) into well-spread per-video seeds.
uint64_t mix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

uint64_t video_seed(int64_t seed, int64_t split, int64_t index) {
  uint64_t h = mix64(static_cast<uint64_t>(seed));
  h = mix64(h ^ (static_cast<uint64_t>(split) + 1) * 0xD6E8FEB86659FD93ULL);
  return mix64(h ^ (static_cast<uint64_t>(index) + 1) * 0xA0761D6478BD642FULL);
}

// std:: distributions differ between standard libraries; these formulas do not.
class Random {
 public:
  explicit Random(uint64_t seed) : gen_(seed) {}
  uint64_t bits() { return gen_(); }
  /// [0, 1) with 53 random bits.
  double uniform() { return static_cast<double>(gen_() >> 11) * 0x1.0p-53; }
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }
  /// [0, n), n > 0.
  int64_t below(int64_t n) {
    return std::min<int64_t>(n - 1, static_cast<int64_t>(uniform() * static_cast<double>(n)));
  }
  template <typename T>
  void shuffle(std::vector<T>& v) {
    for (int64_t i = static_cast<int64_t>(v.size()) - 1; i > 0; --i)
      std::swap(v[i], v[below(i + 1)]);
  }

 private:
  std::mt19937_64 gen_;
};

double frac(double x) { return x - std::floor(x); }

// h, s, v in [0, 1] -> RGB in [0, 255].
std::array<double, 3> hsv_to_rgb(double h, double s, double v) {
  h = frac(h) * 6.0;
  const int i = std::min(5, static_cast<int>(h));
  const double f = h - i, p = v * (1 - s), q = v * (1 - s * f), t = v * (1 - s * (1 - f));
  std::array<double, 3> rgb{};
  switch (i) {
    case 0:
      rgb = {v, t, p};
      break;
    case 1:
      rgb = {q, v, p};
      break;
    case 2:
      rgb = {p, v, t};
      break;
    case 3:
      rgb = {p, q, v};
      break;
    case 4:
      rgb = {t, p, v};
      break;
    default:
      rgb = {v, p, q};
      break;
  }
  for (double& c : rgb) c *= 255.0;
  return rgb;
}

uint8_t to_u8(double x) { return static_cast<uint8_t>(std::clamp(std::lround(x), 0L, 255L)); }

// ---------------------------------------------------------------------------------------------
// Classes: shape x texture x colours (vision), fundamental x tilt x modulation (sound).

enum Shape { kDisc, kSquare, kTriangle, kRing, kCross, kDiamond, kFlower, kHexagon, kNumShapes };
enum Texture { kStripes, kChecker, kNoise, kConcentric, kNumTextures };

struct ClassLook {
  Shape shape;
  Texture texture;
  double hue;
  double frequency;  // texture cycles per unit radius
};

ClassLook class_look(int64_t c) {
  ClassLook look;
  look.shape = static_cast<Shape>(c % kNumShapes);
  look.texture = static_cast<Texture>((c + c / kNumShapes) % kNumTextures);
  look.hue = frac(0.1 + 0.6180339887498949 * static_cast<double>(c));
  look.frequency = 1.25 + 0.5 * static_cast<double>(c % 3);
  return look;
}

bool inside_shape(Shape shape, double u, double v) {
  const double au = std::abs(u), av = std::abs(v);
  switch (shape) {
    case kDisc:
      return u * u + v * v <= 1.0;
    case kSquare:
      return std::max(au, av) <= 0.8;
    case kTriangle:
      return v >= -0.5 && v <= 1.0 - 1.7320508075688772 * au;
    case kRing: {
      const double r2 = u * u + v * v;
      return r2 <= 1.0 && r2 >= 0.3;
    }
    case kCross:
      return (au <= 0.32 && av <= 0.95) || (av <= 0.32 && au <= 0.95);
    case kDiamond:
      return au + av <= 1.0;
    case kFlower: {
      const double r = std::sqrt(u * u + v * v);
      return r <= 0.62 + 0.38 * std::cos(5.0 * std::atan2(v, u));
    }
    default:
      return std::max(0.8660254037844386 * au + 0.5 * av, av) <= 0.9;  // hexagon
  }
}

// Deterministic cell hash in [0, 1).
double cell_hash(int64_t x, int64_t y, uint64_t salt) {
  uint64_t h = mix64(
      salt ^ mix64(static_cast<uint64_t>(x) * 0x9E3779B97F4A7C15ULL + static_cast<uint64_t>(y)));
  return static_cast<double>(h >> 11) * 0x1.0p-53;
}

// Weight of colour B (0 = colour A) at object-local (u, v).
double texture_weight(const ClassLook& look, double u, double v, double phase_u, double phase_v,
                      uint64_t salt) {
  const double f = look.frequency;
  switch (look.texture) {
    case kStripes:
      return (static_cast<int64_t>(std::floor(u * f * 2 + phase_u)) & 1) ? 1.0 : 0.0;
    case kChecker:
      return ((static_cast<int64_t>(std::floor(u * f + phase_u)) +
               static_cast<int64_t>(std::floor(v * f + phase_v))) &
              1)
                 ? 1.0
                 : 0.0;
    case kNoise:
      return cell_hash(static_cast<int64_t>(std::floor(u * 2.5 * f + phase_u)),
                       static_cast<int64_t>(std::floor(v * 2.5 * f + phase_v)), salt);
    default:
      return (static_cast<int64_t>(std::floor(std::sqrt(u * u + v * v) * f * 2.5 + phase_u)) & 1)
                 ? 1.0
                 : 0.0;
  }
}

// ---------------------------------------------------------------------------------------------
// Sound.

struct ClassSound {
  double f0;
  double tilt;     // harmonic h has amplitude 1 / h^tilt
  double am_rate;  // Hz
};

ClassSound class_sound(int64_t c, int64_t num_classes) {
  ClassSound s;
  s.f0 = synth_class_fundamental(c, num_classes);
  s.tilt = 0.7 + 1.2 * frac(0.37 * static_cast<double>(c) + 0.15);
  s.am_rate = 1.5 + 7.0 * frac(0.6180339887498949 * static_cast<double>(c) + 0.3);
  return s;
}

// One class tone of `n` samples with per-video jitter, peak-normalised to 1.
std::vector<double> render_tone(int64_t c, int64_t num_classes, int64_t n, Random& rng) {
  const ClassSound s = class_sound(c, num_classes);
  const double f0 = s.f0 * (1.0 + rng.uniform(-0.01, 0.01));
  const double am_phase = rng.uniform(0.0, 2 * kPi);
  const double depth = 0.6;
  std::vector<double> amp, phase, omega;
  for (int h = 1; h <= 8 && h * f0 < 7600.0; ++h) {
    amp.push_back(1.0 / std::pow(static_cast<double>(h), s.tilt));
    phase.push_back(rng.uniform(0.0, 2 * kPi));
    omega.push_back(2 * kPi * h * f0 / static_cast<double>(kSynthSampleRate));
  }
  const double am_omega = 2 * kPi * s.am_rate / static_cast<double>(kSynthSampleRate);
  std::vector<double> x(static_cast<size_t>(n));
  double peak = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    double v = 0.0;
    for (size_t h = 0; h < amp.size(); ++h) v += amp[h] * std::sin(omega[h] * i + phase[h]);
    v *= 1.0 - depth + depth * (0.5 + 0.5 * std::sin(am_omega * i + am_phase));
    x[static_cast<size_t>(i)] = v;
    peak = std::max(peak, std::abs(v));
  }
  if (peak > 0)
    for (double& v : x) v /= peak;
  return x;
}

// ---------------------------------------------------------------------------------------------
// Geometry.

// Reflects x into [lo, hi] (a bouncing trajectory).
double reflect(double x, double lo, double hi) {
  const double span = hi - lo;
  if (span <= 0) return lo;
  double y = std::fmod(x - lo, 2 * span);
  if (y < 0) y += 2 * span;
  return lo + (y <= span ? y : 2 * span - y);
}

struct ObjectPlan {
  int64_t class_index = 0;
  bool sounding = false;
  double radius = 0;
  double x0 = 0, y0 = 0, vx = 0, vy = 0;
  double wobble = 0, wobble_phase = 0;
  double angle = 0, spin = 0;
  double shade = 1, hue_jitter = 0;
  double phase_u = 0, phase_v = 0;
  uint64_t salt = 0;
  std::array<double, 2> center(int64_t t, int64_t w, int64_t h) const {
    const double dt = static_cast<double>(t);
    const double x = reflect(x0 + vx * dt, radius, static_cast<double>(w) - radius);
    const double y = reflect(y0 + vy * dt, radius, static_cast<double>(h) - radius);
    return {x + wobble * std::sin(0.9 * dt + wobble_phase),
            y + wobble * std::cos(0.7 * dt + wobble_phase)};
  }
};

struct Layout {
  Kind kind;
  int64_t width, height, frames;
  std::string group;  // category (S4), label (AVSS)
};

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
  at::Tensor stack = at::zeros({static_cast<int64_t>(masks.size()), h, w}, at::kByte);
  for (size_t i = 0; i < masks.size(); ++i) {
    COMBO_CHECK(masks[i].isContinuous() && masks[i].type() == CV_8UC1, "combo-synth: bad mask");
    std::memcpy(stack[static_cast<int64_t>(i)].data_ptr<uint8_t>(), masks[i].data,
                static_cast<size_t>(h) * w);
  }
  const at::Tensor rgb = maskige::colorize_labels(maskige::masks_to_labels(stack)).contiguous();
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
std::vector<fs::path> owned_paths(Kind kind, const fs::path& out) {
  switch (kind) {
    case Kind::kS4:
      return {out / "s4_meta_data.csv", out / "s4_data"};
    case Kind::kMs3:
      return {out / "ms3_meta_data.csv", out / "ms3_data"};
    default:
      return {out / "metadata.csv", out / "label2idx.json",
              out / "v1s",          out / "v1m",
              out / "v2",           out / "pre_SAM_mask" / "AVSBench_semantic"};
  }
}

// Checks what the content depends on (synthesize() also needs `out`).
void validate(const SynthOptions& o) {
  parse_kind(o.dataset);
  COMBO_CHECK(o.num_classes >= 2 && o.num_classes <= 70,
              "combo-synth: num_classes must be in [2, 70] (each video needs a distractor of "
              "another class; AVSBench-semantic has 70 classes), got ",
              o.num_classes);
  COMBO_CHECK(o.size >= 16, "combo-synth: size must be >= 16, got ", o.size);
  COMBO_CHECK(o.style == "textured" || o.style == "flat",
              "combo-synth: style must be textured or flat, got '", o.style, "'");
  COMBO_CHECK(o.object_scale > 0 && o.object_scale <= 2.5,
              "combo-synth: object scale must be in (0, 2.5], got ", o.object_scale);
  COMBO_CHECK(o.train_videos >= 0 && o.val_videos >= 0 && o.test_videos >= 0,
              "combo-synth: video counts must be >= 0, got ", o.train_videos, "/", o.val_videos,
              "/", o.test_videos);
  COMBO_CHECK(o.threads >= 0, "combo-synth: threads must be >= 0, got ", o.threads);
}

}  // namespace

// ---------------------------------------------------------------------------------------------

std::vector<std::string> synth_class_names(int64_t num_classes) {
  COMBO_CHECK(num_classes >= 2 && num_classes <= 70,
              "combo-synth: num_classes must be in [2, 70], got ", num_classes);
  return {kAvssClassNames.begin(), kAvssClassNames.begin() + num_classes};
}

std::array<uint8_t, 3> avss_palette_color(int64_t index) {
  COMBO_CHECK(index >= 0, "avss_palette_color: negative index ", index);
  int64_t i = index;
  int r = 0, g = 0, b = 0;
  for (int j = 0; j < 8; ++j) {
    r |= static_cast<int>((i >> 0) & 1) << (7 - j);
    g |= static_cast<int>((i >> 1) & 1) << (7 - j);
    b |= static_cast<int>((i >> 2) & 1) << (7 - j);
    i >>= 3;
  }
  return {static_cast<uint8_t>(r), static_cast<uint8_t>(g), static_cast<uint8_t>(b)};
}

double synth_class_fundamental(int64_t class_index, int64_t num_classes) {
  COMBO_CHECK(num_classes >= 1 && class_index >= 0 && class_index < num_classes,
              "synth_class_fundamental: class ", class_index, " of ", num_classes);
  // Fifths apart for few classes (no octave relations, so no class's harmonics hit another's
  // fundamental), narrower for many; 150 Hz .. ~4.8 kHz.
  const double step = std::min(7.0 / 12.0, 5.0 / static_cast<double>(num_classes));
  return 150.0 * std::pow(2.0, step * static_cast<double>(class_index));
}

std::string wav_bytes(const std::vector<float>& samples, int64_t sample_rate) {
  const uint32_t data_bytes = static_cast<uint32_t>(samples.size() * 2);
  std::string out;
  out.reserve(44 + data_bytes);
  auto u32 = [&](uint32_t v) {
    for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
  };
  auto u16 = [&](uint16_t v) {
    out.push_back(static_cast<char>(v & 0xFF));
    out.push_back(static_cast<char>(v >> 8));
  };
  out += "RIFF";
  u32(36 + data_bytes);
  out += "WAVEfmt ";
  u32(16);
  u16(1);  // PCM
  u16(1);  // mono
  u32(static_cast<uint32_t>(sample_rate));
  u32(static_cast<uint32_t>(sample_rate * 2));  // byte rate
  u16(2);                                       // block align
  u16(16);                                      // bits per sample
  out += "data";
  u32(data_bytes);
  for (float s : samples) {
    const double c = std::clamp(static_cast<double>(s), -1.0, 1.0);
    u16(static_cast<uint16_t>(static_cast<int16_t>(std::lround(c * 32767.0))));
  }
  return out;
}

SynthVideo synth_video(const SynthOptions& options, const std::string& split, int64_t index) {
  validate(options);
  const Kind kind = parse_kind(options.dataset);
  const int64_t sid = split_id(split);
  const int64_t K = options.num_classes;
  Random rng(video_seed(options.seed, sid, index));

  SynthVideo video;
  video.split = split;
  video.index = index;
  std::ostringstream idx;
  idx << std::setw(4) << std::setfill('0') << index;

  int64_t width = options.size, height = options.size, frames = 5;
  int64_t max_sounding = 1;
  if (kind == Kind::kS4) {
    video.name = "s4_" + split + "_" + idx.str();
  } else if (kind == Kind::kMs3) {
    video.name = "ms3_" + split + "_" + idx.str();
    max_sounding = 2;
  } else {
    // A fixed rotation over the three subsets, shifted per split, so even one video per split
    // gives one of each.
    static const std::array<const char*, 3> kLabels = {"v1s", "v1m", "v2"};
    video.group = kLabels[static_cast<size_t>((index + sid) % 3)];
    video.name = video.group + "_" + split + "_" + idx.str();
    width = std::lround(1.5 * static_cast<double>(options.size));
    frames = video.group == "v2" ? 10 : 5;
    max_sounding = video.group == "v1s" ? 1 : 2;
  }

  // Classes: the first sounding class cycles through the K classes (balanced categories), the
  // others are drawn without replacement. Which object sounds is then hidden by a shuffle of
  // the drawing order; sizes and places are drawn independently of it.
  const int64_t num_objects = std::min<int64_t>(K, 2 + rng.below(2));
  const int64_t num_sounding = 1 + rng.below(std::min<int64_t>(max_sounding, num_objects - 1));
  std::vector<int64_t> pool;
  const int64_t first = (index + sid) % K;
  for (int64_t c = 0; c < K; ++c)
    if (c != first) pool.push_back(c);
  rng.shuffle(pool);
  std::vector<ObjectPlan> plans(static_cast<size_t>(num_objects));
  for (int64_t i = 0; i < num_objects; ++i) {
    plans[i].class_index = i == 0 ? first : pool[static_cast<size_t>(i - 1)];
    plans[i].sounding = i < num_sounding;
  }
  rng.shuffle(plans);
  if (kind == Kind::kS4) video.group = synth_class_names(K)[static_cast<size_t>(first)];

  const double dim = static_cast<double>(std::min(width, height));
  for (auto& p : plans) {
    p.radius = rng.uniform(0.11, 0.16) * options.object_scale * dim;
    p.angle = rng.uniform(0.0, 2 * kPi);
    p.spin = rng.uniform(-0.15, 0.15);
    p.shade = rng.uniform(0.85, 1.15);
    p.hue_jitter = rng.uniform(-0.02, 0.02);
    p.phase_u = rng.uniform(0.0, 2.0);
    p.phase_v = rng.uniform(0.0, 2.0);
    p.salt = rng.bits();
    p.wobble = rng.uniform(0.0, 0.02) * dim;
    p.wobble_phase = rng.uniform(0.0, 2 * kPi);
  }
  // Trajectories: rejection-sample until no two objects come much closer than touching in any
  // frame; after 200 tries the last draw is kept (occlusion is then resolved by drawing order).
  for (int attempt = 0; attempt < 200; ++attempt) {
    for (auto& p : plans) {
      p.x0 = rng.uniform(p.radius, static_cast<double>(width) - p.radius);
      p.y0 = rng.uniform(p.radius, static_cast<double>(height) - p.radius);
      const double dir = rng.uniform(0.0, 2 * kPi), speed = rng.uniform(0.03, 0.07) * dim;
      p.vx = speed * std::cos(dir);
      p.vy = speed * std::sin(dir);
    }
    bool ok = true;
    for (int64_t t = 0; t < frames && ok; ++t)
      for (size_t i = 0; i < plans.size() && ok; ++i)
        for (size_t j = i + 1; j < plans.size() && ok; ++j) {
          const auto a = plans[i].center(t, width, height), b = plans[j].center(t, width, height);
          ok = std::hypot(a[0] - b[0], a[1] - b[1]) >= 0.9 * (plans[i].radius + plans[j].radius);
        }
    if (ok) break;
  }

  // Background: two muted colours blended by two travelling waves, cut into 2-4 moving Voronoi
  // regions with their own tint, plus a little per-pixel noise.
  const double bg_hue = rng.uniform();
  const auto bg_a = hsv_to_rgb(bg_hue, rng.uniform(0.15, 0.35), rng.uniform(0.5, 0.7));
  const auto bg_b =
      hsv_to_rgb(bg_hue + rng.uniform(0.1, 0.3), rng.uniform(0.15, 0.35), rng.uniform(0.25, 0.45));
  struct Wave {
    double kx, ky, w, phase;
  };
  std::array<Wave, 2> waves{};
  for (auto& wv : waves) {
    const double dir = rng.uniform(0.0, 2 * kPi);
    const double k = 2 * kPi / (rng.uniform(0.15, 0.4) * dim);
    wv = {k * std::cos(dir), k * std::sin(dir), rng.uniform(0.4, 1.2), rng.uniform(0, 2 * kPi)};
  }
  const int64_t num_regions = 2 + rng.below(3);
  struct Seed {
    double x, y, vx, vy;
    std::array<double, 3> tint;
  };
  std::vector<Seed> seeds(static_cast<size_t>(num_regions));
  for (auto& s : seeds) {
    s.x = rng.uniform(0.0, static_cast<double>(width));
    s.y = rng.uniform(0.0, static_cast<double>(height));
    s.vx = rng.uniform(-0.015, 0.015) * dim;
    s.vy = rng.uniform(-0.015, 0.015) * dim;
    for (double& c : s.tint) c = rng.uniform(0.75, 1.25);
  }

  const int w = static_cast<int>(width), h = static_cast<int>(height);
  const bool flat = options.style == "flat";
  video.objects.resize(plans.size());
  for (size_t i = 0; i < plans.size(); ++i) {
    video.objects[i].class_index = plans[i].class_index;
    video.objects[i].sounding = plans[i].sounding;
  }
  for (int64_t t = 0; t < frames; ++t) {
    const double dt = static_cast<double>(t);
    cv::Mat frame(h, w, CV_8UC3);
    cv::Mat region_of(h, w, CV_8UC1);
    std::vector<std::array<double, 2>> seed_pos;
    for (const auto& s : seeds)
      seed_pos.push_back({reflect(s.x + s.vx * dt, 0.0, static_cast<double>(width)),
                          reflect(s.y + s.vy * dt, 0.0, static_cast<double>(height))});
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x) {
        const double px = x + 0.5, py = y + 0.5;
        size_t best = 0;
        double best_d = 1e300;
        for (size_t s = 0; s < seed_pos.size(); ++s) {
          const double d = std::hypot(px - seed_pos[s][0], py - seed_pos[s][1]);
          if (d < best_d) best_d = d, best = s;
        }
        region_of.at<uint8_t>(y, x) = static_cast<uint8_t>(best);
        double f = 0.5;
        if (!flat)
          for (const auto& wv : waves)
            f += 0.25 * std::sin(wv.kx * px + wv.ky * py + wv.w * dt + wv.phase);
        // Drawn in both styles so the audio after it is the same.
        const double noise = flat ? (rng.uniform(-6.0, 6.0), 0.0) : rng.uniform(-6.0, 6.0);
        cv::Vec3b& pix = frame.at<cv::Vec3b>(y, x);
        for (int c = 0; c < 3; ++c)
          pix[c] = to_u8((bg_a[c] * (1 - f) + bg_b[c] * f) * seeds[best].tint[c] + noise);
      }
    std::vector<cv::Mat> shapes;
    for (const auto& p : plans) {
      const ClassLook look = class_look(p.class_index);
      auto col_a = hsv_to_rgb(look.hue + p.hue_jitter, 0.8, 0.95);
      auto col_b = hsv_to_rgb(look.hue + 0.45 + p.hue_jitter, 0.7, 0.45);
      const auto c = p.center(t, width, height);
      const double angle = p.angle + p.spin * dt, ca = std::cos(angle), sa = std::sin(angle);
      cv::Mat shape = cv::Mat::zeros(h, w, CV_8UC1);
      const int x_lo = std::max(0, static_cast<int>(std::floor(c[0] - p.radius - 1)));
      const int x_hi = std::min(w - 1, static_cast<int>(std::ceil(c[0] + p.radius + 1)));
      const int y_lo = std::max(0, static_cast<int>(std::floor(c[1] - p.radius - 1)));
      const int y_hi = std::min(h - 1, static_cast<int>(std::ceil(c[1] + p.radius + 1)));
      for (int y = y_lo; y <= y_hi; ++y)
        for (int x = x_lo; x <= x_hi; ++x) {
          const double dx = (x + 0.5 - c[0]) / p.radius, dy = (y + 0.5 - c[1]) / p.radius;
          const double u = ca * dx + sa * dy, v = -sa * dx + ca * dy;
          if (!inside_shape(look.shape, u, v)) continue;
          shape.at<uint8_t>(y, x) = 1;
          const double wb = flat ? 0.0 : texture_weight(look, u, v, p.phase_u, p.phase_v, p.salt);
          cv::Vec3b& pix = frame.at<cv::Vec3b>(y, x);
          for (int k = 0; k < 3; ++k)
            pix[k] = to_u8((col_a[k] * (1 - wb) + col_b[k] * wb) * p.shade);
        }
      shapes.push_back(shape);
    }
    // Visible masks: what no later (upper) object covers.
    cv::Mat covered = cv::Mat::zeros(h, w, CV_8UC1);
    for (size_t i = plans.size(); i-- > 0;) {
      cv::Mat visible;
      cv::subtract(shapes[i], covered, visible);
      cv::threshold(visible, visible, 0, 1, cv::THRESH_BINARY);
      video.objects[i].masks.push_back(visible);
      cv::bitwise_or(covered, shapes[i], covered);
    }
    std::vector<cv::Mat> regions;
    for (int64_t r = 0; r < num_regions; ++r) {
      cv::Mat m = (region_of == static_cast<uint8_t>(r)) & (covered == 0);
      cv::threshold(m, m, 0, 1, cv::THRESH_BINARY);
      if (cv::countNonZero(m) > 0) regions.push_back(m);
    }
    video.regions.push_back(std::move(regions));
    video.frames.push_back(frame);
  }

  // Audio: 1 s per frame; the sounding objects' class tones (each at its own loudness) mixed,
  // normalised, plus a little white noise.
  const int64_t n = frames * kSynthSampleRate;
  std::vector<double> mix(static_cast<size_t>(n), 0.0);
  for (const auto& p : plans) {
    if (!p.sounding) continue;
    const double gain = rng.uniform(0.7, 1.0);
    const auto tone = render_tone(p.class_index, K, n, rng);
    for (int64_t i = 0; i < n; ++i) mix[static_cast<size_t>(i)] += gain * tone[i];
  }
  double peak = 0;
  for (double v : mix) peak = std::max(peak, std::abs(v));
  const double scale = peak > 0 ? rng.uniform(0.6, 0.85) / peak : 0.0;
  video.audio.resize(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i)
    video.audio[static_cast<size_t>(i)] =
        static_cast<float>(std::clamp(mix[i] * scale + rng.uniform(-0.02, 0.02), -1.0, 1.0));
  return video;
}

cv::Mat synth_ground_truth(const SynthOptions& options, const SynthVideo& video, int64_t frame) {
  COMBO_CHECK(frame >= 0 && frame < static_cast<int64_t>(video.frames.size()),
              "synth_ground_truth: frame ", frame, " of ", video.frames.size());
  const bool semantic = parse_kind(options.dataset) == Kind::kAvss;
  const cv::Mat& f = video.frames[static_cast<size_t>(frame)];
  cv::Mat gt = cv::Mat::zeros(f.rows, f.cols, CV_8UC1);
  for (const auto& o : video.objects)
    if (o.sounding)
      gt.setTo(semantic ? static_cast<double>(o.class_index + 1) : 255.0,
               o.masks[static_cast<size_t>(frame)]);
  return gt;
}

SynthReport synthesize(const SynthOptions& options) {
  validate(options);
  COMBO_CHECK(!options.out.empty(), "combo-synth: no output folder given");
  const Kind kind = parse_kind(options.dataset);
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
  for (size_t s = 0; s < kSplits.size(); ++s)
    for (int64_t i = 0; i < counts[s]; ++i) jobs.push_back({kSplits[s], i});

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
        if (kind == Kind::kS4) {
          write_s4(writer, options, out, v);
        } else if (kind == Kind::kMs3) {
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
  if (kind == Kind::kS4) {
    csv << "name,start,category,split\n";
    for (const auto& r : records)
      csv << csv_escape(r.name) << ",0," << csv_escape(r.group) << "," << r.split << "\n";
    writer.put(out / "s4_meta_data.csv", csv.str());
  } else if (kind == Kind::kMs3) {
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
