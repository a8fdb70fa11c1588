#include "combo/engine/trainer.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <ATen/CPUGeneratorImpl.h>

#include <csignal>
#include <cstring>
#include <filesystem>

#include "combo/core/check.h"
#include "combo/core/device.h"
#include "combo/core/profile.h"
#include "combo/engine/config.h"
#include "combo/engine/signals.h"

namespace fs = std::filesystem;

namespace combo::engine {
namespace {

at::Device model_device(const torch::nn::Module& model) {
  for (const auto& p : model.parameters()) return p.device();
  return at::kCPU;
}

// Gradients to None (not zero): a parameter that gets no gradient in a step is then skipped by
// AdamW in every run alike, which a bitwise resume relies on.
void zero_grad_to_none(const std::vector<at::Tensor>& params) {
  for (const auto& p : params) {
    auto& g = const_cast<at::Tensor&>(p).mutable_grad();
    if (g.defined()) g = at::Tensor();
  }
}

// This rank's generator states (CPU, and its CUDA device's) as bytes, for the checkpoints of a
// data-parallel run: [cpu state size as 8 bytes][cpu state][cuda state].
std::string rng_bytes() {
  const TensorDict rng = rng_state_dict();
  const at::Tensor cpu = rng.at("cpu").contiguous();
  at::Tensor cuda;
  for (const auto& [k, v] : rng)
    if (k.rfind("cuda.", 0) == 0 && !cuda.defined()) cuda = v.contiguous();
  const uint64_t n = static_cast<uint64_t>(cpu.numel());
  std::string out(sizeof(n), '\0');
  std::memcpy(out.data(), &n, sizeof(n));
  out.append(reinterpret_cast<const char*>(cpu.data_ptr<uint8_t>()), cpu.numel());
  if (cuda.defined())
    out.append(reinterpret_cast<const char*>(cuda.data_ptr<uint8_t>()), cuda.numel());
  return out;
}

at::Tensor bytes_tensor(const char* data, size_t size) {
  auto t = at::empty({static_cast<int64_t>(size)}, at::kByte);
  if (size > 0) std::memcpy(t.data_ptr<uint8_t>(), data, size);
  return t;
}

std::string rng_key(int rank, const char* gen) {
  return "rng_rank" + std::to_string(rank) + "." + gen;
}

// Window means for the writers. The losses are summed where they live (on the GPU) and read
// once per log period.
struct Window {
  std::map<std::string, double> loss_sums;
  double total_sum = 0.0, time_sum = 0.0, data_sum = 0.0;
  int64_t losses_count = 0, time_count = 0;
  std::vector<std::string> keys;  // the loss names summed in `device_sums` (then the total)
  at::Tensor device_sums;         // float64 [keys + 1] on the losses' device
  void reset() { *this = Window(); }

  void add(const TensorDict& losses) {
    std::vector<std::string> names;
    std::vector<at::Tensor> values;
    at::Tensor total;
    for (const auto& [k, v] : losses) {
      names.push_back(k);
      at::Tensor x = v.detach().to(at::kDouble).sum();
      total = total.defined() ? total + x : x;
      values.push_back(x);
    }
    values.push_back(total);
    if (device_sums.defined() && names != keys) read();  // another set of losses: settle first
    at::Tensor step = at::stack(values);
    device_sums = device_sums.defined() ? device_sums + step : step;
    keys = std::move(names);
    ++losses_count;
  }
  // Adds the device sums into loss_sums/total_sum (one transfer) and clears them.
  void read() {
    if (!device_sums.defined()) return;
    const at::Tensor host = device_sums.to(at::kCPU);
    const double* p = host.data_ptr<double>();
    for (size_t i = 0; i < keys.size(); ++i) loss_sums[keys[i]] += p[i];
    total_sum += p[keys.size()];
    device_sums = at::Tensor();
  }
};

/// The batch source as the training loop sees it: batches moved to the model's device. With
/// `prefetch` (on a GPU) the next batch is fetched and its copy queued as soon as a step has been
/// queued, so the loader's and the host's work overlap the GPU's. position() is where the source
/// stands after the batches handed out, not after the one prefetched, so checkpoints resume
/// exactly.
class DeviceBatches : public BatchSource {
 public:
  DeviceBatches(BatchSource& source, const at::Device& device, bool prefetch)
      : source_(source), device_(device), prefetch_(prefetch), position_(source.position()) {}
  TrainBatch next() override {
    if (!ready_) fetch();
    TrainBatch out = std::move(*ready_);
    ready_.reset();
    position_ = ready_position_;
    return out;
  }
  /// Fetches the next batch now (with prefetching on).
  void prefetch() {
    if (prefetch_ && !ready_) fetch();
  }
  std::pair<int64_t, int64_t> position() const override { return position_; }

