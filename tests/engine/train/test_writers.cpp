#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "combo/core/check.h"
#include "combo/engine/writers.h"
#include "testing/python_check.h"
#include "testing/testing.h"

using namespace combo::engine;
namespace fs = std::filesystem;

namespace {

// ---- a minimal protobuf / TFRecord reader, independent of the writer's code ----
struct Scalar {
  std::string tag;
  float value = 0;
};
struct Event {
  double wall_time = 0;
  int64_t step = 0;
  std::string file_version;
  std::vector<Scalar> scalars;
};

uint64_t read_varint(const std::string& s, size_t& i) {
  uint64_t v = 0;
  for (int shift = 0;; shift += 7) {
    const auto b = static_cast<uint8_t>(s.at(i++));
    v |= static_cast<uint64_t>(b & 0x7f) << shift;
    if (!(b & 0x80)) return v;
  }
}

template <typename T>
T read_fixed(const std::string& s, size_t& i) {
  T v;
  std::memcpy(&v, s.data() + i, sizeof(T));
  i += sizeof(T);
  return v;
}

std::string read_bytes(const std::string& s, size_t& i) {
  const auto n = read_varint(s, i);
  std::string out = s.substr(i, n);
  i += n;
  return out;
}

Scalar parse_value(const std::string& s) {
  Scalar v;
  for (size_t i = 0; i < s.size();) {
    const auto key = read_varint(s, i);
    if (key == ((1 << 3) | 2))
      v.tag = read_bytes(s, i);
    else if (key == ((2 << 3) | 5))
      v.value = read_fixed<float>(s, i);
    else
      ADD_FAILURE() << "unexpected Summary.Value key " << key;
  }
  return v;
}

Event parse_event(const std::string& s) {
  Event e;
  for (size_t i = 0; i < s.size();) {
    const auto key = read_varint(s, i);
    switch (key) {
      case (1 << 3) | 1:
        e.wall_time = read_fixed<double>(s, i);
        break;
      case (2 << 3) | 0:
        e.step = static_cast<int64_t>(read_varint(s, i));
        break;
      case (3 << 3) | 2:
        e.file_version = read_bytes(s, i);
        break;
      case (5 << 3) | 2: {
        const std::string summary = read_bytes(s, i);
        for (size_t j = 0; j < summary.size();) {
          EXPECT_EQ(read_varint(summary, j), (1u << 3) | 2);
          e.scalars.push_back(parse_value(read_bytes(summary, j)));
        }
        break;
      }
      default:
        ADD_FAILURE() << "unexpected Event key " << key;
        return e;
    }
  }
  return e;
}

std::vector<Event> read_event_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::string all((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  std::vector<Event> events;
  size_t i = 0;
  while (i < all.size()) {
    EXPECT_GE(all.size() - i, 12u);
    uint64_t len;
    std::memcpy(&len, all.data() + i, 8);
    uint32_t len_crc, data_crc;
    std::memcpy(&len_crc, all.data() + i + 8, 4);
    EXPECT_EQ(len_crc, masked_crc32c(all.data() + i, 8))
        << "length CRC of record " << events.size();
    const std::string data = all.substr(i + 12, len);
    std::memcpy(&data_crc, all.data() + i + 12 + len, 4);
    EXPECT_EQ(data_crc, masked_crc32c(data.data(), data.size()))
        << "data CRC of record " << events.size();
    events.push_back(parse_event(data));
    i += 12 + len + 4;
  }
  EXPECT_EQ(i, all.size());
  return events;
}

MetricsRecord sample_record(int64_t iteration) {
  MetricsRecord r;
  r.iteration = iteration;
  r.max_iter = 100;
  r.lr = 1e-4;
  r.total_loss = 3.5;
  r.losses = {{"loss_ce", 1.0}, {"loss_dice", 2.0}, {"loss_ce_0", 0.5}};
  r.time = 0.25;
  r.data_time = 0.01;
  r.eta_seconds = 3725;
  r.extra = {{"mIoU", 0.75}};
  return r;
}

}  // namespace

TEST(WritersTest, Crc32cKnownValues) {
  // RFC 3720 B.4 check value and the all-zero vector.
  EXPECT_EQ(crc32c("123456789", 9), 0xE3069283u);
  const std::string zeros(32, '\0');
  EXPECT_EQ(crc32c(zeros.data(), zeros.size()), 0x8A9136AAu);
  const uint32_t c = crc32c("123456789", 9);
  EXPECT_EQ(masked_crc32c("123456789", 9), ((c >> 15) | (c << 17)) + 0xa282ead8u);
}

TEST(WritersTest, TensorBoardFileParsesBack) {
  combo::testing::TempDir dir;
  std::string path;
  {
    TensorBoardWriter w(dir.path().string());
    path = w.path();
    w.add_scalar("custom/value", 1.25, 7, 1000.5);
    w.write(sample_record(19));
    w.flush();
  }
  EXPECT_EQ(fs::path(path).parent_path(), dir.path());
  EXPECT_EQ(fs::path(path).filename().string().rfind("events.out.tfevents.", 0), 0u);
  auto events = read_event_file(path);
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(events[0].file_version, "brain.Event:2");
  EXPECT_TRUE(events[0].scalars.empty());
  EXPECT_GT(events[0].wall_time, 1.6e9);
  EXPECT_EQ(events[1].step, 7);
  EXPECT_DOUBLE_EQ(events[1].wall_time, 1000.5);
  ASSERT_EQ(events[1].scalars.size(), 1u);
  EXPECT_EQ(events[1].scalars[0].tag, "custom/value");
  EXPECT_EQ(events[1].scalars[0].value, 1.25f);
  EXPECT_EQ(events[2].step, 19);
  std::map<std::string, float> values;
  for (const auto& s : events[2].scalars) values[s.tag] = s.value;
  EXPECT_EQ(values.size(), 8u);  // 3 losses, lr, total_loss, time, data_time, mIoU
  EXPECT_EQ(values.at("lr"), 1e-4f);
  EXPECT_EQ(values.at("total_loss"), 3.5f);
  EXPECT_EQ(values.at("loss_ce"), 1.0f);
  EXPECT_EQ(values.at("loss_ce_0"), 0.5f);
  EXPECT_EQ(values.at("loss_dice"), 2.0f);
  EXPECT_EQ(values.at("time"), 0.25f);
  EXPECT_EQ(values.at("data_time"), 0.01f);
  EXPECT_EQ(values.at("mIoU"), 0.75f);

  // A large step and many values need multi-byte varints.
  const std::string ev = encode_event(1.0, 300000, "", {{"a", 2.0f}});
  auto back = parse_event(ev);
  EXPECT_EQ(back.step, 300000);
}

// TensorBoard's own reader (tensorboard's Python package) reads what TensorBoardWriter wrote:
// the independent cross-check of the C++ reader above. Skipped, with the reason, without it.
TEST(WritersTest, TensorBoardsOwnReaderReadsTheFile) {
  COMBO_PYTHON_MODULE_OR_SKIP("tensorboard", "pip install tensorboard");
  combo::testing::TempDir dir;
  {
    TensorBoardWriter w(dir.path().string());
    w.add_scalar("custom/value", 1.25, 7, 1000.5);
    w.write(sample_record(19));
    w.flush();
  }
  const std::string script = dir.file("read.py");
  std::ofstream(script)
      << "import sys\n"
         "from tensorboard.backend.event_processing.event_accumulator import EventAccumulator\n"
         "acc = EventAccumulator(sys.argv[1]); acc.Reload()\n"
         "s = acc.Scalars('total_loss')\n"
         "assert len(s) == 1 and s[0].step == 19 and abs(s[0].value - 3.5) < 1e-6, s\n"
         "c = acc.Scalars('custom/value')\n"
         "assert len(c) == 1 and c[0].step == 7 and c[0].value == 1.25, c\n";
  const std::string cmd = "/usr/bin/python3 " + script + " " + dir.path().string();
  EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
}

TEST(WritersTest, JsonlHasOneObjectPerLineAndAppends) {
  combo::testing::TempDir dir;
  const std::string path = dir.file("metrics.jsonl");
  {
    JsonlWriter w(path);
    w.write(sample_record(19));
    auto r = sample_record(39);
    r.losses["loss_mask"] = std::nan("");
    w.write(r);
  }
  {
    JsonlWriter w(path);  // a resumed run appends
    w.write(sample_record(59));
  }
  std::ifstream f(path);
  std::vector<nlohmann::json> lines;
  for (std::string line; std::getline(f, line);) lines.push_back(nlohmann::json::parse(line));
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[0]["iteration"], 19);
  EXPECT_DOUBLE_EQ(lines[0]["lr"].get<double>(), 1e-4);
  EXPECT_DOUBLE_EQ(lines[0]["total_loss"].get<double>(), 3.5);
  EXPECT_DOUBLE_EQ(lines[0]["loss_ce_0"].get<double>(), 0.5);
  EXPECT_DOUBLE_EQ(lines[0]["time"].get<double>(), 0.25);
  EXPECT_DOUBLE_EQ(lines[0]["data_time"].get<double>(), 0.01);
  EXPECT_DOUBLE_EQ(lines[0]["mIoU"].get<double>(), 0.75);
  EXPECT_TRUE(lines[1]["loss_mask"].is_null());
  EXPECT_EQ(lines[2]["iteration"], 59);
  EXPECT_THROW({ JsonlWriter bad(dir.file("missing/dir/m.jsonl")); }, combo::Error);
}

