// Loader throughput on a synthetic S4 tree at the official size (224 x 224, 5 frames, Maskiges,
// log-mel computed from the wavs, the official augmentation with colour jitter), 2 worker
// threads: videos/s over 5 passes of 64 videos after a warm-up pass; median, min, max as one
// JSON line. Disabled by default (benchmarks are not tests); run with
//   test_data --gtest_also_run_disabled_tests --gtest_filter='LoaderBenchmark.*'
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <iostream>

#include "combo/core/env.h"
#include "combo/data/avsbench.h"
#include "combo/data/loader.h"
#include "combo/data/synthetic.h"
#include "testing/testing.h"

TEST(LoaderBenchmark, DISABLED_S4AugmentedVideosPerSecond) {
  constexpr int kWorkers = 2, kVideos = 64, kRuns = 5;
  combo::set_num_threads(1);  // the workers are the parallelism
  combo::testing::TempDir dir;
  combo::data::SynthOptions so;
  so.out = dir.path().string();
  so.train_videos = kVideos;
  so.val_videos = so.test_videos = 1;
  so.size = 224;
  so.write_raw_videos = false;
  so.threads = 0;
  combo::data::synthesize(so);
  combo::data::DatasetOptions d;
  d.root = so.out;
  d.split = "train";
  d.train = true;
  d.augment = true;
  auto ds = std::make_shared<combo::data::AvsDataset>(d);
  std::vector<double> rates;
  for (int run = 0; run <= kRuns; ++run) {
    combo::data::LoaderOptions lo;
    lo.batch_videos = 8;
    lo.num_workers = kWorkers;
    lo.shuffle = true;
    lo.seed = static_cast<uint64_t>(run);
    combo::data::DataLoader loader(ds, lo);
    const auto t0 = std::chrono::steady_clock::now();
    int64_t n = 0;
    while (auto b = loader.next()) n += b->size();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    ASSERT_EQ(n, kVideos);
    if (run > 0) rates.push_back(n / s);
  }
  std::sort(rates.begin(), rates.end());
  std::cout << "{\"bench\": \"loader_s4_augmented\", \"videos\": " << kVideos
            << ", \"frames\": 5, \"size\": 224, \"workers\": " << kWorkers
            << ", \"median_videos_per_s\": " << rates[rates.size() / 2]
            << ", \"min_videos_per_s\": " << rates.front()
            << ", \"max_videos_per_s\": " << rates.back()
            << ", \"runtime\": " << combo::runtime_info().to_json() << "}" << std::endl;
}
