// The threaded loader: order and augmentation independent of the number of workers, the
// infinite shuffled sampler, rank sharding, resume positions, errors, skips and shutdown.
#include <sys/syscall.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <future>
#include <mutex>
#include <set>
#include <thread>

#include "combo/core/check.h"
#include "combo/data/avsbench.h"
#include "combo/data/loader.h"
#include "testing/data_tree.h"
#include "testing/testing.h"

namespace {

namespace fs = std::filesystem;
using namespace combo::data;

class LoaderTest : public combo::testing::SeededTest {
 protected:
  combo::testing::TempDir dir;
  std::shared_ptr<AvsDataset> train, val;
  void SetUp() override {
    SeededTest::SetUp();
    combo::testing::TreeSpec spec;
    spec.train = 7;
    spec.val = 3;
    spec.test = 1;
    combo::testing::write_s4_tree(dir.path(), spec);
    DatasetOptions o;
    o.kind = DatasetKind::kS4;
    o.root = dir.path().string();
    o.split = "train";
    o.train = true;
    o.augment = true;
    o.augment_options.short_sides = {24, 32, 40};
    o.augment_options.crop_size = 24;
    o.augment_options.pad_size = 24;
    train = std::make_shared<AvsDataset>(o);
    o.split = "val";
    o.train = false;
    o.augment = false;
    val = std::make_shared<AvsDataset>(o);
  }
};

// A dataset around another one that records its loads: calls, loads running now, the
// threads that ran them; with `hold` every load waits inside load() until release().
class ObservedDataset : public Dataset {
 public:
  explicit ObservedDataset(std::shared_ptr<const Dataset> inner, bool hold = false)
      : inner_(std::move(inner)), hold_(hold) {}
  int64_t size() const override { return inner_->size(); }
  DatasetKind kind() const override { return inner_->kind(); }
  const std::vector<std::string>& class_names() const override { return inner_->class_names(); }
  std::string video_id(int64_t index) const override { return inner_->video_id(index); }
  std::string describe() const override { return "observed " + inner_->describe(); }
  VideoSample load(int64_t index, Rng& rng) const override {
    {
      std::unique_lock<std::mutex> lock(mutex_);
      ++calls_;
      ++active_;
      threads_.insert(static_cast<int64_t>(::syscall(SYS_gettid)));
      cv_.notify_all();
      cv_.wait(lock, [&] { return !hold_; });
    }
    struct Done {
      const ObservedDataset* self;
      ~Done() {
        std::lock_guard<std::mutex> lock(self->mutex_);
        --self->active_;
        ++self->finished_;
        self->cv_.notify_all();
      }
    } done{this};
    return inner_->load(index, rng);
  }
  void release() {
    std::lock_guard<std::mutex> lock(mutex_);
    hold_ = false;
    cv_.notify_all();
  }
  bool wait_finished(int64_t n, std::chrono::milliseconds limit) const {
    std::unique_lock<std::mutex> lock(mutex_);
    return cv_.wait_for(lock, limit, [&] { return finished_ >= n; });
  }
  bool wait_active(int64_t n, std::chrono::milliseconds limit) const {
    std::unique_lock<std::mutex> lock(mutex_);
    return cv_.wait_for(lock, limit, [&] { return active_ >= n; });
  }
  int64_t calls() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return calls_;
  }
  int64_t active() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return active_;
  }
  int64_t finished() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return finished_;
  }
  std::set<int64_t> threads() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return threads_;
  }

 private:
  std::shared_ptr<const Dataset> inner_;
  mutable std::mutex mutex_;
  mutable std::condition_variable cv_;
  bool hold_;
  mutable int64_t calls_ = 0, active_ = 0, finished_ = 0;
  mutable std::set<int64_t> threads_;
};

// Destroys `loader` on another thread; false when that takes longer than `limit` (the thread
// is then left blocked).
bool destroyed_within(std::unique_ptr<DataLoader> loader, std::chrono::milliseconds limit) {
  std::promise<void> done;
  auto finished = done.get_future();
  std::thread destroyer([l = std::move(loader), d = std::move(done)]() mutable {
    l.reset();
    d.set_value();
  });
  if (finished.wait_for(limit) != std::future_status::ready) {
    destroyer.detach();
    return false;
  }
  destroyer.join();
  return true;
}

