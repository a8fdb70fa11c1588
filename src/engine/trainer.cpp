#include "combo/engine/trainer.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <filesystem>

#include "combo/core/check.h"
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

// Window means for the writers.
struct Window {
  std::map<std::string, double> loss_sums;
  double total_sum = 0.0, time_sum = 0.0, data_sum = 0.0;
  int64_t losses_count = 0, time_count = 0;
  void reset() { *this = Window(); }
};

}  // namespace

TrainerOptions trainer_options_from_config(const Config& config) {
  TrainerOptions o;
  o.output_dir = config.output_dir;
  o.max_iter = config.solver.max_iter;
  o.checkpoint_period = config.solver.checkpoint_period;
  o.keep_last = config.solver.keep_last;
  o.eval_period = config.test.eval_period;
  o.optimizer = optimizer_options_from_config(config);
  o.schedule = lr_schedule_options_from_config(config);
  o.clip = grad_clip_options_from_config(config);
  o.amp = config.solver.amp.enabled;
  o.amp_dtype = config.solver.amp.dtype;
  amp_dtype_from_string(o.amp_dtype);  // validates the key
  o.config_text = dump_config(config);
  return o;
}

TrainBatch batch_to_device(const TrainBatch& batch, const at::Device& device) {
  TrainBatch out = batch;
  auto move = [&](at::Tensor& t) {
    if (t.defined()) t = t.to(device);
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

TrainingState Trainer::make_state(int64_t iteration, const BatchSource* source) const {
  TrainingState s;
  s.iteration = iteration;
  s.loader_position = source ? source->position() : loader_position_;
  s.config_text = options_.config_text;
  s.metrics = metrics_;
  s.metrics["skipped_steps"] = static_cast<double>(skipped_);
  if (scaler_) s.tensors = scaler_->state_dict();
  return s;
}

std::string Trainer::save_periodic(int64_t iteration, const BatchSource& source) {
  last_saved_iteration_ = iteration;
  return checkpointer_->save_periodic(make_state(iteration, &source));
}

ResumeState Trainer::resume_or_load(bool resume) {
  ResumeState r;
  if (!resume) return r;
  auto last = checkpointer_->last_checkpoint();
  if (!last) {
    spdlog::info("resume: no checkpoint in {}, starting from iteration 0", options_.output_dir);
    return r;
  }
  TrainingState s = checkpointer_->load(*last, /*restore_rng=*/true);
  r.resumed = true;
  r.start_iter = s.iteration + 1;
  r.loader_position = s.loader_position;
  r.checkpoint = *last;
  loader_position_ = s.loader_position;
  skipped_ =
      s.metrics.count("skipped_steps") ? static_cast<int64_t>(s.metrics.at("skipped_steps")) : 0;
  s.metrics.erase("skipped_steps");
  metrics_ = s.metrics;
  if (scaler_ && !s.tensors.empty()) scaler_->load_state_dict(s.tensors);
  // The periodic checkpoint of an iteration is written before its evaluation, so the best
  // metric may be newer in model_best.pth.
  const std::string best_key = "best_" + options_.best_metric;
  const std::string best_file = checkpointer_->path("model_best.pth");
  if (fs::exists(best_file)) {
    const TensorDict best = load_state_dict(best_file);
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
  if (it == results.end()) return;
  const std::string best_key = "best_" + options_.best_metric;
  if (!metrics_.count(best_key) || it->second > metrics_.at(best_key)) {
    metrics_[best_key] = it->second;
    metrics_["best_iteration"] = static_cast<double>(iteration);
    checkpointer_->save("model_best", make_state(iteration, &source), /*update_pointer=*/false);
    spdlog::info("new best {} {:.4f} at iteration {}", options_.best_metric, it->second,
                 iteration + 1);
  }
}

StepResult Trainer::step(const TrainBatch& batch, int64_t t) {
  StepResult r;
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
    r.loss_tensors =
        criterion_->forward(model::criterion_inputs(outputs), batch.targets, batch.layout);
  } catch (const std::exception& e) {
    // Say which iteration failed (e.g. NaN inputs stop in the matcher before any loss exists).
    throw Error(str_cat("training failed at iteration ", t, ": ", e.what()));
  }
  COMBO_CHECK(!r.loss_tensors.empty(), "Trainer: the criterion returned no loss at iteration ", t);
  r.finite = all_finite(r.loss_tensors);
  zero_grad_to_none(params_);
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
    if (scaler_) {
      scaler_->scale(total).backward();
      overflow = scaler_->unscale(params_);
    } else {
      total.backward();
    }
  }
  {
    COMBO_PROFILE_SCOPE("optimizer");
    if (!overflow) {
      clip_gradients(params_, options_.clip);
      optimizer_.adamw->step();
    }
    if (scaler_) scaler_->update();
  }
  for (const auto& [k, v] : r.loss_tensors) r.losses[k] = v.item<double>();
  r.total = total.item<double>();
  r.updated = !overflow;
  return r;
}

TrainResult Trainer::run(BatchSource& source, int64_t start_iter) {
  COMBO_CHECK(start_iter >= 0 && start_iter <= options_.max_iter, "Trainer::run: start_iter ",
              start_iter, " outside [0, ", options_.max_iter, "]");
  check_output_dir(options_.output_dir, options_.min_free_bytes > 0
                                            ? options_.min_free_bytes
                                            : 2 * estimate_checkpoint_bytes(*model_));
  std::vector<std::shared_ptr<EventWriter>> writers;
  if (options_.jsonl)
    writers.push_back(
        std::make_shared<JsonlWriter>((fs::path(options_.output_dir) / "metrics.jsonl").string()));
  if (options_.tensorboard)
    writers.push_back(std::make_shared<TensorBoardWriter>(options_.output_dir));
  if (options_.console) writers.push_back(std::make_shared<ConsoleWriter>());
  for (const auto& w : extra_writers_) writers.push_back(w);

  std::optional<SignalGuard> guard;
  if (options_.handle_signals) guard.emplace();
  SignalGuard::clear();

  spdlog::info(
      "training iterations {}..{} on {}{}", start_iter, options_.max_iter - 1, device_.str(),
      amp_active_ ? (amp_dtype_ == at::kHalf ? " with fp16 AMP" : " with bf16 AMP") : " in fp32");
  TrainResult result;
  result.last_iteration = start_iter - 1;
  IterationTimer timer;
  Window window;
  const auto base_lrs = optimizer_.base_lrs();

  for (int64_t t = start_iter; t < options_.max_iter; ++t) {
    timer.start();
    schedule_.apply(*optimizer_.adamw, base_lrs, t);
    TrainBatch batch = batch_to_device(source.next(), device_);
    timer.data_ready();

    const StepResult step_result = step(batch, t);
    if (step_result.finite) {
      for (const auto& [k, v] : step_result.losses) window.loss_sums[k] += v;
      window.total_sum += step_result.total;
      ++window.losses_count;
    }
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
      result.checkpoint = checkpointer_->save("model_final", make_state(t, &source));
    }

    if (evaluate_ && (last || (options_.eval_period > 0 && (t + 1) % options_.eval_period == 0)))
      evaluate(t, source);

    if (after_step_) after_step_(t, losses);

    if ((t + 1) % options_.log_period == 0 || last) {
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
      for (const auto& [k, v] : pending_eval_) r.extra[k] = v;
      pending_eval_.clear();
      for (const auto& w : writers) w->write(r);
      window.reset();
    }

    if (const int sig = SignalGuard::requested()) {
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
  result.skipped_steps = skipped_;
  return result;
}

}  // namespace combo::engine
