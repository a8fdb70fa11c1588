#include "combo/engine/checkpointer.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Context.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/statvfs.h>
#include <torch/cuda.h>
#include <torch/optim/adamw.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <type_traits>

#include "combo/core/check.h"

namespace fs = std::filesystem;

namespace combo::engine {
namespace {

constexpr int64_t kCheckpointVersion = 1;
constexpr const char* kPointerFile = "last_checkpoint";

// The key LibTorch's optimizers use for a parameter's state: the TensorImpl address printed as
// text in 1.13, the address itself in later versions. Deduced from the map type so both build.
template <typename Map>
typename Map::key_type state_key(const at::Tensor& p) {
  using Key = typename Map::key_type;
  if constexpr (std::is_same_v<Key, std::string>) {
    std::ostringstream os;
    os << static_cast<const void*>(p.unsafeGetTensorImpl());
    return os.str();
  } else {
    return static_cast<Key>(p.unsafeGetTensorImpl());
  }
}
using StateMap = std::decay_t<decltype(std::declval<torch::optim::Optimizer&>().state())>;

at::Tensor scalar_double(double v) { return torch::tensor(v, torch::kFloat64); }
at::Tensor scalar_long(int64_t v) { return torch::tensor(v, torch::kInt64); }

const at::Tensor& require(const TensorDict& dict, const std::string& key,
                          const std::string& source) {
  auto it = dict.find(key);
  COMBO_CHECK(it != dict.end(), source, ": missing key '", key, "'");
  return it->second;
}

std::vector<std::string> split_lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream is(text);
  for (std::string line; std::getline(is, line);)
    if (!line.empty()) out.push_back(line);
  return out;
}

std::string join_lines(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& n : names) out += n + "\n";
  return out;
}

bool starts_with(const std::string& s, const std::string& prefix) {
  return s.rfind(prefix, 0) == 0;
}

}  // namespace

at::Tensor string_to_tensor(const std::string& text) {
  auto t = torch::empty({static_cast<int64_t>(text.size())}, torch::kUInt8);
  if (!text.empty()) std::memcpy(t.data_ptr<uint8_t>(), text.data(), text.size());
  return t;
}

std::string tensor_to_string(const at::Tensor& tensor) {
  COMBO_CHECK(tensor.scalar_type() == torch::kUInt8 && tensor.dim() == 1,
              "tensor_to_string: expected a 1-D uint8 tensor, got ", tensor.scalar_type(), " ",
              tensor.sizes());
  auto t = tensor.cpu().contiguous();
  return std::string(reinterpret_cast<const char*>(t.data_ptr<uint8_t>()), t.numel());
}

TensorDict optimizer_state_dict(const NamedOptimizer& optimizer) {
  COMBO_CHECK(optimizer.adamw, "optimizer_state_dict: no optimizer");
  TensorDict out;
  const auto& groups = optimizer.adamw->param_groups();
  COMBO_CHECK(groups.size() == optimizer.groups.size(), "optimizer_state_dict: the optimizer has ",
              groups.size(), " groups, the names ", optimizer.groups.size());
  const auto& state = optimizer.adamw->state();
  for (size_t g = 0; g < groups.size(); ++g) {
    const auto& o = static_cast<const torch::optim::AdamWOptions&>(groups[g].options());
    const std::string gp = "group." + std::to_string(g) + ".";
    out[gp + "lr"] = scalar_double(o.lr());
    out[gp + "base_lr"] = scalar_double(optimizer.groups[g].lr);
    out[gp + "weight_decay"] = scalar_double(o.weight_decay());
    out[gp + "eps"] = scalar_double(o.eps());
    out[gp + "amsgrad"] = scalar_double(o.amsgrad() ? 1.0 : 0.0);
    out[gp + "betas"] =
        torch::tensor({std::get<0>(o.betas()), std::get<1>(o.betas())}, torch::kFloat64);
    out[gp + "params"] = string_to_tensor(join_lines(optimizer.groups[g].names));
    const auto& spec = optimizer.groups[g];
    for (size_t i = 0; i < spec.params.size(); ++i) {
      auto it = state.find(state_key<StateMap>(spec.params[i]));
      if (it == state.end()) continue;
      const auto& s = static_cast<const torch::optim::AdamWParamState&>(*it->second);
      const std::string sp = "state." + spec.names[i] + ".";
      out[sp + "step"] = scalar_long(s.step());
      out[sp + "exp_avg"] = s.exp_avg().detach().to(torch::kCPU, false, true);
      out[sp + "exp_avg_sq"] = s.exp_avg_sq().detach().to(torch::kCPU, false, true);
      if (s.max_exp_avg_sq().defined())
        out[sp + "max_exp_avg_sq"] = s.max_exp_avg_sq().detach().to(torch::kCPU, false, true);
    }
  }
  return out;
}

