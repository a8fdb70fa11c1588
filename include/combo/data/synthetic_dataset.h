#pragma once
/// The in-memory synthetic S4 / MS3 / AVSS task (data.source = synthetic): the content of
/// combo-synth (data/synthetic_scene.h: moving objects of different sound classes, the sound
/// decides which one is annotated) drawn on the fly in load(), nothing read from disk and no
/// media library needed. A video is a function of (data.synthetic.seed, split, index) alone;
/// nothing is kept between calls, so a large split costs no memory up front.
///
/// What a video holds, as AvsDataset reads a combo-synth tree of the same content:
/// - S4: frame 0 annotated in the train split, every frame in val/test; labels 0/1.
/// - MS3: every frame annotated; labels 0/1 (union of the sounding objects).
/// - AVSS: class ids of AVSBench-semantic's 71-class layout (background 0, sounding object of
///   class c -> c + 1); train v1s videos annotated on frame 0 only, the others on every frame;
///   10 frame slots. Scenes are drawn at image_size x 1.5 image_size and brought to image_size
///   x image_size by COMBO's offline rules (train: centre crop; val/test: resize, nearest for
///   labels and masks).
/// - Maskiges from the objects and background regions of each frame, as combo-synth writes them.
/// - Log-mel from the generated waveform by the LibTorch VGGish front end (audio/log_mel.h).
/// No augmentation (the transforms need OpenCV): the same videos in every build.
#include <cstdint>
#include <string>
#include <vector>

#include "combo/data/dataset.h"
#include "combo/data/synthetic_scene.h"

namespace combo::data {

class SyntheticDataset final : public Dataset {
 public:
  /// Uses kind, split (train | val | test), train, load_maskige, image_size, silence_audio and
  /// synthetic; throws combo::Error naming the data.synthetic key of a bad value.
  explicit SyntheticDataset(DatasetOptions options);

  int64_t size() const override { return size_; }
  DatasetKind kind() const override { return options_.kind; }
  VideoSample load(int64_t index, Rng& rng) const override;
  const std::vector<std::string>& class_names() const override { return class_names_; }
  std::string video_id(int64_t index) const override;
  std::string describe() const override;

  /// What the scenes are drawn with (combo-synth's options of the same content).
  const SynthOptions& synth_options() const { return synth_; }
  /// Frames per video and their size after processing.
  int64_t frames_per_video() const { return frames_; }
  int64_t image_size() const { return image_size_; }

 private:
  DatasetOptions options_;
  SynthOptions synth_;
  int64_t size_ = 0;
  int64_t frames_ = 0;
  int64_t image_size_ = 0;
  std::vector<std::string> class_names_;
};

}  // namespace combo::data
