#include <gtest/gtest.h>
#include <torch/torch.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "combo/core/check.h"
#include "combo/engine/config.h"
#include "combo/engine/signals.h"
#include "combo/engine/trainer.h"
#include "testing/testing.h"
#include "train_helpers.h"

using namespace combo::engine;
using combo::train_test::MemoryBatchSource;
namespace fs = std::filesystem;

namespace {

TrainerOptions tiny_options(const fs::path& dir, int64_t max_iter) {
  TrainerOptions o;
  o.output_dir = dir.string();
  o.max_iter = max_iter;
  o.checkpoint_period = 0;  // final (and signal) checkpoints only
  o.keep_last = 0;
  o.eval_period = 2;
  o.log_period = 2;
  o.config_text = "solver:\n  max_iter: " + std::to_string(max_iter) + "\n";
  o.console = false;
  return o;
}

// mIoU per evaluated iteration; the evaluator also draws random numbers, which must not change
// the training (the trainer forks the generator around it).
std::map<std::string, double> fake_eval(int64_t iteration) {
  static const std::map<int64_t, double> table = {{1, 0.6}, {3, 0.5}};
  torch::rand({17});
  auto it = table.find(iteration);
  return {{"mIoU", it == table.end() ? 0.0 : it->second}, {"mF", 0.1}};
}

Trainer make_trainer(const TrainerOptions& o, uint64_t seed) {
  torch::manual_seed(seed);
  return Trainer(combo::train_test::tiny_model(), combo::train_test::tiny_criterion(), o);
}

combo::model::ComboModel seeded_model(uint64_t seed) {
  torch::manual_seed(seed);
  return combo::train_test::tiny_model();
}

void expect_same_state(const combo::TensorDict& a, const combo::TensorDict& b) {
  ASSERT_EQ(a.size(), b.size());
  int64_t differ = 0;
  for (const auto& [k, v] : a)
    if (!torch::equal(v, b.at(k))) {
      if (++differ <= 5) ADD_FAILURE() << "differs: " << k;
    }
  EXPECT_EQ(differ, 0);
}

double metric_in(const std::string& file, const std::string& key) {
  return combo::load_state_dict(file).at(key).item<double>();
}

}  // namespace

class TrainerTest : public combo::testing::SeededTest {};

