// Faults, with nothing lost (CTest label fault; the FaultTorture suite also torture): combo-train
// killed with SIGKILL at many moments (some inside a checkpoint write), disk full while a
// checkpoint or the metrics are written, a damaged latest checkpoint, damaged weights given to the
// tools, non-finite losses. Each run is resumed and must end with the weights of an uninterrupted
// run, bit for bit (CPU).
//
// Runs the real executables on the in-memory synthetic task (no data files), a tiny model at
// one thread. COMBO_FAULT_KILL_IN_WRITE=<n> (src/core/state_dict.cpp) makes combo-train kill
// itself in the middle of the n-th checkpoint file it writes.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <torch/torch.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <random>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "combo/core/state_dict.h"
#include "testing/files_and_ports.h"
#include "testing/testing.h"

namespace {

namespace fs = std::filesystem;
using combo::testing::read_text;
using combo::testing::run_shell;
using combo::testing::TempDir;
using combo::testing::tool_path;

struct Spawn {
  std::vector<std::pair<std::string, std::string>> env;
  int64_t file_size_limit = 0;  ///< RLIMIT_FSIZE in bytes (0: none), SIGXFSZ ignored
};

// Starts `command` through /bin/sh (exec'ed, so the pid is the tool's), output appended to `log`.
pid_t spawn(const std::string& command, const fs::path& log, const Spawn& how = {}) {
  const std::string cmd = "exec " + command;
  const std::string log_path = log.string();
  const pid_t pid = ::fork();
  if (pid == 0) {
    const int fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
      ::dup2(fd, 1);
      ::dup2(fd, 2);
    }
    for (const auto& [k, v] : how.env) ::setenv(k.c_str(), v.c_str(), 1);
    if (how.file_size_limit > 0) {
      // Writes beyond the limit fail with EFBIG instead of killing the process (a full disk).
      ::signal(SIGXFSZ, SIG_IGN);
      const rlimit lim{static_cast<rlim_t>(how.file_size_limit),
                       static_cast<rlim_t>(how.file_size_limit)};
      ::setrlimit(RLIMIT_FSIZE, &lim);
    }
    ::execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  return pid;
}

struct Exit {
  bool exited = false;
  int code = -1;
  int signal = 0;
};

Exit wait_exit(pid_t pid) {
  int st = 0;
  ::waitpid(pid, &st, 0);
  Exit e;
  if (WIFEXITED(st)) {
    e.exited = true;
    e.code = WEXITSTATUS(st);
  } else if (WIFSIGNALED(st)) {
    e.signal = WTERMSIG(st);
  }
  return e;
}

// The last completed iteration in metrics.jsonl (log_period 1), -1 when none.
int64_t last_logged_iteration(const fs::path& run) {
  std::ifstream in(run / "metrics.jsonl");
  int64_t last = -1;
  for (std::string line; std::getline(in, line);) {
    try {
      last = std::max<int64_t>(last, nlohmann::json::parse(line).at("iteration").get<int64_t>());
    } catch (const std::exception&) {
      // A line being written when the process was killed.
    }
  }
  return last;
}

size_t count_lines(const fs::path& p) {
  std::ifstream in(p);
  size_t n = 0;
  for (std::string line; std::getline(in, line);) ++n;
  return n;
}

std::vector<fs::path> temporaries(const fs::path& run) {
  std::vector<fs::path> out;
  for (const auto& e : fs::directory_iterator(run))
    if (e.path().filename().string().find(".tmp.") != std::string::npos) out.push_back(e.path());
  return out;
}

std::string read_bytes(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

void flip_byte(const fs::path& p, double where) {
  std::string b = read_bytes(p);
  b[static_cast<size_t>(where * static_cast<double>(b.size()))] ^= 0x10;
  std::ofstream(p, std::ios::binary | std::ios::trunc) << b;
}

combo::TensorDict model_weights(const fs::path& checkpoint) {
  combo::TensorDict out;
  for (auto& [k, v] : combo::load_state_dict(checkpoint.string()))
    if (k.rfind("model.", 0) == 0) out[k] = v;
  return out;
}

// Equal bit for bit: same keys, shapes, dtypes and bytes.
::testing::AssertionResult bitwise_equal(const combo::TensorDict& a, const combo::TensorDict& b) {
  if (a.size() != b.size())
    return ::testing::AssertionFailure() << a.size() << " vs " << b.size() << " tensors";
  for (const auto& [k, v] : a) {
    const auto it = b.find(k);
    if (it == b.end()) return ::testing::AssertionFailure() << "missing " << k;
    const auto x = v.contiguous(), y = it->second.contiguous();
    if (x.sizes() != y.sizes() || x.scalar_type() != y.scalar_type() ||
        std::memcmp(x.data_ptr(), y.data_ptr(), x.numel() * x.element_size()) != 0)
      return ::testing::AssertionFailure() << k << " differs";
  }
  return ::testing::AssertionSuccess();
}

class FaultRun : public ::testing::Test {
 protected:
  TempDir dir;
  fs::path cfg = dir.path() / "tiny.yaml";
  fs::path reference = dir.path() / "reference";

  // A tiny COMBO on 32 px in-memory S4 videos, one thread, a metrics line per iteration.
  void write_config(int64_t checkpoint_period) {
    std::ofstream(cfg)
        << "_base_: " << (combo::testing::source_dir() / "configs/_base_/avs_s4.yaml").string()
        << "\nmodel:\n  backbone:\n    name: pvt_v2_b0\n  audio:\n    mlp_dim: 64\n"
        << "  decoder:\n    num_queries: 4\n    dec_layers: 2\n    dim_feedforward: 32\n"
        << "  pixel_decoder:\n    enc_layers: 1\n    dim_feedforward: 32\n"
        << "loss:\n  train_num_points: 64\n"
        << "data:\n  source: synthetic\n  root: " << (dir.path() / "no_such_folder").string()
        << "\n  num_workers: 1\n  image_size: 32\n"
        << "  synthetic:\n    train_videos: 6\n    eval_videos: 2\n"
        << "solver:\n  ims_per_batch: 2\n  checkpoint_period: " << checkpoint_period
        << "\n  log_period: 1\n  keep_last: 3\n  base_lr: 0.0001\n"
        << "runtime:\n  threads: 1\n  seed: 7\n";
  }

  std::string train(const fs::path& run, int64_t max_iter, bool resume = true) const {
    return tool_path("combo-train") + " --config " + cfg.string() + " --no-eval" +
           (resume ? " --resume" : "") + " output_dir=" + run.string() +
           " solver.max_iter=" + std::to_string(max_iter);
  }

  // An interrupted run to resume: combo-train in `run` until it kills itself inside the n-th
  // checkpoint file it writes. Returns false (with a test failure) when it did not.
  bool run_until_killed_in_write(const fs::path& run, int64_t max_iter, int n) const {
    fs::create_directories(run);
    const fs::path log = dir.path() / "killed.log";
    const Exit e = wait_exit(
        spawn(train(run, max_iter), log, {{{"COMBO_FAULT_KILL_IN_WRITE", std::to_string(n)}}, 0}));
    EXPECT_EQ(e.signal, SIGKILL) << read_text(log);
    return e.signal == SIGKILL;
  }

  // The weights of an uninterrupted run of `max_iter` iterations.
  combo::TensorDict reference_weights(int64_t max_iter) {
    const auto r = run_shell(train(reference, max_iter, false));
    EXPECT_EQ(r.status, 0) << r.output;
    return model_weights(reference / "model_final.pth");
  }
};

// Run by CI (label fault).
class Fault : public FaultRun {};
// Kills, disk full, fallbacks: minutes of 300 MB checkpoint writes (the frozen VGGish is in
// every checkpoint), run by scripts/fault.sh (labels fault and torture).
class FaultTorture : public FaultRun {};

}  // namespace

TEST_F(FaultTorture, KilledAtTwentyOneMomentsResumesToTheWeightsOfAnUnbrokenRun) {
  const int64_t max_iter = 36, period = 3;
  write_config(period);
  const auto expected = reference_weights(max_iter);
  const fs::path run = dir.path() / "run";
  fs::create_directories(run);
  std::mt19937 rng(20241204);
  // 5 kills inside a checkpoint write (the first or the second file the process writes), then
  // 16 at random moments.
  int kills = 0, kills_in_write = 0, resumes = 0, attempt = 0;
  int64_t max_lost = 0;
  bool finished = false;
  auto check_after_kill = [&](const std::string& when) {
    // Every checkpoint a resume could read is complete (only temporaries may be partial).
    for (const auto& e : fs::directory_iterator(run)) {
      const auto name = e.path().filename().string();
      if (name.size() > 4 && name.substr(name.size() - 4) == ".pth")
        EXPECT_NO_THROW(combo::load_state_dict(e.path().string())) << when << ": " << name;
    }
  };
  auto resume_and_check = [&](pid_t pid, const fs::path& log, int64_t done_before) {
    (void)pid;
    const std::string text = read_text(log);
    std::smatch m;
    static const std::regex re(R"(resume: continuing at iteration (\d+))");
    if (std::regex_search(text, m, re)) {
      ++resumes;
      max_lost = std::max<int64_t>(max_lost, done_before + 1 - std::stoll(m[1]));
    }
  };
  int64_t done_before = -1;
  for (int k = 0; k < 5; ++k) {
    const fs::path log = dir.path() / ("attempt_" + std::to_string(attempt++) + ".log");
    Spawn how;
    how.env = {{"COMBO_FAULT_KILL_IN_WRITE", std::to_string(1 + rng() % 2)}};
    const pid_t pid = spawn(train(run, max_iter), log, how);
    const Exit e = wait_exit(pid);
    resume_and_check(pid, log, done_before);
    ASSERT_EQ(e.signal, SIGKILL) << "expected a kill inside a checkpoint write\n" << read_text(log);
    ++kills;
    // The kill came while a checkpoint's temporary file was being written.
    if (!temporaries(run).empty()) ++kills_in_write;
    check_after_kill("after in-write kill " + std::to_string(k));
    done_before = last_logged_iteration(run);
  }
  while (kills < 21) {
    // Killed once this process has logged 0..period iterations (0: while it starts or loads
    // its checkpoint), plus a random delay: each kill loses at most what a period holds.
    const size_t lines_before = count_lines(run / "metrics.jsonl");
    const size_t wait_lines = rng() % (period + 1);
    const fs::path log = dir.path() / ("attempt_" + std::to_string(attempt++) + ".log");
    const pid_t pid = spawn(train(run, max_iter), log);
    int st = 0;
    pid_t gone = 0;
    while ((gone = ::waitpid(pid, &st, WNOHANG)) == 0 &&
           count_lines(run / "metrics.jsonl") < lines_before + wait_lines)
      std::this_thread::sleep_for(std::chrono::milliseconds(3));
    if (gone == 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(rng() % 40));
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &st, 0);
    }
    resume_and_check(pid, log, done_before);
    if (WIFEXITED(st)) {
      ASSERT_EQ(WEXITSTATUS(st), 0) << read_text(log);
      finished = true;
      break;
    }
    ++kills;
    check_after_kill("after kill " + std::to_string(kills));
    done_before = last_logged_iteration(run);
  }
  if (!finished) {
    const fs::path log = dir.path() / ("attempt_" + std::to_string(attempt++) + ".log");
    const Exit e = wait_exit(spawn(train(run, max_iter), log));
    resume_and_check(0, log, done_before);
    ASSERT_TRUE(e.exited && e.code == 0) << read_text(log);
  }
  // No resume fell back from a damaged file: none was ever visible.
  int corrupt_reads = 0;
  for (int a = 0; a < attempt; ++a) {
    const auto text = read_text(dir.path() / ("attempt_" + std::to_string(a) + ".log"));
    for (size_t p = text.find("cannot be used"); p != std::string::npos;
         p = text.find("cannot be used", p + 1))
      ++corrupt_reads;
  }
  EXPECT_TRUE(temporaries(run).empty()) << "a resume leaves no temporary behind";
  std::cout << "[ INFO ] kills " << kills << " (" << kills_in_write
            << " inside a checkpoint write), resumes " << resumes << ", iterations lost at most "
            << max_lost << " (checkpoint period " << period << "), damaged checkpoints read "
            << corrupt_reads << "\n";
  EXPECT_GE(kills, 20);
  EXPECT_GE(kills_in_write, 5);
  EXPECT_LE(max_lost, period);
  EXPECT_EQ(corrupt_reads, 0);
  EXPECT_TRUE(bitwise_equal(model_weights(run / "model_final.pth"), expected));
}

