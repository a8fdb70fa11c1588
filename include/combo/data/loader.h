#pragma once
/// The data loader: worker threads fill a bounded prefetch queue with collated batches;
/// batch order and augmentation depend only on (seed, epoch, index), never on the number of
/// workers or on timing. Training uses an infinite shuffled sampler (a new permutation per
/// epoch); evaluation goes through the split once in order. With world_size > 1 every rank
/// takes its own shard.
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "combo/data/dataset.h"
#include "combo/data/sample.h"

namespace combo::data {

struct LoaderOptions {
  int64_t batch_videos = 1;  ///< videos per batch on this rank
  int64_t num_workers = 2;   ///< 0 = load on the calling thread
  int64_t prefetch = 4;      ///< batches kept ready (bounded queue)
  bool shuffle = false;
  bool infinite = false;  ///< training: endless epochs
  bool drop_last = false;
  uint64_t seed = 0;
  int64_t rank = 0, world_size = 1;
  /// Without shuffling or wrapping: rank r takes the r-th contiguous block of the split instead
  /// of every W-th video, so the ranks' results concatenated in rank order are in dataset order
  /// (distributed evaluation).
  bool contiguous_shards = false;
  int64_t start_epoch = 0;  ///< resume position
  int64_t start_batch = 0;  ///< batches of start_epoch already consumed
};

/// The sample order of one epoch on one rank: a permutation of [0, size) drawn from
/// (seed, epoch) when shuffling, else identity; rank r takes positions r, r + W, ...
/// (padded by wrapping so every rank has the same count when infinite).
std::vector<int64_t> epoch_order(int64_t size, uint64_t seed, int64_t epoch, bool shuffle,
                                 int64_t rank, int64_t world_size, bool pad);

/// The contiguous block of [0, size) that rank r of world_size evaluates: [r*size/W,
/// (r+1)*size/W) (the first size % W ranks get one more).
std::vector<int64_t> contiguous_shard(int64_t size, int64_t rank, int64_t world_size);

/// The augmentation seed of one video in one epoch.
uint64_t sample_seed(uint64_t seed, int64_t epoch, int64_t index);

/// Where a loader stands (for checkpoints).
struct LoaderPosition {
  int64_t epoch = 0;
  int64_t batch = 0;  ///< batches of `epoch` handed out
};

class DataLoader {
 public:
  DataLoader(std::shared_ptr<const Dataset> dataset, LoaderOptions options);
  ~DataLoader();
  DataLoader(const DataLoader&) = delete;
  DataLoader& operator=(const DataLoader&) = delete;

  /// The next batch, or nullopt at the end (finite loaders). Rethrows a worker's error.
  std::optional<VideoBatch> next();
  /// Batches per epoch on this rank.
  int64_t batches_per_epoch() const;
  /// Position after the last batch next() returned.
  LoaderPosition position() const;
  /// Videos skipped as bad (DatasetOptions::skip_bad), with their errors.
  int64_t skipped() const;
  std::vector<std::string> skipped_errors() const;
  /// Stops the workers (also done by the destructor).
  void shutdown();

 private:
  struct Job {
    int64_t epoch, batch;
    std::vector<int64_t> indices;
  };
  bool make_job(Job& job);
  void worker_loop();
  VideoBatch load_job(const Job& job);

  std::shared_ptr<const Dataset> dataset_;
  LoaderOptions options_;
  int64_t per_epoch_ = 0;
  // Job production (under mutex_).
  int64_t next_epoch_ = 0, next_batch_ = 0, next_seq_ = 0;
  std::vector<int64_t> order_;
  int64_t order_epoch_ = -1;
  // Results keyed by sequence number.
  std::map<int64_t, std::optional<VideoBatch>> ready_;
  std::map<int64_t, LoaderPosition> positions_;
  int64_t consume_seq_ = 0;
  int64_t end_seq_ = -1;
  std::exception_ptr error_;
  LoaderPosition position_;
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  bool stop_ = false;
  int64_t skipped_ = 0;
  std::vector<std::string> skipped_errors_;
  std::vector<std::thread> workers_;
};

}  // namespace combo::data
