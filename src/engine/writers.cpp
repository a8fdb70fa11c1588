#include "combo/engine/writers.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iomanip>
#include <nlohmann/json.hpp>
#include <numeric>
#include <sstream>

#include "combo/core/check.h"

namespace fs = std::filesystem;

namespace combo::engine {
namespace {

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

nlohmann::json number(double v) {
  if (!std::isfinite(v)) return nullptr;
  return v;
}

// ---- protobuf wire format, only what Event/Summary need ----
void put_varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}
void put_key(std::string& out, int field, int wire_type) {
  put_varint(out, (static_cast<uint64_t>(field) << 3) | wire_type);
}
template <typename T>
void put_fixed(std::string& out, T v) {
  char b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));  // little-endian hosts only (x86-64, aarch64)
  out.append(b, sizeof(T));
}
void put_bytes(std::string& out, int field, const std::string& bytes) {
  put_key(out, field, 2);
  put_varint(out, bytes.size());
  out += bytes;
}

std::array<uint32_t, 256> make_crc_table() {
  std::array<uint32_t, 256> t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    t[i] = c;
  }
  return t;
}

bool is_aux_loss(const std::string& name) {
  const auto us = name.rfind('_');
  if (us == std::string::npos || us + 1 >= name.size()) return false;
  for (size_t i = us + 1; i < name.size(); ++i)
    if (!std::isdigit(static_cast<unsigned char>(name[i]))) return false;
  return true;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
JsonlWriter::JsonlWriter(const std::string& path) : path_(path) {
  out_.open(path_, std::ios::app);
  COMBO_CHECK(out_.is_open(), "JsonlWriter: cannot open '", path_,
              "' for appending: ", std::strerror(errno));
}

void JsonlWriter::write(const MetricsRecord& r) {
  // ordered_json keeps the fixed field order: iteration, lr, total_loss, losses, times, extra.
  nlohmann::ordered_json j;
  j["iteration"] = r.iteration;
  j["lr"] = number(r.lr);
  j["total_loss"] = number(r.total_loss);
  for (const auto& [k, v] : r.losses) j[k] = number(v);
  j["time"] = number(r.time);
  j["data_time"] = number(r.data_time);
  if (r.eta_seconds >= 0) j["eta_seconds"] = number(r.eta_seconds);
  for (const auto& [k, v] : r.extra) j[k] = number(v);
  errno = 0;
  out_ << j.dump() << '\n';
  out_.flush();
  COMBO_CHECK(out_.good(), "cannot write '", path_,
              "': ", errno ? std::strerror(errno) : "write failed (disk full?)");
}

void JsonlWriter::flush() { out_.flush(); }

// ---------------------------------------------------------------------------------------------
uint32_t crc32c(const void* data, size_t size) {
  static const auto table = make_crc_table();
  const auto* p = static_cast<const uint8_t*>(data);
  uint32_t c = 0xFFFFFFFFu;
  for (size_t i = 0; i < size; ++i) c = table[(c ^ p[i]) & 0xff] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

uint32_t masked_crc32c(const void* data, size_t size) {
  const uint32_t c = crc32c(data, size);
  return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}

std::string encode_event(double wall_time, int64_t step, const std::string& file_version,
                         const std::vector<std::pair<std::string, float>>& scalars) {
  std::string ev;
  put_key(ev, 1, 1);  // wall_time: double
  put_fixed<double>(ev, wall_time);
  put_key(ev, 2, 0);  // step: int64
  put_varint(ev, static_cast<uint64_t>(step));
  if (!file_version.empty()) put_bytes(ev, 3, file_version);
  if (!scalars.empty()) {
    std::string summary;
    for (const auto& [tag, value] : scalars) {
      std::string v;
      put_bytes(v, 1, tag);  // Summary.Value.tag
      put_key(v, 2, 5);      // Summary.Value.simple_value: float
      put_fixed<float>(v, value);
      put_bytes(summary, 1, v);  // Summary.value (repeated)
    }
    put_bytes(ev, 5, summary);  // Event.summary
  }
  return ev;
}

TensorBoardWriter::TensorBoardWriter(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  COMBO_CHECK(!ec, "TensorBoardWriter: cannot create '", dir, "': ", ec.message());
  char host[256] = {0};
  if (::gethostname(host, sizeof(host) - 1) != 0) std::strcpy(host, "localhost");
  const auto t = static_cast<long long>(now_seconds());
  std::string base =
      (fs::path(dir) / ("events.out.tfevents." + std::to_string(t) + "." + host)).string();
  path_ = base;
  for (int n = 1; fs::exists(path_); ++n) path_ = base + "." + std::to_string(n);
  out_.open(path_, std::ios::binary);
  COMBO_CHECK(out_.is_open(), "TensorBoardWriter: cannot create '", path_,
              "': ", std::strerror(errno));
  write_record(encode_event(now_seconds(), 0, "brain.Event:2", {}));
  out_.flush();
}

void TensorBoardWriter::write_record(const std::string& data) {
  const uint64_t len = data.size();
  char header[12];
  std::memcpy(header, &len, 8);
  const uint32_t len_crc = masked_crc32c(header, 8);
  std::memcpy(header + 8, &len_crc, 4);
  const uint32_t data_crc = masked_crc32c(data.data(), data.size());
  out_.write(header, sizeof(header));
  out_.write(data.data(), static_cast<std::streamsize>(data.size()));
  out_.write(reinterpret_cast<const char*>(&data_crc), 4);
  COMBO_CHECK(out_.good(), "TensorBoardWriter: writing '", path_, "' failed");
}

void TensorBoardWriter::add_scalar(const std::string& tag, double value, int64_t step,
                                   double wall_time) {
  add_scalars({{tag, value}}, step, wall_time);
}

void TensorBoardWriter::add_scalars(const std::map<std::string, double>& values, int64_t step,
                                    double wall_time) {
  std::vector<std::pair<std::string, float>> scalars;
  for (const auto& [k, v] : values) scalars.emplace_back(k, static_cast<float>(v));
  write_record(encode_event(wall_time < 0 ? now_seconds() : wall_time, step, "", scalars));
}

void TensorBoardWriter::write(const MetricsRecord& r) {
  std::map<std::string, double> values = r.losses;
  values["lr"] = r.lr;
  values["total_loss"] = r.total_loss;
  values["time"] = r.time;
  values["data_time"] = r.data_time;
  for (const auto& [k, v] : r.extra) values[k] = v;
  add_scalars(values, r.iteration);
  out_.flush();
}

void TensorBoardWriter::flush() { out_.flush(); }

// ---------------------------------------------------------------------------------------------
std::string format_duration(double seconds) {
  if (!(seconds >= 0)) return "?";
  auto s = static_cast<int64_t>(std::llround(seconds));
  const int64_t days = s / 86400;
  s %= 86400;
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%lld:%02lld:%02lld", static_cast<long long>(s / 3600),
                static_cast<long long>((s / 60) % 60), static_cast<long long>(s % 60));
  if (days == 0) return buf;
  return std::to_string(days) + (days == 1 ? " day, " : " days, ") + buf;
}

std::string ConsoleWriter::format(const MetricsRecord& r) const {
  std::ostringstream os;
  os << "iter " << r.iteration + 1 << "/" << r.max_iter;
  os << std::fixed << std::setprecision(2);
  if (r.time > 0) os << "  " << 1.0 / r.time << " it/s";
  if (r.eta_seconds >= 0) os << "  eta " << format_duration(r.eta_seconds);
  os << std::defaultfloat << std::setprecision(3);
  os << "  lr " << std::scientific << std::setprecision(2) << r.lr << std::defaultfloat
     << std::setprecision(4);
  os << "  total_loss " << r.total_loss;
  for (const auto& [k, v] : r.losses)
    if (all_losses_ || !is_aux_loss(k)) os << "  " << k << " " << v;
  for (const auto& [k, v] : r.extra) os << "  " << k << " " << v;
  os << std::setprecision(3) << "  time " << r.time << "  data_time " << r.data_time;
  return os.str();
}

void ConsoleWriter::write(const MetricsRecord& r) { spdlog::info("{}", format(r)); }

// ---------------------------------------------------------------------------------------------
void IterationTimer::start() { start_ = data_ = Clock::now(); }

void IterationTimer::data_ready() {
  data_ = Clock::now();
  last_data_ = std::chrono::duration<double>(data_ - start_).count();
}

double IterationTimer::stop() {
  last_ = std::chrono::duration<double>(Clock::now() - start_).count();
  ++count_;
  recent_.push_back(last_);
  while (recent_.size() > window_) recent_.pop_front();
  return last_;
}

double IterationTimer::mean_seconds() const {
  if (recent_.empty()) return 0.0;
  return std::accumulate(recent_.begin(), recent_.end(), 0.0) / recent_.size();
}

double IterationTimer::eta(int64_t remaining) const {
  if (recent_.empty()) return -1.0;
  return mean_seconds() * static_cast<double>(std::max<int64_t>(remaining, 0));
}

}  // namespace combo::engine