TEST_F(TrainerTest, InterruptedAndResumedRunsAreBitwiseEqualToOneRun) {
  // Every checkpoint holds the (frozen) VGGish too, ~300 MB: the test writes only a few.
  combo::testing::TempDir ref_dir, sig_dir;
  const int64_t max_iter = 4;

  // Reference: one uninterrupted run. Evaluations at iterations 1 and 3 (the last).
  auto ref_model = seeded_model(1);
  Trainer ref(ref_model, combo::train_test::tiny_criterion(),
              tiny_options(ref_dir.path(), max_iter));
  ref.set_evaluator(fake_eval);
  torch::manual_seed(42);
  MemoryBatchSource ref_source;
  auto r = ref.run(ref_source, 0);
  EXPECT_EQ(r.status, TrainStatus::kCompleted);
  EXPECT_EQ(r.last_iteration, max_iter - 1);
  const auto reference = combo::module_state_dict(*ref_model);
  const auto reference_opt = optimizer_state_dict(ref.optimizer());
  for (const char* f : {"model_final.pth", "model_best.pth", "metrics.jsonl", "last_checkpoint"})
    EXPECT_TRUE(fs::exists(ref_dir.path() / f)) << f;
  EXPECT_FALSE(fs::exists(ref_dir.path() / "model_0000001.pth"));  // checkpoint_period 0
  EXPECT_DOUBLE_EQ(metric_in(ref_dir.file("model_best.pth"), "metrics.best_mIoU"), 0.6);
  EXPECT_DOUBLE_EQ(metric_in(ref_dir.file("model_best.pth"), "metrics.best_iteration"), 1);
  EXPECT_DOUBLE_EQ(ref.metrics().at("best_mIoU"), 0.6);
  // The lr followed the poly schedule (the lr of iteration 3 is in force at the end).
  // Heads at the base lr, both encoders at 0.1 x.
  for (size_t g = 0; g < ref.optimizer().groups.size(); ++g) {
    const double mult = ref.optimizer().groups[g].lr_multiplier;
    EXPECT_DOUBLE_EQ(ref.optimizer().lr(g), mult * 1e-4 * std::pow(1.0 - 3.0 / 4.0, 0.9)) << g;
  }

  // JSONL: one line per log period with every loss, the lr and the evaluation results.
  std::ifstream jf(ref_dir.file("metrics.jsonl"));
  std::vector<nlohmann::json> lines;
  for (std::string line; std::getline(jf, line);) lines.push_back(nlohmann::json::parse(line));
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0]["iteration"], 1);
  EXPECT_DOUBLE_EQ(lines[0]["lr"].get<double>(), 1e-4 * std::pow(1.0 - 1.0 / 4.0, 0.9));
  EXPECT_TRUE(lines[0].contains("loss_ce"));
  EXPECT_TRUE(lines[0].contains("loss_dice_0"));
  EXPECT_TRUE(lines[0].contains("loss_cosine_0"));
  EXPECT_DOUBLE_EQ(lines[0]["mIoU"].get<double>(), 0.6);
  EXPECT_DOUBLE_EQ(lines[1]["mIoU"].get<double>(), 0.5);
  bool has_events = false;
  for (const auto& e : fs::directory_iterator(ref_dir.path()))
    has_events |= e.path().filename().string().rfind("events.out.tfevents.", 0) == 0;
  EXPECT_TRUE(has_events);

  // The same run, stopped by SIGTERM raised inside the evaluation of iteration 1.
  auto sig_opts = tiny_options(sig_dir.path(), max_iter);
  {
    auto model = seeded_model(1);
    Trainer t(model, combo::train_test::tiny_criterion(), sig_opts);
    t.set_evaluator([](int64_t it) {
      if (it == 1) std::raise(SIGTERM);
      return fake_eval(it);
    });
    torch::manual_seed(42);
    MemoryBatchSource source;
    auto res = t.run(source, 0);
    EXPECT_EQ(res.status, TrainStatus::kInterrupted);
    EXPECT_EQ(res.signal, SIGTERM);
    EXPECT_EQ(res.last_iteration, 1);
    EXPECT_EQ(fs::path(res.checkpoint).filename(), "model_0000001.pth");
    EXPECT_TRUE(fs::exists(sig_dir.path() / "model_0000001.pth"));
    EXPECT_FALSE(fs::exists(sig_dir.path() / "model_final.pth"));
    EXPECT_EQ(source.served(), 2);
  }
  {
    // A fresh process would build the model with other weights and another generator state.
    auto model = seeded_model(77);
    Trainer t(model, combo::train_test::tiny_criterion(), sig_opts);
    t.set_evaluator(fake_eval);
    torch::rand({5});
    auto resume = t.resume_or_load(true);
    EXPECT_TRUE(resume.resumed);
    EXPECT_EQ(resume.start_iter, 2);
    EXPECT_EQ(resume.loader_position, (std::pair<int64_t, int64_t>{0, 2}));
    EXPECT_DOUBLE_EQ(t.metrics().at("best_mIoU"), 0.6);
    MemoryBatchSource source(resume.loader_position);
    auto res = t.run(source, resume.start_iter);
    EXPECT_EQ(res.status, TrainStatus::kCompleted);
    EXPECT_EQ(res.last_iteration, max_iter - 1);
    expect_same_state(reference, combo::module_state_dict(*model));
    expect_same_state(reference_opt, optimizer_state_dict(t.optimizer()));
    EXPECT_DOUBLE_EQ(metric_in(sig_dir.file("model_best.pth"), "metrics.best_iteration"), 1);
  }
}

TEST_F(TrainerTest, NonFiniteLossStopsNamingTheIterationAndTheLosses) {
  combo::testing::TempDir dir;
  auto criterion = combo::train_test::tiny_criterion();
  auto model = combo::train_test::tiny_model();
  auto opts = tiny_options(dir.path(), 4);
  Trainer t(model, criterion, opts);
  // The class weights turn NaN after iteration 0: loss_ce of iteration 1 is NaN, the mask
  // losses stay finite.
  t.set_after_step([&](int64_t it, const combo::TensorDict&) {
    if (it == 0) criterion->empty_weight.fill_(std::nan(""));
  });
  MemoryBatchSource source;
  try {
    t.run(source, 0);
    FAIL() << "expected an error";
  } catch (const combo::Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("non-finite loss at iteration 1"), std::string::npos) << msg;
    EXPECT_NE(msg.find("loss_ce=nan"), std::string::npos) << msg;
    EXPECT_NE(msg.find("loss_dice="), std::string::npos) << msg;
    EXPECT_NE(msg.find("loss_mask_0="), std::string::npos) << msg;
  }
}

TEST_F(TrainerTest, NonFiniteLossCanBeSkippedAndCounted) {
  combo::testing::TempDir dir;
  auto criterion = combo::train_test::tiny_criterion();
  auto model = combo::train_test::tiny_model();
  auto opts = tiny_options(dir.path(), 3);
  opts.non_finite = "skip";
  Trainer t(model, criterion, opts);
  const auto weights = criterion->empty_weight.clone();
  combo::TensorDict after_first;
  t.set_after_step([&](int64_t it, const combo::TensorDict&) {
    if (it == 0) {
      after_first = combo::module_state_dict(*model);
      for (auto& [k, v] : after_first) v = v.clone();
      criterion->empty_weight.fill_(std::nan(""));
    } else if (it == 1) {
      // The skipped step changed nothing.
      expect_same_state(after_first, combo::module_state_dict(*model));
      criterion->empty_weight.copy_(weights);
    }
  });
  MemoryBatchSource source;
  auto r = t.run(source, 0);
  EXPECT_EQ(r.status, TrainStatus::kCompleted);
  EXPECT_EQ(r.skipped_steps, 1);
  EXPECT_EQ(t.skipped_steps(), 1);
  EXPECT_DOUBLE_EQ(metric_in(dir.file("model_final.pth"), "metrics.skipped_steps"), 1.0);
}

