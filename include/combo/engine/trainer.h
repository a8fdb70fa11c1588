#pragma once
/// The training loop (detectron2's SimpleTrainer/AMPTrainer plus its default hooks), over an
/// abstract batch source so it runs without data files.
///
/// One iteration t (0-based, t < max_iter):
///   1. lr of every group = base_lr_g * schedule(t)
///   2. batch = source.next() (data_time), moved to the model's device
///   3. model.train(); outputs = model(inputs) (under autocast with AMP on CUDA)
///   4. losses = criterion(criterion_inputs(outputs), targets, layout); non-finite -> stop with an
///      error naming t and every loss, or (non_finite = "skip") count a skip and do no update
///   5. zero_grad (to None); backward of the sum (scaled with fp16 AMP; gradients unscaled)
///   6. clip gradients; AdamW step (skipped by the fp16 scaler on overflow)
/// then the hooks, in this fixed order (detectron2's):
///   timer      - the iteration's time first, so the hooks below do not count towards it;
///   checkpoint - model_<t>.pth when (t+1) % checkpoint_period == 0, model_final.pth at the end,
///                before evaluation so a crash in evaluation still leaves the checkpoint;
///   evaluation - when (t+1) % eval_period == 0 and at the end; the callback runs with the CPU
///                generator state forked (restored after), so evaluating does not change the
///                training's random draws and a resumed run stays bitwise equal; a result
///                holding `best_metric` that beats the best so far writes model_best.pth;
///   after-step - the user's hook (tests, extra logging);
///   writers    - every log_period iterations and at the end: JSONL, TensorBoard, console;
///   signal     - after SIGINT/SIGTERM: checkpoint at t (unless just written) and return
///                kInterrupted.
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "combo/engine/amp.h"
#include "combo/engine/checkpointer.h"
#include "combo/engine/distributed.h"
#include "combo/engine/lr_schedule.h"
#include "combo/engine/optimizer.h"
#include "combo/engine/writers.h"
#include "combo/loss/criterion.h"
#include "combo/model/combo.h"

