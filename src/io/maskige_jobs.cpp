// Batch Maskige generation: dataset walking and the threaded runner.
#include "combo/maskige/maskige_jobs.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <mutex>
#include <opencv2/core/utility.hpp>
#include <thread>

#include "combo/core/check.h"
#include "combo/io/image.h"

namespace fs = std::filesystem;

namespace combo::maskige {

namespace {

bool has_extension(const fs::path& p, std::initializer_list<const char*> exts) {
  std::string e = p.extension().string();
  std::transform(e.begin(), e.end(), e.begin(), [](unsigned char c) { return std::tolower(c); });
  for (const char* x : exts) {
    if (e == x) return true;
  }
  return false;
}

std::vector<fs::path> sorted_files(const fs::path& dir, std::initializer_list<const char*> exts) {
  std::vector<fs::path> out;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.is_regular_file() && has_extension(e.path(), exts)) out.push_back(e.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<fs::path> sorted_dirs(const fs::path& dir) {
  std::vector<fs::path> out;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.is_directory()) out.push_back(e.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

// <data>/visual_frames/** /*.png -> <data>/pre_SAM_mask/** /<stem>_mask_color.png
std::vector<MaskigeJob> mirror_frames(const fs::path& data) {
  const fs::path frames = data / "visual_frames";
  COMBO_CHECK(fs::is_directory(frames), "combo-maskige: no frame folder ", frames.string());
  const fs::path out_root = data / "pre_SAM_mask";
  std::vector<MaskigeJob> jobs;
  for (const auto& e : fs::recursive_directory_iterator(frames)) {
    if (!e.is_regular_file() || !has_extension(e.path(), {".png"})) continue;
    const fs::path rel = fs::relative(e.path().parent_path(), frames);
    MaskigeJob j;
    j.input = e.path().string();
    j.output = (out_root / rel / maskige_file_name(e.path().stem().string())).string();
    j.size = 224;
    jobs.push_back(std::move(j));
  }
  std::sort(jobs.begin(), jobs.end(),
            [](const MaskigeJob& a, const MaskigeJob& b) { return a.input < b.input; });
  return jobs;
}

}  // namespace

std::vector<MaskigeJob> dataset_jobs(const std::string& dataset, const std::string& root) {
  const fs::path r(root);
  COMBO_CHECK(fs::is_directory(r), "combo-maskige: dataset root ", root, " is not a folder");
  if (dataset == "s4" || dataset == "ms3") {
    const fs::path data = r / (dataset == "s4" ? "s4_data" : "ms3_data");
    return mirror_frames(fs::is_directory(data) ? data : r);
  }
  COMBO_CHECK(dataset == "avss", "combo-maskige: unknown dataset '", dataset,
              "' (expected s4, ms3 or avss)");
  std::vector<MaskigeJob> jobs;
  bool any_label = false;
  for (const char* label : {"v1s", "v1m", "v2"}) {
    const fs::path label_dir = r / label;
    if (!fs::is_directory(label_dir)) continue;
    any_label = true;
    for (const fs::path& uid : sorted_dirs(label_dir)) {
      const char* sub = fs::is_directory(uid / "processed_frames") ? "processed_frames" : "frames";
      if (!fs::is_directory(uid / sub)) continue;
      const fs::path out_dir =
          r / "pre_SAM_mask" / "AVSBench_semantic" / label / uid.filename() / sub;
      for (const fs::path& f : sorted_files(uid / sub, {".jpg", ".jpeg", ".png"})) {
        MaskigeJob j;
        j.input = f.string();
        j.output = (out_dir / maskige_file_name(f.stem().string())).string();
        j.size = 0;
        jobs.push_back(std::move(j));
      }
    }
  }
  COMBO_CHECK(any_label, "combo-maskige: ", root,
              " holds none of the AVSS label folders v1s, v1m, v2");
  return jobs;
}

std::vector<MaskigeJob> video_dir_jobs(const std::string& dir, const std::string& out_dir,
                                       int64_t size) {
  COMBO_CHECK(fs::is_directory(dir), "combo-maskige: frame folder ", dir, " is not a folder");
  const fs::path out = out_dir.empty() ? fs::path(dir) : fs::path(out_dir);
  std::vector<MaskigeJob> jobs;
  for (const fs::path& f : sorted_files(dir, {".png", ".jpg", ".jpeg"})) {
    // Outputs written into the same folder are not frames.
    if (f.filename().string().find("_mask_color.png") != std::string::npos) continue;
    MaskigeJob j;
    j.input = f.string();
    j.output = (out / maskige_file_name(f.stem().string())).string();
    j.size = size;
    jobs.push_back(std::move(j));
  }
  return jobs;
}

std::vector<MaskigeJob> npy_tree_jobs(const std::string& dir, const std::string& out_dir,
                                      int64_t size) {
  COMBO_CHECK(fs::is_directory(dir), "combo-maskige: mask folder ", dir, " is not a folder");
  const fs::path in_root(dir);
  const fs::path out_root = out_dir.empty() ? in_root : fs::path(out_dir);
  const std::string suffix = "_mask.npy";
  std::vector<MaskigeJob> jobs;
  for (const auto& e : fs::recursive_directory_iterator(in_root)) {
    const std::string name = e.path().filename().string();
    if (!e.is_regular_file() || name.size() <= suffix.size() ||
        name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0) {
      continue;
    }
    const fs::path rel = fs::relative(e.path().parent_path(), in_root);
    MaskigeJob j;
    j.input = e.path().string();
    j.output = (out_root / rel / (name.substr(0, name.size() - suffix.size()) + "_mask_color.png"))
                   .string();
    j.source = MaskigeJob::Source::kNpy;
    j.size = size;
    jobs.push_back(std::move(j));
  }
  std::sort(jobs.begin(), jobs.end(),
            [](const MaskigeJob& a, const MaskigeJob& b) { return a.input < b.input; });
  return jobs;
}

MaskigeRunSummary run_maskige_jobs(const std::vector<MaskigeJob>& jobs, MaskProposer* proposer,
                                   const MaskigeRunOptions& options) {
  COMBO_CHECK(options.jobs >= 1, "combo-maskige: --jobs must be >= 1, got ", options.jobs);
  const bool needs_proposer = std::any_of(jobs.begin(), jobs.end(), [](const MaskigeJob& j) {
    return j.source == MaskigeJob::Source::kFrame;
  });
  COMBO_CHECK(!needs_proposer || proposer != nullptr,
              "combo-maskige: frame jobs need a mask proposer");
  using clock = std::chrono::steady_clock;
  const auto t0 = clock::now();
  MaskigeRunSummary summary;
  MaskigeProgress progress;
  progress.total = static_cast<int64_t>(jobs.size());
  std::mutex mutex;
  std::atomic<size_t> next{0};

  auto worker = [&] {
    for (;;) {
      const size_t i = next.fetch_add(1);
      if (i >= jobs.size()) return;
      const MaskigeJob& job = jobs[i];
      enum { kWritten, kSkipped, kFailed } outcome = kWritten;
      std::string error;
      std::error_code ec;
      if (!options.overwrite && fs::exists(job.output, ec)) {
        outcome = kSkipped;
      } else {
        try {
          const at::Tensor masks = job.source == MaskigeJob::Source::kNpy
                                       ? read_mask_stack(job.input)
                                       : proposer->propose(combo::io::read_rgb(job.input));
          write_maskige(job.output, masks, MaskigeWriteOptions{job.size, options.mode});
        } catch (const std::exception& e) {
          outcome = kFailed;
          error = e.what();
        }
      }
      std::lock_guard<std::mutex> lock(mutex);
      ++progress.done;
      if (outcome == kWritten) ++progress.written;
      if (outcome == kSkipped) ++progress.skipped;
      if (outcome == kFailed) {
        ++progress.failed;
        summary.failed.emplace_back(job.input, error);
      }
      progress.seconds = std::chrono::duration<double>(clock::now() - t0).count();
      if (options.progress) options.progress(progress);
    }
  };

  const int n_threads = std::max(1, std::min<int>(options.jobs, static_cast<int>(jobs.size())));
  if (n_threads == 1) {
    worker();
  } else {
    // The threads are the parallelism: keep OpenCV and LibTorch from nesting their own pools.
    const int cv_threads = cv::getNumThreads();
    const int torch_threads = at::get_num_threads();
    cv::setNumThreads(1);
    at::set_num_threads(1);
    std::vector<std::thread> threads;
    for (int t = 0; t < n_threads; ++t) threads.emplace_back(worker);
    for (auto& t : threads) t.join();
    cv::setNumThreads(cv_threads);
    at::set_num_threads(torch_threads);
  }
  summary.written = progress.written;
  summary.skipped = progress.skipped;
  summary.seconds = std::chrono::duration<double>(clock::now() - t0).count();
  std::sort(summary.failed.begin(), summary.failed.end());
  return summary;
}

}  // namespace combo::maskige