void load_optimizer_state_dict(NamedOptimizer& optimizer, const TensorDict& dict) {
  COMBO_CHECK(optimizer.adamw, "load_optimizer_state_dict: no optimizer");
  const std::string src = "optimizer state";
  auto& groups = optimizer.adamw->param_groups();
  size_t saved_groups = 0;
  while (dict.count("group." + std::to_string(saved_groups) + ".params")) ++saved_groups;
  COMBO_CHECK(saved_groups == groups.size(), src, ": the checkpoint has ", saved_groups,
              " param groups, the optimizer ", groups.size(),
              " (different model or optimizer settings?)");
  std::map<std::string, at::Tensor> by_name;
  for (size_t g = 0; g < groups.size(); ++g) {
    const std::string gp = "group." + std::to_string(g) + ".";
    const auto names = split_lines(tensor_to_string(require(dict, gp + "params", src)));
    const auto& expected = optimizer.groups[g].names;
    if (names != expected) {
      std::ostringstream os;
      os << src << ": param group " << g << " differs between the checkpoint (" << names.size()
         << " parameters) and the optimizer (" << expected.size() << ")";
      std::set<std::string> a(names.begin(), names.end()), b(expected.begin(), expected.end());
      for (const auto& n : a)
        if (!b.count(n)) os << "\n  only in the checkpoint: " << n;
      for (const auto& n : b)
        if (!a.count(n)) os << "\n  only in the optimizer: " << n;
      COMBO_FAIL(os.str());
    }
    auto& o = static_cast<torch::optim::AdamWOptions&>(groups[g].options());
    o.lr(require(dict, gp + "lr", src).item<double>());
    o.weight_decay(require(dict, gp + "weight_decay", src).item<double>());
    o.eps(require(dict, gp + "eps", src).item<double>());
    o.amsgrad(require(dict, gp + "amsgrad", src).item<double>() != 0.0);
    const auto betas = require(dict, gp + "betas", src).to(torch::kFloat64).contiguous();
    COMBO_CHECK(betas.numel() == 2, src, ": ", gp, "betas must hold 2 values");
    o.betas({betas[0].item<double>(), betas[1].item<double>()});
    optimizer.groups[g].lr = require(dict, gp + "base_lr", src).item<double>();
    for (size_t i = 0; i < expected.size(); ++i)
      by_name[expected[i]] = optimizer.groups[g].params[i];
  }
  // Every state entry must belong to a known parameter.
  for (const auto& [key, value] : dict) {
    if (!starts_with(key, "state.")) continue;
    const auto dot = key.rfind('.');
    const std::string name = key.substr(6, dot - 6);
    const std::string field = key.substr(dot + 1);
    COMBO_CHECK(by_name.count(name), src, ": state for unknown parameter '", name, "'");
    COMBO_CHECK(
        field == "step" || field == "exp_avg" || field == "exp_avg_sq" || field == "max_exp_avg_sq",
        src, ": unknown state field '", key, "'");
  }
  auto& state = optimizer.adamw->state();
  state.clear();
  for (const auto& [name, p] : by_name) {
    const std::string sp = "state." + name + ".";
    if (!dict.count(sp + "step")) continue;
    auto restore = [&](const std::string& field) {
      const auto& t = require(dict, sp + field, src);
      COMBO_CHECK(t.sizes() == p.sizes(), src, ": ", sp, field, " has shape ", t.sizes(),
                  ", the parameter ", p.sizes());
      return t.to(p.device(), p.scalar_type(), false, true).contiguous();
    };
    auto s = std::make_unique<torch::optim::AdamWParamState>();
    s->step(require(dict, sp + "step", src).item<int64_t>());
    s->exp_avg(restore("exp_avg"));
    s->exp_avg_sq(restore("exp_avg_sq"));
    if (dict.count(sp + "max_exp_avg_sq")) s->max_exp_avg_sq(restore("max_exp_avg_sq"));
    state[state_key<StateMap>(p)] = std::move(s);
  }
}