namespace combo::engine {

struct Config;

/// One training batch: model inputs plus the targets of the supervised frames.
struct TrainBatch {
  model::ComboInputs inputs;
  std::vector<loss::FrameTarget> targets;  ///< targets[k] belongs to layout.supervised_rows[k]
  loss::BatchLayout layout;
};

/// Where batches come from (the data loader, or an in-memory source in tests).
class BatchSource {
 public:
  virtual ~BatchSource() = default;
  /// The next batch (an infinite stream: the source wraps around epochs itself).
  virtual TrainBatch next() = 0;
  /// (epoch, batch index) of the batch the NEXT call to next() returns; saved in checkpoints so
  /// a resumed source continues where the run stopped.
  virtual std::pair<int64_t, int64_t> position() const = 0;
};

struct TrainerOptions {
  std::string output_dir = "output";
  int64_t max_iter = 90000;
  int64_t checkpoint_period = 5000;  ///< <= 0: only model_final.pth (and signal checkpoints)
  int64_t keep_last = 3;             ///< periodic checkpoints kept; <= 0 keeps all
  int64_t eval_period = 5000;        ///< <= 0: evaluate only at the end (when an evaluator is set)
  int64_t log_period = 20;
  OptimizerOptions optimizer;
  LrScheduleOptions schedule;
  GradClipOptions clip;
  bool amp = false;                ///< CUDA only; the CPU trains in fp32 (logged)
  std::string amp_dtype = "fp16";  ///< fp16 (with a dynamic loss scaler) | bf16 (no scaler)
  LossScalerOptions loss_scaler;
  std::string non_finite = "stop";   ///< stop (throw) | skip (count, no update)
  std::string best_metric = "mIoU";  ///< evaluation key that selects model_best.pth (higher wins)
  std::string config_text;           ///< stored in every checkpoint
  bool jsonl = true;                 ///< <output_dir>/metrics.jsonl
  bool tensorboard = true;           ///< <output_dir>/events.out.tfevents.*
  bool console = true;
  bool handle_signals = true;  ///< install a SignalGuard during run()
  /// Free space required before training (0 = twice the estimated checkpoint size).
  uint64_t min_free_bytes = 0;
  /// Data parallelism (set_distributed): gradient bucket size (runtime.dist_bucket_mb).
  int64_t dist_bucket_bytes = 25 << 20;
  /// Fetch batch t+1 (and queue its copy to the device) as soon as step t is queued, so the
  /// loader's and the host's work overlap the GPU's. Unset: on for CUDA, off on the CPU (where
  /// nothing overlaps and a source drawing from the global generator would draw in another
  /// order). Checkpoints record the batches consumed, not the one prefetched.
  std::optional<bool> prefetch;
};

/// Trainer options from the config: output_dir, solver.* (optimizer, schedule, clipping,
/// checkpoint_period, keep_last, amp) and test.eval_period; config_text = dump_config(config).
TrainerOptions trainer_options_from_config(const Config& config);

/// Periodic evaluation: returns named metrics (e.g. "mIoU", "mF") for the model at `iteration`.
using EvalFunction = std::function<std::map<std::string, double>(int64_t iteration)>;
/// Called after each step with the iteration and its (weighted) losses.
using StepHook = std::function<void(int64_t iteration, const TensorDict& losses)>;

/// What one training step did (Trainer::step).
struct StepResult {
  TensorDict loss_tensors;               ///< the criterion's weighted losses
  std::map<std::string, double> losses;  ///< their values (finite steps only)
  double total = 0;                      ///< their sum (finite steps only)
  bool finite = true;                    ///< false: no update (non_finite = "skip")
  bool updated = false;  ///< the optimiser stepped (false on a non-finite loss or fp16 overflow)
};

enum class TrainStatus {
  kCompleted,    ///< reached max_iter
  kInterrupted,  ///< stopped by SIGINT/SIGTERM after writing a checkpoint
};

struct TrainResult {
  TrainStatus status = TrainStatus::kCompleted;
  int64_t last_iteration = -1;  ///< last completed iteration
  int64_t skipped_steps = 0;    ///< non-finite steps skipped (non_finite = "skip")
  int signal = 0;               ///< the signal that stopped the run
  std::string checkpoint;       ///< the last checkpoint written
};

/// Where to start: from scratch, or after the checkpoint `last_checkpoint` names.
struct ResumeState {
  bool resumed = false;
  int64_t start_iter = 0;
  std::pair<int64_t, int64_t> loader_position{0, 0};  ///< (epoch, batch) for the batch source
  std::string checkpoint;
};

class Trainer {
 public:
  /// Builds the optimizer (param groups per COMBO_SPEC 8.1) and the schedule. The model and the
  /// criterion stay shared with the caller.
  Trainer(model::ComboModel model, loss::SetCriterion criterion, TrainerOptions options);
  // The checkpointer points at this object's optimizer.
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  /// With `resume` and an existing `<output_dir>/last_checkpoint`: loads that checkpoint (model,
  /// optimizer, RNG, loss scale, best metric) and returns where to continue; otherwise
  /// returns start 0 (and leaves everything as it is).
  ResumeState resume_or_load(bool resume);

  /// Trains iterations start_iter .. max_iter-1. Checks the output folder (writable, free space)
  /// first, with an error naming it. Throws combo::Error on a non-finite loss (non_finite =
  /// "stop").
  TrainResult run(BatchSource& source, int64_t start_iter = 0);

