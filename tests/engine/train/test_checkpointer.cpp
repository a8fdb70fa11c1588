#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "combo/core/check.h"
#include "combo/engine/amp.h"
#include "combo/engine/checkpointer.h"
#include "combo/engine/signals.h"
#include "testing/python_check.h"
#include "testing/testing.h"

using namespace combo::engine;
namespace fs = std::filesystem;

namespace {

// A small module with a norm layer, an embedding, dropout and a parameter that never gets a
// gradient, so the AdamW state is partial.
struct TinyNetImpl : torch::nn::Module {
  TinyNetImpl() {
    emb = register_module("emb", torch::nn::Embedding(5, 6));
    fc = register_module("fc", torch::nn::Linear(6, 6));
    norm = register_module("norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({6})));
    head = register_module("head", torch::nn::Linear(6, 1));
    unused = register_parameter("unused", torch::ones({2}));
  }
  at::Tensor forward(const at::Tensor& idx) {
    auto x = emb(idx);
    x = torch::dropout(torch::relu(fc(x)), 0.3, is_training());
    return head(norm(x)).sum();
  }
  torch::nn::Embedding emb{nullptr};
  torch::nn::Linear fc{nullptr};
  torch::nn::LayerNorm norm{nullptr};
  torch::nn::Linear head{nullptr};
  at::Tensor unused;
};
TORCH_MODULE(TinyNet);

void train_steps(TinyNet& net, NamedOptimizer& opt, int64_t steps) {
  for (int64_t i = 0; i < steps; ++i) {
    auto idx = torch::randint(0, 5, {4, 3});  // default generator: restored by the checkpoint
    for (auto& p : opt.parameters()) p.mutable_grad() = at::Tensor();
    auto loss = net->forward(idx);
    loss.backward();
    opt.adamw->step();
  }
}

void expect_modules_equal(const torch::nn::Module& a, const torch::nn::Module& b) {
  auto sa = combo::module_state_dict(a), sb = combo::module_state_dict(b);
  ASSERT_EQ(sa.size(), sb.size());
  for (const auto& [k, v] : sa) EXPECT_TRUE(torch::equal(v, sb.at(k))) << k;
}

OptimizerOptions amsgrad_options(bool amsgrad) {
  OptimizerOptions o;
  o.base_lr = 1e-2;
  o.amsgrad = amsgrad;
  return o;
}

}  // namespace

class CheckpointerTest : public combo::testing::SeededTest {};

TEST_F(CheckpointerTest, StringTensorsRoundTrip) {
  const std::string s = "solver:\n  base_lr: 0.0001\n\xc3\xa9";
  EXPECT_EQ(tensor_to_string(string_to_tensor(s)), s);
  EXPECT_EQ(tensor_to_string(string_to_tensor("")), "");
  EXPECT_THROW(tensor_to_string(torch::zeros({2})), combo::Error);
}

TEST_F(CheckpointerTest, ResumedAdamWIsBitwiseEqualToOneRun) {
  for (bool amsgrad : {false, true}) {
    SCOPED_TRACE(amsgrad ? "amsgrad" : "adamw");
    combo::testing::TempDir dir;
    const int64_t k = 4;
    // One run of 2k steps.
    torch::manual_seed(7);
    TinyNet ref;
    auto ref_opt = build_optimizer(*ref, amsgrad_options(amsgrad));
    torch::manual_seed(11);
    train_steps(ref, ref_opt, 2 * k);

    // k steps, save, load into fresh objects, k more.
    torch::manual_seed(7);
    TinyNet a;
    auto a_opt = build_optimizer(*a, amsgrad_options(amsgrad));
    torch::manual_seed(11);
    train_steps(a, a_opt, k);
    Checkpointer ca(*a, &a_opt, {dir.path().string(), 3});
    TrainingState st;
    st.iteration = k - 1;
    st.loader_position = {2, 3};
    st.config_text = "solver:\n  max_iter: 8\n";
    st.metrics["best_mIoU"] = 0.25;
    st.tensors["amp_scale"] = torch::tensor({1024.0f});
    const std::string file = ca.save_periodic(st);
    EXPECT_EQ(fs::path(file).filename(), "model_0000003.pth");
    torch::randn({100});  // disturb the generator: load must restore it

    torch::manual_seed(99);
    TinyNet b;  // different initial weights
    auto b_opt = build_optimizer(*b, amsgrad_options(amsgrad));
    Checkpointer cb(*b, &b_opt, {dir.path().string(), 3});
    auto last = cb.last_checkpoint();
    ASSERT_TRUE(last.has_value());
    EXPECT_EQ(*last, file);
    TrainingState loaded = cb.load(*last);
    EXPECT_EQ(loaded.iteration, k - 1);
    EXPECT_EQ(loaded.loader_position, (std::pair<int64_t, int64_t>{2, 3}));
    EXPECT_EQ(loaded.config_text, st.config_text);
    EXPECT_DOUBLE_EQ(loaded.metrics.at("best_mIoU"), 0.25);
    EXPECT_TRUE(torch::equal(loaded.tensors.at("amp_scale"), st.tensors.at("amp_scale")));
    train_steps(b, b_opt, k);

    expect_modules_equal(*ref, *b);
    // The optimizer states agree too (and "unused" never got a state).
    auto sr = optimizer_state_dict(ref_opt), sb = optimizer_state_dict(b_opt);
    ASSERT_EQ(sr.size(), sb.size());
    for (const auto& [key, v] : sr) EXPECT_TRUE(torch::equal(v, sb.at(key))) << key;
    EXPECT_EQ(sr.count("state.unused.step"), 0u);
    EXPECT_EQ(sr.count("state.fc.weight.max_exp_avg_sq"), amsgrad ? 1u : 0u);
    EXPECT_EQ(sr.at("state.fc.weight.step").item<int64_t>(), 2 * k);
  }
}

TEST_F(CheckpointerTest, LoadRejectsAnotherOptimizerLayout) {
  combo::testing::TempDir dir;
  TinyNet a;
  auto a_opt = build_optimizer(*a, OptimizerOptions{});
  train_steps(a, a_opt, 1);
  Checkpointer ca(*a, &a_opt, {dir.path().string(), 3});
  const std::string file = ca.save("model_final", TrainingState{});
  TinyNet b;
  OptimizerOptions other;
  other.weight_decay_norm = 0.05;  // merges the norm group into the decayed group
  auto b_opt = build_optimizer(*b, other);
  Checkpointer cb(*b, &b_opt, {dir.path().string(), 3});
  try {
    cb.load(file);
    FAIL() << "expected an error";
  } catch (const combo::Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(file), std::string::npos) << msg;
    EXPECT_NE(msg.find("param group"), std::string::npos) << msg;
  }
  // A file without checkpoint keys is not a training checkpoint.
  combo::save_state_dict(dir.file("weights.pth"), combo::module_state_dict(*a));
  EXPECT_THROW(cb.load(dir.file("weights.pth")), combo::Error);
  EXPECT_THROW(cb.load(dir.file("absent.pth")), combo::Error);
}

