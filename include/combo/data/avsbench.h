#pragma once
/// AVSBench datasets (AVSBENCH_SPEC 1-2, COMBO_SPEC 10): the S4, MS3 and AVSS layouts as they
/// are on disk, under AVSBench's roots (`avsbench_data/Single-source`, ...) or COMBO's
/// (`AVS_dataset/AVSBench_object/Single-source`, ...). Counts come from the files.
#include <opencv2/core/mat.hpp>

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "combo/data/sample.h"
#include "combo/data/transforms.h"

namespace combo::data {

/// The subset (shared with the criterion's notion of supervised frames).
using loss::DatasetKind;
/// "s4" | "ms3" | "avss".
std::string to_string(DatasetKind kind);

/// Where each video's files are.
struct VideoRecord {
  std::string id;     ///< S4/MS3 name, AVSS uid
  std::string group;  ///< S4 category, AVSS label (v1s/v1m/v2), MS3 ""
  std::string split;
  std::vector<std::string> frames;    ///< frame files in order
  std::vector<std::string> gts;       ///< ground-truth files (may be fewer than frames)
  std::vector<std::string> maskiges;  ///< Maskige files (one per frame; may not exist on disk)
  std::string wav;                    ///< audio file
  std::string pkl;                    ///< precomputed log-mel file
  double start = 0.0;                 ///< S4 CSV start column
};

struct DatasetOptions {
  DatasetKind kind = DatasetKind::kS4;
  std::string root;  ///< dataset root, or a parent of it (see resolve_root)
  std::string split = "train";
  std::string audio_source = "wav";  ///< wav | pkl
  bool load_maskige = true;          ///< read Maskiges (the Siam-Encoder needs them)
  bool train = false;    ///< training split semantics (S4 first-frame GT, AVSS crop rules)
  bool augment = false;  ///< apply ClipAugmentation (training)
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
};

/// Finds the folder that holds `s4_data/` (S4), `ms3_data/` (MS3) or `metadata.csv` (AVSS)
/// from `root` or its AVSBench/COMBO sub-folders. Throws combo::Error listing what was tried.
std::string resolve_root(DatasetKind kind, const std::string& root);

class AvsDataset {
 public:
  explicit AvsDataset(DatasetOptions options);
  int64_t size() const { return static_cast<int64_t>(records_.size()); }
  const VideoRecord& record(int64_t index) const;
  const std::vector<VideoRecord>& records() const { return records_; }
  const DatasetOptions& options() const { return options_; }
  const std::string& root() const { return root_; }
  /// AVSS class names from label2idx.json (71 for AVSBench); S4/MS3: {background, object}.
  const std::vector<std::string>& class_names() const { return class_names_; }
  /// Videos left out while indexing because their files are broken (skip_bad), with the errors.
  const std::vector<std::string>& index_errors() const { return index_errors_; }

  /// Loads one video; `rng` drives the augmentation (unused without it). Throws combo::Error
  /// naming the file (and the frame) on anything broken.
  VideoSample load(int64_t index, Rng& rng) const;

 private:
  DatasetOptions options_;
  std::string root_;
  std::vector<VideoRecord> records_;
  std::vector<std::string> class_names_;
  std::vector<std::string> index_errors_;
  std::unique_ptr<ClipAugmentation> augmentation_;
};

/// The 71-colour AVSS palette (`get_v2_pallete`, bit-interleaved colour code): RGB per class.
std::vector<std::array<uint8_t, 3>> avss_palette(int64_t num_classes = 71);

/// AVSS `labels_rgb` colour map -> class ids (first matching palette colour; no match -> 0).
/// rgb CV_8UC3 -> CV_8UC1.
cv::Mat avss_color_to_labels(const cv::Mat& rgb);

}  // namespace combo::data
