#pragma once
/// Dataset evaluators with reset / process / evaluate over per-video predictions, reducible
/// across processes through state() / merge() (issue 8 item 3).
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "combo/core/state_dict.h"
#include "combo/metrics/binary.h"
#include "combo/metrics/semantic.h"

namespace combo::metrics {

/// One per-video CSV row: the video id and its metric values by name.
struct VideoRow {
  std::string video_id;
  std::map<std::string, double> values;
};

/// What evaluate() returns: dataset metrics by name, the protocol they follow, per-video rows.
struct EvalResult {
  std::string protocol;
  std::map<std::string, double> metrics;
  std::vector<VideoRow> videos;
};

/// The per-video rows as CSV text: header `video_id,<value names sorted>`, one line per video.
std::string videos_csv(const EvalResult& result);

/// An evaluator's accumulated state as plain data (ids + named tensors) so it can be gathered
/// from other processes and merged.
struct EvaluatorState {
  std::vector<std::string> video_ids;
  TensorDict tensors;
};

/// Accumulates per-video predictions and reduces them to dataset metrics.
class Evaluator {
 public:
  virtual ~Evaluator() = default;
  /// Forgets everything processed.
  virtual void reset() = 0;
  /// Adds one video: pred and target as the concrete evaluator documents.
  virtual void process(const at::Tensor& pred, const at::Tensor& target,
                       const std::string& video_id) = 0;
  /// The metrics over every processed (and merged) video.
  virtual EvalResult evaluate() const = 0;
  /// The accumulated state.
  virtual EvaluatorState state() const = 0;
  /// Appends another evaluator's state after the videos held here (order matters for the
  /// `avsbench` binary protocol: merge parts in dataset order).
  virtual void merge(const EvaluatorState& other) = 0;
  /// The protocol name reported with the metrics.
  virtual std::string protocol() const = 0;
};

/// How binary (S4 / MS3) scores are reduced over the dataset.
enum class BinaryProtocol {
  /// TPAVI / AVSegFormer test loops: consecutive test batches of `batch_videos` videos in
  /// processing order; mIoU = float32 mean of batch means, F = mean of per-batch maxima.
  kAvsbench,
  /// COMBO `SemSegEvaluator`: per video (threshold chosen per video), then mean over videos.
  kCombo,
};

/// "avsbench" / "combo".
std::string to_string(BinaryProtocol protocol);
/// Parses "avsbench" / "combo"; throws combo::Error naming the accepted values otherwise.
BinaryProtocol parse_binary_protocol(const std::string& name);

struct BinaryEvaluatorOptions {
  BinaryProtocol protocol = BinaryProtocol::kCombo;
  /// Videos per test batch for the avsbench protocol (TPAVI 4, AVSegFormer 2).
  int64_t batch_videos = 4;
  /// How [T, H, W] predictions are read; [T, 2, H, W] scores always mean softmax(.)[:, 1].
  BinaryInput input = BinaryInput::kLogits;
};

/// S4 / MS3 evaluator. process(pred [T, H, W] logits or probabilities, or [T, 2, H, W] two-class
/// scores; target [T, H, W] in {0, 1}). Metrics: "mIoU", "F", "num_videos", "num_batches";
/// per-video rows: "mIoU", "F", "frames".
class BinaryEvaluator : public Evaluator {
 public:
  explicit BinaryEvaluator(BinaryEvaluatorOptions options = {});
  void reset() override;
  void process(const at::Tensor& pred, const at::Tensor& target,
               const std::string& video_id) override;
  EvalResult evaluate() const override;
  EvaluatorState state() const override;
  void merge(const EvaluatorState& other) override;
  std::string protocol() const override;

 private:
  struct Video {
    std::string id;
    at::Tensor frame_iou;  // [T] float32
    at::Tensor curves;     // [T, 255] float32
    at::Tensor nonempty;   // [T] bool
  };
  BinaryEvaluatorOptions options_;
  std::vector<Video> videos_;
};

struct SemanticEvaluatorOptions {
  int64_t num_classes = kAvssNumClasses;
  SemanticInput input = SemanticInput::kLogits;
};

/// AVSS evaluator with global per-class accumulation. process(pred [T, C, H, W] scores or
/// [T, H, W] labels; target [T, H, W], 255 = ignore). Feed all slots the official loop scores,
/// padded ones included. Metrics: "mIoU", "F", "mIoU_drop_last_class" and
/// "F_drop_last_class" (the official `miou_noBg` / `F_score_noBg`, which drop the LAST class,
/// not background), "num_classes_present", "num_videos". Per-video rows: "mIoU" and "F" as
/// means over the classes present in that video (not an official figure), "frames".
class SemanticEvaluator : public Evaluator {
 public:
  explicit SemanticEvaluator(SemanticEvaluatorOptions options = {});
  void reset() override;
  void process(const at::Tensor& pred, const at::Tensor& target,
               const std::string& video_id) override;
  EvalResult evaluate() const override;
  EvaluatorState state() const override;
  void merge(const EvaluatorState& other) override;
  std::string protocol() const override;
  /// The global per-class sums [C] float32.
  const at::Tensor& ious_sum() const { return ious_sum_; }
  const at::Tensor& fscores_sum() const { return fscores_sum_; }
  const at::Tensor& cls_count() const { return cls_count_; }

 private:
  SemanticEvaluatorOptions options_;
  at::Tensor ious_sum_;
  at::Tensor fscores_sum_;
  at::Tensor cls_count_;
  std::vector<VideoRow> rows_;
};

}  // namespace combo::metrics
