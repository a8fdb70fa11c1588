#include "combo/data/synthetic_dataset.h"

#include <ATen/ATen.h>

#include <cmath>
#include <sstream>

#include "combo/audio/log_mel.h"
#include "combo/core/check.h"

namespace combo::data {
namespace {

// Nearest-exact resampling indices (OpenCV INTER_NEAREST_EXACT): destination x takes source
// min(floor((x + 0.5) * in / out), in - 1).
at::Tensor nearest_index(int64_t in, int64_t out) {
  at::Tensor idx = at::empty({out}, at::kLong);
  auto* p = idx.data_ptr<int64_t>();
  for (int64_t x = 0; x < out; ++x)
    p[x] = std::min<int64_t>(
        in - 1,
        static_cast<int64_t>(std::floor((static_cast<double>(x) + 0.5) * static_cast<double>(in) /
                                        static_cast<double>(out))));
  return idx;
}

// COMBO's offline AVSS geometry (COMBO_SPEC 10.5) on [..., H, W] uint8 tensors: train = short
// side to `size` then a centre crop (offset round-half-even((L - size) / 2)); val/test = resize
// to size x size. Frames are averaged over the source area, labels and masks take the nearest.
at::Tensor avss_geometry(const at::Tensor& x, int64_t size, bool train, bool nearest) {
  const int64_t h = x.size(-2), w = x.size(-1);
  if (h == size && w == size) return x;
  int64_t oh = size, ow = size;
  if (train) {
    if (w > h) {
      ow = static_cast<int64_t>(1.0 * static_cast<double>(w) * static_cast<double>(size) /
                                static_cast<double>(h));
    } else {
      oh = static_cast<int64_t>(1.0 * static_cast<double>(h) * static_cast<double>(size) /
                                static_cast<double>(w));
    }
  }
  at::Tensor r = x;
  if (oh != h || ow != w) {
    if (nearest) {
      r = x.index_select(-2, nearest_index(h, oh)).index_select(-1, nearest_index(w, ow));
    } else {
      const auto shape = x.sizes().vec();
      at::Tensor f = x.reshape({-1, 1, h, w}).to(at::kFloat);
      f = at::adaptive_avg_pool2d(f, {oh, ow}).round_().clamp_(0, 255);
      auto out_shape = shape;
      out_shape[out_shape.size() - 2] = oh;
      out_shape[out_shape.size() - 1] = ow;
      r = f.to(at::kByte).reshape(out_shape);
    }
  }
  if (!train) return r.contiguous();
  const int64_t x1 = static_cast<int64_t>(std::nearbyint(static_cast<double>(ow - size) / 2.0));
  const int64_t y1 = static_cast<int64_t>(std::nearbyint(static_cast<double>(oh - size) / 2.0));
  return r.narrow(-2, y1, size).narrow(-1, x1, size).contiguous();
}

}  // namespace

SyntheticDataset::SyntheticDataset(DatasetOptions options) : options_(std::move(options)) {
  const SyntheticDataOptions& s = options_.synthetic;
  const bool avss = options_.kind == DatasetKind::kAVSS;
  COMBO_CHECK(options_.split == "train" || options_.split == "val" || options_.split == "test",
              "data.source=synthetic: split '", options_.split,
              "' is not one of train, val, test (data.train_split / val_split / test_split)");
  size_ = options_.split == "train" ? s.train_videos : s.eval_videos;
  COMBO_CHECK(size_ >= 1, "data.synthetic.",
              options_.split == "train" ? "train_videos" : "eval_videos", " must be >= 1, got ",
              size_);
  frames_ = s.frames > 0 ? s.frames : (avss ? 10 : 5);
  COMBO_CHECK(s.frames >= 0,
              "data.synthetic.frames must be >= 0 (0 = 5 for S4/MS3, 10 for AVSS), got ", s.frames);
  COMBO_CHECK(!avss || frames_ <= 10,
              "data.synthetic.frames: AVSS videos have at most 10 frames (the official loader's "
              "10 slots), got ",
              frames_);
  image_size_ = s.image_size > 0 ? s.image_size : options_.image_size;
  COMBO_CHECK(s.image_size >= 0,
              "data.synthetic.image_size must be >= 0 (0 = data.image_size), got ", s.image_size);
  COMBO_CHECK(image_size_ >= 16,
              "data.synthetic.image_size (or data.image_size) must be >= 16, got ", image_size_);
  COMBO_CHECK(s.classes >= 2 && s.classes <= 70, "data.synthetic.classes must be in [2, 70], got ",
              s.classes);
  COMBO_CHECK(s.style == "textured" || s.style == "flat",
              "data.synthetic.style must be textured or flat, got '", s.style, "'");
  COMBO_CHECK(s.object_scale > 0 && s.object_scale <= 2.5,
              "data.synthetic.object_scale must be in (0, 2.5], got ", s.object_scale);
  synth_.dataset = to_string(options_.kind);
  synth_.size = image_size_;
  synth_.num_classes = s.classes;
  synth_.seed = s.seed;
  synth_.object_scale = s.object_scale;
  synth_.style = s.style;
  synth_.frames = frames_;
  synth_.write_raw_videos = false;
  validate_synth_options(synth_);
  if (avss) {
    class_names_ = {"background"};
    for (const auto& n : synth_class_names(70)) class_names_.push_back(n);
  } else {
    class_names_ = {"background", "object"};
  }
}

std::string SyntheticDataset::video_id(int64_t index) const {
  COMBO_CHECK(index >= 0 && index < size_, "synthetic dataset index ", index, " out of range [0, ",
              size_, ")");
  return synth_video_name(synth_, options_.split, index);
}

std::string SyntheticDataset::describe() const {
  std::ostringstream os;
  os << "in-memory synthetic " << synth_.dataset << " (seed " << synth_.seed << ", "
     << synth_.num_classes << " classes, " << frames_ << " frames at " << image_size_ << " px)";
  return os.str();
}

VideoSample SyntheticDataset::load(int64_t index, Rng& /*rng*/) const {
  COMBO_CHECK(index >= 0 && index < size_, "synthetic dataset index ", index, " out of range [0, ",
              size_, ")");
  const bool avss = options_.kind == DatasetKind::kAVSS;
  const SynthScene scene = synth_scene(synth_, options_.split, index);
  const int64_t t = scene.num_frames();
  const int64_t s = image_size_;
  auto geometry = [&](const at::Tensor& x, bool nearest) {
    return avss ? avss_geometry(x, s, options_.train, nearest) : x.contiguous();
  };

  VideoSample out;
  out.video_id = scene.name;
  out.group = scene.group;
  out.index = index;
  out.frames = geometry(scene.frames.permute({0, 3, 1, 2}), false);
  out.orig_height = out.frames.size(2);
  out.orig_width = out.frames.size(3);

  // Ground truth: which frames carry it (AVSBENCH_SPEC 1.7 / 2.3 with COMBO's v1s rule).
  std::vector<bool> has_gt(static_cast<size_t>(t), true);
  if (options_.train && (options_.kind == DatasetKind::kS4 || (avss && scene.group == "v1s")))
    for (int64_t k = 1; k < t; ++k) has_gt[static_cast<size_t>(k)] = false;
  out.labels = at::full({t, out.orig_height, out.orig_width}, 255, at::kLong);
  out.has_gt = at::zeros({t}, at::kBool);
  for (int64_t k = 0; k < t; ++k) {
    if (!has_gt[static_cast<size_t>(k)]) continue;
    out.has_gt[k] = true;
    at::Tensor gt = geometry(synth_scene_ground_truth(synth_, scene, k), true).to(at::kLong);
    // S4/MS3: COMBO's mapper turns 0/255 masks into 0/1.
    if (!avss) gt = gt.div(255, "floor");
    out.labels[k].copy_(gt);
  }

  if (options_.load_maskige) {
    std::vector<at::Tensor> maskiges;
    for (int64_t k = 0; k < t; ++k) {
      // COMBO computes the AVSS masks on the processed frames.
      std::vector<at::Tensor> masks;
      for (const auto& m : synth_frame_masks(scene, k)) {
        const at::Tensor p = geometry(m, true);
        if (p.any().item<bool>()) masks.push_back(p);
      }
      if (masks.empty()) masks.push_back(at::ones({out.orig_height, out.orig_width}, at::kByte));
      maskiges.push_back(synth_maskige(masks).permute({2, 0, 1}));
    }
    out.maskiges = at::stack(maskiges).contiguous();
  }

  // Audio: one VGGish example per frame, from the generated waveform.
  if (options_.silence_audio) {
    out.log_mel = at::full({t, 1, audio::kExampleWindowFrames, audio::kNumMelBins},
                           std::log(audio::kLogOffset), at::kFloat);
  } else {
    const at::Tensor wave = at::from_blob(const_cast<float*>(scene.audio.data()),
                                          {static_cast<int64_t>(scene.audio.size())}, at::kFloat)
                                .to(at::kDouble);
    at::Tensor mel = audio::waveform_to_examples(wave, kSynthSampleRate);
    const audio::PadMode pad = avss ? audio::PadMode::kZeros : audio::PadMode::kRepeatLast;
    mel = audio::pad_examples(mel, std::max<int64_t>(t, mel.size(0)), pad);
    out.log_mel = mel.slice(0, 0, t).to(at::kFloat).contiguous();
  }
  out.slots = avss ? 10 : t;
  for (int64_t k = 0; k < t; ++k)
    out.frame_files.push_back("synthetic:" + scene.name + "/" + std::to_string(k));
  return out;
}

}  // namespace combo::data
