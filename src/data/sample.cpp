#include "combo/data/sample.h"

#include <ATen/ATen.h>

#include "combo/core/check.h"

namespace combo::data {

VideoBatch collate(std::vector<VideoSample> samples) {
  COMBO_CHECK(!samples.empty(), "collate: no samples");
  VideoBatch b;
  std::vector<at::Tensor> frames, maskiges, mels, labels, has_gt;
  const bool with_maskige = samples.front().maskiges.defined();
  const auto h = samples.front().frames.size(2), w = samples.front().frames.size(3);
  for (auto& s : samples) {
    COMBO_CHECK(s.frames.size(2) == h && s.frames.size(3) == w, "collate: video ", s.video_id,
                " has frames of ", s.frames.size(2), "x", s.frames.size(3), ", the batch ", h, "x",
                w);
    COMBO_CHECK(s.maskiges.defined() == with_maskige,
                "collate: Maskiges present for some videos only (", s.video_id, ")");
    const int64_t t = s.frames.size(0);
    COMBO_CHECK(s.log_mel.size(0) == t && s.labels.size(0) == t && s.has_gt.size(0) == t,
                "collate: video ", s.video_id, " has inconsistent frame counts");
    frames.push_back(s.frames);
    if (with_maskige) maskiges.push_back(s.maskiges);
    mels.push_back(s.log_mel);
    labels.push_back(s.labels);
    has_gt.push_back(s.has_gt);
    b.inputs.frames_per_video.push_back(t);
    b.video_ids.push_back(std::move(s.video_id));
    b.groups.push_back(std::move(s.group));
    b.indices.push_back(s.index);
    b.slots.push_back(s.slots);
    b.frame_files.push_back(std::move(s.frame_files));
  }
  b.inputs.images = at::cat(frames);
  if (with_maskige) b.inputs.maskiges = at::cat(maskiges);
  b.inputs.log_mel = at::cat(mels);
  b.labels = at::cat(labels);
  b.has_gt = at::cat(has_gt);
  return b;
}

BatchTargets make_targets(const VideoBatch& batch, loss::DatasetKind kind, bool train) {
  return loss::make_targets(batch.labels, batch.has_gt, batch.inputs.frames_per_video, kind, train);
}

VideoBatch to_device(const VideoBatch& batch, const at::Device& device) {
  VideoBatch b = batch;
  b.inputs.images = batch.inputs.images.to(device);
  if (batch.inputs.maskiges.defined()) b.inputs.maskiges = batch.inputs.maskiges.to(device);
  b.inputs.log_mel = batch.inputs.log_mel.to(device);
  b.labels = batch.labels.to(device);
  b.has_gt = batch.has_gt.to(device);
  return b;
}

}  // namespace combo::data
