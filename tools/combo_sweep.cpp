// combo-sweep: runs an ablation grid (or a list of runs) of combo-train + combo-eval, one folder
// per run, several at once if asked; skips finished runs, resumes interrupted ones, reports
// failures without stopping the others, and collects results.csv / results.md.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "combo/core/check.h"
#include "combo/core/env.h"
#include "combo/core/state_dict.h"
#include "combo/engine/sweep.h"
#include "combo/engine/tool.h"

extern char** environ;

namespace fs = std::filesystem;
using nlohmann::json;
using namespace combo::engine;

namespace {

std::atomic<int> g_signal{0};
void on_signal(int sig) { g_signal = sig; }

/// The folder of this executable (combo-train and combo-eval are looked for next to it).
fs::path self_dir() {
  std::error_code ec;
  const auto p = fs::read_symlink("/proc/self/exe", ec);
  return ec ? fs::current_path() : p.parent_path();
}

std::string last_lines(const fs::path& file, size_t n) {
  std::ifstream in(file);
  std::deque<std::string> lines;
  std::string line;
  while (std::getline(in, line)) {
    lines.push_back(line);
    if (lines.size() > n) lines.pop_front();
  }
  std::string out;
  for (const auto& l : lines) out += l + "\n";
  return out;
}

/// Starts argv[0] with argv, stdout and stderr appended to `log`; returns the pid.
pid_t spawn(const std::vector<std::string>& args, const fs::path& log) {
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  pid_t pid = 0;
  const int rc = posix_spawn(&pid, argv[0], &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  COMBO_CHECK(rc == 0, "cannot start '", args[0], "': ", std::strerror(rc));
  return pid;
}

struct Job {
  Job(SweepRun r, fs::path d) : run(std::move(r)), dir(std::move(d)) {}
  SweepRun run;
  fs::path dir;
  std::string stage;  ///< train | eval
  pid_t pid = 0;
  std::chrono::steady_clock::time_point started;
  RunStatus status;
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "combo-sweep: run an ablation sweep of combo-train + combo-eval, resume it, and "
      "collect its results table"};
  std::string config_file, sweep_file, out_dir, collect_dir, split = "test";
  std::vector<std::string> grid, run_specs, overrides;
  int jobs = 1, threads = 0;
  bool dry_run = false, retry_failed = false;
  app.add_option("--config", config_file, "base config (YAML); overrides the sweep file's base");
  app.add_option("--sweep", sweep_file, "sweep YAML (base, overrides, grid, runs)");
  app.add_option("--grid", grid, "grid axis key=v1,v2 (repeat: the Cartesian product)");
  app.add_option("--run", run_specs,
                 "an explicit run NAME:key=value[;key=value...] (repeatable; after the grid)");
  app.add_option("--out", out_dir, "sweep folder (one sub-folder per run)");
  app.add_option("--jobs", jobs, "runs at once")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--threads", threads,
                 "intra-op threads per run (0 = cores / jobs; a runtime.threads override wins)");
  app.add_option("--split", split, "split combo-eval scores each run on")->capture_default_str();
  app.add_flag("--dry-run", dry_run, "list the runs and their commands, run nothing");
  app.add_flag("--retry-failed", retry_failed, "run failed runs again (default: report them)");
  app.add_option("--collect", collect_dir,
                 "only collect: write results.csv / results.md of this sweep folder");
  app.add_option("overrides", overrides, "key.path=value overrides for every run");
  CLI11_PARSE(app, argc, argv);