TEST_F(CheckpointerTest, KeepsTheLastNPeriodicFilesAndWritesThePointerLast) {
  combo::testing::TempDir dir;
  TinyNet a;
  auto opt = build_optimizer(*a, OptimizerOptions{});
  Checkpointer c(*a, &opt, {dir.path().string(), 2});
  for (int64_t it : {9, 19, 29, 39}) {
    TrainingState s;
    s.iteration = it;
    c.save_periodic(s);
  }
  auto files = c.periodic_checkpoints();
  ASSERT_EQ(files.size(), 2u);
  EXPECT_EQ(fs::path(files[0]).filename(), "model_0000029.pth");
  EXPECT_EQ(fs::path(files[1]).filename(), "model_0000039.pth");
  std::ifstream pointer(dir.file("last_checkpoint"));
  std::string name;
  std::getline(pointer, name);
  EXPECT_EQ(name, "model_0000039.pth");
  // model_best does not move the pointer.
  c.save("model_best", TrainingState{}, /*update_pointer=*/false);
  EXPECT_EQ(fs::path(*c.last_checkpoint()).filename(), "model_0000039.pth");
  // A pointer to a missing file is no checkpoint.
  fs::remove(dir.file("model_0000039.pth"));
  EXPECT_FALSE(c.last_checkpoint().has_value());
  EXPECT_EQ(periodic_checkpoint_name(1234567), "model_1234567.pth");
}

TEST_F(CheckpointerTest, RngStateRestoresDropoutDraws) {
  auto saved = rng_state_dict();
  ASSERT_EQ(saved.count("cpu"), 1u);
  auto x = torch::ones({1000});
  auto first = torch::dropout(x, 0.5, true);
  restore_rng_state(saved);
  auto second = torch::dropout(x, 0.5, true);
  EXPECT_TRUE(torch::equal(first, second));
  EXPECT_THROW(restore_rng_state({{"tpu", saved.at("cpu")}}), combo::Error);
}

TEST_F(CheckpointerTest, PythonReadsTheCheckpointAsAFlatDict) {
  COMBO_PYTHON_MODULE_OR_SKIP("torch", "apt-get install python3-torch");
  combo::testing::TempDir dir;
  TinyNet a;
  auto opt = build_optimizer(*a, OptimizerOptions{});
  train_steps(a, opt, 2);
  Checkpointer c(*a, &opt, {dir.path().string(), 3});
  TrainingState s;
  s.iteration = 41;
  s.loader_position = {1, 7};
  s.config_text = "output_dir: x\n";
  s.metrics["best_mIoU"] = 0.5;
  const std::string file = c.save("model_final", s);
  const std::string script = dir.file("check.py");
  std::ofstream(script) << "import sys, torch\n"
                           "d = torch.load(sys.argv[1])\n"
                           "assert isinstance(d, dict), type(d)\n"
                           "assert int(d['iteration']) == 41\n"
                           "assert d['loader.position'].tolist() == [1, 7]\n"
                           "assert bytes(d['config'].tolist()).decode() == 'output_dir: x\\n'\n"
                           "assert float(d['metrics.best_mIoU']) == 0.5\n"
                           "assert d['model.fc.weight'].shape == (6, 6)\n"
                           "assert int(d['optimizer.state.fc.weight.step']) == 2\n"
                           "assert d['optimizer.group.0.params'].dtype == torch.uint8\n"
                           "assert d['rng.cpu'].dtype == torch.uint8\n";
  const std::string cmd = "/usr/bin/python3 " + script + " " + file;
  EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
}

