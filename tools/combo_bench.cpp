// combo-bench: timed, repeated measurements of COMBO on this machine (inference per clip,
// training step, per-component breakdown, data loader, log-mel front end, peak memory), as JSON
// records and a readable table. Performance is measured here, never asserted in tests.
#include <sys/resource.h>
#include <torch/cuda.h>
#include <torch/torch.h>
#include <unistd.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "combo/audio/log_mel.h"
#include "combo/core/check.h"
#include "combo/core/device.h"
#include "combo/core/env.h"
#include "combo/core/profile.h"
#include "combo/core/state_dict.h"
#include "combo/data/loader.h"
#include "combo/data/sample.h"
#if defined(COMBO_WITH_MEDIA)
#include "combo/data/synthetic.h"
#endif
#include "combo/engine/build_model.h"
#include "combo/engine/config.h"
#include "combo/engine/data_setup.h"
#include "combo/engine/tool.h"
#include "combo/engine/trainer.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// --- peak resident memory ---------------------------------------------------------------------

/// Resets the kernel's peak-RSS mark of this process (Linux: "5" > /proc/self/clear_refs).
/// Returns false where that is not possible (the peak is then the process's since start).
bool reset_peak_rss() {
  std::ofstream f("/proc/self/clear_refs");
  if (!f) return false;
  f << "5";
  f.flush();
  return static_cast<bool>(f);
}

/// A field of /proc/self/status in bytes (VmHWM = peak RSS, VmRSS = current).
int64_t proc_status_bytes(const std::string& field) {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind(field + ":", 0) == 0) {
      std::istringstream is(line.substr(field.size() + 1));
      int64_t kb = 0;
      is >> kb;
      return kb * 1024;
    }
  }
  return -1;
}

/// Minor page faults of this process so far (each first touch of a fresh page is one).
int64_t minor_page_faults() {
  struct rusage u {};
  ::getrusage(RUSAGE_SELF, &u);
  return static_cast<int64_t>(u.ru_minflt);
}

/// Bytes the C heap holds for live allocations (glibc: in-use heap chunks plus mmapped blocks);
/// -1 where unknown. Peak RSS minus this is what freed-but-kept heap pages cost.
int64_t heap_live_bytes() {
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33))
  const struct mallinfo2 m = mallinfo2();
  return static_cast<int64_t>(m.uordblks + m.hblkhd);
#else
  return -1;
#endif
}

/// Samples heap_live_bytes() (and RSS) every `period` on a background thread while alive:
/// the peak of live heap memory, and optionally every sample as CSV lines
/// (seconds, live bytes, RSS bytes) for a memory timeline.
class HeapSampler {
 public:
  explicit HeapSampler(std::ostream* trace = nullptr,
                       std::chrono::milliseconds period = std::chrono::milliseconds(5))
      : trace_(trace), period_(period), start_(std::chrono::steady_clock::now()) {
    if (heap_live_bytes() < 0) return;
    thread_ = std::thread([this] {
      while (!stop_.load()) {
        sample();
        std::this_thread::sleep_for(period_);
      }
    });
  }
  ~HeapSampler() { stop(); }
  void stop() {
    stop_.store(true);
    if (thread_.joinable()) thread_.join();
    sample();
  }
  int64_t peak() const { return peak_.load(); }

 private:
  void sample();
  std::ostream* trace_;
  std::chrono::milliseconds period_;
  std::chrono::steady_clock::time_point start_;
  std::atomic<bool> stop_{false};
  std::atomic<int64_t> peak_{-1};
  std::thread thread_;
};

void HeapSampler::sample() {
  const int64_t live = heap_live_bytes();
  if (live < 0) return;
  if (live > peak_.load()) peak_.store(live);
  if (trace_) {
    const std::chrono::duration<double> t = std::chrono::steady_clock::now() - start_;
    *trace_ << t.count() << "," << live << "," << proc_status_bytes("VmRSS") << "\n";
  }
}

