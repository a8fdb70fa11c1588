#include "combo/engine/distributed.h"

#include <torch/torch.h>
#include <torch/version.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <sstream>

#include "combo/core/check.h"

// CMake defines COMBO_C10D_GLOO / COMBO_C10D_NCCL where the headers were found (not USE_C10D_*
// directly, so the precompiled LibTorch header stays valid for this file).
#if defined(COMBO_C10D_GLOO) && !defined(USE_C10D_GLOO)
#define USE_C10D_GLOO
#endif
#if defined(COMBO_C10D_NCCL) && !defined(USE_C10D_NCCL)
#define USE_C10D_NCCL
#endif
#if defined(USE_C10D_GLOO) || defined(USE_C10D_NCCL)
#define COMBO_WITH_C10D
#endif

#if defined(COMBO_WITH_C10D)
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/distributed/c10d/Types.hpp>
#include <torch/csrc/distributed/c10d/Work.hpp>
#if defined(USE_C10D_GLOO)
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif
#if defined(USE_C10D_NCCL)
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif
#endif

namespace combo::engine {

// ---------------------------------------------------------------------------------------------
// Environment

std::string DistEnv::to_string() const {
  return str_cat("rank ", rank, " of ", world_size, " (local rank ", local_rank, " of ",
                 local_world_size, ", master ", master_addr, ":", master_port, ", launcher ",
                 launcher, ")");
}

namespace {

int parse_int_var(const char* name, const char* value, int min_value) {
  COMBO_CHECK(value != nullptr && *value != '\0', "environment variable ", name,
              " is not set (needed for distributed training)");
  char* end = nullptr;
  const long v = std::strtol(value, &end, 10);
  COMBO_CHECK(end != value && *end == '\0' && v >= min_value && v <= (1L << 30),
              "environment variable ", name, "='", value, "' is not an integer >= ", min_value);
  return static_cast<int>(v);
}

// Slurm's SLURM_TASKS_PER_NODE looks like "2(x3),1": the count of the first node.
int first_task_count(const char* name, const char* value) {
  std::string s(value);
  const auto cut = s.find_first_of("(,");
  return parse_int_var(name, s.substr(0, cut).c_str(), 1);
}

}  // namespace

std::string first_slurm_host(const std::string& nodelist) {
  COMBO_CHECK(!nodelist.empty(), "empty Slurm node list");
  // The first entry ends at a comma outside brackets.
  size_t end = 0;
  int depth = 0;
  for (; end < nodelist.size(); ++end) {
    const char c = nodelist[end];
    if (c == '[') ++depth;
    if (c == ']') --depth;
    if (c == ',' && depth == 0) break;
  }
  const std::string first = nodelist.substr(0, end);
  const auto open = first.find('[');
  if (open == std::string::npos) return first;
  const auto close = first.find(']', open);
  COMBO_CHECK(close != std::string::npos, "malformed Slurm node list '", nodelist, "'");
  std::string range = first.substr(open + 1, close - open - 1);
  range = range.substr(0, range.find(','));  // first range
  const std::string lo = range.substr(0, range.find('-'));
  COMBO_CHECK(!lo.empty(), "malformed Slurm node list '", nodelist, "'");
  return first.substr(0, open) + lo + first.substr(close + 1);
}

DistEnv dist_env_from_environment(const std::function<const char*(const char*)>& getenv) {
  DistEnv env;
  auto get = [&](const char* name) -> const char* {
    const char* v = getenv(name);
    return v != nullptr && *v != '\0' ? v : nullptr;
  };
  if (get("WORLD_SIZE")) {
    env.launcher = "torchrun";
    env.world_size = parse_int_var("WORLD_SIZE", get("WORLD_SIZE"), 1);
    env.rank = parse_int_var("RANK", get("RANK"), 0);
    env.local_rank = get("LOCAL_RANK") ? parse_int_var("LOCAL_RANK", get("LOCAL_RANK"), 0) : 0;
    env.local_world_size = get("LOCAL_WORLD_SIZE")
                               ? parse_int_var("LOCAL_WORLD_SIZE", get("LOCAL_WORLD_SIZE"), 1)
                               : env.world_size;
    const char* agent_store = get("TORCHELASTIC_USE_AGENT_STORE");
    env.use_agent_store = agent_store != nullptr && std::string(agent_store) == "True";
    if (env.use_agent_store && get("TORCHELASTIC_RESTART_COUNT"))
      env.restart_count =
          parse_int_var("TORCHELASTIC_RESTART_COUNT", get("TORCHELASTIC_RESTART_COUNT"), 0);
  } else if (get("SLURM_PROCID") && get("SLURM_NTASKS")) {
    env.launcher = "slurm";
    env.rank = parse_int_var("SLURM_PROCID", get("SLURM_PROCID"), 0);
    env.world_size = parse_int_var("SLURM_NTASKS", get("SLURM_NTASKS"), 1);
    env.local_rank =
        get("SLURM_LOCALID") ? parse_int_var("SLURM_LOCALID", get("SLURM_LOCALID"), 0) : 0;
    if (get("SLURM_NTASKS_PER_NODE"))
      env.local_world_size =
          first_task_count("SLURM_NTASKS_PER_NODE", get("SLURM_NTASKS_PER_NODE"));
    else if (get("SLURM_TASKS_PER_NODE"))
      env.local_world_size = first_task_count("SLURM_TASKS_PER_NODE", get("SLURM_TASKS_PER_NODE"));
    if (!get("MASTER_ADDR")) {
      const char* nodes =
          get("SLURM_JOB_NODELIST") ? get("SLURM_JOB_NODELIST") : get("SLURM_NODELIST");
      COMBO_CHECK(nodes != nullptr,
                  "Slurm launch without MASTER_ADDR or SLURM_JOB_NODELIST: set MASTER_ADDR to "
                  "the first node's address");
      env.master_addr = first_slurm_host(nodes);
    }
  } else {
    return env;  // one process
  }
  if (get("MASTER_ADDR")) env.master_addr = get("MASTER_ADDR");
  if (get("MASTER_PORT")) env.master_port = parse_int_var("MASTER_PORT", get("MASTER_PORT"), 1);
  COMBO_CHECK(env.master_port <= 65535, "MASTER_PORT=", env.master_port, " is not a TCP port");
  COMBO_CHECK(env.rank < env.world_size, "rank ", env.rank, " (", env.launcher,
              ") is outside the world size ", env.world_size);
  COMBO_CHECK(env.local_rank < std::max(env.local_world_size, 1), "local rank ", env.local_rank,
              " is outside the ", env.local_world_size, " processes of this node");
  return env;
}

// ---------------------------------------------------------------------------------------------
// Process group

#if defined(COMBO_WITH_C10D)
#if TORCH_VERSION_MAJOR >= 2
using PgBase = c10d::Backend;  // ProcessGroupGloo/NCCL are backends since 2.0
#else
using PgBase = c10d::ProcessGroup;
#endif
using WorkPtr = c10::intrusive_ptr<c10d::Work>;
#endif

namespace {
// c10::Error's what() carries a C++ backtrace: keep the message only.
std::string error_text(const std::exception& e) {
  if (const auto* c10_error = dynamic_cast<const c10::Error*>(&e))
    return c10_error->what_without_backtrace();
  return e.what();
}
}  // namespace

struct ProcessGroup::Impl {
  int rank = 0, world_size = 1;
  std::string backend;
  double timeout_seconds = 0;
  at::Device device = at::kCPU;
#if defined(COMBO_WITH_C10D)
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<PgBase> pg;
#endif