// True when none of these threads (Linux thread ids) exists any more: /proc/self/task/<tid> goes
// away when a thread has exited (polled briefly: the kernel reaps it just after join returns).
bool threads_gone(const std::set<int64_t>& tids) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  for (;;) {
    bool any = false;
    for (const int64_t tid : tids)
      any = any || fs::exists("/proc/self/task/" + std::to_string(tid));
    if (!any) return true;
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

std::vector<VideoBatch> take(DataLoader& loader, int n) {
  std::vector<VideoBatch> out;
  for (int i = 0; i < n; ++i) {
    auto b = loader.next();
    if (!b) break;
    out.push_back(std::move(*b));
  }
  return out;
}

TEST_F(LoaderTest, SameBatchesWhateverTheNumberOfWorkers) {
  std::vector<std::vector<VideoBatch>> runs;
  for (int workers : {0, 1, 2, 3}) {
    LoaderOptions o;
    o.batch_videos = 2;
    o.num_workers = workers;
    o.shuffle = true;
    o.infinite = true;
    o.seed = 11;
    DataLoader loader(train, o);
    runs.push_back(take(loader, 7));  // crosses an epoch boundary (3 batches per epoch)
  }
  for (size_t r = 1; r < runs.size(); ++r) {
    ASSERT_EQ(runs[r].size(), runs[0].size());
    for (size_t i = 0; i < runs[0].size(); ++i) {
      EXPECT_EQ(runs[r][i].indices, runs[0][i].indices) << "run " << r << " batch " << i;
      EXPECT_TENSOR_EQ(runs[0][i].inputs.images, runs[r][i].inputs.images);
      EXPECT_TENSOR_EQ(runs[0][i].inputs.maskiges, runs[r][i].inputs.maskiges);
      EXPECT_TENSOR_EQ(runs[0][i].labels, runs[r][i].labels);
    }
  }
  // Collated shapes: 2 videos x 5 frames.
  const auto& b = runs[0][0];
  EXPECT_EQ(b.inputs.images.sizes(), (std::vector<int64_t>{10, 3, 24, 24}));
  EXPECT_EQ(b.inputs.log_mel.sizes(), (std::vector<int64_t>{10, 1, 96, 64}));
  EXPECT_EQ(b.inputs.frames_per_video, (std::vector<int64_t>{5, 5}));
  EXPECT_EQ(b.labels.sizes(), (std::vector<int64_t>{10, 24, 24}));
}

TEST_F(LoaderTest, InfiniteShuffledSamplerVisitsEveryVideoOncePerEpoch) {
  LoaderOptions o;
  o.batch_videos = 1;
  o.num_workers = 2;
  o.shuffle = true;
  o.infinite = true;
  o.seed = 5;
  DataLoader loader(train, o);
  std::vector<int64_t> e0, e1;
  for (int i = 0; i < 14; ++i) (i < 7 ? e0 : e1).push_back(loader.next()->indices[0]);
  EXPECT_EQ(std::set<int64_t>(e0.begin(), e0.end()).size(), 7u);
  EXPECT_EQ(std::set<int64_t>(e1.begin(), e1.end()).size(), 7u);
  EXPECT_NE(e0, e1);  // a new permutation per epoch
  EXPECT_EQ(loader.position().epoch, 2);
  EXPECT_EQ(loader.position().batch, 0);
}

TEST_F(LoaderTest, AugmentationDependsOnEpochSeedAndIndex) {
  EXPECT_NE(sample_seed(1, 0, 3), sample_seed(1, 1, 3));
  EXPECT_NE(sample_seed(1, 0, 3), sample_seed(2, 0, 3));
  EXPECT_NE(sample_seed(1, 0, 3), sample_seed(1, 0, 4));
  EXPECT_EQ(sample_seed(1, 0, 3), sample_seed(1, 0, 3));
}

TEST_F(LoaderTest, RanksTakeDisjointShardsOfEqualSize) {
  std::set<int64_t> all;
  size_t n = 0;
  for (int64_t rank = 0; rank < 3; ++rank) {
    const auto shard = epoch_order(7, 9, 4, true, rank, 3, /*pad=*/true);
    EXPECT_EQ(shard.size(), 3u);  // 7 padded to 9
    all.insert(shard.begin(), shard.end());
    n += shard.size();
  }
  EXPECT_EQ(all.size(), 7u);
  EXPECT_EQ(n, 9u);
  // Without padding (evaluation): disjoint and complete.
  std::set<int64_t> eval;
  for (int64_t rank = 0; rank < 2; ++rank)
    for (auto i : epoch_order(7, 0, 0, false, rank, 2, false)) EXPECT_TRUE(eval.insert(i).second);
  EXPECT_EQ(eval.size(), 7u);
}

TEST_F(LoaderTest, ResumeFromAPositionContinuesTheSameStream) {
  LoaderOptions o;
  o.batch_videos = 2;
  o.num_workers = 2;
  o.shuffle = true;
  o.infinite = true;
  o.seed = 3;
  DataLoader full(train, o);
  const auto reference = take(full, 6);
  DataLoader first(train, o);
  take(first, 4);
  const LoaderPosition at = first.position();
  EXPECT_EQ(at.epoch, 1);
  EXPECT_EQ(at.batch, 1);
  o.start_epoch = at.epoch;
  o.start_batch = at.batch;
  DataLoader resumed(train, o);
  const auto rest = take(resumed, 2);
  ASSERT_EQ(rest.size(), 2u);
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(rest[i].indices, reference[4 + i].indices);
    EXPECT_TENSOR_EQ(reference[4 + i].inputs.images, rest[i].inputs.images);
  }
}