TensorDict rng_state_dict() {
  TensorDict out;
  {
    auto gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    out["cpu"] = gen.get_state();
  }
  if (torch::cuda::is_available()) {
    for (int64_t i = 0; i < static_cast<int64_t>(torch::cuda::device_count()); ++i) {
      auto gen = at::globalContext().defaultGenerator(
          at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(i)));
      std::lock_guard<std::mutex> lock(gen.mutex());
      out["cuda." + std::to_string(i)] = gen.get_state();
    }
  }
  return out;
}

void restore_rng_state(const TensorDict& dict) {
  for (const auto& [key, value] : dict) {
    if (key == "cpu") {
      auto gen = at::detail::getDefaultCPUGenerator();
      std::lock_guard<std::mutex> lock(gen.mutex());
      gen.set_state(value);
    } else if (starts_with(key, "cuda.")) {
      const int64_t i = std::stoll(key.substr(5));
      if (!torch::cuda::is_available() || i >= static_cast<int64_t>(torch::cuda::device_count())) {
        spdlog::warn("checkpoint: CUDA generator state of device {} ignored (device absent)", i);
        continue;
      }
      auto gen = at::globalContext().defaultGenerator(
          at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(i)));
      std::lock_guard<std::mutex> lock(gen.mutex());
      gen.set_state(value);
    } else {
      COMBO_FAIL("restore_rng_state: unknown generator '", key, "'");
    }
  }
}

void check_output_dir(const std::string& dir, uint64_t min_free_bytes) {
  COMBO_CHECK(!dir.empty(), "output folder: empty path (set output_dir)");
  std::error_code ec;
  fs::create_directories(dir, ec);
  COMBO_CHECK(!ec && fs::is_directory(dir), "output folder '", dir,
              "' cannot be created: ", ec ? ec.message() : "a file of that name exists");
  const fs::path probe = fs::path(dir) / (".write_test." + std::to_string(::getpid()));
  {
    std::ofstream f(probe, std::ios::binary);
    f << "probe";
    f.flush();
    COMBO_CHECK(f.good(), "output folder '", dir, "' is not writable: ", std::strerror(errno));
  }
  fs::remove(probe, ec);
  struct statvfs st {};
  COMBO_CHECK(::statvfs(dir.c_str(), &st) == 0, "output folder '", dir,
              "': statvfs failed: ", std::strerror(errno));
  const uint64_t free_bytes = static_cast<uint64_t>(st.f_bavail) * st.f_frsize;
  COMBO_CHECK(free_bytes >= min_free_bytes, "output folder '", dir, "' has ",
              free_bytes / (1024.0 * 1024.0), " MiB free, training needs at least ",
              min_free_bytes / (1024.0 * 1024.0), " MiB for its checkpoints");
}

uint64_t estimate_checkpoint_bytes(const torch::nn::Module& model) {
  uint64_t params = 0, buffers = 0;
  for (const auto& p : model.parameters()) params += p.numel() * p.element_size();
  for (const auto& b : model.buffers()) buffers += b.numel() * b.element_size();
  // Parameters + AdamW's two moments + buffers + RNG, config and pickle overhead.
  return 3 * params + buffers + (1u << 20);
}

std::string periodic_checkpoint_name(int64_t iteration) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "model_%07lld.pth", static_cast<long long>(iteration));
  return buf;
}

TensorDict checkpoint_model_state(const TensorDict& checkpoint) {
  TensorDict out;
  for (const auto& [k, v] : checkpoint)
    if (starts_with(k, "model.")) out[k.substr(6)] = v;
  return out;
}

