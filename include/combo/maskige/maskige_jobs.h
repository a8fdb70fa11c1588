#pragma once
/// Batch Maskige generation (the work of `combo-maskige`): which frames or mask stacks of a
/// dataset tree become which `*_mask_color.png` (COMBO_SPEC 9 and 10), and a threaded runner.
/// Part of combo_io.
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "combo/maskige/maskige_io.h"
#include "combo/maskige/proposer.h"

namespace combo::maskige {

/// One output file and where it comes from.
struct MaskigeJob {
  enum class Source { kFrame, kNpy };
  std::string input;   ///< a frame image (kFrame) or a `*_mask.npy` stack (kNpy)
  std::string output;  ///< the `*_mask_color.png` to write
  Source source = Source::kFrame;
  int64_t size = 224;  ///< output side (0 keeps the resolution): 224 for S4/MS3, 0 for AVSS
};

/// The frames of a dataset tree and their Maskige paths (sorted by input path):
/// - "s4": `<root>/s4_data/visual_frames/<split>/<category>/<video>/*.png` ->
///   `<root>/s4_data/pre_SAM_mask/<split>/<category>/<video>/<stem>_mask_color.png`, size 224;
/// - "ms3": `<root>/ms3_data/visual_frames/<video>/*.png` ->
///   `<root>/ms3_data/pre_SAM_mask/<video>/<stem>_mask_color.png`, size 224;
/// - "avss": `<root>/<label>/<uid>/processed_frames/*.jpg` (or `frames/*.jpg` when
///   processed_frames is absent; label in v1s, v1m, v2) ->
///   `<root>/pre_SAM_mask/AVSBench_semantic/<label>/<uid>/<processed_frames|frames>/
///   <stem>_mask_color.png`, size 0 (kept).
/// `root` is the folder that holds s4_data / ms3_data / the label folders; for S4 and MS3 the
/// s4_data / ms3_data folder itself is accepted too. Errors name the missing folder.
std::vector<MaskigeJob> dataset_jobs(const std::string& dataset, const std::string& root);

/// Every *.png / *.jpg / *.jpeg frame directly in `dir` -> `<out_dir>/<stem>_mask_color.png`
/// (out_dir defaults to dir).
std::vector<MaskigeJob> video_dir_jobs(const std::string& dir, const std::string& out_dir = "",
                                       int64_t size = 224);

/// Every `*_mask.npy` under `dir` (recursively) -> the same relative path under `out_dir`
/// (default dir) with `_mask.npy` replaced by `_mask_color.png`, as mask_precess_*.py does.
std::vector<MaskigeJob> npy_tree_jobs(const std::string& dir, const std::string& out_dir = "",
                                      int64_t size = 224);

/// Progress of a run, reported after each finished job.
struct MaskigeProgress {
  int64_t done = 0, total = 0, written = 0, skipped = 0, failed = 0;
  double seconds = 0;
};

struct MaskigeRunOptions {
  int jobs = 1;            ///< worker threads
  bool overwrite = false;  ///< false: outputs that exist already are skipped
  LabelMode mode = LabelMode::kOfficial;
  /// Called (serialised) after every job; may be empty.
  std::function<void(const MaskigeProgress&)> progress;
};

struct MaskigeRunSummary {
  int64_t written = 0, skipped = 0;
  std::vector<std::pair<std::string, std::string>> failed;  ///< (input file, error)
  double seconds = 0;
  /// Frames (or stacks) written per second of wall time.
  double per_second() const { return seconds > 0 ? static_cast<double>(written) / seconds : 0; }
};

/// Runs the jobs on `options.jobs` threads. Frame jobs need `proposer` (shared by the threads);
/// kNpy jobs do not use it (may be null). A failing job is recorded, not fatal.
MaskigeRunSummary run_maskige_jobs(const std::vector<MaskigeJob>& jobs, MaskProposer* proposer,
                                   const MaskigeRunOptions& options);

}  // namespace combo::maskige
