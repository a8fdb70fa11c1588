#include "combo/data/synthetic_scene.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <iomanip>
#include <random>
#include <sstream>

#include "combo/core/check.h"
#include "combo/maskige/encode.h"

namespace combo::data {
namespace {

constexpr double kPi = 3.14159265358979323846;

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

// AVSS subset of a video: a fixed rotation over the three, shifted per split, so even one video
// per split gives one of each.
std::string avss_subset(int64_t split, int64_t index) {
  static const std::array<const char*, 3> kLabels = {"v1s", "v1m", "v2"};
  return kLabels[static_cast<size_t>((index + split) % 3)];
}

}  // namespace

void validate_synth_options(const SynthOptions& o) {
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
  COMBO_CHECK(o.frames >= 0, "combo-synth: frames must be >= 0 (0 = the AVSBench rule), got ",
              o.frames);
  COMBO_CHECK(o.threads >= 0, "combo-synth: threads must be >= 0, got ", o.threads);
}

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

std::string synth_video_name(const SynthOptions& options, const std::string& split, int64_t index) {
  const Kind kind = parse_kind(options.dataset);
  std::ostringstream idx;
  idx << std::setw(4) << std::setfill('0') << index;
  const std::string prefix = kind == Kind::kS4    ? std::string("s4")
                             : kind == Kind::kMs3 ? std::string("ms3")
                                                  : avss_subset(split_id(split), index);
  return prefix + "_" + split + "_" + idx.str();
}

SynthScene synth_scene(const SynthOptions& options, const std::string& split, int64_t index) {
  validate_synth_options(options);
  const Kind kind = parse_kind(options.dataset);
  const int64_t sid = split_id(split);
  const int64_t K = options.num_classes;
  Random rng(video_seed(options.seed, sid, index));

  SynthScene video;
  video.split = split;
  video.index = index;
  int64_t width = options.size, height = options.size, frames = 5;
  int64_t max_sounding = 1;
  if (kind == Kind::kS4) {
    video.name = synth_video_name(options, split, index);
  } else if (kind == Kind::kMs3) {
    video.name = synth_video_name(options, split, index);
    max_sounding = 2;
  } else {
    video.group = avss_subset(sid, index);
    video.name = synth_video_name(options, split, index);
    width = std::lround(1.5 * static_cast<double>(options.size));
    frames = video.group == "v2" ? 10 : 5;
    max_sounding = video.group == "v1s" ? 1 : 2;
  }

  if (options.frames > 0) frames = options.frames;
  video.height = height;
  video.width = width;

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

  const int64_t w = width, h = height;
  const bool flat = options.style == "flat";
  video.objects.resize(plans.size());
  for (size_t i = 0; i < plans.size(); ++i) {
    video.objects[i].class_index = plans[i].class_index;
    video.objects[i].sounding = plans[i].sounding;
    video.objects[i].masks = at::zeros({frames, h, w}, at::kByte);
  }
  video.frames = at::empty({frames, h, w, 3}, at::kByte);
  std::vector<uint8_t> region_of(static_cast<size_t>(h * w));
  std::vector<uint8_t> covered(static_cast<size_t>(h * w));
  std::vector<std::vector<uint8_t>> shapes(plans.size(), std::vector<uint8_t>(h * w));
  for (int64_t t = 0; t < frames; ++t) {
    const double dt = static_cast<double>(t);
    uint8_t* frame = video.frames[t].data_ptr<uint8_t>();
    std::vector<std::array<double, 2>> seed_pos;
    for (const auto& s : seeds)
      seed_pos.push_back({reflect(s.x + s.vx * dt, 0.0, static_cast<double>(width)),
                          reflect(s.y + s.vy * dt, 0.0, static_cast<double>(height))});
    for (int64_t y = 0; y < h; ++y)
      for (int64_t x = 0; x < w; ++x) {
        const double px = x + 0.5, py = y + 0.5;
        size_t best = 0;
        double best_d = 1e300;
        for (size_t s = 0; s < seed_pos.size(); ++s) {
          const double d = std::hypot(px - seed_pos[s][0], py - seed_pos[s][1]);
          if (d < best_d) best_d = d, best = s;
        }
        region_of[y * w + x] = static_cast<uint8_t>(best);
        double f = 0.5;
        if (!flat)
          for (const auto& wv : waves)
            f += 0.25 * std::sin(wv.kx * px + wv.ky * py + wv.w * dt + wv.phase);
        // Drawn in both styles so the audio after it is the same.
        const double noise = flat ? (rng.uniform(-6.0, 6.0), 0.0) : rng.uniform(-6.0, 6.0);
        uint8_t* pix = frame + (y * w + x) * 3;
        for (int c = 0; c < 3; ++c)
          pix[c] = to_u8((bg_a[c] * (1 - f) + bg_b[c] * f) * seeds[best].tint[c] + noise);
      }
    for (size_t i = 0; i < plans.size(); ++i) {
      const ObjectPlan& p = plans[i];
      std::fill(shapes[i].begin(), shapes[i].end(), 0);
      const ClassLook look = class_look(p.class_index);
      auto col_a = hsv_to_rgb(look.hue + p.hue_jitter, 0.8, 0.95);
      auto col_b = hsv_to_rgb(look.hue + 0.45 + p.hue_jitter, 0.7, 0.45);
      const auto c = p.center(t, width, height);
      const double angle = p.angle + p.spin * dt, ca = std::cos(angle), sa = std::sin(angle);
      const int64_t x_lo =
          std::max<int64_t>(0, static_cast<int64_t>(std::floor(c[0] - p.radius - 1)));
      const int64_t x_hi =
          std::min<int64_t>(w - 1, static_cast<int64_t>(std::ceil(c[0] + p.radius + 1)));
      const int64_t y_lo =
          std::max<int64_t>(0, static_cast<int64_t>(std::floor(c[1] - p.radius - 1)));
      const int64_t y_hi =
          std::min<int64_t>(h - 1, static_cast<int64_t>(std::ceil(c[1] + p.radius + 1)));
      for (int64_t y = y_lo; y <= y_hi; ++y)
        for (int64_t x = x_lo; x <= x_hi; ++x) {
          const double dx = (x + 0.5 - c[0]) / p.radius, dy = (y + 0.5 - c[1]) / p.radius;
          const double u = ca * dx + sa * dy, v = -sa * dx + ca * dy;
          if (!inside_shape(look.shape, u, v)) continue;
          shapes[i][y * w + x] = 1;
          const double wb = flat ? 0.0 : texture_weight(look, u, v, p.phase_u, p.phase_v, p.salt);
          uint8_t* pix = frame + (y * w + x) * 3;
          for (int k = 0; k < 3; ++k)
            pix[k] = to_u8((col_a[k] * (1 - wb) + col_b[k] * wb) * p.shade);
        }
    }
    // Visible masks: what no later (upper) object covers.
    std::fill(covered.begin(), covered.end(), 0);
    for (size_t i = plans.size(); i-- > 0;) {
      uint8_t* visible = video.objects[i].masks[t].data_ptr<uint8_t>();
      for (int64_t k = 0; k < h * w; ++k) {
        visible[k] = (shapes[i][k] && !covered[k]) ? 1 : 0;
        covered[k] = covered[k] | shapes[i][k];
      }
    }
    std::vector<at::Tensor> regions;
    for (int64_t r = 0; r < num_regions; ++r) {
      at::Tensor m = at::empty({h, w}, at::kByte);
      uint8_t* mp = m.data_ptr<uint8_t>();
      bool any = false;
      for (int64_t k = 0; k < h * w; ++k) {
        mp[k] = (region_of[k] == static_cast<uint8_t>(r) && !covered[k]) ? 1 : 0;
        any = any || mp[k];
      }
      if (any) regions.push_back(m);
    }
    video.regions.push_back(std::move(regions));
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

at::Tensor synth_scene_ground_truth(const SynthOptions& options, const SynthScene& scene,
                                    int64_t frame) {
  COMBO_CHECK(frame >= 0 && frame < scene.num_frames(), "synth_scene_ground_truth: frame ", frame,
              " of ", scene.num_frames());
  const bool semantic = parse_kind(options.dataset) == Kind::kAvss;
  at::Tensor gt = at::zeros({scene.height, scene.width}, at::kByte);
  for (const auto& o : scene.objects)
    if (o.sounding)
      gt.masked_fill_(o.masks[frame].to(at::kBool),
                      semantic ? static_cast<int64_t>(o.class_index + 1) : int64_t{255});
  return gt;
}

std::vector<at::Tensor> synth_frame_masks(const SynthScene& scene, int64_t frame) {
  COMBO_CHECK(frame >= 0 && frame < scene.num_frames(), "synth_frame_masks: frame ", frame, " of ",
              scene.num_frames());
  std::vector<at::Tensor> masks;
  for (const auto& o : scene.objects) {
    const at::Tensor m = o.masks[frame];
    if (m.any().item<bool>()) masks.push_back(m);
  }
  for (const auto& r : scene.regions[static_cast<size_t>(frame)]) masks.push_back(r);
  return masks;
}

at::Tensor synth_maskige(const std::vector<at::Tensor>& masks) {
  COMBO_CHECK(!masks.empty(), "synth_maskige: a frame without any mask");
  return maskige::colorize_labels(maskige::masks_to_labels(at::stack(masks).to(at::kByte)))
      .contiguous();
}

}  // namespace combo::data