 private:
  void fetch() {
    ready_ = batch_to_device(source_.next(), device_);
    ready_position_ = source_.position();
  }
  BatchSource& source_;
  at::Device device_;
  bool prefetch_;
  std::optional<TrainBatch> ready_;
  std::pair<int64_t, int64_t> ready_position_{0, 0};
  std::pair<int64_t, int64_t> position_;
};

}  // namespace

TrainerOptions trainer_options_from_config(const Config& config) {
  TrainerOptions o;
  o.output_dir = config.output_dir;
  o.max_iter = config.solver.max_iter;
  o.checkpoint_period = config.solver.checkpoint_period;
  o.keep_last = config.solver.keep_last;
  o.eval_period = config.test.eval_period;
  o.log_period = config.solver.log_period;
  o.non_finite = config.solver.non_finite;
  o.optimizer = optimizer_options_from_config(config);
  o.schedule = lr_schedule_options_from_config(config);
  o.clip = grad_clip_options_from_config(config);
  o.amp = config.solver.amp.enabled;
  o.amp_dtype = config.solver.amp.dtype;
  amp_dtype_from_string(o.amp_dtype);  // validates the key
  o.config_text = dump_config(config);
  COMBO_CHECK(config.runtime.dist_bucket_mb > 0, "runtime.dist_bucket_mb must be > 0, got ",
              config.runtime.dist_bucket_mb);
  o.dist_bucket_bytes = static_cast<int64_t>(config.runtime.dist_bucket_mb * (1 << 20));
  return o;
}

TrainBatch batch_to_device(const TrainBatch& batch, const at::Device& device) {
  TrainBatch out = batch;
  // To a GPU: from pinned memory, without waiting for the copy (the caching host allocator keeps
  // the pinned buffer until the copy is done).
  const bool async = device.is_cuda();
  auto move = [&](at::Tensor& t) {
    if (!t.defined() || t.device() == device) return;
    if (async && t.is_cpu()) {
      t = (t.is_pinned() ? t : t.pin_memory()).to(device, /*non_blocking=*/true);
    } else {
      t = t.to(device);
    }
  };
  move(out.inputs.images);
  move(out.inputs.maskiges);
  move(out.inputs.log_mel);
  for (auto& t : out.targets) {
    move(t.labels);
    move(t.masks);
  }
  return out;
}

Trainer::Trainer(model::ComboModel model, loss::SetCriterion criterion, TrainerOptions options)
    : model_(std::move(model)),
      criterion_(std::move(criterion)),
      options_(std::move(options)),
      schedule_([&] {
        auto s = options_.schedule;
        s.max_iter = options_.max_iter;
        return s;
      }()),
      device_(model_device(*model_)) {
  COMBO_CHECK(options_.max_iter > 0, "Trainer: max_iter must be > 0, got ", options_.max_iter);
  COMBO_CHECK(options_.log_period > 0, "Trainer: log_period must be > 0, got ",
              options_.log_period);
  COMBO_CHECK(options_.non_finite == "stop" || options_.non_finite == "skip",
              "Trainer: non_finite must be stop | skip, got '", options_.non_finite, "'");
  optimizer_ = build_optimizer(*model_, options_.optimizer);
  params_ = optimizer_.parameters();
  spdlog::debug("{}", param_groups_summary(optimizer_.groups));
  checkpointer_ = std::make_unique<Checkpointer>(
      *model_, &optimizer_, CheckpointerOptions{options_.output_dir, options_.keep_last});
  if (options_.amp) {
    amp_dtype_ = amp_dtype_from_string(options_.amp_dtype);
    if (device_.is_cuda()) {
      amp_active_ = true;
      if (amp_dtype_ == at::kHalf)
        scaler_ = std::make_unique<LossScaler>(options_.loss_scaler, device_);
    } else {
      spdlog::info("AMP requested but the model is on {}: training in fp32", device_.str());
    }
  }
}

void Trainer::set_distributed(std::shared_ptr<ProcessGroup> group) {
  if (!group || group->world_size() <= 1) {
    group_.reset();
    reducer_.reset();
    criterion_->set_num_masks_reducer(nullptr);
    return;
  }
  group_ = std::move(group);
  std::vector<at::Tensor> state = model_->parameters();
  for (const auto& b : model_->buffers()) state.push_back(b);
  broadcast_from_rank0(*group_, state, "broadcast of the initial weights");
  reducer_ = std::make_unique<GradientReducer>(group_, params_, options_.dist_bucket_bytes);
  // Mask2Former: num_masks = all_reduce(K) / world_size, and the gradients are averaged, so
  // the mask losses equal one process's on the union of the batches.
  auto g = group_;
  criterion_->set_num_masks_reducer([g](double local) {
    return g->all_reduce_sum(std::vector<double>{local}, "all-reduce of the mask count")[0] /
           g->world_size();
  });
  spdlog::info("data parallel: rank {} of {} ({}), {} gradient bucket(s) of <= {} MB",
               group_->rank(), group_->world_size(), group_->backend(), reducer_->num_buckets(),
               options_.dist_bucket_bytes >> 20);
}

// Collective in a data-parallel run (every rank's generator state is gathered): every rank
// calls it at the same points.
TrainingState Trainer::make_state(int64_t iteration, const BatchSource* source) const {
  TrainingState s;
  s.iteration = iteration;
  s.loader_position = source ? source->position() : loader_position_;
  s.config_text = options_.config_text;
  s.metrics = metrics_;
  s.metrics["skipped_steps"] = static_cast<double>(skipped_);
  if (scaler_) s.tensors = scaler_->state_dict();
  if (group_) {
    const auto all = group_->all_gather_bytes(rng_bytes(), "all-gather of the generator states");
    for (int r = 0; r < static_cast<int>(all.size()); ++r) {
      uint64_t n = 0;
      COMBO_CHECK(all[r].size() >= sizeof(n), "generator state of rank ", r, " is empty");
      std::memcpy(&n, all[r].data(), sizeof(n));
      COMBO_CHECK(all[r].size() >= sizeof(n) + n, "generator state of rank ", r, " is truncated");
      s.tensors[rng_key(r, "cpu")] = bytes_tensor(all[r].data() + sizeof(n), n);
      if (all[r].size() > sizeof(n) + n)
        s.tensors[rng_key(r, "cuda")] =
            bytes_tensor(all[r].data() + sizeof(n) + n, all[r].size() - sizeof(n) - n);
    }
    s.metrics["world_size"] = group_->world_size();
  }
  return s;
}

std::string Trainer::save_periodic(int64_t iteration, const BatchSource& source) {
  last_saved_iteration_ = iteration;
  const TrainingState s = make_state(iteration, &source);
  return is_main() ? checkpointer_->save_periodic(s) : std::string();
}

ResumeState Trainer::resume_or_load(bool resume) {
  ResumeState r;
  if (!resume) return r;
  if (is_main()) checkpointer_->remove_stale_temporaries();
  auto intact = checkpointer_->read_latest_intact();
  if (!intact) {
    spdlog::info("resume: no checkpoint in {}, starting from iteration 0", options_.output_dir);
    return r;
  }
  const std::optional<std::string> last = intact->first;
  TrainingState s = checkpointer_->load(intact->second, *last, /*restore_rng=*/true);
  intact.reset();  // the dict's tensors are copied into the model and optimizer
  r.resumed = true;
  r.start_iter = s.iteration + 1;
  r.loader_position = s.loader_position;
  r.checkpoint = *last;
  loader_position_ = s.loader_position;
  skipped_ =
      s.metrics.count("skipped_steps") ? static_cast<int64_t>(s.metrics.at("skipped_steps")) : 0;
  s.metrics.erase("skipped_steps");
  const int saved_world =
      s.metrics.count("world_size") ? static_cast<int>(s.metrics.at("world_size")) : 1;
  s.metrics.erase("world_size");
  metrics_ = s.metrics;
  // Every rank's generators: its own saved state when the run had this rank, else a stream of
  // its own derived from rank 0's (a run resumed with another number of processes continues
  // correctly but draws other random numbers than an unbroken run would have).
  const int rank = group_ ? group_->rank() : 0;
  const int world = group_ ? group_->world_size() : 1;
  TensorDict rank_rng;
  for (auto it = s.tensors.begin(); it != s.tensors.end();) {
    if (it->first.rfind("rng_rank", 0) == 0) {
      rank_rng[it->first] = it->second;
      it = s.tensors.erase(it);
    } else {
      ++it;
    }
  }
  if (rank_rng.count(rng_key(rank, "cpu"))) {
    TensorDict mine{{"cpu", rank_rng.at(rng_key(rank, "cpu"))}};
    if (rank_rng.count(rng_key(rank, "cuda")) && device_.is_cuda())
      mine["cuda." + std::to_string(device_.has_index() ? device_.index() : 0)] =
          rank_rng.at(rng_key(rank, "cuda"));
    restore_rng_state(mine);
  } else if (rank > 0) {
    auto gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_current_seed(gen.current_seed() + 1000003ULL * static_cast<uint64_t>(rank) +
                         static_cast<uint64_t>(r.start_iter));
  }
  if (saved_world != world)
    spdlog::warn(
        "resume: the checkpoint was written by {} process(es), this run has {}: the batches "
        "continue where they stopped, the random draws differ from an unbroken run",
        saved_world, world);
  if (scaler_ && !s.tensors.empty()) scaler_->load_state_dict(s.tensors);
  // The periodic checkpoint of an iteration is written before its evaluation, so the best
  // metric may be newer in model_best.pth.
  const std::string best_key = "best_" + options_.best_metric;
  const std::string best_file = checkpointer_->path("model_best.pth");
  TensorDict best;
  if (fs::exists(best_file)) {
    try {
      best = load_state_dict(best_file);
    } catch (const Error& e) {
      spdlog::warn("resume: {} cannot be read, its best metric is not used: {}", best_file,
                   e.what());
    }
  }
  if (!best.empty()) {
    auto it = best.find("metrics." + best_key);
    auto iit = best.find("metrics.best_iteration");
    if (it != best.end() &&
        (!metrics_.count(best_key) || it->second.item<double>() > metrics_.at(best_key))) {
      metrics_[best_key] = it->second.item<double>();
      if (iit != best.end()) metrics_["best_iteration"] = iit->second.item<double>();
    }
  }
  spdlog::info("resume: continuing at iteration {} from {}", r.start_iter, *last);
  return r;
}

void Trainer::evaluate(int64_t iteration, const BatchSource& source) {
  if (!evaluate_) return;
  // Fork the generators: evaluation must not shift the training's random stream.
  const TensorDict rng = rng_state_dict();
  std::map<std::string, double> results;
  try {
    results = evaluate_(iteration);
  } catch (...) {
    restore_rng_state(rng);
    throw;
  }
  restore_rng_state(rng);
  model_->train();
  std::string line;
  for (const auto& [k, v] : results) line += fmt::format(" {}={:.4f}", k, v);
  spdlog::info("evaluation at iteration {}:{}", iteration + 1, line);
  for (const auto& [k, v] : results) pending_eval_[k] = v;  // goes out with the next log
  auto it = results.find(options_.best_metric);
  double value = it == results.end() ? std::nan("") : it->second;
  if (group_) {
    // Rank 0's figure decides for every rank (model_best.pth and make_state are collective).
    const bool missing = is_main() && std::isnan(value);
    const auto v = group_->all_reduce_sum(
        std::vector<double>{is_main() && !missing ? value : 0.0, missing ? 1.0 : 0.0},
        "all-reduce of the evaluation result");
    value = v[1] > 0 ? std::nan("") : v[0];
  }
  if (std::isnan(value)) return;
  const std::string best_key = "best_" + options_.best_metric;
  if (!metrics_.count(best_key) || value > metrics_.at(best_key)) {
    metrics_[best_key] = value;
    metrics_["best_iteration"] = static_cast<double>(iteration);
    const TrainingState s = make_state(iteration, &source);
    if (is_main()) checkpointer_->save("model_best", s, /*update_pointer=*/false);
    spdlog::info("new best {} {:.4f} at iteration {}", options_.best_metric, value, iteration + 1);
  }
}

StepResult Trainer::step(const TrainBatch& batch, int64_t t, bool read_values) {
  StepResult r;
  // Before the forward pass, so the last step's gradients (0.76 GB for PVT-v2-b5) are not kept
  // through it: they would add to the activations at the peak.
  zero_grad_to_none(params_);
  model_->train();
  try {
    model::ComboOutputs outputs;
    {
      COMBO_PROFILE_SCOPE("forward");
      std::optional<AutocastGuard> autocast;
      if (amp_active_) autocast.emplace(amp_dtype_);
      outputs = model_->forward(batch.inputs);
    }
    COMBO_PROFILE_SCOPE("criterion");
    r.loss_tensors = criterion_->forward(model::criterion_inputs(outputs), batch.targets,
                                         batch.layout, points_.get());
  } catch (const std::exception& e) {
    // Say which iteration failed (e.g. NaN inputs stop in the matcher before any loss exists).
    throw Error(str_cat("training failed at iteration ", t, ": ", e.what()));
  }
  COMBO_CHECK(!r.loss_tensors.empty(), "Trainer: the criterion returned no loss at iteration ", t);
  r.finite = all_finite(r.loss_tensors);
  if (group_) {
    // The ranks agree on skipping or stopping, so they keep issuing the same collectives.
    const int sig = SignalGuard::requested();
    const auto agreed =
        group_->all_reduce_sum(std::vector<double>{r.finite ? 0.0 : 1.0, sig != 0 ? 1.0 : 0.0},
                               "all-reduce of the step's status");
    if (agreed[1] > 0 && stop_signal_ == 0) stop_signal_ = sig != 0 ? sig : SIGTERM;
    if (agreed[0] > 0 && r.finite) {
      if (options_.non_finite == "stop")
        throw Error(str_cat("non-finite loss on another rank at iteration ", t,
                            " (this rank's losses are finite: ", format_losses(r.loss_tensors),
                            ")"));
      r.finite = false;
    }
  }
  if (!r.finite) {
    if (options_.non_finite == "stop") check_finite_losses(r.loss_tensors, t);  // throws
    ++skipped_;
    spdlog::warn("non-finite loss at iteration {}, step skipped ({} so far): {}", t, skipped_,
                 format_losses(r.loss_tensors));
    return r;
  }
  at::Tensor total;
  for (const auto& [k, v] : r.loss_tensors) total = total.defined() ? total + v : v;
  bool overflow = false;
  {
    COMBO_PROFILE_SCOPE("backward");
    if (reducer_) reducer_->prepare();
    if (scaler_)
      scaler_->scale(total).backward();
    else
      total.backward();
    if (reducer_) {
      COMBO_PROFILE_SCOPE("gradient all-reduce");
      reducer_->finish();
    }
    if (scaler_) overflow = scaler_->unscale(params_);
  }
  {
    COMBO_PROFILE_SCOPE("optimizer");
    if (!overflow) {
      clip_gradients(params_, options_.clip);
      optimizer_.adamw->step();
    }
    if (scaler_) scaler_->update();
  }
  if (read_values) {
    for (const auto& [k, v] : r.loss_tensors) r.losses[k] = v.item<double>();
    r.total = total.item<double>();
  }
  r.updated = !overflow;
  return r;
}

TrainResult Trainer::run(BatchSource& loader_source, int64_t start_iter) {
  COMBO_CHECK(start_iter >= 0 && start_iter <= options_.max_iter, "Trainer::run: start_iter ",
              start_iter, " outside [0, ", options_.max_iter, "]");
  if (is_main())
    check_output_dir(options_.output_dir, options_.min_free_bytes > 0
                                              ? options_.min_free_bytes
                                              : 2 * estimate_checkpoint_bytes(*model_));
  // Only rank 0 writes the logs (with the losses averaged over the ranks).
  std::vector<std::shared_ptr<EventWriter>> writers;
  if (options_.jsonl && is_main())
    writers.push_back(
        std::make_shared<JsonlWriter>((fs::path(options_.output_dir) / "metrics.jsonl").string()));
  if (options_.tensorboard && is_main())
    writers.push_back(std::make_shared<TensorBoardWriter>(options_.output_dir));
  if (options_.console && is_main()) writers.push_back(std::make_shared<ConsoleWriter>());
  for (const auto& w : extra_writers_) writers.push_back(w);

  std::optional<SignalGuard> guard;
  if (options_.handle_signals) guard.emplace();
  SignalGuard::clear();
  stop_signal_ = 0;

  spdlog::info(
      "training iterations {}..{} on {}{}", start_iter, options_.max_iter - 1, device_.str(),
      amp_active_ ? (amp_dtype_ == at::kHalf ? " with fp16 AMP" : " with bf16 AMP") : " in fp32");
  TrainResult result;
  result.last_iteration = start_iter - 1;
  // Prefetching changes when the source is asked for a batch, not what it returns (see
  // TrainerOptions::prefetch).
  DeviceBatches source(loader_source, device_, options_.prefetch.value_or(device_.is_cuda()));
  IterationTimer timer;
  Window window;
  const auto base_lrs = optimizer_.base_lrs();

  for (int64_t t = start_iter; t < options_.max_iter; ++t) {
    timer.start();
    schedule_.apply(*optimizer_.adamw, base_lrs, t);
    TrainBatch batch = source.next();
    timer.data_ready();

    const StepResult step_result = step(batch, t, /*read_values=*/false);
    if (t + 1 < options_.max_iter) source.prefetch();
    if (step_result.finite) window.add(step_result.loss_tensors);
    const TensorDict& losses = step_result.loss_tensors;
    result.last_iteration = t;
    loader_position_ = source.position();

    // Hooks, in detectron2's order (see trainer.h).
    window.time_sum += timer.stop();
    window.data_sum += timer.last_data_seconds();
    ++window.time_count;

    const bool last = t + 1 == options_.max_iter;
    if (options_.checkpoint_period > 0 && (t + 1) % options_.checkpoint_period == 0)
      result.checkpoint = save_periodic(t, source);
    if (last) {
      last_saved_iteration_ = t;
      const TrainingState s = make_state(t, &source);
      if (is_main()) result.checkpoint = checkpointer_->save("model_final", s);
    }

    if (evaluate_ && (last || (options_.eval_period > 0 && (t + 1) % options_.eval_period == 0)))
      evaluate(t, source);

    if (after_step_) after_step_(t, losses);

    if ((t + 1) % options_.log_period == 0 || last) {
      window.read();
      if (group_) {
        // Sums over the ranks (every rank has the same loss keys: they agree on skipped steps).
        std::vector<double> v{window.total_sum, static_cast<double>(window.losses_count),
                              window.time_sum, window.data_sum};
        for (const auto& [k, x] : window.loss_sums) v.push_back(x);
        v = group_->all_reduce_sum(v, "all-reduce of the logged losses");
        const double w = group_->world_size();
        window.total_sum = v[0];
        window.losses_count = static_cast<int64_t>(std::llround(v[1]));
        window.time_sum = v[2] / w;
        window.data_sum = v[3] / w;
        size_t i = 4;
        for (auto& [k, x] : window.loss_sums) x = v[i++];
      }
      MetricsRecord r;
      r.iteration = t;
      r.max_iter = options_.max_iter;
      // The base lr in force (the heads' group; the encoders run at backbone_multiplier x it).
      r.lr = 0;
      for (size_t g = 0; g < optimizer_.groups.size(); ++g) r.lr = std::max(r.lr, optimizer_.lr(g));
      const double n = std::max<int64_t>(window.losses_count, 1);
      for (const auto& [k, v] : window.loss_sums) r.losses[k] = v / n;
      r.total_loss = window.losses_count ? window.total_sum / n : std::nan("");
      r.time = window.time_sum / std::max<int64_t>(window.time_count, 1);
      r.data_time = window.data_sum / std::max<int64_t>(window.time_count, 1);
      r.eta_seconds = timer.eta(options_.max_iter - t - 1);
      if (skipped_ > 0) r.extra["skipped_steps"] = static_cast<double>(skipped_);
      if (scaler_) r.extra["loss_scale"] = scaler_->scale_value();
      if (device_.is_cuda()) {
        const GpuMemory m = gpu_memory(device_);
        r.extra["gpu_mem_allocated"] = static_cast<double>(m.allocated);
        r.extra["gpu_mem_peak_allocated"] = static_cast<double>(m.peak_allocated);
        r.extra["gpu_mem_peak_reserved"] = static_cast<double>(m.peak_reserved);
      }
      for (const auto& [k, v] : pending_eval_) r.extra[k] = v;
      pending_eval_.clear();
      try {
        for (const auto& w : writers) w->write(r);
      } catch (const std::exception& e) {
        // Disk full (or the folder gone): keep what the run has, if it still fits, then stop.
        std::string kept;
        try {
          // (Several processes: the checkpoint is a collective the other ranks are not in.)
          COMBO_CHECK(!group_, "no checkpoint is written by one rank alone");
          if (last_saved_iteration_ != t) result.checkpoint = save_periodic(t, source);
          kept = "checkpoint " + result.checkpoint + " holds iteration " + std::to_string(t + 1);
        } catch (const std::exception& ce) {
          kept = std::string("the checkpoint could not be written either: ") + ce.what();
        }
        throw Error(str_cat("training stopped after iteration ", t + 1,
                            ": the metrics could not be written: ", e.what(), "; ", kept,
                            "; continue with --resume once there is space"));
      }
      window.reset();
    }

    if (const int sig = group_ ? stop_signal_ : SignalGuard::requested()) {
      SignalGuard::clear();
      if (last_saved_iteration_ != t) result.checkpoint = save_periodic(t, source);
      spdlog::warn("received signal {}: stopped after iteration {}, checkpoint {}", sig, t,
                   result.checkpoint);
      result.status = TrainStatus::kInterrupted;
      result.signal = sig;
      break;
    }
  }
  for (const auto& w : writers) w->flush();
  // Rank 0 has written its last checkpoint when every rank leaves.
  if (group_) group_->barrier("barrier at the end of training");
  result.skipped_steps = skipped_;
  return result;
}

}  // namespace combo::engine
