#pragma once
/// State-dict files in the format of Python's `torch.save` (readable by `torch.load`), and
/// loading name -> tensor dicts into modules with a report of missing, unexpected and
/// shape-mismatched keys.
#include <ATen/core/Tensor.h>
#include <ATen/core/ivalue.h>

#include <map>
#include <string>
#include <vector>

namespace torch::nn {
class Module;
}

namespace combo {

/// A flat state dict: parameter/buffer name (official key) -> tensor, ordered by name.
using TensorDict = std::map<std::string, at::Tensor>;

/// Reads a `torch.save` file (zip or legacy pickle) into an IValue. Errors name the file and,
/// for pickles that LibTorch 1.13 cannot read (Python OrderedDicts, one-entry dicts written with
/// the SETITEM opcode), say how to convert the file (tools/convert_checkpoint.py).
c10::IValue load_pickle_file(const std::string& path);

/// Writes `value` with `torch::pickle_save` atomically: a temporary file beside `path` is
/// written, flushed and fsync'ed, then renamed over `path`. A failed write leaves `path` as it was.
void save_pickle_file(const std::string& path, const c10::IValue& value);

/// Writes bytes atomically (same contract as save_pickle_file).
void write_file_atomic(const std::string& path, const std::string& bytes);

/// Flattens nested string-keyed dicts of tensors into dotted names: {"a": {"b": t}} -> "a.b".
/// Non-tensor leaves are an error naming the key, unless `skip_non_tensors`.
TensorDict flatten_tensor_dict(const c10::IValue& value, const std::string& prefix = "",
                               bool skip_non_tensors = false);

/// Converts a flat dict to a pickle-able IValue (`c10::Dict<std::string, at::Tensor>`).
c10::IValue to_ivalue(const TensorDict& dict);

/// Loads a state-dict file. If `key` is not empty the root must be a dict and `root[key]` is
/// used (for `{"model": {...}}` wrappers); nested dicts are flattened with dots.
TensorDict load_state_dict(const std::string& path, const std::string& key = "");

/// Saves a flat state dict atomically; `torch.load` in Python returns a plain dict.
void save_state_dict(const std::string& path, const TensorDict& dict);

/// Number of parameter elements of `module` (buffers excluded); only those with requires_grad
/// when `trainable_only`.
int64_t count_parameters(const torch::nn::Module& module, bool trainable_only = false);

/// All parameters and buffers of `module` by their dotted names.
TensorDict module_state_dict(const torch::nn::Module& module);

struct ShapeMismatch {
  std::string key;
  std::vector<int64_t> expected;  ///< shape in the module
  std::vector<int64_t> got;       ///< shape in the file
};

/// What happened when a dict was loaded into a module.
struct LoadReport {
  std::vector<std::string> missing;     ///< in the module, not in the dict
  std::vector<std::string> unexpected;  ///< in the dict, not in the module
  std::vector<ShapeMismatch> mismatched;
  int64_t loaded = 0;  ///< tensors copied
  bool clean() const { return missing.empty() && unexpected.empty() && mismatched.empty(); }
  /// Multi-line description listing every problem key by name.
  std::string to_string() const;
};

struct LoadOptions {
  /// Strict: any missing, unexpected or mismatched key is an error (nothing is copied).
  /// Non-strict: matching keys are copied, the rest reported.
  bool strict = true;
  /// Dict keys starting with one of these are dropped before matching (e.g. "head." of an
  /// ImageNet classifier).
  std::vector<std::string> ignore_prefixes;
  /// Used in error messages (usually the file name).
  std::string source = "state dict";
};

/// Copies tensors into the module's parameters and buffers by name (dtype converted to the
/// module's). Strict loads throw `combo::Error` naming every problem key.
LoadReport load_state_dict_into(torch::nn::Module& module, const TensorDict& dict,
                                const LoadOptions& options = {});

}  // namespace combo
