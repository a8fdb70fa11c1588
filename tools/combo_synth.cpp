// combo-synth: writes a synthetic AVSBench tree (S4, MS3 or AVSS) in the exact on-disk layout of
// the real data, where only the audio tells which of the objects is sounding.
#include <CLI/CLI.hpp>

#include <chrono>
#include <iostream>

#include "combo/data/synthetic.h"
#include "combo/engine/tool.h"

int main(int argc, char** argv) {
  combo::engine::prefer_passive_openmp(argc, argv);
  CLI::App app{"combo-synth: a synthetic AVSBench data set (S4, MS3 or AVSS layout)"};
  combo::data::SynthOptions o;
  o.threads = 0;  // every core; the bytes written do not depend on it
  bool no_raw_videos = false;
  app.add_option("--dataset", o.dataset, "layout and content to write")
      ->check(CLI::IsMember({"s4", "ms3", "avss"}))
      ->capture_default_str();
  app.add_option("--out", o.out, "root folder to write (the data.root of the readers)")->required();
  app.add_option("--train", o.train_videos, "train videos")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--val", o.val_videos, "val videos")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--test", o.test_videos, "test videos")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--size", o.size, "frame size (AVSS frames are 1.5*size x size)")
      ->check(CLI::Range(int64_t{16}, int64_t{4096}))
      ->capture_default_str();
  app.add_option("--classes", o.num_classes, "sound classes")
      ->check(CLI::Range(int64_t{2}, int64_t{70}))
      ->capture_default_str();
  app.add_option("--object-scale", o.object_scale,
                 "object size factor (radius = scale x 0.11..0.16 x frame side)")
      ->check(CLI::Range(0.05, 2.5))
      ->capture_default_str();
  app.add_option("--style", o.style,
                 "textured (two-colour class textures, textured background) | flat (one colour per "
                 "class, smooth background: easier)")
      ->check(CLI::IsMember({"textured", "flat"}))
      ->capture_default_str();
  app.add_option("--seed", o.seed, "same seed and options -> identical bytes")
      ->capture_default_str();
  app.add_option("--threads", o.threads, "videos rendered in parallel (0 = all cores)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_flag("--no-raw-videos", no_raw_videos, "skip the raw_videos/*.mp4 (S4/MS3)");
  app.add_flag("--pkl", o.write_pkl, "also write the audio_log_mel .pkl files");
  app.add_flag("--overwrite", o.overwrite,
               "replace this data set's folders and metadata under --out if they exist");
  CLI11_PARSE(app, argc, argv);
  o.write_raw_videos = !no_raw_videos;

  return combo::engine::run_tool([&] {
    const auto t0 = std::chrono::steady_clock::now();
    const combo::data::SynthReport r = combo::data::synthesize(o);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::cout << "combo-synth: " << o.dataset << " at " << r.root << ": " << r.videos << " videos ("
              << o.train_videos << " train / " << o.val_videos << " val / " << o.test_videos
              << " test), " << r.frames << " frames, " << r.files << " files in " << s << " s\n";
    return 0;
  });
}