Checkpointer::Checkpointer(torch::nn::Module& model, NamedOptimizer* optimizer,
                           CheckpointerOptions options)
    : model_(model), optimizer_(optimizer), options_(std::move(options)) {
  COMBO_CHECK(!options_.output_dir.empty(), "Checkpointer: output_dir is empty");
}

std::string Checkpointer::path(const std::string& file_name) const {
  return (fs::path(options_.output_dir) / file_name).string();
}

TensorDict Checkpointer::state_dict(const TrainingState& state) const {
  TensorDict out;
  out["checkpoint.version"] = scalar_long(kCheckpointVersion);
  out["iteration"] = scalar_long(state.iteration);
  for (const auto& [k, v] : module_state_dict(model_))
    out["model." + k] = v.detach().to(torch::kCPU, false, true);
  if (optimizer_)
    for (auto& [k, v] : optimizer_state_dict(*optimizer_)) out["optimizer." + k] = v;
  for (auto& [k, v] : rng_state_dict()) out["rng." + k] = v;
  out["loader.position"] =
      torch::tensor({state.loader_position.first, state.loader_position.second}, torch::kInt64);
  out["config"] = string_to_tensor(state.config_text);
  for (const auto& [k, v] : state.metrics) out["metrics." + k] = scalar_double(v);
  for (const auto& [k, v] : state.tensors)
    out["state." + k] = v.detach().to(torch::kCPU, false, true);
  return out;
}

std::string Checkpointer::save(const std::string& name, const TrainingState& state,
                               bool update_pointer) const {
  const std::string file =
      name.size() > 4 && name.substr(name.size() - 4) == ".pth" ? name : name + ".pth";
  const std::string p = path(file);
  save_state_dict(p, state_dict(state));
  // The pointer is written only once the checkpoint is complete on disk.
  if (update_pointer) write_file_atomic(path(kPointerFile), file + "\n");
  spdlog::info("checkpoint: saved {} (iteration {})", p, state.iteration);
  return p;
}

std::vector<std::string> Checkpointer::periodic_checkpoints() const {
  static const std::regex re(R"(model_(\d{7,})\.pth)");
  std::vector<std::pair<int64_t, std::string>> found;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(options_.output_dir, ec)) {
    std::smatch m;
    const std::string name = e.path().filename().string();
    if (std::regex_match(name, m, re)) found.emplace_back(std::stoll(m[1]), e.path().string());
  }
  std::sort(found.begin(), found.end());
  std::vector<std::string> out;
  for (auto& f : found) out.push_back(f.second);
  return out;
}

std::string Checkpointer::save_periodic(const TrainingState& state) const {
  const std::string p = save(periodic_checkpoint_name(state.iteration), state);
  if (options_.keep_last > 0) {
    auto files = periodic_checkpoints();
    const auto keep = static_cast<size_t>(options_.keep_last);
    for (size_t i = 0; i + keep < files.size(); ++i) {
      if (files[i] == p) continue;
      std::error_code ec;
      fs::remove(files[i], ec);
      if (ec)
        spdlog::warn("checkpoint: could not delete {}: {}", files[i], ec.message());
      else
        spdlog::debug("checkpoint: deleted {}", files[i]);
    }
  }
  return p;
}

TrainingState Checkpointer::load(const std::string& file, bool restore_rng) const {
  COMBO_CHECK(fs::exists(file), "checkpoint '", file, "' does not exist");
  return load(load_state_dict(file), file, restore_rng);
}

std::optional<std::pair<std::string, TensorDict>> Checkpointer::read_latest_intact() const {
  std::vector<std::string> candidates;
  if (auto last = last_checkpoint()) candidates.push_back(*last);
  auto periodic = periodic_checkpoints();
  if (candidates.empty() && !periodic.empty())
    spdlog::warn("resume: {} is missing; using the periodic checkpoints in {}", path(kPointerFile),
                 options_.output_dir);
  for (auto it = periodic.rbegin(); it != periodic.rend(); ++it)
    if (candidates.empty() || fs::path(*it) != fs::path(candidates.front()))
      candidates.push_back(*it);
  if (candidates.empty()) return std::nullopt;
  std::string problems;
  for (const auto& file : candidates) {
    try {
      auto dict = load_state_dict(file);
      if (!problems.empty())
        spdlog::warn("resume: falling back to {}, the newest intact checkpoint", file);
      return std::make_pair(file, std::move(dict));
    } catch (const Error& e) {
      spdlog::warn("resume: {} cannot be used: {}", file, e.what());
      problems += str_cat("\n  ", file, ": ", e.what());
    }
  }
  COMBO_FAIL("resume: no intact checkpoint in '", options_.output_dir, "':", problems,
             "\n(start without --resume, or restore a checkpoint)");
}