  // Progress lines appear as they happen, also when the output goes to a file.
  std::cout << std::unitbuf;
  return run_tool([&] {
    if (!collect_dir.empty()) {
      const auto table = collect_sweep(collect_dir);
      std::cout << sweep_markdown(table) << "\nwrote " << collect_dir << "/results.csv and "
                << collect_dir << "/results.md\n";
      return 0;
    }
    SweepSpec spec;
    if (!sweep_file.empty()) spec = read_sweep_file(sweep_file);
    if (!config_file.empty()) spec.base_config = config_file;
    COMBO_CHECK(!spec.base_config.empty(),
                "combo-sweep: no base config (--config or 'base:' in --sweep)");
    COMBO_CHECK(fs::exists(spec.base_config), "combo-sweep: base config '", spec.base_config,
                "' does not exist");
    COMBO_CHECK(!out_dir.empty(), "combo-sweep: --out is required");
    spec.common.insert(spec.common.end(), overrides.begin(), overrides.end());
    if (!grid.empty())
      for (auto& r : expand_grid(grid)) spec.runs.push_back(r);
    for (const auto& s : run_specs) {
      const auto colon = s.find(':');
      SweepRun r;
      r.name = s.substr(0, colon);
      if (colon != std::string::npos) {
        std::stringstream ss(s.substr(colon + 1));
        std::string o;
        while (std::getline(ss, o, ';'))
          if (!o.empty()) r.overrides.push_back(o);
      }
      spec.runs.push_back(r);
    }
    validate_sweep(spec);

    const fs::path bin = self_dir();
    const std::string train_bin = (bin / "combo-train").string();
    const std::string eval_bin = (bin / "combo-eval").string();
    for (const auto& b : {train_bin, eval_bin})
      COMBO_CHECK(fs::exists(b), "combo-sweep: '", b, "' not found next to combo-sweep");
    bool user_threads = false;
    for (const auto& o : spec.common)
      if (o.rfind("runtime.threads=", 0) == 0) user_threads = true;
    const int per_run_threads =
        threads > 0 ? threads : std::max(1, combo::hardware_threads() / std::max(1, jobs));

    auto train_args = [&](const Job& j, bool resume) {
      std::vector<std::string> a{train_bin, "--config", spec.base_config};
      if (resume) a.push_back("--resume");
      a.push_back("output_dir=" + j.dir.string());
      if (!user_threads) a.push_back("runtime.threads=" + std::to_string(per_run_threads));
      a.insert(a.end(), spec.common.begin(), spec.common.end());
      a.insert(a.end(), j.run.overrides.begin(), j.run.overrides.end());
      return a;
    };
    auto eval_args = [&](const Job& j) {
      std::vector<std::string> a{eval_bin,
                                 "--config",
                                 spec.base_config,
                                 "--split",
                                 split,
                                 "--out",
                                 (j.dir / ("eval_" + split)).string(),
                                 "--overwrite",  // a run retrained by the sweep is re-evaluated
                                 "output_dir=" + j.dir.string()};
      if (!user_threads) a.push_back("runtime.threads=" + std::to_string(per_run_threads));
      a.insert(a.end(), spec.common.begin(), spec.common.end());
      a.insert(a.end(), j.run.overrides.begin(), j.run.overrides.end());
      return a;
    };
    auto quoted = [](const std::vector<std::string>& a) {
      std::string s;
      for (const auto& x : a) s += (s.empty() ? "" : " ") + x;
      return s;
    };

    if (dry_run) {
      for (const auto& r : spec.runs) {
        Job j(r, fs::path(out_dir) / r.name);
        std::cout << r.name << " (" << run_state_name(read_run_status(j.dir.string()).state)
                  << ")\n  " << quoted(train_args(j, fs::exists(j.dir / "last_checkpoint")))
                  << "\n  " << quoted(eval_args(j)) << "\n";
      }
      return 0;
    }

    fs::create_directories(out_dir);
    {
      json m{{"base_config", spec.base_config},
             {"common", spec.common},
             {"split", split},
             {"runs", json::array()}};
      for (const auto& r : spec.runs)
        m["runs"].push_back({{"name", r.name}, {"overrides", r.overrides}});
      combo::write_file_atomic((fs::path(out_dir) / "sweep.json").string(), m.dump(2) + "\n");
    }
    std::signal(SIGINT, on_signal);
    std::signal(SIGTERM, on_signal);

    std::deque<Job> queue;
    int skipped = 0;
    for (const auto& r : spec.runs) {
      Job j(r, fs::path(out_dir) / r.name);
      fs::create_directories(j.dir);
      j.status = read_run_status(j.dir.string());
      if (j.status.state == RunState::kDone) {
        std::cout << "[sweep] " << r.name << ": done, skipped\n";
        ++skipped;
        continue;
      }
      if (j.status.state == RunState::kFailed && !retry_failed) {
        std::cout << "[sweep] " << r.name << ": failed before (" << j.status.stage
                  << "), skipped; --retry-failed runs it again\n";
        ++skipped;
        continue;
      }
      json rj{{"name", r.name},
              {"overrides", r.overrides},
              {"common", spec.common},
              {"base_config", spec.base_config},
              {"eval_dir", "eval_" + split}};
      combo::write_file_atomic((j.dir / "run.json").string(), rj.dump(2) + "\n");
      queue.push_back(std::move(j));
    }
    const size_t total = queue.size();
    std::vector<Job> running;
    std::vector<std::string> failed, interrupted;
    size_t finished = 0;
    auto start = [&](Job& j, const std::string& stage) {
      j.stage = stage;
      j.started = std::chrono::steady_clock::now();
      const bool resume = stage == "train" && fs::exists(j.dir / "last_checkpoint");
      const auto args = stage == "train" ? train_args(j, resume) : eval_args(j);
      std::ofstream(j.dir / "sweep.log", std::ios::app) << "\n$ " << quoted(args) << "\n";
      j.pid = spawn(args, j.dir / "sweep.log");
      j.status.state = RunState::kRunning;
      j.status.stage = stage;
      write_run_status(j.dir.string(), j.status);
      std::cout << "[sweep] " << j.run.name << ": " << stage << (resume ? " (resuming)" : "")
                << " started\n";
    };
    bool stopping = false;
    while (!queue.empty() || !running.empty()) {
      if (g_signal && !stopping) {
        stopping = true;
        std::cout << "[sweep] signal " << g_signal << ": stopping the running runs (they write a "
                  << "checkpoint); run the same command again to resume\n";
        for (auto& j : running) ::kill(j.pid, SIGTERM);
      }
      while (!stopping && !queue.empty() && static_cast<int>(running.size()) < jobs) {
        running.push_back(std::move(queue.front()));
        queue.pop_front();
        start(running.back(), "train");
      }
      if (stopping && running.empty()) break;
      int wstatus = 0;
      const pid_t pid = ::waitpid(-1, &wstatus, WNOHANG);
      if (pid <= 0) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        continue;
      }
      auto it =
          std::find_if(running.begin(), running.end(), [&](const Job& j) { return j.pid == pid; });
      if (it == running.end()) continue;
      Job& j = *it;
      j.status.seconds +=
          std::chrono::duration<double>(std::chrono::steady_clock::now() - j.started).count();
      const int code = WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : 128 + WTERMSIG(wstatus);
      const bool train_complete = fs::exists(j.dir / "model_final.pth");
      if (code != 0) {
        if (stopping) {
          j.status.state = RunState::kInterrupted;
          interrupted.push_back(j.run.name);
        } else {
          j.status.state = RunState::kFailed;
          j.status.exit_code = code;
          j.status.message = last_lines(j.dir / "sweep.log", 8);
          failed.push_back(j.run.name);
          std::cout << "[sweep] " << j.run.name << ": " << j.stage << " FAILED (exit " << code
                    << "), see " << (j.dir / "sweep.log").string() << "\n"
                    << j.status.message;
        }
        write_run_status(j.dir.string(), j.status);
        running.erase(it);
        ++finished;
        continue;
      }
      if (j.stage == "train" && (stopping || !train_complete)) {
        // combo-train stopped by the signal: a checkpoint was written; --resume continues.
        j.status.state = RunState::kInterrupted;
        write_run_status(j.dir.string(), j.status);
        interrupted.push_back(j.run.name);
        running.erase(it);
        continue;
      }
      if (j.stage == "train") {
        if (stopping) continue;
        start(j, "eval");
        continue;
      }
      j.status.state = RunState::kDone;
      j.status.stage.clear();
      write_run_status(j.dir.string(), j.status);
      ++finished;
      std::cout << "[sweep] " << j.run.name << ": done in "
                << static_cast<int64_t>(j.status.seconds) << " s (" << finished << "/" << total
                << ")\n";
      running.erase(it);
    }
    const auto table = collect_sweep(out_dir);
    std::cout << "\n"
              << sweep_markdown(table) << "\n[sweep] " << spec.runs.size() << " runs: "
              << (spec.runs.size() - failed.size() - interrupted.size() -
                  static_cast<size_t>(skipped))
              << " finished now, " << skipped << " skipped, " << failed.size() << " failed, "
              << interrupted.size() << " interrupted; results in " << out_dir << "/results.md\n";
    for (const auto& f : failed) std::cout << "  failed: " << f << "\n";
    if (!interrupted.empty()) {
      std::cout << "  interrupted (resume with the same command):";
      for (const auto& f : interrupted) std::cout << " " << f;
      std::cout << "\n";
      return 130;
    }
    return failed.empty() ? 0 : 1;
  });
}
