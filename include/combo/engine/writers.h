#pragma once
/// Training metrics: a JSON-lines file, TensorBoard event files, a console progress line and an
/// iteration timer (detectron2's JSONWriter, TensorboardXWriter, CommonMetricPrinter, and
/// IterationTimer).
#include <chrono>
#include <cstdint>
#include <deque>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace combo::engine {

/// What one log event carries. Losses are the means over the iterations since the last log.
struct MetricsRecord {
  int64_t iteration = 0;                 ///< last completed iteration (0-based)
  int64_t max_iter = 0;                  ///< for progress and ETA
  double lr = 0.0;                       ///< lr of group 0 (base lr group)
  double total_loss = 0.0;               ///< sum of the weighted losses
  std::map<std::string, double> losses;  ///< every weighted loss
  double time = 0.0;                     ///< seconds per iteration (mean over the window)
  double data_time = 0.0;                ///< seconds spent waiting for data (mean)
  double eta_seconds = -1.0;             ///< < 0: unknown
  /// Other scalars (evaluation metrics, loss scale, skipped steps, ...), written as they are.
  std::map<std::string, double> extra;
};

/// Something that records MetricsRecords.
class EventWriter {
 public:
  virtual ~EventWriter() = default;
  virtual void write(const MetricsRecord& record) = 0;
  virtual void flush() {}
};

/// Appends one JSON object per line: {"iteration": .., "lr": .., "total_loss": .., <losses>,
/// "time": .., "data_time": .., <extra>}. Non-finite values are written as null. The file is
/// opened for appending (a resumed run continues it); errors name the file.
class JsonlWriter : public EventWriter {
 public:
  explicit JsonlWriter(const std::string& path);
  void write(const MetricsRecord& record) override;
  void flush() override;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::ofstream out_;
};

/// CRC-32C (Castagnoli), as TFRecord uses.
uint32_t crc32c(const void* data, size_t size);
/// TFRecord's masked CRC: ((crc >> 15) | (crc << 17)) + 0xa282ead8.
uint32_t masked_crc32c(const void* data, size_t size);

/// A TensorBoard event file `events.out.tfevents.<unix time>.<host>` in `dir`: TFRecord framing
/// (uint64 length, masked CRC of the length, data, masked CRC of the data), each record an
/// `Event` protobuf encoded by hand: wall_time (1, double), step (2, int64), file_version (3,
/// "brain.Event:2", first record only) or summary (5) with Summary.Value {tag (1), simple_value
/// (2, float)}. Readable by TensorBoard.
class TensorBoardWriter : public EventWriter {
 public:
  explicit TensorBoardWriter(const std::string& dir);
  /// Writes lr, total_loss, every loss, time, data_time and extra as scalars at `iteration`.
  void write(const MetricsRecord& record) override;
  /// One Event with one scalar; wall_time < 0 means now.
  void add_scalar(const std::string& tag, double value, int64_t step, double wall_time = -1.0);
  /// One Event with several scalars.
  void add_scalars(const std::map<std::string, double>& values, int64_t step,
                   double wall_time = -1.0);
  void flush() override;
  const std::string& path() const { return path_; }

 private:
  void write_record(const std::string& data);
  std::string path_;
  std::ofstream out_;
};

/// Encodes one Event protobuf (exposed for tests). `file_version` non-empty: the first record.
std::string encode_event(double wall_time, int64_t step, const std::string& file_version,
                         const std::vector<std::pair<std::string, float>>& scalars);

/// Logs "iter 120/90000  3.21 it/s  eta 7:47:03  lr 9.99e-05  total_loss 42.1  loss_ce 1.2
/// loss_mask 3.4 loss_dice 2.1 loss_cosine_0 ...  time 0.311  data_time 0.002" through spdlog.
/// Aux losses (suffix _<digit>) are left out of the line unless `all_losses` (JSONL and
/// TensorBoard have all of them).
class ConsoleWriter : public EventWriter {
 public:
  explicit ConsoleWriter(bool all_losses = false) : all_losses_(all_losses) {}
  void write(const MetricsRecord& record) override;
  /// The line write() logs.
  std::string format(const MetricsRecord& record) const;

 private:
  bool all_losses_;
};

/// "1 day, 2:03:04" / "2:03:04" for an ETA in seconds.
std::string format_duration(double seconds);

/// Wall-clock time per iteration; ETA from the mean of the last `window` iterations.
class IterationTimer {
 public:
  explicit IterationTimer(size_t window = 20) : window_(window) {}
  /// Call when an iteration starts.
  void start();
  /// Call when the data of the iteration has arrived (data_time = this - start).
  void data_ready();
  /// Call when the iteration ends; returns its seconds.
  double stop();
  double last_seconds() const { return last_; }
  double last_data_seconds() const { return last_data_; }
  /// Mean over the window (0 before the first stop).
  double mean_seconds() const;
  /// Seconds for `remaining` more iterations at the window mean.
  double eta(int64_t remaining) const;
  int64_t count() const { return count_; }

 private:
  using Clock = std::chrono::steady_clock;
  size_t window_;
  Clock::time_point start_{}, data_{};
  double last_ = 0.0, last_data_ = 0.0;
  int64_t count_ = 0;
  std::deque<double> recent_;
};

}  // namespace combo::engine
