// The training engine on a GPU (CTest label `cuda`: skipped with the reason without one).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "combo/core/device.h"
#include "combo/core/env.h"
#include "combo/engine/trainer.h"
#include "testing/testing.h"
#include "train_helpers.h"

using namespace combo::engine;
namespace fs = std::filesystem;

namespace {

std::vector<nlohmann::json> read_jsonl(const fs::path& file) {
  std::vector<nlohmann::json> out;
  std::ifstream in(file);
  std::string line;
  while (std::getline(in, line))
    if (!line.empty()) out.push_back(nlohmann::json::parse(line));
  return out;
}

}  // namespace

TEST(TrainerCuda, Fp32Bf16AndFp16AmpTrainOnTheGpuAndLogItsMemory) {
  COMBO_CUDA_OR_SKIP(device);
  for (const std::string precision : {"fp32", "bf16", "fp16"}) {
    SCOPED_TRACE(precision);
    combo::seed_everything(0);
    combo::testing::TempDir dir;
    TrainerOptions o;
    o.output_dir = dir.path().string();
    o.max_iter = 6;
    o.checkpoint_period = 0;
    o.eval_period = 0;
    o.log_period = 3;
    o.console = false;
    o.amp = precision != "fp32";
    o.amp_dtype = precision == "bf16" ? "bf16" : "fp16";
    auto model = combo::train_test::tiny_model();
    model->to(device);
    auto criterion = combo::train_test::tiny_criterion();
    criterion->to(device);
    const at::Tensor before = model->parameters().back().detach().clone();
    Trainer t(model, criterion, o);
    EXPECT_EQ(t.amp_active(), o.amp);
    combo::train_test::MemoryBatchSource source;  // CPU batches: pinned and copied ahead
    const auto r = t.run(source, 0);
    EXPECT_EQ(r.status, TrainStatus::kCompleted);
    EXPECT_EQ(r.skipped_steps, 0);
    EXPECT_EQ(source.served(), 6);
    EXPECT_TRUE(model->parameters().back().is_cuda());
    EXPECT_FALSE(torch::equal(before, model->parameters().back().detach()))
        << "the optimiser did not update the weights";
    const auto lines = read_jsonl(dir.path() / "metrics.jsonl");
    ASSERT_EQ(lines.size(), 2u);
    for (const auto& l : lines) {
      EXPECT_TRUE(std::isfinite(l.at("total_loss").get<double>())) << l.dump();
      EXPECT_GT(l.at("gpu_mem_peak_reserved").get<double>(), 0.0) << l.dump();
      EXPECT_GE(l.at("gpu_mem_peak_reserved").get<double>(),
                l.at("gpu_mem_peak_allocated").get<double>());
      if (precision == "fp16") {
        EXPECT_TRUE(l.contains("loss_scale")) << l.dump();
      }
    }
  }
}