TEST_F(FaultTorture, DiskFullDuringACheckpointNamesTheFileKeepsThePreviousAndResumes) {
  const int64_t max_iter = 6;
  write_config(2);
  const auto expected = reference_weights(max_iter);
  const fs::path run = dir.path() / "run";
  // Killed while writing its second checkpoint: model_0000001.pth is the newest.
  ASSERT_TRUE(run_until_killed_in_write(run, max_iter, 2));
  const fs::path previous = run / "model_0000001.pth";
  ASSERT_TRUE(fs::exists(previous));
  const std::string previous_bytes = read_bytes(previous);
  const std::string pointer = read_text(run / "last_checkpoint");
  // The disk "fills": no file may grow beyond half a checkpoint.
  Exit e = wait_exit(spawn(train(run, max_iter), dir.path() / "b.log",
                           {{}, static_cast<int64_t>(previous_bytes.size() / 2)}));
  const std::string out = read_text(dir.path() / "b.log");
  ASSERT_TRUE(e.exited) << out;
  EXPECT_NE(e.code, 0) << out;
  EXPECT_NE(out.find("cannot write '" + (run / "model_0000003.pth").string() + "'"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("File too large"), std::string::npos) << out;
  EXPECT_EQ(read_bytes(previous), previous_bytes) << "the previous checkpoint changed";
  EXPECT_EQ(read_text(run / "last_checkpoint"), pointer);
  EXPECT_TRUE(temporaries(run).empty()) << "a failed write removes its temporary file";
  // Space again: the run resumes and ends as an unbroken one.
  e = wait_exit(spawn(train(run, max_iter), dir.path() / "c.log"));
  ASSERT_TRUE(e.exited && e.code == 0) << read_text(dir.path() / "c.log");
  EXPECT_TRUE(bitwise_equal(model_weights(run / "model_final.pth"), expected));
}

TEST_F(FaultTorture, DiskFullWhileWritingTheMetricsKeepsACheckpointAndResumes) {
  if (!fs::exists("/dev/full")) GTEST_SKIP() << "no /dev/full on this machine";
  const int64_t max_iter = 6;
  write_config(2);
  const auto expected = reference_weights(max_iter);
  const fs::path run = dir.path() / "run";
  ASSERT_TRUE(run_until_killed_in_write(run, max_iter, 2));
  // Every write to the metrics now fails with ENOSPC.
  fs::remove(run / "metrics.jsonl");
  fs::create_symlink("/dev/full", run / "metrics.jsonl");
  Exit e = wait_exit(spawn(train(run, max_iter), dir.path() / "b.log"));
  const std::string out = read_text(dir.path() / "b.log");
  ASSERT_TRUE(e.exited) << out;
  EXPECT_NE(e.code, 0) << out;
  EXPECT_NE(out.find("cannot write '" + (run / "metrics.jsonl").string() + "'"), std::string::npos)
      << out;
  EXPECT_NE(out.find("No space left on device"), std::string::npos) << out;
  // What the run had is kept: the iteration whose metrics failed is checkpointed.
  EXPECT_NE(out.find("model_0000002.pth holds iteration 3"), std::string::npos) << out;
  EXPECT_TRUE(fs::exists(run / "model_0000002.pth"));
  fs::remove(run / "metrics.jsonl");
  e = wait_exit(spawn(train(run, max_iter), dir.path() / "c.log"));
  const std::string resumed = read_text(dir.path() / "c.log");
  ASSERT_TRUE(e.exited && e.code == 0) << resumed;
  EXPECT_NE(resumed.find("resume: continuing at iteration 3"), std::string::npos) << resumed;
  EXPECT_TRUE(bitwise_equal(model_weights(run / "model_final.pth"), expected));
}

TEST_F(FaultTorture, DamagedLatestCheckpointsFallBackToTheNewestIntactOne) {
  const int64_t max_iter = 8;
  write_config(2);
  const auto expected = reference_weights(max_iter);
  const fs::path run = dir.path() / "run";
  // Checkpoints of iterations 1, 3, 5; killed while writing the fourth.
  ASSERT_TRUE(run_until_killed_in_write(run, max_iter, 4));
  for (const char* f : {"model_0000001.pth", "model_0000003.pth", "model_0000005.pth"})
    ASSERT_TRUE(fs::exists(run / f)) << f;
  // The newest has a changed byte inside its tensor data, the one before it is truncated.
  flip_byte(run / "model_0000005.pth", 0.5);
  fs::resize_file(run / "model_0000003.pth", fs::file_size(run / "model_0000003.pth") / 2);
  const Exit e = wait_exit(spawn(train(run, max_iter), dir.path() / "b.log"));
  const std::string out = read_text(dir.path() / "b.log");
  ASSERT_TRUE(e.exited && e.code == 0) << out;
  for (const char* f : {"model_0000005.pth", "model_0000003.pth"})
    EXPECT_NE(out.find((run / f).string() + " cannot be used"), std::string::npos) << f << out;
  EXPECT_NE(out.find("CRC-32 mismatch"), std::string::npos) << out;
  EXPECT_NE(out.find("falling back to " + (run / "model_0000001.pth").string()), std::string::npos)
      << out;
  EXPECT_NE(out.find("resume: continuing at iteration 2"), std::string::npos) << out;
  EXPECT_TRUE(bitwise_equal(model_weights(run / "model_final.pth"), expected));
}

TEST_F(Fault, ToolsRefuseDamagedWeightsNamingThemAndKeepEarlierResults) {
  write_config(2);
  const fs::path run = dir.path() / "run";
  auto r = run_shell(train(run, 2, false));
  ASSERT_EQ(r.status, 0) << r.output;
  const fs::path weights = run / "model_final.pth";
  const fs::path eval_dir = dir.path() / "eval";
  const std::string eval = tool_path("combo-eval") + " --config " + cfg.string() + " --out " +
                           eval_dir.string() + " --weights ";
  r = run_shell(eval + weights.string());
  ASSERT_EQ(r.status, 0) << r.output;
  const std::string results = read_bytes(eval_dir / "metrics.json");
  // A second evaluation into the same folder is refused without --overwrite.
  r = run_shell(eval + (run / "model_0000001.pth").string());
  EXPECT_NE(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("already holds the results of an evaluation of " + weights.string()),
            std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("--overwrite"), std::string::npos) << r.output;
  // A damaged checkpoint: refused by every tool that loads one, naming it; nothing overwritten.
  flip_byte(weights, 0.6);
  r = run_shell(eval + weights.string() + " --overwrite");
  EXPECT_NE(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("'" + weights.string() + "' is damaged or truncated"), std::string::npos)
      << r.output;
  EXPECT_EQ(read_bytes(eval_dir / "metrics.json"), results);
  r = run_shell(train(dir.path() / "finetune", 1, false) + " model.weights=" + weights.string());
  EXPECT_NE(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("'" + weights.string() + "' is damaged or truncated"), std::string::npos)
      << r.output;
}

TEST_F(Fault, NonFiniteLossStopsOrIsSkippedThroughTheConfigKey) {
  write_config(100);
  // An infinite loss weight on a term the matcher does not use: every step's loss is infinite.
  const std::string inf = " loss.consistency.type=fixed loss.consistency.weight=.inf";
  auto r = run_shell(train(dir.path() / "stop", 3, false) + inf + " solver.non_finite=stop");
  EXPECT_NE(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("non-finite loss at iteration 0 (loss_cosine"), std::string::npos)
      << r.output;
  r = run_shell(train(dir.path() / "skip", 3, false) + inf + " solver.non_finite=skip");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("non-finite loss at iteration 2, step skipped (3 so far)"),
            std::string::npos)
      << r.output;
  std::ifstream in(dir.path() / "skip" / "metrics.jsonl");
  std::string line, last;
  while (std::getline(in, line)) last = line;
  EXPECT_EQ(nlohmann::json::parse(last).at("skipped_steps").get<double>(), 3.0) << last;
  r = run_shell(train(dir.path() / "bad", 1, false) + " solver.non_finite=ignore");
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("solver.non_finite"), std::string::npos) << r.output;
}
