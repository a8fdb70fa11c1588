#pragma once
/// Running a model over an evaluation split and reducing its predictions with the official
/// metrics (S4/MS3 J&F under the `combo` or `avsbench` protocol, AVSS mIoU/F over 71 classes).
#include <functional>
#include <memory>
#include <string>

#include "combo/data/loader.h"
#include "combo/engine/config.h"
#include "combo/metrics/evaluator.h"
#include "combo/model/combo.h"

namespace combo::engine {

/// The evaluator the config asks for: BinaryEvaluator (S4/MS3, test.metric_protocol,
/// test.batch_size videos per avsbench batch) or SemanticEvaluator (AVSS, model.num_classes).
std::unique_ptr<metrics::Evaluator> make_evaluator(const Config& config);

/// One evaluated video, handed to `on_video` (for overlays and per-video files).
struct VideoPrediction {
  std::string video_id;
  std::string group;
  int64_t index = -1;  ///< dataset index
  std::vector<std::string> frame_files;
  at::Tensor frames;  ///< uint8 [T, 3, H, W] as fed to the model
  at::Tensor scores;  ///< float [T, C, H, W] semantic score maps (CPU)
  at::Tensor masks;   ///< S4/MS3: bool [T, H, W]; AVSS: int64 [T, H, W] labels (CPU)
  at::Tensor labels;  ///< int64 [T, H, W] ground truth (255 = none)
  at::Tensor has_gt;  ///< bool [T]
};

struct EvaluationOptions {
  at::Device device = at::kCPU;
  /// Called after every video, in dataset order.
  std::function<void(const VideoPrediction&)> on_video;
  /// Log a progress line (videos, videos/s, ETA) every this many videos (0 = never).
  int64_t log_every = 0;
  /// Stop after this many videos (< 0 = all).
  int64_t max_videos = -1;
};

/// Feeds every video of `loader` through `model` (eval mode, inference mode) into `evaluator`.
/// S4/MS3: the frames with ground truth, scores [T, 2, H, W]; AVSS: every frame plus the padded
/// slots of the official loop (an all-background prediction against background), so the figures
/// equal the official ones. Returns the number of videos processed. An exception leaves what
/// was processed in `evaluator`.
int64_t run_evaluation(model::ComboModelImpl& model, data::DataLoader& loader,
                       metrics::Evaluator& evaluator, loss::DatasetKind kind,
                       const EvaluationOptions& options = {});

class ProcessGroup;

/// Distributed evaluation: every rank's evaluator state is gathered and merged, in rank order,
/// into every rank's `evaluator` (which then holds the whole split: with contiguous shards, in
/// dataset order, so the avsbench protocol's batches are the single-process ones).
void merge_across_ranks(metrics::Evaluator& evaluator, ProcessGroup& group);

}  // namespace combo::engine