TEST_F(TrainerTest, NanImagesStopWithTheIteration) {
  struct NanSource : MemoryBatchSource {
    combo::engine::TrainBatch next() override {
      auto b = MemoryBatchSource::next();
      b.inputs.images[0][0][0][0] = std::nan("");
      return b;
    }
  };
  combo::testing::TempDir dir;
  Trainer t = make_trainer(tiny_options(dir.path(), 2), 3);
  NanSource source;
  try {
    t.run(source, 0);
    FAIL() << "expected an error";
  } catch (const combo::Error& e) {
    EXPECT_NE(std::string(e.what()).find("iteration 0"), std::string::npos) << e.what();
  }
}

TEST_F(TrainerTest, UnwritableOutputFolderFailsBeforeTraining) {
  combo::testing::TempDir dir;
  std::ofstream(dir.file("a_file")) << "x";
  const std::string out = dir.file("a_file") + "/run";
  Trainer t = make_trainer(tiny_options(out, 2), 3);
  MemoryBatchSource source;
  try {
    t.run(source, 0);
    FAIL() << "expected an error";
  } catch (const combo::Error& e) {
    EXPECT_NE(std::string(e.what()).find(out), std::string::npos) << e.what();
  }
  EXPECT_EQ(source.served(), 0);
  // Resuming where nothing was saved starts at 0.
  combo::testing::TempDir empty;
  Trainer u = make_trainer(tiny_options(empty.path(), 2), 3);
  auto resume = u.resume_or_load(true);
  EXPECT_FALSE(resume.resumed);
  EXPECT_EQ(resume.start_iter, 0);
}

TEST_F(TrainerTest, OptionsFromConfigAndAmpOnCpu) {
  Config c;
  c.output_dir = "/tmp/somewhere";
  c.solver.max_iter = 1234;
  c.solver.checkpoint_period = 100;
  c.test.eval_period = 50;
  c.solver.amp.enabled = true;
  auto o = trainer_options_from_config(c);
  EXPECT_EQ(o.output_dir, "/tmp/somewhere");
  EXPECT_EQ(o.max_iter, 1234);
  EXPECT_EQ(o.schedule.max_iter, 1234);
  EXPECT_EQ(o.checkpoint_period, 100);
  EXPECT_EQ(o.eval_period, 50);
  EXPECT_TRUE(o.amp);
  EXPECT_EQ(o.clip.type, "full_model");
  EXPECT_DOUBLE_EQ(o.clip.value, 0.01);
  EXPECT_NE(o.config_text.find("max_iter: 1234"), std::string::npos);
  c.solver.amp.dtype = "fp8";
  EXPECT_THROW(trainer_options_from_config(c), combo::Error);

  combo::testing::TempDir dir;
  auto opts = tiny_options(dir.path(), 2);
  opts.amp = true;
  Trainer t = make_trainer(opts, 3);
  EXPECT_FALSE(t.amp_active());  // the CPU trains in fp32
}

TEST_F(TrainerTest, PrefetchingTrainsTheSameAndCheckpointsTheBatchesConsumed) {
  // Batch t+1 is fetched while step t runs; the weights must not change, and a checkpoint must
  // record where the consumed batches end (not the prefetched one), or a resumed run would skip
  // a batch.
  combo::train_test::MemoryBatchSource plain_source, prefetch_source;
  combo::testing::TempDir plain_dir, prefetch_dir;
  auto run = [](const fs::path& dir, bool prefetch, combo::train_test::MemoryBatchSource& src) {
    auto o = tiny_options(dir, 5);
    o.checkpoint_period = 2;
    o.prefetch = prefetch;
    auto model = seeded_model(7);
    Trainer t(model, combo::train_test::tiny_criterion(), o);
    const auto r = t.run(src, 0);
    EXPECT_EQ(r.status, TrainStatus::kCompleted);
    return combo::module_state_dict(*model);
  };
  const auto plain = run(plain_dir.path(), false, plain_source);
  const auto prefetched = run(prefetch_dir.path(), true, prefetch_source);
  expect_same_state(plain, prefetched);
  // Nothing is fetched after the last step.
  EXPECT_EQ(prefetch_source.served(), 5);
  for (const auto& [file, batches] : std::vector<std::pair<std::string, int64_t>>{
           {"model_0000001.pth", 2}, {"model_0000003.pth", 4}, {"model_final.pth", 5}}) {
    SCOPED_TRACE(file);
    const fs::path path = prefetch_dir.path() / file;
    ASSERT_TRUE(fs::exists(path)) << path;
    const at::Tensor pos = combo::load_state_dict(path.string()).at("loader.position");
    EXPECT_EQ(pos[0].item<int64_t>() * 5 + pos[1].item<int64_t>(), batches);
  }
}
