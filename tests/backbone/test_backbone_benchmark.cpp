#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <iostream>

#include "combo/backbone/backbone.h"
#include "combo/core/env.h"

// Forward time of each encoder on one S4 clip (5 frames, 224x224), 2 threads, eval mode under
// InferenceMode, random weights: median, min and max of 5 runs after 2 warm-ups, one JSON line
// per encoder. Disabled by default; run with
//   test_backbone --gtest_also_run_disabled_tests --gtest_filter='BackboneBenchmark.*'
TEST(BackboneBenchmark, DISABLED_ForwardTimes) {
  constexpr int kThreads = 2;
  constexpr int kWarmups = 2;
  constexpr int kRuns = 5;
  combo::set_num_threads(kThreads);
  combo::seed_everything(0);
  const at::Tensor x = torch::randn({5, 3, 224, 224});
  for (const std::string name : {"pvt_v2_b0", "pvt_v2_b5", "resnet50"}) {
    combo::backbone::Backbone b = combo::backbone::build_backbone(name);
    b->eval();
    c10::InferenceMode guard;
    std::vector<double> ms;
    for (int i = 0; i < kWarmups + kRuns; ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      const auto out = b->forward(x);
      const auto t1 = std::chrono::steady_clock::now();
      ASSERT_EQ(out.size(), 4u);
      if (i >= kWarmups) ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
    }
    std::sort(ms.begin(), ms.end());
    std::cout << "{\"bench\": \"backbone_forward\", \"backbone\": \"" << name
              << "\", \"frames\": 5, \"size\": 224, \"threads\": " << kThreads
              << ", \"median_ms\": " << ms[ms.size() / 2] << ", \"min_ms\": " << ms.front()
              << ", \"max_ms\": " << ms.back()
              << ", \"runtime\": " << combo::runtime_info().to_json() << "}" << std::endl;
  }
}
