#pragma once
/// The dataset interface the loader and the engine read videos through, the options of every
/// dataset, and a small name -> factory registry of dataset sources (config key data.source).
/// Nothing here needs the media stack: the in-memory synthetic task ("synthetic") is always
/// registered; the AVSBench readers ("files", combo_io: OpenCV, FFmpeg, libsndfile) are added by
/// an explicit call, data::register_media_datasets(), which the engine makes in builds with the
/// media stack (COMBO_WITH_MEDIA), so nothing depends on static-initialiser order.
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "combo/data/random.h"
#include "combo/data/sample.h"

namespace combo::data {

/// The subset (shared with the criterion's notion of supervised frames).
using loss::DatasetKind;
/// "s4" | "ms3" | "avss".
std::string to_string(DatasetKind kind);

/// Clip-consistent training augmentation (data/transforms.h, media builds; COMBO_SPEC 8.2).
struct AugmentOptions {
  /// ResizeShortestEdge choices ("choice" sampling); empty = no resize.
  std::vector<int64_t> short_sides = {112, 134, 156, 179, 201, 224, 246, 268,
                                      291, 313, 336, 358, 380, 403, 425, 448};
  /// The long side is capped at this (detectron2 max_size); <= 0 = no cap.
  int64_t max_size = 896;
  /// Absolute random crop size (square); <= 0 = no crop.
  int64_t crop_size = 224;
  /// Pad bottom/right to exactly this size after the crop (<= 0 = no padding);
  /// a larger image is cropped to it (the official negative padding).
  int64_t pad_size = 224;
  /// Photometric jitter of frames (ColorAugSSD).
  bool color_jitter = true;
  /// Also jitter Maskiges (official: yes, each Maskige with its own draw).
  bool jitter_maskige = true;
  /// Horizontal flip probability.
  double flip_prob = 0.5;
  /// Padding values: images and Maskiges (before normalisation), ground truth (ignore).
  uint8_t image_pad_value = 128;
  uint8_t label_pad_value = 255;
};

/// The in-memory synthetic task (data/synthetic_dataset.h): the content of combo-synth, drawn on
/// the fly, nothing read from disk. Config keys data.synthetic.*.
struct SyntheticDataOptions {
  int64_t train_videos = 64;       ///< videos of the train split
  int64_t eval_videos = 16;        ///< videos of every other split (val, test), each its own draw
  int64_t frames = 0;              ///< frames per video; 0 = the dataset's own (S4/MS3 5, AVSS 10)
  int64_t image_size = 0;          ///< frame size; 0 = DatasetOptions::image_size
  int64_t seed = 0;                ///< content seed (a video is a function of seed, split, index)
  int64_t classes = 4;             ///< sound classes (2..70)
  double object_scale = 1.0;       ///< object size factor (combo-synth --object-scale)
  std::string style = "textured";  ///< textured | flat (combo-synth --style)
};

struct DatasetOptions {
  DatasetKind kind = DatasetKind::kS4;
  std::string root;  ///< dataset root, or a parent of it (see resolve_root)
  std::string split = "train";
  std::string audio_source = "wav";  ///< wav | pkl
  bool load_maskige = true;          ///< read Maskiges (the Siam-Encoder needs them)
  bool train = false;    ///< training split semantics (S4 first-frame GT, AVSS crop rules)
  bool augment = false;  ///< apply ClipAugmentation (training; on-disk datasets)
  AugmentOptions augment_options;
  /// AVSS frames: auto (processed_* when present, else raw + resize rules) | processed | raw
  std::string avss_frames = "auto";
  int64_t image_size = 224;  ///< AVSS resize target
  /// A video that fails to load: false = error naming the file; true = the loader skips it,
  /// warns and counts it.
  bool skip_bad = false;
  /// Check that S4/MS3 ground truth holds only 0 and 255.
  bool check_masks = true;
  /// Ablation: replace every clip's audio by digital silence (log-mel log(0.01) everywhere), so
  /// the model cannot use the sound. The audio files are not read.
  bool silence_audio = false;
  /// The in-memory synthetic task (data.source = synthetic).
  SyntheticDataOptions synthetic;
};

/// A split of videos. Implementations: AvsDataset (AVSBench on disk, media builds) and
/// SyntheticDataset (in memory). load() is called from several loader threads at once and must
/// be thread-safe.
class Dataset {
 public:
  virtual ~Dataset() = default;
  virtual int64_t size() const = 0;
  virtual DatasetKind kind() const = 0;
  /// Loads one video; `rng` drives the augmentation (unused without it). Throws combo::Error
  /// naming what is broken.
  virtual VideoSample load(int64_t index, Rng& rng) const = 0;
  /// AVSS class names (71 for AVSBench); S4/MS3: {background, object}.
  virtual const std::vector<std::string>& class_names() const = 0;
  /// Videos left out while indexing because they are broken (skip_bad), with the errors.
  virtual const std::vector<std::string>& index_errors() const;
  /// The loader skips videos that fail to load instead of stopping (DatasetOptions::skip_bad).
  virtual bool skip_bad() const { return false; }
  /// The name of video `index` (for messages).
  virtual std::string video_id(int64_t index) const = 0;
  /// Where the videos come from, for logs: a folder, or "in-memory synthetic ...".
  virtual std::string describe() const = 0;
  /// The audio file of video `index` ("" when there is none, as for in-memory data).
  virtual std::string audio_file(int64_t index) const { return {}; }
};

/// Makes the dataset of a source from its options.
using DatasetFactory = std::function<std::shared_ptr<const Dataset>(const DatasetOptions&)>;

/// Adds (or replaces) a source. Thread-safe.
void register_dataset_source(const std::string& name, DatasetFactory factory);
/// The registered sources, sorted ("synthetic" always; "files" in media builds once
/// register_media_datasets() has run).
std::vector<std::string> dataset_sources();
/// The dataset of `source`; an unknown source is an error naming data.source and the sources
/// there are (and, for "files" in a build without the media stack, saying so).
std::shared_ptr<const Dataset> make_dataset(const std::string& source,
                                            const DatasetOptions& options);

/// Registers the AVSBench on-disk readers as source "files". Defined in combo_io (media builds
/// only); the engine calls it when COMBO_WITH_MEDIA is set. Idempotent.
void register_media_datasets();

}  // namespace combo::data
