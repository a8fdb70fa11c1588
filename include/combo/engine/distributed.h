#pragma once
/// Data-parallel training on PyTorch's c10d process groups (Gloo on the CPU, NCCL on CUDA where
/// the LibTorch has it), set up from the variables `torchrun` or Slurm give each process.
///
/// The c10d headers stay inside src/engine/distributed.cpp: this header is light.
#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace combo::engine {

/// Where this process sits in the job.
struct DistEnv {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;        ///< rank on this node: selects cuda:<local_rank>
  int local_world_size = 1;  ///< processes on this node
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  std::string launcher = "none";  ///< none | torchrun | slurm
  /// torchrun hosts the store itself (TORCHELASTIC_USE_AGENT_STORE=True): every rank connects
  /// as a client, under the prefix /worker/attempt_<TORCHELASTIC_RESTART_COUNT>, as PyTorch does.
  bool use_agent_store = false;
  int restart_count = 0;
  bool distributed() const { return world_size > 1; }
  std::string to_string() const;
};

/// Reads, in this order: torchrun's RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE,
/// MASTER_ADDR, MASTER_PORT (WORLD_SIZE set = torchrun); else Slurm's SLURM_PROCID,
/// SLURM_NTASKS, SLURM_LOCALID, SLURM_NTASKS_PER_NODE (or SLURM_TASKS_PER_NODE) with MASTER_ADDR
/// (default: the first host of SLURM_JOB_NODELIST) and MASTER_PORT (default 29500); else a
/// single process. A malformed or inconsistent value throws combo::Error naming the variable.
/// `getenv` is injectable for tests.
DistEnv dist_env_from_environment(const std::function<const char*(const char*)>& getenv =
                                      [](const char* name) { return std::getenv(name); });

/// The first host name of a Slurm node list: "gpu[03-05,7],cpu1" -> "gpu03".
std::string first_slurm_host(const std::string& nodelist);

struct ProcessGroupOptions {
  std::string backend = "auto";   ///< auto (NCCL for CUDA devices, else Gloo) | gloo | nccl
  double timeout_seconds = 1800;  ///< rendezvous and every collective
};

/// A c10d process group (pimpl). Every collective blocks until done and turns a c10d failure
/// (a peer that died, a timeout) into combo::Error naming the operation, this rank and the
/// timeout. Tensors may live on the CPU or, with NCCL, on this rank's GPU.
class ProcessGroup {
 public:
  /// Rendezvous through a c10d TCPStore at master_addr:master_port (rank 0 hosts it), then the
  /// backend's process group. Throws combo::Error when the peers do not all arrive within the
  /// timeout, naming the address and how many arrived.
  static std::shared_ptr<ProcessGroup> create(const DistEnv& env, const at::Device& device,
                                              const ProcessGroupOptions& options = {});
  ~ProcessGroup();
  ProcessGroup(const ProcessGroup&) = delete;
  ProcessGroup& operator=(const ProcessGroup&) = delete;

  int rank() const;
  int world_size() const;
  std::string backend() const;
  double timeout_seconds() const;
  /// The device the collectives' tensors must be on (CPU for Gloo, cuda:N for NCCL).
  at::Device device() const;

  /// In-place sum over the ranks, then waits.
  void all_reduce_sum(at::Tensor& tensor, const char* what = "all-reduce");
  /// Starts an in-place sum; wait() with the returned handle.
  class Pending;
  std::shared_ptr<Pending> all_reduce_sum_async(at::Tensor& tensor, const char* what);
  void wait(Pending& pending);
  /// Sums doubles over the ranks (float64 on the wire).
  std::vector<double> all_reduce_sum(const std::vector<double>& values, const char* what);
  /// Copies `tensors` of rank `root` into every rank's tensors (in place).
  void broadcast(std::vector<at::Tensor>& tensors, int root, const char* what = "broadcast");
  /// Every rank's bytes, in rank order.
  std::vector<std::string> all_gather_bytes(const std::string& bytes,
                                            const char* what = "all-gather");
  void barrier(const char* what = "barrier");

 private:
  struct Impl;
  explicit ProcessGroup(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

/// Copies every tensor of rank 0 to the other ranks (identical initial weights and buffers).
void broadcast_from_rank0(ProcessGroup& group, const std::vector<at::Tensor>& tensors,
                          const char* what);

/// Gradient averaging for data parallelism (what DDP's reducer does): the parameters are packed
/// into flat buckets of about `bucket_bytes` (in reverse order, the order backward produces the
/// gradients); a hook on every parameter copies its gradient into its bucket, and a bucket is
/// all-reduced asynchronously as soon as it is full (overlapping the rest of the backward pass),
/// buckets always launched in the same order on every rank. finish() waits for them and sets
/// each parameter's gradient to the mean over the ranks. A parameter that got no gradient on
/// any rank keeps none (AdamW skips it, as in a single process); one that got a gradient on
/// some ranks only counts zeros for the others.
class GradientReducer {
 public:
  GradientReducer(std::shared_ptr<ProcessGroup> group, std::vector<at::Tensor> params,
                  int64_t bucket_bytes = 25 << 20);
  ~GradientReducer();
  GradientReducer(const GradientReducer&) = delete;
  GradientReducer& operator=(const GradientReducer&) = delete;

  /// Before backward: forget the last step's gradients.
  void prepare();
  /// After backward: launches what is left, waits, averages, writes the gradients. `flags`
  /// (e.g. "stop requested") are summed over the ranks in the same round trip.
  void finish(std::vector<double>* flags = nullptr);

  int64_t num_buckets() const;
  /// Buckets launched from inside the backward pass by the last step (overlap).
  int64_t launched_during_backward() const { return launched_early_; }

 private:
  struct Bucket;
  void on_grad(size_t param, const at::Tensor& grad);
  void launch_ready();
  void launch(Bucket& bucket);

  std::shared_ptr<ProcessGroup> group_;
  std::vector<at::Tensor> params_;
  std::vector<std::unique_ptr<Bucket>> buckets_;
  std::vector<std::pair<size_t, int64_t>> where_;  ///< param -> (bucket, offset)
  std::vector<uint8_t> has_grad_;
  std::vector<unsigned> hook_ids_;
  size_t next_launch_ = 0;
  bool in_backward_ = false;
  int64_t launched_early_ = 0;
};

}  // namespace combo::engine