TrainingState Checkpointer::load(const TensorDict& dict, const std::string& file,
                                 bool restore_rng) const {
  const std::string src = "checkpoint '" + file + "'";
  COMBO_CHECK(dict.count("checkpoint.version"), src,
              " is not a training checkpoint (no 'checkpoint.version' key); plain model weights "
              "go to model.weights");
  const int64_t version = dict.at("checkpoint.version").item<int64_t>();
  COMBO_CHECK(version == kCheckpointVersion, src, ": format version ", version,
              ", this build reads version ", kCheckpointVersion);
  LoadOptions lo;
  lo.strict = true;
  lo.source = file;
  load_state_dict_into(model_, checkpoint_model_state(dict), lo);
  TensorDict opt, rng;
  TrainingState state;
  for (const auto& [k, v] : dict) {
    if (starts_with(k, "optimizer."))
      opt[k.substr(10)] = v;
    else if (starts_with(k, "rng."))
      rng[k.substr(4)] = v;
    else if (starts_with(k, "metrics."))
      state.metrics[k.substr(8)] = v.item<double>();
    else if (starts_with(k, "state."))
      state.tensors[k.substr(6)] = v;
  }
  if (optimizer_) {
    COMBO_CHECK(!opt.empty(), src, " holds no optimizer state");
    try {
      load_optimizer_state_dict(*optimizer_, opt);
    } catch (const Error& e) {
      throw Error(str_cat(src, ": ", e.what()));
    }
  }
  if (restore_rng) restore_rng_state(rng);
  state.iteration = require(dict, "iteration", src).item<int64_t>();
  const auto pos = require(dict, "loader.position", src).to(torch::kInt64).contiguous();
  COMBO_CHECK(pos.numel() == 2, src, ": loader.position must hold (epoch, batch)");
  state.loader_position = {pos[0].item<int64_t>(), pos[1].item<int64_t>()};
  state.config_text = tensor_to_string(require(dict, "config", src));
  spdlog::info("checkpoint: loaded {} (iteration {})", file, state.iteration);
  return state;
}

int64_t Checkpointer::remove_stale_temporaries() const {
  static const std::regex re(R"(.+\.tmp\.(\d+))");
  int64_t removed = 0;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(options_.output_dir, ec)) {
    std::smatch m;
    const std::string name = e.path().filename().string();
    if (!std::regex_match(name, m, re)) continue;
    const auto pid = static_cast<pid_t>(std::stoll(m[1]));
    // A live process other than this one may still be writing it.
    if (pid == ::getpid() || (::kill(pid, 0) == 0 || errno == EPERM)) continue;
    std::error_code rec;
    if (fs::remove(e.path(), rec)) {
      spdlog::info("checkpoint: removed {}, left by a process that stopped while writing it",
                   e.path().string());
      ++removed;
    }
  }
  return removed;
}

std::optional<std::string> Checkpointer::last_checkpoint() const {
  std::ifstream f(path(kPointerFile));
  if (!f) return std::nullopt;
  std::string name;
  std::getline(f, name);
  while (!name.empty() && std::isspace(static_cast<unsigned char>(name.back()))) name.pop_back();
  if (name.empty()) return std::nullopt;
  const std::string p = fs::path(name).is_absolute() ? name : path(name);
  if (!fs::exists(p)) {
    spdlog::warn("checkpoint: {} points to {}, which does not exist", path(kPointerFile), p);
    return std::nullopt;
  }
  return p;
}

}  // namespace combo::engine
