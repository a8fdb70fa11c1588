#include "combo/data/loader.h"

#include <spdlog/spdlog.h>

#include <numeric>

#include "combo/core/check.h"

namespace combo::data {
namespace {

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

}  // namespace

uint64_t sample_seed(uint64_t seed, int64_t epoch, int64_t index) {
  return splitmix64(splitmix64(splitmix64(seed) ^ static_cast<uint64_t>(epoch)) ^
                    static_cast<uint64_t>(index));
}

std::vector<int64_t> epoch_order(int64_t size, uint64_t seed, int64_t epoch, bool shuffle,
                                 int64_t rank, int64_t world_size, bool pad) {
  COMBO_CHECK(world_size >= 1 && rank >= 0 && rank < world_size, "loader: rank ", rank,
              " outside world size ", world_size);
  std::vector<int64_t> order(size);
  std::iota(order.begin(), order.end(), 0);
  if (shuffle) {
    // Fisher-Yates with our own uniform integers: the same permutation on every platform.
    Rng rng(sample_seed(seed, epoch, -1));
    for (int64_t i = size - 1; i > 0; --i) std::swap(order[i], order[uniform_int(rng, 0, i)]);
  }
  if (pad && size > 0 && size % world_size != 0) {
    const int64_t total = (size + world_size - 1) / world_size * world_size;
    for (int64_t i = size; i < total; ++i) order.push_back(order[i - size]);
  }
  std::vector<int64_t> shard;
  for (size_t i = rank; i < order.size(); i += world_size) shard.push_back(order[i]);
  return shard;
}

std::vector<int64_t> contiguous_shard(int64_t size, int64_t rank, int64_t world_size) {
  COMBO_CHECK(world_size >= 1 && rank >= 0 && rank < world_size, "loader: rank ", rank,
              " outside world size ", world_size);
  const int64_t base = size / world_size, extra = size % world_size;
  const int64_t begin = rank * base + std::min(rank, extra);
  const int64_t count = base + (rank < extra ? 1 : 0);
  std::vector<int64_t> shard(count);
  std::iota(shard.begin(), shard.end(), begin);
  return shard;
}

namespace {
std::vector<int64_t> loader_order(int64_t size, const LoaderOptions& o, int64_t epoch,
                                  bool shuffle) {
  if (o.contiguous_shards && !o.shuffle && !o.infinite)
    return contiguous_shard(size, o.rank, o.world_size);
  return epoch_order(size, o.seed, epoch, shuffle, o.rank, o.world_size, o.infinite);
}
}  // namespace

DataLoader::DataLoader(std::shared_ptr<const Dataset> dataset, LoaderOptions options)
    : dataset_(std::move(dataset)), options_(options) {
  COMBO_CHECK(dataset_, "DataLoader: no dataset");
  COMBO_CHECK(options_.batch_videos >= 1, "DataLoader: batch_videos must be >= 1, got ",
              options_.batch_videos);
  COMBO_CHECK(options_.num_workers >= 0 && options_.prefetch >= 1,
              "DataLoader: num_workers >= 0 and prefetch >= 1 required");
  const int64_t shard =
      static_cast<int64_t>(loader_order(dataset_->size(), options_, 0, false).size());
  const bool drop = options_.drop_last || options_.infinite;
  per_epoch_ = drop ? shard / options_.batch_videos
                    : (shard + options_.batch_videos - 1) / options_.batch_videos;
  COMBO_CHECK(per_epoch_ > 0, "DataLoader: ", dataset_->size(), " video(s) (", shard,
              " on this rank) cannot fill one batch of ", options_.batch_videos);
  COMBO_CHECK(options_.start_batch >= 0 && options_.start_batch <= per_epoch_,
              "DataLoader: resume position batch ", options_.start_batch, " outside the epoch of ",
              per_epoch_, " batches");
  position_ = {options_.start_epoch, options_.start_batch};
  if (!options_.infinite) end_seq_ = per_epoch_ - options_.start_batch;
  for (int64_t i = 0; i < options_.num_workers; ++i)
    workers_.emplace_back([this] { worker_loop(); });
}

DataLoader::~DataLoader() { shutdown(); }

void DataLoader::shutdown() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  cv_.notify_all();
  for (auto& w : workers_)
    if (w.joinable()) w.join();
  workers_.clear();
}

