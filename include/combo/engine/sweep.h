#pragma once
/// Ablation sweeps (`combo-sweep`): a base config plus a grid or a list of overrides, one run
/// folder per combination, with a status file per run so an interrupted sweep resumes, and the
/// results gathered into one table.
///
/// Sweep folder layout:
///   <sweep>/sweep.json              what was asked (base config, common overrides, runs)
///   <sweep>/<run>/run.json          the run's name and overrides
///   <sweep>/<run>/status.json       pending | running | interrupted | failed | done (+ stage,
///   exit) <sweep>/<run>/sweep.log         the run's combo-train and combo-eval output
///   <sweep>/<run>/...               combo-train's run folder (checkpoints, metrics.jsonl, ...)
///   <sweep>/<run>/eval_<split>/metrics.json   combo-eval's result
///   <sweep>/results.csv, results.md           collect_sweep()
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace combo::engine {

struct SweepRun {
  std::string name;                    ///< folder name under the sweep folder
  std::vector<std::string> overrides;  ///< key.path=value, applied after the common ones
};

struct SweepSpec {
  std::string base_config;          ///< the config every run starts from
  std::vector<std::string> common;  ///< overrides applied to every run (before the run's own)
  std::vector<SweepRun> runs;
};

/// Splits "key=v1,v2,v3" into the key and its values (values may be quoted lists: a value that
/// starts with '[' runs to the matching ']', so "a.b=[1,2],[3,4]" has two values).
std::pair<std::string, std::vector<std::string>> parse_grid_axis(const std::string& axis);

/// The Cartesian product of the axes, the first axis varying slowest; every run named by
/// run_name(). Throws on an empty axis, a repeated key, or duplicate run names.
std::vector<SweepRun> expand_grid(const std::vector<std::string>& axes);

/// A folder name for overrides: "<key>-<value>" joined with "_", where <key> is the shortest
/// dotted suffix of the key that tells it apart from the other keys in `all_keys`; characters
/// other than [A-Za-z0-9._-] become '-'. No override: "base".
std::string run_name(const std::vector<std::string>& overrides,
                     const std::vector<std::string>& all_keys);

/// Reads a sweep YAML file:
///   base: configs/demo/demo.yaml          # optional when given on the command line
///   overrides: [solver.max_iter=100]       # optional, every run
///   grid:                                  # optional: key -> list of values
///     model.fusion.type: [bidirectional, none]
///   runs:                                  # optional: explicit runs (after the grid's)
///     - name: no_audio
///       overrides: [data.silence_audio=true]
/// A relative base path is taken from the current folder when it exists there, else from the
/// sweep file's folder. Errors name the file and the key.
SweepSpec read_sweep_file(const std::string& path);

/// Checks a spec (at least one run, unique names that are valid folder names, overrides of the
/// form key=value) and throws naming the problem.
void validate_sweep(const SweepSpec& spec);

enum class RunState { kPending, kRunning, kInterrupted, kFailed, kDone };
const char* run_state_name(RunState s);

struct RunStatus {
  RunState state = RunState::kPending;
  std::string stage;    ///< train | eval (where it failed or stopped)
  int exit_code = 0;    ///< of the failed stage
  std::string message;  ///< last lines of the failed stage's output
  double seconds = 0;   ///< wall time spent on the run so far (all attempts)
};

/// <run_dir>/status.json, or a pending status when it does not exist.
RunStatus read_run_status(const std::string& run_dir);
/// Writes <run_dir>/status.json atomically.
void write_run_status(const std::string& run_dir, const RunStatus& status);

/// One row of the results table.
struct SweepRow {
  std::string run;
  std::string state;
  std::map<std::string, std::string> keys;  ///< overridden key -> value in the run's config
  std::map<std::string, double> metrics;    ///< test metrics (metrics.json "metrics")
  std::string split, protocol;              ///< of those metrics
  bool partial = false;                     ///< metrics.json says partial
  double best_val_miou = -1;                ///< highest validation mIoU in metrics.jsonl
  int64_t iterations = 0;                   ///< iterations logged in metrics.jsonl
  double seconds = 0;
};

struct SweepTable {
  std::vector<std::string> key_columns;     ///< every key any run overrides (sorted)
  std::vector<std::string> metric_columns;  ///< every metric any run has (sorted)
  std::vector<SweepRow> rows;               ///< in the sweep's run order
};

/// Reads every run of the sweep folder (the runs sweep.json lists, then any other folder with a
/// run.json) and writes <sweep>/results.csv and <sweep>/results.md. Runs without metrics keep
/// their row with empty metric cells and their state.
SweepTable collect_sweep(const std::string& sweep_dir);

/// The table as CSV (RFC 4180 quoting) and as a Markdown table.
std::string sweep_csv(const SweepTable& table);
std::string sweep_markdown(const SweepTable& table);

}  // namespace combo::engine