TEST_F(LoaderTest, FiniteLoaderGoesThroughTheSplitOnceInOrder) {
  LoaderOptions o;
  o.batch_videos = 2;
  o.num_workers = 2;
  DataLoader loader(val, o);
  EXPECT_EQ(loader.batches_per_epoch(), 2);
  const auto batches = take(loader, 10);
  ASSERT_EQ(batches.size(), 2u);
  EXPECT_EQ(batches[0].indices, (std::vector<int64_t>{0, 1}));
  EXPECT_EQ(batches[1].indices, (std::vector<int64_t>{2}));
  EXPECT_FALSE(loader.next().has_value());
}

TEST_F(LoaderTest, WorkerErrorReachesTheCallerWithTheFileName) {
  fs::remove(dir.path() / "s4_data/audio_wav/val/cat_b/vv1.wav");
  LoaderOptions o;
  o.num_workers = 2;
  DataLoader loader(val, o);
  std::string msg;
  try {
    for (int i = 0; i < 3; ++i) loader.next();
  } catch (const combo::Error& e) {
    msg = e.what();
  }
  EXPECT_NE(msg.find("vv1.wav"), std::string::npos) << msg;
}

TEST_F(LoaderTest, SkipBadCountsAndContinues) {
  fs::remove(dir.path() / "s4_data/audio_wav/val/cat_b/vv1.wav");
  DatasetOptions d = val->options();
  d.skip_bad = true;
  auto ds = std::make_shared<AvsDataset>(d);
  LoaderOptions o;
  o.num_workers = 2;
  DataLoader loader(ds, o);
  const auto batches = take(loader, 10);
  EXPECT_EQ(batches.size(), 2u);
  EXPECT_EQ(loader.skipped(), 1);
  ASSERT_EQ(loader.skipped_errors().size(), 1u);
  EXPECT_NE(loader.skipped_errors()[0].find("vv1.wav"), std::string::npos);
}

