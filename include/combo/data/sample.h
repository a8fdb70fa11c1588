#pragma once
/// What the data pipeline hands to the model: one video (VideoSample) and a batch of videos
/// flattened to frames (VideoBatch, the ComboInputs of the architecture plus the ground truth).
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "combo/loss/criterion.h"
#include "combo/model/combo.h"

namespace combo::data {

/// One video as read from disk (after transforms). T = real frames of the video.
struct VideoSample {
  std::string video_id;  ///< S4/MS3: video name; AVSS: uid
  std::string group;     ///< S4: category; MS3: ""; AVSS: label (v1s | v1m | v2)
  int64_t index = -1;    ///< position in the dataset (split order)
  at::Tensor frames;     ///< uint8 [T, 3, H, W] RGB
  at::Tensor maskiges;   ///< uint8 [T, 3, H, W] RGB (undefined when Maskiges are not loaded)
  at::Tensor log_mel;    ///< float32 [T, 1, 96, 64]: the VGGish example of each frame
  /// int64 [T, H, W] ground truth: S4/MS3 0/1, AVSS class ids; 255 = ignore (padding, and every
  /// pixel of frames without ground truth).
  at::Tensor labels;
  at::Tensor has_gt;  ///< bool [T]: the frame carries ground truth (official gt flag)
  /// Frame slots of the official loader (AVSS: 10, with slots >= T padded; S4/MS3: T).
  int64_t slots = 0;
  int64_t orig_height = 0, orig_width = 0;  ///< frame 0 before transforms
  std::vector<std::string> frame_files;     ///< source frame paths, in order
};

/// Videos flattened to frames, N = sum of frames_per_video.
struct VideoBatch {
  model::ComboInputs inputs;  ///< images/maskiges uint8 [N,3,H,W], log_mel [N,1,96,64]
  at::Tensor labels;          ///< int64 [N, H, W], 255 = ignore
  at::Tensor has_gt;          ///< bool [N]
  std::vector<std::string> video_ids;
  std::vector<std::string> groups;
  std::vector<int64_t> indices;  ///< dataset index of each video
  std::vector<int64_t> slots;    ///< per video
  std::vector<std::vector<std::string>> frame_files;
  int64_t size() const { return static_cast<int64_t>(video_ids.size()); }
};

/// Stacks samples (all frames must share one H x W; Maskiges present in all or none).
VideoBatch collate(std::vector<VideoSample> samples);

/// Training targets of a batch (loss::make_targets on the batch's labels, has_gt and videos):
/// the supervised rows (S4 training: first frame of each video; otherwise frames with ground
/// truth) and, for each, one target per distinct label value (255 excluded), masks bool
/// [K, H, W] at the frames' size on the labels' device. The criterion zero-pads them to the
/// padded image size of the model's outputs (official prepare_targets).
using BatchTargets = loss::BatchTargets;
BatchTargets make_targets(const VideoBatch& batch, loss::DatasetKind kind, bool train = true);

/// Moves the tensors of a batch to a device.
VideoBatch to_device(const VideoBatch& batch, const at::Device& device);

}  // namespace combo::data