// --- statistics -------------------------------------------------------------------------------

struct Stats {
  double median = 0, min = 0, max = 0;
};

Stats stats(std::vector<double> v) {
  Stats s;
  if (v.empty()) return s;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  s.median = n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
  s.min = v.front();
  s.max = v.back();
  return s;
}

json stats_json(const Stats& s) {
  return json{{"median", s.median}, {"min", s.min}, {"max", s.max}};
}

/// One measured figure: repeated values of `unit`, the peak RSS while it ran, and (for the model
/// figures) the per-component seconds of each run.
struct Figure {
  Figure(std::string n, std::string u) : name(std::move(n)), unit(std::move(u)) {}
  std::string name;
  std::string unit;  ///< "s" (lower is better) or e.g. "videos/s" (higher is better)
  std::vector<double> values;
  int64_t peak_rss = -1;
  bool peak_rss_scoped = true;  ///< false: the process's peak since start
  int64_t peak_heap_live = -1;  ///< peak of live C-heap bytes in the timed runs (-1: unknown)
  double page_faults = 0;       ///< minor page faults per timed run (touching fresh memory)
  /// CUDA caching allocator peaks over the warm-up and timed runs (-1: not on a GPU).
  int64_t peak_gpu_allocated = -1, peak_gpu_reserved = -1;
  std::map<std::string, std::vector<double>> components;
  json extra = json::object();
};

json figure_json(const Figure& f) {
  json j{{"name", f.name}, {"unit", f.unit}, {"runs", f.values.size()}, {"values", f.values}};
  j.update(stats_json(stats(f.values)));
  j["peak_rss_bytes"] = f.peak_rss;
  j["peak_rss_scope"] = f.peak_rss_scoped ? "figure" : "process";
  if (f.peak_heap_live >= 0) j["peak_heap_live_bytes"] = f.peak_heap_live;
  j["page_faults_per_run"] = f.page_faults;
  if (f.peak_gpu_reserved >= 0) {
    j["peak_gpu_allocated_bytes"] = f.peak_gpu_allocated;
    j["peak_gpu_reserved_bytes"] = f.peak_gpu_reserved;
  }
  if (!f.components.empty()) {
    json c = json::object();
    for (const auto& [k, v] : f.components) c[k] = stats_json(stats(v));
    j["components"] = c;
  }
  if (!f.extra.empty()) j["extra"] = f.extra;
  return j;
}

// --- timing -----------------------------------------------------------------------------------