// Destroying a loader stops and joins its workers, whether they wait on a full prefetch queue
// or are inside Dataset::load(): it returns in bounded time, only after every load in flight has
// returned, no load starts afterwards and no worker thread is left.
TEST_F(LoaderTest, ShutdownWithBatchesInFlight) {
  LoaderOptions o;
  o.batch_videos = 1;
  o.num_workers = 3;
  o.prefetch = 2;
  o.shuffle = true;
  o.infinite = true;
  o.seed = 4;
  LoaderOptions inline_options = o;
  inline_options.num_workers = 0;
  const auto reference = *DataLoader(train, inline_options).next();

  // Workers blocked on the full prefetch queue: the consumer took one batch, two are ready.
  {
    auto observed = std::make_shared<ObservedDataset>(train);
    auto loader = std::make_unique<DataLoader>(observed, o);
    const auto b = loader->next();
    ASSERT_TRUE(b.has_value());
    EXPECT_EQ(b->indices, reference.indices);
    EXPECT_EQ(b->inputs.images.sizes(), (std::vector<int64_t>{5, 3, 24, 24}));
    EXPECT_TENSOR_EQ(reference.inputs.images, b->inputs.images);
    EXPECT_TENSOR_EQ(reference.labels, b->labels);
    ASSERT_TRUE(observed->wait_finished(3, std::chrono::seconds(20)))
        << observed->finished() << " of 3 loads finished";
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    EXPECT_EQ(observed->calls(), 3) << "loads beyond the consumed batch + prefetch 2";
    EXPECT_EQ(observed->active(), 0);
    const auto threads = observed->threads();
    EXPECT_GE(threads.size(), 1u);
    EXPECT_TRUE(destroyed_within(std::move(loader), std::chrono::seconds(10)))
        << "the loader's destructor did not return within 10 s";
    EXPECT_EQ(observed->calls(), 3);
    EXPECT_TRUE(threads_gone(threads)) << "worker threads still alive after the destructor";
  }

  // Two loads in flight (held inside Dataset::load), the third worker on the full queue.
  {
    auto observed = std::make_shared<ObservedDataset>(train, /*hold=*/true);
    auto loader = std::make_unique<DataLoader>(observed, o);
    ASSERT_TRUE(observed->wait_active(2, std::chrono::seconds(20)))
        << observed->active() << " loads in flight";
    const auto threads = observed->threads();
    EXPECT_EQ(threads.size(), 2u);
    std::promise<void> done;
    auto finished = done.get_future();
    std::thread destroyer([l = std::move(loader), d = std::move(done)]() mutable {
      l.reset();
      d.set_value();
    });
    // The destructor must wait for the loads in flight (it joins the workers).
    EXPECT_FALSE(finished.wait_for(std::chrono::milliseconds(300)) == std::future_status::ready)
        << "the destructor returned while loads were running on its workers";
    observed->release();
    const bool returned = finished.wait_for(std::chrono::seconds(10)) == std::future_status::ready;
    EXPECT_TRUE(returned) << "the loader's destructor did not return within 10 s";
    if (!returned) {
      destroyer.detach();  // blocked for good; the failure above says so
      return;
    }
    destroyer.join();
    EXPECT_EQ(observed->active(), 0) << "a load was still running when the destructor returned";
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    EXPECT_EQ(observed->calls(), 2) << "a worker started a load after the destructor";
    EXPECT_TRUE(threads_gone(threads)) << "worker threads still alive after the destructor";
  }
}

TEST_F(LoaderTest, TargetsFollowTheSupervisedFrames) {
  LoaderOptions o;
  o.batch_videos = 2;
  o.num_workers = 0;
  o.infinite = true;
  DataLoader loader(train, o);
  const auto b = *loader.next();
  const auto t = make_targets(b, combo::loss::DatasetKind::kS4, /*train=*/true);
  EXPECT_EQ(t.layout.supervised_rows, (std::vector<int64_t>{0, 5}));
  ASSERT_EQ(t.targets.size(), 2u);
  for (size_t k = 0; k < 2; ++k) {
    const auto& tg = t.targets[k];
    const auto map = b.labels[t.layout.supervised_rows[k]];
    const auto values = std::get<0>(at::_unique(map.masked_select(map.ne(255))));
    EXPECT_TENSOR_EQ(values, tg.labels);
    ASSERT_EQ(tg.masks.size(0), values.size(0));
    for (int64_t j = 0; j < values.size(0); ++j) EXPECT_TENSOR_EQ(map.eq(values[j]), tg.masks[j]);
  }
  // Evaluation frames: every frame with ground truth.
  LoaderOptions e;
  DataLoader vl(val, e);
  const auto vb = *vl.next();
  const auto vt = make_targets(vb, combo::loss::DatasetKind::kS4, /*train=*/false);
  EXPECT_EQ(vt.layout.supervised_rows.size(), 5u);
}

}  // namespace