int64_t DataLoader::batches_per_epoch() const { return per_epoch_; }

LoaderPosition DataLoader::position() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return position_;
}

int64_t DataLoader::skipped() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return skipped_;
}

std::vector<std::string> DataLoader::skipped_errors() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return skipped_errors_;
}

// Called with mutex_ held: the job of sequence number next_seq_.
bool DataLoader::make_job(Job& job) {
  if (end_seq_ >= 0 && next_seq_ >= end_seq_) return false;
  const int64_t g = options_.start_batch + next_seq_;
  job.epoch = options_.start_epoch + g / per_epoch_;
  job.batch = g % per_epoch_;
  if (order_epoch_ != job.epoch) {
    order_ = loader_order(dataset_->size(), options_, job.epoch, options_.shuffle);
    order_epoch_ = job.epoch;
  }
  const int64_t begin = job.batch * options_.batch_videos;
  const int64_t end =
      std::min<int64_t>(begin + options_.batch_videos, static_cast<int64_t>(order_.size()));
  job.indices.assign(order_.begin() + begin, order_.begin() + end);
  ++next_seq_;
  return true;
}

VideoBatch DataLoader::load_job(const Job& job) {
  std::vector<VideoSample> samples;
  for (int64_t index : job.indices) {
    Rng rng(sample_seed(options_.seed, job.epoch, index));
    try {
      samples.push_back(dataset_->load(index, rng));
    } catch (const combo::Error& e) {
      if (!dataset_->skip_bad()) throw;
      spdlog::warn("skipping video {} ({}): {}", index, dataset_->video_id(index), e.what());
      std::lock_guard<std::mutex> lock(mutex_);
      ++skipped_;
      skipped_errors_.push_back(e.what());
    }
  }
  if (samples.empty()) return {};
  return collate(std::move(samples));
}

void DataLoader::worker_loop() {
  for (;;) {
    Job job;
    int64_t seq;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      // Bounded prefetch: at most `prefetch` batches ahead of the consumer.
      cv_.wait(lock, [&] { return stop_ || next_seq_ < consume_seq_ + options_.prefetch; });
      if (stop_ || error_) return;
      seq = next_seq_;
      if (!make_job(job)) return;
    }
    std::optional<VideoBatch> result;
    std::exception_ptr err;
    try {
      VideoBatch b = load_job(job);
      if (b.size() > 0) result = std::move(b);
    } catch (...) {
      err = std::current_exception();
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (err && !error_) error_ = err;
      ready_[seq] = std::move(result);
      positions_[seq] = {job.epoch, job.batch};
    }
    cv_.notify_all();
  }
}

std::optional<VideoBatch> DataLoader::next() {
  for (;;) {
    if (workers_.empty()) {
      // Inline loading.
      Job job;
      {
        std::lock_guard<std::mutex> lock(mutex_);
        if (!make_job(job)) return std::nullopt;
        ++consume_seq_;
      }
      VideoBatch b = load_job(job);
      std::lock_guard<std::mutex> lock(mutex_);
      position_ = job.batch + 1 == per_epoch_ ? LoaderPosition{job.epoch + 1, 0}
                                              : LoaderPosition{job.epoch, job.batch + 1};
      if (b.size() == 0) continue;
      return b;
    }
    std::unique_lock<std::mutex> lock(mutex_);
    if (end_seq_ >= 0 && consume_seq_ >= end_seq_) return std::nullopt;
    cv_.wait(lock, [&] { return error_ || ready_.count(consume_seq_) > 0; });
    if (error_) std::rethrow_exception(error_);
    auto node = ready_.extract(consume_seq_);
    const LoaderPosition at = positions_[consume_seq_];
    positions_.erase(consume_seq_);
    ++consume_seq_;
    position_ = at.batch + 1 == per_epoch_ ? LoaderPosition{at.epoch + 1, 0}
                                           : LoaderPosition{at.epoch, at.batch + 1};
    lock.unlock();
    cv_.notify_all();
    if (!node.mapped()) continue;  // every video of that batch was skipped
    return std::move(*node.mapped());
  }
}

}  // namespace combo::data
