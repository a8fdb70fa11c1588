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

#include "combo/data/dataset.h"
#include "combo/data/sample.h"
#include "combo/data/transforms.h"

namespace combo::data {

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

/// Finds the folder that holds `s4_data/` (S4), `ms3_data/` (MS3) or `metadata.csv` (AVSS)
/// from `root` or its AVSBench/COMBO sub-folders. Throws combo::Error listing what was tried.
std::string resolve_root(DatasetKind kind, const std::string& root);

/// The AVSBench layout on disk (data.source = files). Registered by register_media_datasets().
class AvsDataset final : public Dataset {
 public:
  explicit AvsDataset(DatasetOptions options);
  int64_t size() const override { return static_cast<int64_t>(records_.size()); }
  DatasetKind kind() const override { return options_.kind; }
  const VideoRecord& record(int64_t index) const;
  const std::vector<VideoRecord>& records() const { return records_; }
  const DatasetOptions& options() const { return options_; }
  const std::string& root() const { return root_; }
  /// AVSS class names from label2idx.json (71 for AVSBench); S4/MS3: {background, object}.
  const std::vector<std::string>& class_names() const override { return class_names_; }
  /// Videos left out while indexing because their files are broken (skip_bad), with the errors.
  const std::vector<std::string>& index_errors() const override { return index_errors_; }
  bool skip_bad() const override { return options_.skip_bad; }
  std::string video_id(int64_t index) const override { return record(index).id; }
  std::string describe() const override { return root_; }
  std::string audio_file(int64_t index) const override { return record(index).wav; }

  /// Loads one video; `rng` drives the augmentation (unused without it). Throws combo::Error
  /// naming the file (and the frame) on anything broken.
  VideoSample load(int64_t index, Rng& rng) const override;

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
