// combo-maskige: frames -> class-agnostic masks -> Maskige PNGs (`<stem>_mask_color.png`), over a
// dataset tree (S4 / MS3 / AVSS layouts), one folder of frames, or a tree of official
// `*_mask.npy` stacks.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <iomanip>
#include <iostream>
#include <memory>
#include <thread>

#include "combo/core/check.h"
#include "combo/engine/tool.h"
#include "combo/maskige/maskige_jobs.h"
#include "combo/maskige/proposer.h"

namespace cm = combo::maskige;

int main(int argc, char** argv) {
  combo::engine::prefer_passive_openmp(argc, argv);
  CLI::App app{"combo-maskige: Maskige PNGs (<stem>_mask_color.png) from frames or mask stacks"};
  std::string dataset, root, video_dir, npy_dir, out_dir, proposer_kind = "builtin", model;
  std::string mode = "official";
  int jobs = 1;
  int64_t size = -1;
  bool overwrite = false;
  auto* g_dataset = app.add_option("--dataset", dataset, "dataset layout of --root")
                        ->check(CLI::IsMember({"s4", "ms3", "avss"}));
  app.add_option("--root", root,
                 "dataset root: the folder holding s4_data (S4), ms3_data (MS3) or the v1s/v1m/v2 "
                 "folders (AVSS)");
  auto* g_video = app.add_option("--video-dir", video_dir, "one folder of frames (*.png, *.jpg)");
  auto* g_npy = app.add_option("--from-npy", npy_dir,
                               "convert every *_mask.npy under this folder (official stacks)");
  app.add_option("--out", out_dir,
                 "output folder for --video-dir / --from-npy (default: beside the inputs; the "
                 "relative layout is mirrored)");
  app.add_option("--proposer", proposer_kind, "mask proposer for frames")
      ->check(CLI::IsMember({"builtin", "torchscript"}));
  app.add_option("--model", model, "TorchScript module for --proposer torchscript");
  app.add_option("--mode", mode,
                 "official: the original script bit for bit; safe: defined "
                 "behaviour past 150/255 masks")
      ->check(CLI::IsMember({"official", "safe"}));
  app.add_option("--size", size, "output side (0 keeps the resolution); default 224, AVSS 0")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--jobs", jobs, "worker threads")->check(CLI::PositiveNumber);
  app.add_flag("--overwrite", overwrite, "rewrite outputs that exist (default: skip them)");
  g_dataset->excludes(g_video)->excludes(g_npy);
  g_video->excludes(g_npy);
  CLI11_PARSE(app, argc, argv);

  return combo::engine::run_tool([&] {
    std::vector<cm::MaskigeJob> work;
    if (!dataset.empty()) {
      COMBO_CHECK(!root.empty(), "combo-maskige: --dataset needs --root");
      work = cm::dataset_jobs(dataset, root);
      if (size >= 0) {
        for (auto& j : work) j.size = size;
      }
    } else if (!video_dir.empty()) {
      work = cm::video_dir_jobs(video_dir, out_dir, size >= 0 ? size : 224);
    } else if (!npy_dir.empty()) {
      work = cm::npy_tree_jobs(npy_dir, out_dir, size >= 0 ? size : 224);
    } else {
      COMBO_FAIL("combo-maskige: give one of --dataset/--root, --video-dir or --from-npy");
    }
    std::unique_ptr<cm::MaskProposer> proposer;
    if (npy_dir.empty()) {
      COMBO_CHECK(proposer_kind != "torchscript" || !model.empty(),
                  "combo-maskige: --proposer torchscript needs --model FILE");
      proposer = cm::make_proposer(proposer_kind, model);
    }
    std::cout << "combo-maskige: " << work.size() << " file(s), "
              << (proposer ? proposer->name() : std::string("from .npy stacks")) << ", mode "
              << mode << ", " << jobs << " thread(s)" << std::endl;

    cm::MaskigeRunOptions opts;
    opts.jobs = jobs;
    opts.overwrite = overwrite;
    opts.mode = mode == "safe" ? cm::LabelMode::kSafe : cm::LabelMode::kOfficial;
    const int64_t every = std::max<int64_t>(1, static_cast<int64_t>(work.size()) / 20);
    opts.progress = [&](const cm::MaskigeProgress& p) {
      if (p.done % every != 0 && p.done != p.total) return;
      const double rate = p.seconds > 0 ? static_cast<double>(p.written) / p.seconds : 0;
      std::cout << "[" << p.done << "/" << p.total << "] written " << p.written << ", skipped "
                << p.skipped << ", failed " << p.failed << ", " << std::fixed
                << std::setprecision(1) << rate << " frames/s" << std::endl;
    };
    const cm::MaskigeRunSummary s = cm::run_maskige_jobs(work, proposer.get(), opts);

    std::cout << "summary: written " << s.written << ", skipped " << s.skipped
              << " (existing; --overwrite rewrites them), failed " << s.failed.size() << " in "
              << std::fixed << std::setprecision(2) << s.seconds << " s, " << std::setprecision(1)
              << s.per_second() << " frames/s" << std::endl;
    for (const auto& [file, error] : s.failed) {
      std::cout << "failed: " << file << ": " << error << "\n";
    }
    return s.failed.empty() ? 0 : 1;
  });
}
