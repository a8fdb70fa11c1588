#pragma once
/// Training checkpoints: one file per checkpoint holding everything a bitwise-exact resume needs,
/// as ONE flat name -> tensor dict in `torch.save` format (Python's `torch.load` returns a plain
/// dict), plus a `last_checkpoint` pointer file written after it (detectron2's layout).
///
/// Keys of a checkpoint file (every value a tensor):
///   checkpoint.version                  int64 scalar (1)
///   iteration                           int64 scalar: the last COMPLETED iteration (resume at +1)
///   model.<name>                        every parameter and buffer of the model
///   optimizer.state.<param>.step        int64 scalar  } AdamW state, keyed by parameter name;
///   optimizer.state.<param>.exp_avg     like param    } absent for parameters that never
///   optimizer.state.<param>.exp_avg_sq  like param    } stepped; max_exp_avg_sq with amsgrad
///   optimizer.group.<g>.{lr,base_lr,weight_decay,eps,amsgrad}  float64 scalars
///   optimizer.group.<g>.betas           float64 [2]
///   optimizer.group.<g>.params          uint8: the group's parameter names, one per line
///   rng.cpu                             uint8: the default CPU generator state
///   rng.cuda.<i>                        uint8: the default CUDA generator of device i (if any)
///   loader.position                     int64 [2]: (epoch, batch) of the next batch to load
///   config                              uint8: the config as YAML text
///   metrics.<name>                      float64 scalar (e.g. best_mIoU, best_iteration)
///   state.<name>                        any tensor a caller adds (e.g. the AMP loss scale)
///
/// Names: model_<iteration, 7 digits>.pth (periodic; the last `keep_last` are kept),
/// model_final.pth, model_best.pth.
#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "combo/core/state_dict.h"
#include "combo/engine/optimizer.h"

namespace combo::engine {

/// Everything but the model and the optimizer that a checkpoint carries.
struct TrainingState {
  int64_t iteration = -1;                             ///< last completed iteration
  std::pair<int64_t, int64_t> loader_position{0, 0};  ///< (epoch, batch)
  std::string config_text;                            ///< YAML
  std::map<std::string, double> metrics;              ///< stored as metrics.<name>
  TensorDict tensors;                                 ///< stored as state.<name>
};

/// Text <-> uint8 tensor (for the config and name lists inside checkpoints).
at::Tensor string_to_tensor(const std::string& text);
std::string tensor_to_string(const at::Tensor& tensor);

/// The AdamW state keyed by parameter name and the group options, keys as above without the
/// "optimizer." prefix. Tensors are copied to the CPU.
TensorDict optimizer_state_dict(const NamedOptimizer& optimizer);

/// Restores what optimizer_state_dict wrote (keys without the prefix): group options and base
/// lrs (base lrs are written back into optimizer.groups) and per-parameter state (copied onto
/// each parameter's device and dtype). Throws combo::Error naming the problem when the group
/// count or a group's parameter names differ, or a state entry names an unknown parameter.
void load_optimizer_state_dict(NamedOptimizer& optimizer, const TensorDict& dict);

/// The default CPU generator state (`rng.cpu`) and, when CUDA is available, each device's
/// (`rng.cuda.<i>`); keys without a prefix ("cpu", "cuda.0").
TensorDict rng_state_dict();
/// Restores the generators rng_state_dict saved. A saved CUDA state for a device that is absent
/// is ignored with a warning.
void restore_rng_state(const TensorDict& dict);

/// Makes sure training can write into `dir` before it starts: creates it, writes and removes a
/// probe file, and checks with statvfs that at least `min_free_bytes` are free. Throws
/// combo::Error naming the folder and the reason (not creatable, not writable, free space).
void check_output_dir(const std::string& dir, uint64_t min_free_bytes = 0);

/// Bytes a checkpoint of this model and optimizer will take (model + AdamW moments + slack).
uint64_t estimate_checkpoint_bytes(const torch::nn::Module& model);

struct CheckpointerOptions {
  std::string output_dir;
  /// Periodic checkpoints kept (older model_XXXXXXX.pth are deleted); <= 0 keeps all.
  int64_t keep_last = 3;
};

/// Saves and loads checkpoints of one model (and optionally its optimizer).
class Checkpointer {
 public:
  /// `optimizer` may be null (model-only checkpoints, e.g. for evaluation).
  Checkpointer(torch::nn::Module& model, NamedOptimizer* optimizer, CheckpointerOptions options);

  /// The flat dict of the current model, optimizer, RNG and `state`.
  TensorDict state_dict(const TrainingState& state) const;

  /// Writes `<output_dir>/<name>.pth` atomically, then the `last_checkpoint` pointer (unless
  /// `update_pointer` is false). Returns the path.
  std::string save(const std::string& name, const TrainingState& state,
                   bool update_pointer = true) const;

  /// Writes model_<iteration 7 digits>.pth and deletes the oldest periodic files beyond
  /// keep_last. Returns the path.
  std::string save_periodic(const TrainingState& state) const;

  /// Loads a checkpoint written by save(): the model (strict), the optimizer (when this
  /// checkpointer has one and the file holds optimizer keys) and, when `restore_rng`, the
  /// generators. Returns the rest. Errors name the file.
  TrainingState load(const std::string& path, bool restore_rng = true) const;
  /// The same from a dict already read from `path` (see read_latest_intact).
  TrainingState load(const TensorDict& dict, const std::string& path,
                     bool restore_rng = true) const;

  /// For --resume: the newest checkpoint that reads intact, read. Candidates: the file
  /// `last_checkpoint` points to, then the periodic checkpoints newest first. A damaged or
  /// truncated candidate (integrity check of the zip records, unreadable pickle) is skipped with
  /// a warning naming it and the reason. Returns nullopt when there is no candidate; throws
  /// combo::Error listing every candidate and its problem when none is intact.
  std::optional<std::pair<std::string, TensorDict>> read_latest_intact() const;

  /// Removes the temporary files (`<name>.tmp.<pid>`) that a killed process left in the output
  /// folder (their process is gone); returns how many. Called by resume.
  int64_t remove_stale_temporaries() const;

  /// The file `last_checkpoint` points to, if the pointer and the file exist.
  std::optional<std::string> last_checkpoint() const;

  /// Periodic checkpoint files in the folder, oldest first.
  std::vector<std::string> periodic_checkpoints() const;

  /// `<output_dir>/<file_name>`.
  std::string path(const std::string& file_name) const;

  const CheckpointerOptions& options() const { return options_; }

 private:
  torch::nn::Module& model_;
  NamedOptimizer* optimizer_;
  CheckpointerOptions options_;
};

/// Model parameters and buffers of a checkpoint file (the `model.` keys, prefix removed), for
/// evaluation and for `model.weights`.
TensorDict checkpoint_model_state(const TensorDict& checkpoint);

/// Periodic checkpoint file name: model_0004999.pth.
std::string periodic_checkpoint_name(int64_t iteration);

}  // namespace combo::engine