struct Clock {
  bool cuda = false;
  void sync() const {
    if (cuda) torch::cuda::synchronize();
  }
  template <class F>
  double time(F&& body) const {
    sync();
    const auto t0 = std::chrono::steady_clock::now();
    body();
    sync();
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
};

/// Runs `body` warmup + runs times; records the timed runs' seconds and, when `profile` is
/// given, each timed run's components.
/// With `heap_sample_ms` > 0 the live heap is sampled that often during the timed runs (its
/// timeline appended to `trace` when given); sampling takes malloc's locks, so it is off for
/// timing.
template <class F>
void measure(Figure& fig, int warmup, int runs, const Clock& clock, F&& body,
             combo::prof::Profile* profile = nullptr, int heap_sample_ms = 0,
             std::ostream* trace = nullptr) {
  const c10::Device gpu(c10::kCUDA);  // the current CUDA device
  if (clock.cuda) combo::reset_peak_gpu_memory(gpu);
  for (int i = 0; i < warmup; ++i) body();
  fig.peak_rss_scoped = reset_peak_rss();
  std::optional<HeapSampler> heap;
  if (heap_sample_ms > 0) heap.emplace(trace, std::chrono::milliseconds(heap_sample_ms));
  const int64_t faults_before = minor_page_faults();
  for (int i = 0; i < runs; ++i) {
    std::optional<combo::prof::ProfileActivation> active;
    if (profile) {
      profile->clear();
      active.emplace(profile);
    }
    fig.values.push_back(clock.time(body));
    if (profile) {
      for (const auto& [k, v] : profile->seconds) fig.components[k].push_back(v);
    }
  }
  fig.peak_rss = proc_status_bytes("VmHWM");
  if (clock.cuda) {
    const auto m = combo::gpu_memory(gpu);
    fig.peak_gpu_allocated = m.peak_allocated;
    fig.peak_gpu_reserved = m.peak_reserved;
  }
  fig.page_faults = static_cast<double>(minor_page_faults() - faults_before) / runs;
  if (heap) {
    heap->stop();
    fig.peak_heap_live = heap->peak();
  }
}

// --- a synthetic batch at the config's settings ------------------------------------------------

/// `videos` clips of `frames` frames at size x size: random RGB frames and Maskiges, random
/// log-mel examples, and ground truth with one or two rectangles per frame (S4/MS3: 0/1; AVSS:
/// class ids), every frame annotated (the targets then follow the dataset's training rule).
combo::data::VideoBatch synthetic_batch(int64_t videos, int64_t frames, int64_t size,
                                        int64_t num_classes, bool avss) {
  std::vector<combo::data::VideoSample> samples;
  for (int64_t v = 0; v < videos; ++v) {
    combo::data::VideoSample s;
    s.video_id = "bench_" + std::to_string(v);
    s.index = v;
    s.frames = torch::randint(0, 256, {frames, 3, size, size}, torch::kUInt8);
    s.maskiges = torch::randint(0, 256, {frames, 3, size, size}, torch::kUInt8);
    s.log_mel = torch::randn({frames, 1, 96, 64}) * 2 - 4;
    auto labels = torch::zeros({frames, size, size}, torch::kLong);
    for (int64_t t = 0; t < frames; ++t) {
      const int64_t a = size / 8 + (t * size) / (8 * frames),
                    b = size / 2 + (t * size) / (8 * frames);
      labels[t].narrow(0, a, size / 3).narrow(1, b - size / 4, size / 3).fill_(1);
      if (avss)
        labels[t]
            .narrow(0, b, size / 4)
            .narrow(1, a, size / 4)
            .fill_(1 + (t + v) % std::max<int64_t>(num_classes - 1, 1));
    }
    s.labels = labels;
    s.has_gt = torch::ones({frames}, torch::kBool);
    s.slots = frames;
    s.orig_height = size;
    s.orig_width = size;
    samples.push_back(std::move(s));
  }
  return combo::data::collate(std::move(samples));
}

std::string human_bytes(int64_t b) {
  if (b < 0) return "-";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f GB", static_cast<double>(b) / (1024.0 * 1024 * 1024));
  return buf;
}

std::string fmt(double v, int precision = 3) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.*f", precision, v);
  return buf;
}

json read_json_file(const std::string& path) {
  std::ifstream in(path);
  COMBO_CHECK(in.good(), "cannot open '", path, "'");
  try {
    return json::parse(in);
  } catch (const std::exception& e) {
    COMBO_FAIL("'", path, "': not JSON (", e.what(), ")");
  }
}

const json* find_figure(const json& record, const std::string& name) {
  for (const auto& f : record.at("figures"))
    if (f.at("name") == name) return &f;
  return nullptr;
}