  /// One optimisation step on `batch` (already on the model's device) at iteration t, without
  /// the schedule and the hooks: forward (under autocast with AMP), criterion, non-finite check,
  /// backward, clipping, AdamW step. Stages are timed into the active combo::prof::Profile
  /// ("forward", "criterion", "backward", "optimizer"). Used by run() and by combo-bench.
  /// With `read_values` false the losses are not read back to the host (StepResult::losses and
  /// total stay empty): run() reads them once per log period instead of every step, and the
  /// step costs one host synchronisation (the finiteness check; the fp16 scaler's overflow check
  /// is another).
  StepResult step(const TrainBatch& batch, int64_t t, bool read_values = true);

  /// Data-parallel training over `group` (call before resume_or_load and run, on every rank):
  /// copies rank 0's parameters and buffers to every rank, averages the gradients over the
  /// ranks (GradientReducer) and divides the criterion's mask count by the ranks' total, so a
  /// step equals one process's step on the union of the ranks' batches (up to float rounding;
  /// exactly so when each rank's cross-entropy weights sum alike, see docs). Only rank 0 writes
  /// checkpoints and logs; losses are averaged over the ranks before they are written; the ranks
  /// agree on a non-finite loss and on a stop signal every step; checkpoints hold every rank's
  /// generator state so --resume with the same number of processes is exact.
  void set_distributed(std::shared_ptr<ProcessGroup> group);
  /// Point sets of the criterion (tests; default: random on the default generator).
  void set_point_source(std::shared_ptr<loss::PointSource> points) { points_ = std::move(points); }
  /// Rank 0, or the only process.
  bool is_main() const { return !group_ || group_->rank() == 0; }

  void set_evaluator(EvalFunction evaluate) { evaluate_ = std::move(evaluate); }
  void set_after_step(StepHook hook) { after_step_ = std::move(hook); }
  /// Extra writers (besides the ones the options turn on).
  void add_writer(std::shared_ptr<EventWriter> writer) {
    extra_writers_.push_back(std::move(writer));
  }

  NamedOptimizer& optimizer() { return optimizer_; }
  const LrSchedule& schedule() const { return schedule_; }
  Checkpointer& checkpointer() { return *checkpointer_; }
  const TrainerOptions& options() const { return options_; }
  /// best_<metric> and best_iteration once an evaluation produced the best metric.
  const std::map<std::string, double>& metrics() const { return metrics_; }
  int64_t skipped_steps() const { return skipped_; }
  /// Whether steps run under autocast (AMP requested and the model on CUDA).
  bool amp_active() const { return amp_active_; }

 private:
  TrainingState make_state(int64_t iteration, const BatchSource* source) const;
  std::string save_periodic(int64_t iteration, const BatchSource& source);
  void evaluate(int64_t iteration, const BatchSource& source);

  model::ComboModel model_;
  loss::SetCriterion criterion_;
  TrainerOptions options_;
  NamedOptimizer optimizer_;
  std::vector<at::Tensor> params_;  ///< every parameter the optimiser updates
  LrSchedule schedule_;
  std::unique_ptr<Checkpointer> checkpointer_;
  std::unique_ptr<LossScaler> scaler_;
  at::Device device_;
  bool amp_active_ = false;
  at::ScalarType amp_dtype_ = at::kHalf;
  EvalFunction evaluate_;
  StepHook after_step_;
  std::vector<std::shared_ptr<EventWriter>> extra_writers_;
  std::map<std::string, double> metrics_;
  std::map<std::string, double> pending_eval_;  // evaluation results not yet written
  int64_t skipped_ = 0;
  int64_t last_saved_iteration_ = -1;
  std::pair<int64_t, int64_t> loader_position_{0, 0};
  std::shared_ptr<ProcessGroup> group_;
  std::unique_ptr<GradientReducer> reducer_;
  std::shared_ptr<loss::PointSource> points_;
  int stop_signal_ = 0;  ///< a signal some rank received (agreed in step())
};

/// Moves a batch to `device` (no copy for tensors already there).
TrainBatch batch_to_device(const TrainBatch& batch, const at::Device& device);

}  // namespace combo::engine