TEST_F(CheckpointerTest, OutputDirCheckNamesTheFolder) {
  combo::testing::TempDir dir;
  EXPECT_NO_THROW(check_output_dir(dir.file("new/sub"), 1));
  EXPECT_TRUE(fs::is_directory(dir.file("new/sub")));
  std::ofstream(dir.file("plain_file")) << "x";
  const std::string bad = dir.file("plain_file") + "/out";
  try {
    check_output_dir(bad);
    FAIL() << "expected an error";
  } catch (const combo::Error& e) {
    EXPECT_NE(std::string(e.what()).find(bad), std::string::npos) << e.what();
  }
  try {
    check_output_dir(dir.path().string(), uint64_t{1} << 62);  // 4 EiB
    FAIL() << "expected an error";
  } catch (const combo::Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(dir.path().string()), std::string::npos) << msg;
    EXPECT_NE(msg.find("free"), std::string::npos) << msg;
  }
}

// ---------------------------------------------------------------------------------------------
TEST(SignalGuardTest, RecordsSignalsAndRestoresTheOldHandlers) {
  static int old_handler_calls = 0;
  struct sigaction sa {
  }, previous{};
  sa.sa_handler = [](int) { ++old_handler_calls; };
  sigemptyset(&sa.sa_mask);
  ASSERT_EQ(sigaction(SIGTERM, &sa, &previous), 0);
  {
    SignalGuard guard;
    SignalGuard::clear();
    EXPECT_EQ(SignalGuard::requested(), 0);
    std::raise(SIGTERM);
    EXPECT_EQ(SignalGuard::requested(), SIGTERM);
    std::raise(SIGINT);
    EXPECT_EQ(SignalGuard::requested(), SIGINT);
    SignalGuard::clear();
    EXPECT_EQ(SignalGuard::requested(), 0);
    EXPECT_EQ(old_handler_calls, 0);
  }
  std::raise(SIGTERM);  // the test's handler is back
  EXPECT_EQ(old_handler_calls, 1);
  EXPECT_EQ(SignalGuard::requested(), 0);
  sigaction(SIGTERM, &previous, nullptr);
}

TEST(NonFiniteTest, MessageNamesTheIterationAndEveryLoss) {
  combo::TensorDict losses{{"loss_ce", torch::tensor(0.5f)},
                           {"loss_dice", torch::tensor(std::nanf(""))},
                           {"loss_mask", torch::tensor(INFINITY)}};
  EXPECT_FALSE(all_finite(losses));
  try {
    check_finite_losses(losses, 1234);
    FAIL() << "expected an error";
  } catch (const combo::Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("iteration 1234"), std::string::npos) << msg;
    EXPECT_NE(msg.find("loss_ce=0.5"), std::string::npos) << msg;
    EXPECT_NE(msg.find("loss_dice=nan"), std::string::npos) << msg;
    EXPECT_NE(msg.find("loss_mask=inf"), std::string::npos) << msg;
  }
  losses["loss_dice"] = torch::tensor(1.0f);
  losses["loss_mask"] = torch::tensor(2.0f);
  EXPECT_NO_THROW(check_finite_losses(losses, 1));
}

// ---------------------------------------------------------------------------------------------
TEST(LossScalerTest, UnscalesSkipsOnOverflowAndAdaptsTheScale) {
  LossScalerOptions o;
  o.init_scale = 8.0;
  o.growth_interval = 2;
  LossScaler s(o);
  auto p = torch::zeros({2}, torch::requires_grad());
  EXPECT_EQ(s.scale(torch::tensor(1.5f)).item<float>(), 12.0f);
  p.mutable_grad() = torch::tensor({8.0f, 16.0f});
  EXPECT_FALSE(s.unscale({p}));
  EXPECT_TRUE(torch::equal(p.grad(), torch::tensor({1.0f, 2.0f})));
  s.update();
  EXPECT_EQ(s.scale_value(), 8.0);
  p.mutable_grad() = torch::tensor({8.0f, 16.0f});
  EXPECT_FALSE(s.unscale({p}));
  s.update();
  EXPECT_EQ(s.scale_value(), 16.0);  // two clean steps: grows
  p.mutable_grad() = torch::tensor({INFINITY, 1.0f});
  EXPECT_TRUE(s.unscale({p}));
  s.update();
  EXPECT_EQ(s.scale_value(), 8.0);  // overflow: backs off
  LossScaler t(o);
  t.load_state_dict(s.state_dict());
  EXPECT_EQ(t.scale_value(), 8.0);
  EXPECT_EQ(amp_dtype_from_string("bf16"), at::kBFloat16);
  EXPECT_THROW(amp_dtype_from_string("fp8"), combo::Error);
}