/// All records of a --json file as one Markdown table (model figures; then other figures), with
/// ratios to the anchor's figures when given.
std::string records_table(const std::string& file, const std::string& anchor_file) {
  const json records = read_json_file(file);
  COMBO_CHECK(records.is_array(), "'", file, "' is not a JSON array of combo-bench records");
  const json anchor = anchor_file.empty() ? json::object() : read_json_file(anchor_file);
  auto cell = [](const json* f) -> std::string {
    if (!f) return "-";
    return fmt(f->at("median").get<double>(), 2) + " (" + fmt(f->at("min").get<double>(), 2) + "-" +
           fmt(f->at("max").get<double>(), 2) + ")";
  };
  auto ratio = [&](const std::string& label, const char* key, double value) -> std::string {
    if (!anchor.contains(label) || !anchor[label].contains(key)) return "";
    return " **" + fmt(value / anchor[label][key].get<double>(), 2) + "x**";
  };
  std::ostringstream os;
  os << "| model | threads | clip | inference s | train step s | peak RSS inference | peak RSS "
        "train |\n|---|---|---|---|---|---|---|\n";
  std::ostringstream other;
  for (const auto& r : records) {
    const std::string label = r.at("label");
    const auto& p = r.at("parameters");
    const json* inf = find_figure(r, "inference per clip");
    const json* tr = find_figure(r, "train step");
    if (inf || tr) {
      os << "| " << label << " | " << r.at("runtime").value("intra_op_threads", 0) << " | "
         << p.value("videos", 0) << "x" << p.value("frames", 0) << " @ " << p.value("size", 0)
         << " | " << cell(inf) << (inf ? ratio(label, "inference", (*inf)["median"]) : "") << " | "
         << cell(tr) << (tr ? ratio(label, "train", (*tr)["median"]) : "") << " | ";
      for (const json* f : {inf, tr}) {
        const double gb = f ? (*f)["peak_rss_bytes"].get<double>() / (1024.0 * 1024 * 1024) : 0;
        os << (f ? fmt(gb, 2) + " GB" + ratio(label, "peak_rss_gb", gb) : "-") << " | ";
      }
      os << "\n";
    }
    for (const auto& f : r.at("figures")) {
      const std::string name = f.at("name");
      if (name == "inference per clip" || name == "train step") continue;
      other << "| " << label << " | " << name << " | " << cell(&f) << " | "
            << f.at("unit").get<std::string>() << " |\n";
    }
  }
  if (!other.str().empty())
    os << "\n| record | figure | median (min-max) | unit |\n|---|---|---|---|\n" << other.str();
  if (!anchor.empty())
    os << "\nRatios in bold: ComboAVS / official (" << anchor_file
       << "); below 1 is faster or smaller.\n";
  return os.str();
}

}  // namespace

