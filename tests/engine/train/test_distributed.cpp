// Data-parallel training (issue 10): the environment readers, and real 2-process runs of
// combo_dist_worker on loopback with Gloo.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <torch/torch.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <thread>

#include "combo/core/check.h"
#include "combo/core/state_dict.h"
#include "combo/data/loader.h"
#include "combo/engine/distributed.h"
#include "dist_helpers.h"
#include "testing/files_and_ports.h"
#include "testing/testing.h"

extern char** environ;

using namespace combo::engine;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using combo::testing::free_port;
using combo::testing::read_text;

namespace {

std::function<const char*(const char*)> env_of(const std::map<std::string, std::string>& vars) {
  return [vars](const char* name) -> const char* {
    auto it = vars.find(name);
    return it == vars.end() ? nullptr : it->second.c_str();
  };
}

template <typename F>
void expect_error_naming(F&& f, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "no error; expected one naming " << needle;
  } catch (const combo::Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

std::string worker() {
  return (combo::testing::binary_dir() / "tests" / "combo_dist_worker").string();
}

// Starts rank `rank` of `world` with its output in <dir>/log_rank<r>.txt.
pid_t spawn_rank(const fs::path& dir, int rank, int world, int port,
                 std::vector<std::string> args) {
  std::vector<std::string> env_strings;
  for (char** e = environ; *e != nullptr; ++e) env_strings.emplace_back(*e);
  env_strings.push_back("WORLD_SIZE=" + std::to_string(world));
  env_strings.push_back("RANK=" + std::to_string(rank));
  env_strings.push_back("LOCAL_RANK=" + std::to_string(rank));
  env_strings.push_back("LOCAL_WORLD_SIZE=" + std::to_string(world));
  env_strings.push_back("MASTER_ADDR=127.0.0.1");
  env_strings.push_back("MASTER_PORT=" + std::to_string(port));
  env_strings.push_back("OMP_NUM_THREADS=1");
  std::vector<char*> envp;
  for (auto& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  args.insert(args.begin(), worker());
  std::vector<char*> argv;
  for (auto& s : args) argv.push_back(s.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  const std::string log = (dir / ("log_rank" + std::to_string(rank) + ".txt")).string();
  posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  EXPECT_EQ(rc, 0) << "cannot start " << argv[0];
  return pid;
}

// Waits up to `limit` for `pid`; returns its exit status (-1 when killed by a signal, -2 on
// time-out, after which the process is killed).
int wait_for(pid_t pid, std::chrono::seconds limit) {
  const auto deadline = Clock::now() + limit;
  for (;;) {
    int status = 0;
    const pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    if (Clock::now() > deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      return -2;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

int progress(const fs::path& dir, int rank) {
  std::ifstream in(dir / ("progress_rank" + std::to_string(rank)));
  int n = 0;
  in >> n;
  return n;
}

// Waits (at most 300 s) until `rank` has finished `steps` steps; returns its step count.
int wait_for_progress(const fs::path& dir, int rank, int steps) {
  const auto deadline = Clock::now() + std::chrono::seconds(300);
  while (progress(dir, rank) < steps && Clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  return progress(dir, rank);
}

}  // namespace

TEST(DistEnvTest, NoLauncherIsOneProcess) {
  const auto env = dist_env_from_environment(env_of({}));
  EXPECT_EQ(env.world_size, 1);
  EXPECT_EQ(env.rank, 0);
  EXPECT_FALSE(env.distributed());
  EXPECT_EQ(env.launcher, "none");
}

TEST(DistEnvTest, TorchrunVariables) {
  const auto env = dist_env_from_environment(env_of({{"WORLD_SIZE", "8"},
                                                     {"RANK", "5"},
                                                     {"LOCAL_RANK", "1"},
                                                     {"LOCAL_WORLD_SIZE", "4"},
                                                     {"MASTER_ADDR", "node7"},
                                                     {"MASTER_PORT", "29400"}}));
  EXPECT_EQ(env.launcher, "torchrun");
  EXPECT_EQ(env.world_size, 8);
  EXPECT_EQ(env.rank, 5);
  EXPECT_EQ(env.local_rank, 1);
  EXPECT_EQ(env.local_world_size, 4);
  EXPECT_EQ(env.master_addr, "node7");
  EXPECT_EQ(env.master_port, 29400);
  EXPECT_TRUE(env.distributed());
}

TEST(DistEnvTest, TorchrunAgentStore) {
  auto env = dist_env_from_environment(env_of({{"WORLD_SIZE", "2"},
                                               {"RANK", "0"},
                                               {"TORCHELASTIC_USE_AGENT_STORE", "True"},
                                               {"TORCHELASTIC_RESTART_COUNT", "3"}}));
  EXPECT_TRUE(env.use_agent_store);
  EXPECT_EQ(env.restart_count, 3);
  env = dist_env_from_environment(env_of({{"WORLD_SIZE", "2"}, {"RANK", "0"}}));
  EXPECT_FALSE(env.use_agent_store);
}

TEST(DistEnvTest, SlurmVariablesAndTheFirstNode) {
  const auto env = dist_env_from_environment(env_of({{"SLURM_PROCID", "3"},
                                                     {"SLURM_NTASKS", "4"},
                                                     {"SLURM_LOCALID", "1"},
                                                     {"SLURM_TASKS_PER_NODE", "2(x2)"},
                                                     {"SLURM_JOB_NODELIST", "gpu[07-08]"}}));
  EXPECT_EQ(env.launcher, "slurm");
  EXPECT_EQ(env.rank, 3);
  EXPECT_EQ(env.world_size, 4);
  EXPECT_EQ(env.local_rank, 1);
  EXPECT_EQ(env.local_world_size, 2);
  EXPECT_EQ(env.master_addr, "gpu07");
  EXPECT_EQ(env.master_port, 29500);
  EXPECT_EQ(first_slurm_host("a1,b[2-3]"), "a1");
  EXPECT_EQ(first_slurm_host("n[010,012-014]x,m1"), "n010x");
  EXPECT_EQ(first_slurm_host("solo"), "solo");
}

TEST(DistEnvTest, BadValuesNameTheVariable) {
  expect_error_naming(
      [] {
        dist_env_from_environment(env_of({{"WORLD_SIZE", "2"}, {"RANK", "x"}}));
      },
      "RANK");
  expect_error_naming([] { dist_env_from_environment(env_of({{"WORLD_SIZE", "2"}})); }, "RANK");
  expect_error_naming(
      [] {
        dist_env_from_environment(env_of({{"WORLD_SIZE", "2"}, {"RANK", "2"}}));
      },
      "outside the world size");
  expect_error_naming(
      [] {
        dist_env_from_environment(
            env_of({{"WORLD_SIZE", "2"}, {"RANK", "0"}, {"MASTER_PORT", "99999"}}));
      },
      "MASTER_PORT");
  expect_error_naming(
      [] {
        dist_env_from_environment(env_of({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "2"}}));
      },
      "MASTER_ADDR");
}

TEST(DistEnvTest, ContiguousEvaluationShardsCoverTheSplitInOrder) {
  for (int64_t size : {0, 1, 7, 8, 9}) {
    for (int64_t world : {1, 2, 3}) {
      std::vector<int64_t> all;
      for (int64_t r = 0; r < world; ++r) {
        const auto s = combo::data::contiguous_shard(size, r, world);
        EXPECT_LE(s.size(), static_cast<size_t>(size / world + 1));
        all.insert(all.end(), s.begin(), s.end());
      }
      ASSERT_EQ(static_cast<int64_t>(all.size()), size);
      for (int64_t i = 0; i < size; ++i) EXPECT_EQ(all[i], i);
    }
  }
}

class DistributedIntegration : public ::testing::Test {
 protected:
  combo::testing::TempDir dir;
  void SetUp() override {
    if (!fs::exists(worker())) GTEST_SKIP() << "combo_dist_worker not built at " << worker();
  }
  std::string logs() const {
    return "rank 0 log:\n" + read_text(dir.path() / "log_rank0.txt") + "\nrank 1 log:\n" +
           read_text(dir.path() / "log_rank1.txt");
  }
};

// Two ranks, each on one of the 2 videos of every batch, against one process on both videos:
// the same initial weights (rank 1 starts from other ones and gets rank 0's), gradients
// averaged, masks counted over both ranks.
TEST_F(DistributedIntegration, TwoProcessesMatchOneProcessOnTheCombinedBatch) {
  const int64_t steps = 3;
  const int port = free_port();
  const std::vector<std::string> args{
      "--out", dir.path().string(), "--steps", std::to_string(steps), "--timeout", "120"};
  const pid_t p0 = spawn_rank(dir.path(), 0, 2, port, args);
  const pid_t p1 = spawn_rank(dir.path(), 1, 2, port, args);

  // The reference meanwhile: one process, whole batches, same seed, same point sets.
  auto model = combo::train_test::dist_model(11);
  {
    combo::engine::Trainer trainer(
        model, combo::train_test::tiny_criterion(),
        combo::train_test::dist_trainer_options((dir.path() / "single").string(), steps));
    trainer.set_point_source(std::make_shared<combo::train_test::FixedPointSource>());
    combo::train_test::ShardSource whole(0, 1);
    trainer.run(whole);
  }
  const auto single = combo::module_state_dict(*model);

  ASSERT_EQ(wait_for(p0, std::chrono::seconds(600)), 0) << logs();
  ASSERT_EQ(wait_for(p1, std::chrono::seconds(60)), 0) << logs();
  const auto w0 = combo::load_state_dict((dir.path() / "weights_rank0.pth").string());
  const auto w1 = combo::load_state_dict((dir.path() / "weights_rank1.pth").string());
  ASSERT_EQ(w0.size(), single.size());
  // The ranks hold bitwise the same weights (identical all-reduce results, identical updates).
  int64_t differ = 0;
  double max_diff = 0, max_change = 0;
  const auto initial = combo::module_state_dict(*combo::train_test::dist_model(11));
  for (const auto& [k, v] : w0) {
    if (!torch::equal(v, w1.at(k)) && ++differ <= 5) ADD_FAILURE() << "ranks differ in " << k;
    if (!v.is_floating_point()) continue;
    max_diff = std::max(max_diff, (v - single.at(k)).abs().max().item<double>());
    max_change = std::max(max_change, (single.at(k) - initial.at(k)).abs().max().item<double>());
  }
  EXPECT_EQ(differ, 0);
  // And one process on the combined batch, up to float rounding (sums in another order),
  // amplified at most by AdamW's normalisation: the steps moved weights by up to max_change.
  RecordProperty("max_abs_diff", std::to_string(max_diff));
  std::cout << "[ INFO ] " << steps << " steps: largest weight change " << max_change
            << ", largest |2-process - 1-process| " << max_diff << std::endl;
  EXPECT_GT(max_change, 1e-5) << "the steps did not train";
  EXPECT_LT(max_diff, 1e-5);
  // Rank 0 alone wrote the final checkpoint and the log, with both ranks' generator states.
  EXPECT_TRUE(fs::exists(dir.path() / "run" / "model_final.pth"));
  const auto ckpt = combo::load_state_dict((dir.path() / "run" / "model_final.pth").string());
  EXPECT_TRUE(ckpt.count("state.rng_rank0.cpu"));
  EXPECT_TRUE(ckpt.count("state.rng_rank1.cpu"));
  EXPECT_EQ(ckpt.at("metrics.world_size").item<double>(), 2.0);
  EXPECT_TRUE(fs::exists(dir.path() / "run" / "metrics.jsonl"));
}

// A rank killed mid-run: the other one stops with an error naming the failed collective
// within the timeout, never hangs.
TEST_F(DistributedIntegration, AKilledRankEndsTheOtherWithAnErrorWithinTheTimeout) {
  const int port = free_port();
  const double timeout = 20;
  const std::vector<std::string> args{"--out",  dir.path().string(), "--steps",
                                      "100000", "--timeout",         std::to_string(timeout)};
  const pid_t p0 = spawn_rank(dir.path(), 0, 2, port, args);
  const pid_t p1 = spawn_rank(dir.path(), 1, 2, port, args);
  ASSERT_GE(wait_for_progress(dir.path(), 1, 2), 2) << logs();
  ::kill(p1, SIGKILL);
  const auto killed = Clock::now();
  wait_for(p1, std::chrono::seconds(10));
  const int status = wait_for(p0, std::chrono::seconds(static_cast<int>(timeout) + 30));
  const double seconds = std::chrono::duration<double>(Clock::now() - killed).count();
  std::cout << "[ INFO ] rank 0 exited " << seconds << " s after rank 1 was killed (status "
            << status << ")" << std::endl;
  EXPECT_EQ(status, 1) << logs();
  EXPECT_LT(seconds, timeout + 10) << logs();
  const auto log0 = read_text(dir.path() / "log_rank0.txt");
  EXPECT_NE(log0.find("distributed"), std::string::npos) << log0;
  EXPECT_NE(log0.find("rank 0 of 2"), std::string::npos) << log0;
}

// A rank that hangs (alive, never reaching the next collective): the other times out.
TEST_F(DistributedIntegration, AHungRankMakesTheOtherTimeOutWithAnError) {
  const int port = free_port();
  const double timeout = 8;
  std::vector<std::string> args{"--out",  dir.path().string(), "--steps",
                                "100000", "--timeout",         std::to_string(timeout)};
  const pid_t p0 = spawn_rank(dir.path(), 0, 2, port, args);
  args.insert(args.end(), {"--stall-after", "1"});
  const pid_t p1 = spawn_rank(dir.path(), 1, 2, port, args);
  ASSERT_GE(wait_for_progress(dir.path(), 1, 1), 1) << logs();
  const auto stalled = Clock::now();
  const int status = wait_for(p0, std::chrono::seconds(static_cast<int>(timeout) + 60));
  const double seconds = std::chrono::duration<double>(Clock::now() - stalled).count();
  ::kill(p1, SIGKILL);
  wait_for(p1, std::chrono::seconds(10));
  std::cout << "[ INFO ] rank 0 exited " << seconds << " s after rank 1 stalled (timeout "
            << timeout << " s, status " << status << ")" << std::endl;
  EXPECT_EQ(status, 1) << logs();
  EXPECT_LT(seconds, timeout + 30) << logs();
  EXPECT_NE(read_text(dir.path() / "log_rank0.txt").find("failed on rank 0 of 2"),
            std::string::npos)
      << logs();
}

// A peer that never starts: the rendezvous gives up after the timeout, naming the address.
TEST_F(DistributedIntegration, APeerThatNeverArrivesEndsTheRendezvousWithAnError) {
  const int port = free_port();
  const auto start = Clock::now();
  const pid_t p0 =
      spawn_rank(dir.path(), 0, 2, port, {"--out", dir.path().string(), "--timeout", "3"});
  const int status = wait_for(p0, std::chrono::seconds(60));
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  EXPECT_EQ(status, 1) << logs();
  EXPECT_LT(seconds, 40);
  const auto log0 = read_text(dir.path() / "log_rank0.txt");
  EXPECT_NE(log0.find("rendezvous failed on rank 0 of 2 at 127.0.0.1:" + std::to_string(port)),
            std::string::npos)
      << log0;
}