TEST(WritersTest, ConsoleLineAndDurations) {
  ConsoleWriter c;
  const std::string line = c.format(sample_record(19));
  EXPECT_NE(line.find("iter 20/100"), std::string::npos) << line;
  EXPECT_NE(line.find("4.00 it/s"), std::string::npos) << line;
  EXPECT_NE(line.find("eta 1:02:05"), std::string::npos) << line;
  EXPECT_NE(line.find("lr 1.00e-04"), std::string::npos) << line;
  EXPECT_NE(line.find("total_loss 3.5"), std::string::npos) << line;
  EXPECT_NE(line.find("loss_dice 2"), std::string::npos) << line;
  EXPECT_EQ(line.find("loss_ce_0"), std::string::npos) << line;  // aux losses: JSONL/TB only
  EXPECT_NE(ConsoleWriter(true).format(sample_record(19)).find("loss_ce_0"), std::string::npos);
  EXPECT_EQ(format_duration(0), "0:00:00");
  EXPECT_EQ(format_duration(86400 + 3661), "1 day, 1:01:01");
  EXPECT_EQ(format_duration(3 * 86400), "3 days, 0:00:00");
  EXPECT_EQ(format_duration(-1), "?");
}

TEST(WritersTest, IterationTimerMeasuresAndEstimates) {
  IterationTimer t(2);
  EXPECT_EQ(t.eta(10), -1.0);
  for (int i = 0; i < 3; ++i) {
    t.start();
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    t.data_ready();
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    t.stop();
  }
  EXPECT_EQ(t.count(), 3);
  EXPECT_GE(t.last_seconds(), 0.009);
  EXPECT_GE(t.last_data_seconds(), 0.004);
  EXPECT_LT(t.last_data_seconds(), t.last_seconds());
  EXPECT_NEAR(t.eta(10), 10 * t.mean_seconds(), 1e-12);
}