int main(int argc, char** argv) {
  combo::engine::prefer_passive_openmp(argc, argv);
  CLI::App app{
      "combo-bench: time COMBO inference, training steps, their components, the data loader and "
      "the log-mel front end (warm-up runs, then repeated runs; median, min, max; peak RSS)"};
  std::string config_file = "configs/avs_s4/COMBO_PVTV2B5_bs8_90k.yaml";
  std::vector<std::string> overrides;
  std::string what = "inference,train";
  std::string label, json_out, device_name = "auto", data_root;
  int warmup = 2, runs = 5, threads = 0, heap_sample_ms = 0;
  int64_t videos = 1, frames = 5, size = 0, loader_videos = 64;
  bool keep_weights = false;
  std::string table_file, anchor_file, trace_file;
  app.add_option("--config", config_file, "model config (YAML with _base_)")->capture_default_str();
  app.add_option("--what", what,
                 "comma-separated figures: inference, train, loader, logmel (inference and train "
                 "include their component breakdown)")
      ->capture_default_str();
  app.add_option("--label", label, "name of this record (default: the config's file name)");
  app.add_option("--warmup", warmup, "untimed runs first")->capture_default_str();
  app.add_option("--runs", runs, "timed runs per figure")->capture_default_str();
  app.add_option("--threads", threads, "intra-op threads (0 = every core)")->capture_default_str();
  app.add_option("--device", device_name, "auto | cpu | cuda | cuda:N")->capture_default_str();
  app.add_option("--videos", videos, "videos per clip batch")->capture_default_str();
  app.add_option("--frames", frames, "frames per video")->capture_default_str();
  app.add_option("--size", size, "frame size (0 = the config's data.image_size)");
  app.add_option("--loader-videos", loader_videos,
                 "videos in the synthetic tree the loader figure reads (when --data is not given)")
      ->capture_default_str();
  app.add_option("--data", data_root,
                 "dataset root for the loader figure (default: a synthetic "
                 "S4 tree written to a temporary folder)");
  app.add_flag("--keep-weights", keep_weights,
               "load the config's weight files (default: random weights, as the anchor)");
  app.add_option("--json", json_out,
                 "append this record to a JSON array in FILE (created when missing)");
  app.add_option("--table", table_file,
                 "only print a Markdown table of the records in this JSON file (from --json)");
  app.add_option("--anchor", anchor_file,
                 "with --table: reference figures {label: {\"inference\": s, \"train\": s, "
                 "\"peak_rss_gb\": GB}} shown as ratios (bench/official_anchor.json)");
  app.add_option("--heap-sample-ms", heap_sample_ms,
                 "sample the live C heap this often (ms) in the timed inference and training runs "
                 "and report its peak (0 = off: sampling takes malloc's locks and slows the runs)")
      ->capture_default_str();
  app.add_option("--memory-trace", trace_file,
                 "write the live-heap and RSS timeline of the timed inference and training runs "
                 "to this CSV file (seconds,live_bytes,rss_bytes; '# figure' lines between); "
                 "samples every 5 ms unless --heap-sample-ms says otherwise");
  app.add_option("overrides", overrides, "key.path=value config overrides");
  CLI11_PARSE(app, argc, argv);

  return combo::engine::run_tool([&] {
    if (!table_file.empty()) {
      std::cout << records_table(table_file, anchor_file);
      return 0;
    }
    COMBO_CHECK(warmup >= 0 && runs >= 1, "combo-bench: need --warmup >= 0 and --runs >= 1");
    auto cfg = combo::engine::load_config(config_file, overrides);
    if (!keep_weights) {
      cfg.model.weights.clear();
      cfg.model.backbone.weights.clear();
      cfg.model.audio.weights.clear();
    }
    if (size <= 0) size = cfg.data.image_size;
    const auto info = combo::setup_runtime(threads, 0);
    const at::Device device = combo::resolve_device(device_name, "--device");
    cfg.runtime.device = device.str();  // what device-dependent defaults resolve against
    combo::set_tf32(cfg.runtime.tf32);
    Clock clock{device.is_cuda()};
    std::set<std::string> todo;
    {
      std::stringstream ss(what);
      std::string w;
      while (std::getline(ss, w, ',')) {
        COMBO_CHECK(w == "inference" || w == "train" || w == "loader" || w == "logmel",
                    "combo-bench: unknown figure '", w,
                    "' in --what (inference, train, loader, logmel)");
        todo.insert(w);
      }
    }
    if (label.empty()) label = fs::path(config_file).stem().string();
    std::cerr << "combo-bench " << label << " | " << info.to_string() << "\n";

    std::ofstream trace_stream;
    if (!trace_file.empty()) {
      trace_stream.open(trace_file);
      COMBO_CHECK(trace_stream.good(), "combo-bench: cannot write --memory-trace '", trace_file,
                  "'");
    }
    std::ostream* trace = trace_file.empty() ? nullptr : &trace_stream;
    if (trace && heap_sample_ms <= 0) heap_sample_ms = 5;
    auto trace_header = [&](const std::string& name) {
      if (trace) *trace << "# " << name << "\n";
    };
    combo::prof::Profile profile;
    if (clock.cuda) profile.synchronize = [] { torch::cuda::synchronize(); };
    std::vector<Figure> figures;
    json params{{"videos", videos},
                {"frames", frames},
                {"size", size},
                {"warmup", warmup},
                {"runs", runs},
                {"backbone", cfg.model.backbone.name},
                {"num_queries", cfg.model.decoder.num_queries},
                {"dec_layers", cfg.model.decoder.dec_layers},
                {"enc_layers", cfg.model.pixel_decoder.enc_layers},
                {"train_num_points", cfg.loss.train_num_points},
                {"pre_sam", cfg.model.pre_sam.enabled},
                {"dataset", cfg.data.dataset},
                {"random_weights", !keep_weights}};

    const bool avss = cfg.data.dataset == "avss";
    const auto kind = combo::loss::parse_dataset_kind(cfg.data.dataset);
    if (todo.count("inference") || todo.count("train")) {
      const int64_t rss_before_model = proc_status_bytes("VmRSS");
      auto model = combo::engine::build_model(cfg);
      model->to(device);
      int64_t total = 0, trainable = 0;
      for (const auto& p : model->parameters()) {
        total += p.numel();
        if (p.requires_grad()) trainable += p.numel();
      }
      params["params_total"] = total;
      params["params_trainable"] = trainable;
      params["model_rss_bytes"] = proc_status_bytes("VmRSS") - rss_before_model;
      auto batch = combo::data::to_device(
          synthetic_batch(videos, frames, size, cfg.model.num_classes, avss), device);

      if (todo.count("inference")) {
        Figure fig{"inference per clip", "s"};
        model->eval();
        trace_header(fig.name);
        measure(
            fig, warmup, runs, clock,
            [&] {
              c10::InferenceMode guard;
              auto p = model->predict(batch.inputs);
              (void)p;
            },
            &profile, heap_sample_ms, trace);
        figures.push_back(std::move(fig));
      }
      if (todo.count("train")) {
        auto criterion = combo::engine::build_criterion(cfg);
        criterion->to(device);
        auto options = combo::engine::trainer_options_from_config(cfg);
        options.output_dir = (fs::temp_directory_path() / "combo-bench").string();
        options.jsonl = options.tensorboard = options.console = false;
        options.handle_signals = false;
        options.max_iter = std::max<int64_t>(options.max_iter, warmup + runs + 1);
        combo::engine::Trainer trainer(model, criterion, options);
        auto t = combo::data::make_targets(batch, kind, /*train=*/true);
        combo::engine::TrainBatch tb;
        tb.inputs = batch.inputs;
        tb.targets = std::move(t.targets);
        tb.layout = std::move(t.layout);
        Figure fig{"train step", "s"};
        int64_t it = 0;
        trace_header(fig.name);
        measure(
            fig, warmup, runs, clock, [&] { trainer.step(tb, it++); }, &profile, heap_sample_ms,
            trace);
        figures.push_back(std::move(fig));
      }
    }

    if (todo.count("logmel")) {
      Figure fig{"log-mel front end", "clips/s"};
      // A 5 s AVSBench clip at 16 kHz: a chord with noise (the content does not change the cost).
      auto tt = torch::arange(5 * 16000, torch::kFloat64) / 16000.0;
      auto wave = (0.3 * torch::sin(2 * M_PI * 440 * tt) + 0.1 * torch::sin(2 * M_PI * 1234 * tt) +
                   0.01 * torch::randn({5 * 16000}, torch::kFloat64))
                      .to(torch::kFloat32);
      const int clips = 20;
      measure(fig, warmup, runs, Clock{}, [&] {
        for (int i = 0; i < clips; ++i) combo::audio::waveform_to_examples(wave, 16000);
      });
      for (auto& v : fig.values) v = clips / v;
      fig.extra["clip_seconds"] = 5;
      figures.push_back(std::move(fig));
    }

    if (todo.count("loader")) {
      // AVSBench S4 train on disk (a combo-synth tree unless --data), augmented, as the official
      // loader; or the in-memory synthetic task (data.source=synthetic, and always in a build
      // without the media stack).
      auto lcfg = cfg;
      lcfg.data.dataset = "s4";
      const bool in_memory = cfg.data.source == "synthetic" ||
                             (!combo::engine::has_media_stack() && data_root.empty());
      std::optional<fs::path> tmp;
      std::string name = "loader (S4 train, augmented)";
      if (in_memory) {
        lcfg.data.source = "synthetic";
        lcfg.data.synthetic.train_videos = loader_videos;
        name = "loader (S4 train, in-memory synthetic)";
      } else {
        lcfg.data.source = "files";
        lcfg.data.root = data_root;
#if defined(COMBO_WITH_MEDIA)
        if (data_root.empty()) {
          tmp = fs::temp_directory_path() / ("combo-bench-data-" + std::to_string(::getpid()));
          combo::data::SynthOptions so;
          so.dataset = "s4";
          so.out = tmp->string();
          so.train_videos = loader_videos;
          so.val_videos = so.test_videos = 1;
          so.size = 224;
          so.write_raw_videos = false;
          so.threads = 0;
          lcfg.data.root = combo::data::synthesize(so).root;
        }
#endif
      }
      auto set = combo::engine::build_dataset(lcfg, lcfg.data.train_split, /*train=*/true);
      auto lo = combo::engine::train_loader_options(lcfg);
      lo.infinite = false;
      Figure fig{name, "videos/s"};
      measure(fig, std::min(warmup, 1), runs, Clock{}, [&] {
        combo::data::DataLoader loader(set, lo);
        while (loader.next()) {
        }
      });
      for (auto& v : fig.values) v = static_cast<double>(set->size()) / v;
      fig.extra = json{{"videos", set->size()},
                       {"workers", lo.num_workers},
                       {"batch_videos", lo.batch_videos},
                       {"source", lcfg.data.source}};
      figures.push_back(std::move(fig));
      if (tmp) fs::remove_all(*tmp);
    }

    // --- report -------------------------------------------------------------------------------
    json record{{"label", label},         {"config", config_file},
                {"overrides", overrides}, {"runtime", json::parse(info.to_json())},
                {"parameters", params},   {"figures", json::array()}};
    for (const auto& f : figures) record["figures"].push_back(figure_json(f));

    std::cout << "\n"
              << label << " (" << info.device << ", " << info.intra_op_threads << " threads, "
              << videos << " video x " << frames << " frames, " << size << "x" << size << ")\n";
    std::cout
        << "| figure | median | min | max | unit | peak RSS | peak live heap | page faults/run |\n"
        << "|---|---|---|---|---|---|---|---|\n";
    for (const auto& f : figures) {
      const auto s = stats(f.values);
      std::cout << "| " << f.name << " | " << fmt(s.median) << " | " << fmt(s.min) << " | "
                << fmt(s.max) << " | " << f.unit << " | " << human_bytes(f.peak_rss) << " | "
                << human_bytes(f.peak_heap_live) << " | " << fmt(f.page_faults, 0) << " |\n";
    }
    for (const auto& f : figures) {
      if (f.components.empty()) continue;
      std::cout
          << "\n"
          << f.name << ", components (median seconds per run; nested stages are "
          << "also part of their parent):\n| component | median | min | max |\n|---|---|---|---|\n";
      for (const auto& [k, v] : f.components) {
        const auto s = stats(v);
        std::cout << "| " << k << " | " << fmt(s.median) << " | " << fmt(s.min) << " | "
                  << fmt(s.max) << " |\n";
      }
    }
    if (!json_out.empty()) {
      json all = json::array();
      if (fs::exists(json_out)) {
        std::ifstream in(json_out);
        try {
          all = json::parse(in);
        } catch (const std::exception& e) {
          COMBO_FAIL("combo-bench: '", json_out, "' is not a JSON array of records: ", e.what());
        }
        COMBO_CHECK(all.is_array(), "combo-bench: '", json_out, "' is not a JSON array of records");
      }
      all.push_back(record);
      combo::write_file_atomic(json_out, all.dump(2) + "\n");
      std::cout << "\nappended to " << json_out << "\n";
    }
    return 0;
  });
}