  [[noreturn]] void fail(const char* what, const std::exception& e) const {
    throw Error(str_cat("distributed ", what, " failed on rank ", rank, " of ", world_size, " (",
                        backend, ", timeout ", timeout_seconds, " s): ", error_text(e),
                        "\nAnother process of the job has probably stopped, crashed or is stuck; "
                        "see its log."));
  }
};

class ProcessGroup::Pending {
 public:
#if defined(COMBO_WITH_C10D)
  WorkPtr work;
#endif
  const char* what = "";
  bool done = false;
};

ProcessGroup::ProcessGroup(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ProcessGroup::~ProcessGroup() = default;

int ProcessGroup::rank() const { return impl_->rank; }
int ProcessGroup::world_size() const { return impl_->world_size; }
std::string ProcessGroup::backend() const { return impl_->backend; }
double ProcessGroup::timeout_seconds() const { return impl_->timeout_seconds; }
at::Device ProcessGroup::device() const { return impl_->device; }

std::shared_ptr<ProcessGroup> ProcessGroup::create(const DistEnv& env, const at::Device& device,
                                                   const ProcessGroupOptions& options) {
  auto impl = std::make_unique<Impl>();
  impl->rank = env.rank;
  impl->world_size = env.world_size;
  impl->timeout_seconds = options.timeout_seconds;
  COMBO_CHECK(options.timeout_seconds > 0, "distributed timeout must be > 0 s, got ",
              options.timeout_seconds);
  std::string backend = options.backend;
  COMBO_CHECK(backend == "auto" || backend == "gloo" || backend == "nccl",
              "runtime.dist_backend must be auto | gloo | nccl, got '", backend, "'");
  if (backend == "auto") backend = device.is_cuda() ? "nccl" : "gloo";
  impl->backend = backend;
#if !defined(COMBO_WITH_C10D)
  (void)device;
  COMBO_FAIL(
      "this ComboAVS was built without c10d (no torch/csrc/distributed headers or gloo "
      "headers found at configure time): cannot run ",
      env.world_size, " processes");
#else
  const auto timeout = std::chrono::milliseconds(
      static_cast<int64_t>(std::max(1.0, options.timeout_seconds * 1000.0)));
  try {
    c10d::TCPStoreOptions so;
    so.port = static_cast<uint16_t>(env.master_port);
    so.isServer = env.rank == 0 && !env.use_agent_store;
    so.numWorkers = static_cast<size_t>(env.world_size);
    so.waitWorkers = true;
    so.timeout = timeout;
    impl->store = c10::make_intrusive<c10d::TCPStore>(env.master_addr, so);
    if (env.use_agent_store)
      impl->store = c10::make_intrusive<c10d::PrefixStore>(
          "/worker/attempt_" + std::to_string(env.restart_count), impl->store);
  } catch (const std::exception& e) {
    throw Error(str_cat("distributed rendezvous failed on rank ", env.rank, " of ", env.world_size,
                        " at ", env.master_addr, ":", env.master_port, " within ",
                        options.timeout_seconds, " s (runtime.dist_timeout): ", error_text(e),
                        "\nCheck that every process was started, with the same MASTER_ADDR, "
                        "MASTER_PORT and WORLD_SIZE."));
  }
  try {
    if (backend == "gloo") {
#if defined(USE_C10D_GLOO)
      auto o = c10d::ProcessGroupGloo::Options::create(timeout);
      const char* ifname = std::getenv("GLOO_SOCKET_IFNAME");
      if (ifname != nullptr && *ifname != '\0') {
        o->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
      } else if (env.master_addr == "127.0.0.1" || env.master_addr == "localhost") {
        // Every process on this machine: stay on the loopback interface.
        o->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
      } else {
        o->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
      }
      o->threads = 2;
      impl->pg =
          c10::make_intrusive<c10d::ProcessGroupGloo>(impl->store, env.rank, env.world_size, o);
      impl->device = at::kCPU;
#else
      COMBO_FAIL("this LibTorch build has no Gloo backend (USE_C10D_GLOO)");
#endif
    } else {
#if defined(USE_C10D_NCCL)
      COMBO_CHECK(device.is_cuda(), "the NCCL backend needs a CUDA device, got ", device.str());
      auto o = c10d::ProcessGroupNCCL::Options::create();
      o->timeout = timeout;
      impl->pg =
          c10::make_intrusive<c10d::ProcessGroupNCCL>(impl->store, env.rank, env.world_size, o);
      impl->device = device;
#else
      COMBO_FAIL("this LibTorch has no NCCL backend (a CPU build): use runtime.dist_backend=gloo");
#endif
    }
    // The first collective completes the connection set-up of lazy backends.
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    // Gloo connects every pair of ranks through the store: a rank that never started shows up
    // here, as a time-out.
    throw Error(str_cat("distributed rendezvous failed on rank ", env.rank, " of ", env.world_size,
                        " at ", env.master_addr, ":", env.master_port, " within ",
                        options.timeout_seconds, " s (runtime.dist_timeout) while connecting the ",
                        backend, " process group: ", error_text(e),
                        "\nCheck that every process was started, with the same MASTER_ADDR, "
                        "MASTER_PORT and WORLD_SIZE."));
  }
  auto group = std::shared_ptr<ProcessGroup>(new ProcessGroup(std::move(impl)));
  group->barrier("start-up barrier");
  return group;
#endif
}

void ProcessGroup::all_reduce_sum(at::Tensor& tensor, const char* what) {
  auto p = all_reduce_sum_async(tensor, what);
  wait(*p);
}

std::shared_ptr<ProcessGroup::Pending> ProcessGroup::all_reduce_sum_async(at::Tensor& tensor,
                                                                          const char* what) {
  auto p = std::make_shared<Pending>();
  p->what = what;
#if defined(COMBO_WITH_C10D)
  try {
    std::vector<at::Tensor> v{tensor};
    c10d::AllreduceOptions o;
    o.reduceOp = c10d::ReduceOp::SUM;
    p->work = impl_->pg->allreduce(v, o);
  } catch (const std::exception& e) {
    impl_->fail(what, e);
  }
#else
  (void)tensor;
#endif
  return p;
}

void ProcessGroup::wait(Pending& pending) {
  if (pending.done) return;
  pending.done = true;
#if defined(COMBO_WITH_C10D)
  try {
    pending.work->wait();
  } catch (const std::exception& e) {
    impl_->fail(pending.what, e);
  }
#endif
}

std::vector<double> ProcessGroup::all_reduce_sum(const std::vector<double>& values,
                                                 const char* what) {
  if (values.empty()) return {};
  auto t = torch::tensor(values, torch::kFloat64).to(impl_->device);
  all_reduce_sum(t, what);
  t = t.cpu();
  return std::vector<double>(t.data_ptr<double>(), t.data_ptr<double>() + t.numel());
}

void ProcessGroup::broadcast(std::vector<at::Tensor>& tensors, int root, const char* what) {
#if defined(COMBO_WITH_C10D)
  try {
    for (auto& t : tensors) {
      std::vector<at::Tensor> v{t};
      c10d::BroadcastOptions o;
      o.rootRank = root;
      impl_->pg->broadcast(v, o)->wait();
    }
  } catch (const std::exception& e) {
    impl_->fail(what, e);
  }
#else
  (void)tensors, (void)root, (void)what;
#endif
}

std::vector<std::string> ProcessGroup::all_gather_bytes(const std::string& bytes,
                                                        const char* what) {
  const int w = impl_->world_size;
  // Sizes first, then every rank's bytes padded to the largest.
  std::vector<double> sizes_in(w, 0.0);
  sizes_in[impl_->rank] = static_cast<double>(bytes.size());
  const auto sizes = all_reduce_sum(sizes_in, what);
  const int64_t max_size = static_cast<int64_t>(*std::max_element(sizes.begin(), sizes.end()));
  std::vector<std::string> out(w);
  if (max_size == 0) return out;
  auto mine = torch::zeros({max_size}, torch::kUInt8);
  std::memcpy(mine.data_ptr<uint8_t>(), bytes.data(), bytes.size());
#if defined(COMBO_WITH_C10D)
  try {
    std::vector<at::Tensor> input{mine.to(impl_->device)};
    std::vector<std::vector<at::Tensor>> output(1);
    for (int r = 0; r < w; ++r) output[0].push_back(torch::empty_like(input[0]));
    impl_->pg->allgather(output, input)->wait();
    for (int r = 0; r < w; ++r) {
      const auto t = output[0][r].cpu();
      out[r].assign(reinterpret_cast<const char*>(t.data_ptr<uint8_t>()),
                    static_cast<size_t>(sizes[r]));
    }
  } catch (const std::exception& e) {
    impl_->fail(what, e);
  }
#endif
  return out;
}

void ProcessGroup::barrier(const char* what) {
#if defined(COMBO_WITH_C10D)
  try {
    // A one-element all-reduce: it works the same on every backend (NCCL's barrier needs the
    // device it guesses) and fails the same way when a peer is gone.
    auto t = torch::zeros({1}, torch::TensorOptions().dtype(torch::kFloat32).device(impl_->device));
    std::vector<at::Tensor> v{t};
    impl_->pg->allreduce(v)->wait();
  } catch (const std::exception& e) {
    impl_->fail(what, e);
  }
#else
  (void)what;
#endif
}

void broadcast_from_rank0(ProcessGroup& group, const std::vector<at::Tensor>& tensors,
                          const char* what) {
  torch::NoGradGuard no_grad;
  for (const auto& t : tensors) {
    if (!t.defined()) continue;
    auto staged = t.detach().to(group.device()).contiguous();
    std::vector<at::Tensor> v{staged};
    group.broadcast(v, 0, what);
    auto dst = t.detach();
    dst.copy_(staged);
  }
}

// ---------------------------------------------------------------------------------------------
// Gradient reducer

struct GradientReducer::Bucket {
  at::Tensor flat;             // float32 (or the parameters' dtype) on the group's device
  std::vector<size_t> params;  // indices into params_
  size_t ready = 0;            // parameters whose gradient arrived this step
  std::shared_ptr<ProcessGroup::Pending> pending;
  bool launched = false;
};

GradientReducer::GradientReducer(std::shared_ptr<ProcessGroup> group,
                                 std::vector<at::Tensor> params, int64_t bucket_bytes)
    : group_(std::move(group)), params_(std::move(params)) {
  COMBO_CHECK(group_ != nullptr, "GradientReducer: no process group");
  COMBO_CHECK(bucket_bytes > 0, "GradientReducer: bucket size must be > 0 bytes");
  where_.resize(params_.size());
  has_grad_.assign(params_.size(), 0);
  // Reverse registration order: the heads' gradients arrive first in backward.
  std::unique_ptr<Bucket> current;
  int64_t current_bytes = 0;
  at::ScalarType current_type = at::kFloat;
  std::vector<std::pair<size_t, int64_t>> layout;  // (param, numel) of the bucket being built
  auto close = [&] {
    if (!current) return;
    int64_t numel = 0;
    for (const auto& [i, n] : layout) numel += n;
    current->flat =
        torch::zeros({numel}, torch::TensorOptions().dtype(current_type).device(group_->device()));
    buckets_.push_back(std::move(current));
    layout.clear();
    current_bytes = 0;
  };
  for (size_t k = params_.size(); k-- > 0;) {
    const auto& p = params_[k];
    const int64_t bytes = p.numel() * static_cast<int64_t>(p.element_size());
    if (current && (current_bytes + bytes > bucket_bytes || p.scalar_type() != current_type))
      close();
    if (!current) {
      current = std::make_unique<Bucket>();
      current_type = p.scalar_type();
    }
    int64_t offset = 0;
    for (const auto& [i, n] : layout) offset += n;
    where_[k] = {buckets_.size(), offset};
    layout.emplace_back(k, p.numel());
    current->params.push_back(k);
    current_bytes += bytes;
  }
  close();
  for (size_t k = 0; k < params_.size(); ++k) {
    auto& p = const_cast<at::Tensor&>(params_[k]);
    COMBO_CHECK(p.requires_grad(), "GradientReducer: parameter ", k, " does not require grad");
    hook_ids_.push_back(p.register_hook([this, k](const at::Tensor& grad) { on_grad(k, grad); }));
  }
}

GradientReducer::~GradientReducer() {
  for (size_t k = 0; k < params_.size() && k < hook_ids_.size(); ++k) {
    try {
      const_cast<at::Tensor&>(params_[k]).remove_hook(hook_ids_[k]);
    } catch (...) {
    }
  }
}

int64_t GradientReducer::num_buckets() const { return static_cast<int64_t>(buckets_.size()); }

void GradientReducer::prepare() {
  std::fill(has_grad_.begin(), has_grad_.end(), 0);
  for (auto& b : buckets_) {
    b->ready = 0;
    b->launched = false;
    b->pending.reset();
  }
  next_launch_ = 0;
  launched_early_ = 0;
  in_backward_ = true;
}

void GradientReducer::on_grad(size_t k, const at::Tensor& grad) {
  if (!in_backward_) return;  // a backward outside a training step (e.g. a test's own)
  const auto [b, offset] = where_[k];
  auto& bucket = *buckets_[b];
  COMBO_CHECK(!bucket.launched, "GradientReducer: parameter ", k,
              " got a gradient after its bucket was reduced (a second backward in one step?)");
  torch::NoGradGuard no_grad;
  auto slice = bucket.flat.narrow(0, offset, params_[k].numel());
  if (has_grad_[k]) {
    slice.add_(grad.reshape({-1}));
  } else {
    slice.copy_(grad.reshape({-1}));
    has_grad_[k] = 1;
    ++bucket.ready;
  }
  launch_ready();
}

void GradientReducer::launch(Bucket& bucket) {
  bucket.pending = group_->all_reduce_sum_async(bucket.flat, "all-reduce of the gradients");
  bucket.launched = true;
}

// Launches buckets in index order only, so every rank issues the same collectives in the same
// order whatever order its gradients arrive in.
void GradientReducer::launch_ready() {
  while (next_launch_ < buckets_.size()) {
    auto& bucket = *buckets_[next_launch_];
    if (bucket.ready < bucket.params.size()) break;
    launch(bucket);
    ++launched_early_;
    ++next_launch_;
  }
}

void GradientReducer::finish(std::vector<double>* flags) {
  in_backward_ = false;
  // Parameters without a gradient here count zeros in the sum.
  for (; next_launch_ < buckets_.size(); ++next_launch_) {
    auto& bucket = *buckets_[next_launch_];
    for (size_t k : bucket.params)
      if (!has_grad_[k]) bucket.flat.narrow(0, where_[k].second, params_[k].numel()).zero_();
    launch(bucket);
  }
  // Which parameters got a gradient anywhere, plus the caller's flags, in one round trip.
  std::vector<double> counts(params_.size() + (flags ? flags->size() : 0), 0.0);
  for (size_t k = 0; k < params_.size(); ++k) counts[k] = has_grad_[k];
  if (flags)
    std::copy(flags->begin(), flags->end(), counts.begin() + static_cast<long>(params_.size()));
  counts = group_->all_reduce_sum(counts, "all-reduce of the gradient flags");
  if (flags)
    std::copy(counts.begin() + static_cast<long>(params_.size()), counts.end(), flags->begin());
  for (auto& b : buckets_) group_->wait(*b->pending);
  const double scale = 1.0 / group_->world_size();
  torch::NoGradGuard no_grad;
  for (auto& b : buckets_) b->flat.mul_(scale);
  for (size_t k = 0; k < params_.size(); ++k) {
    auto& p = const_cast<at::Tensor&>(params_[k]);
    auto& g = p.mutable_grad();
    if (counts[k] == 0) {
      g = at::Tensor();
      continue;
    }
    const auto [b, offset] = where_[k];
    auto mean = buckets_[b]->flat.narrow(0, offset, p.numel()).view(p.sizes());
    if (g.defined() && g.sizes() == p.sizes() && g.is_contiguous() && g.dtype() == mean.dtype() &&
        g.device() == mean.device())
      g.copy_(mean);
    else
      g = mean.clone();
  }
}

}  // namespace combo::engine
