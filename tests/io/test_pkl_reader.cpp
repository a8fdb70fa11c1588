#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstring>
#include <fstream>
#include <sstream>

#include "combo/io/pkl_reader.h"
#include "io_test_helpers.h"
#include "testing/testing.h"

namespace fs = std::filesystem;
using combo::testing::error_message;
using combo::testing::read_bytes;
using combo::testing::TempDir;
using combo::testing::write_bytes;

namespace {

// Makes the files with Python + torch as AVSBench did; returns the folder's manifest lines.
std::vector<std::string> make_python_pickles(const TempDir& dir) {
  const fs::path script = combo::testing::source_dir() / "tests/python/make_log_mel_pkl.py";
  std::string out;
  const std::string cmd = "/usr/bin/python3 " + combo::testing::shell_quote(script.string()) + " " +
                          combo::testing::shell_quote(dir.path().string());
  EXPECT_EQ(combo::testing::run_command(cmd, &out), 0) << cmd << "\n" << out;
  std::ifstream f(dir.path() / "manifest.txt");
  std::vector<std::string> lines;
  for (std::string line; std::getline(f, line);) {
    if (!line.empty()) lines.push_back(line);
  }
  return lines;
}

// Expected values written by Python's struct module from Python floats.
at::Tensor expected_values(const fs::path& file, const std::string& dtype,
                           const std::vector<int64_t>& shape) {
  const std::string bytes = read_bytes(file);
  const at::ScalarType type = dtype == "f64" ? at::kDouble : at::kFloat;
  const int64_t numel = static_cast<int64_t>(bytes.size() / at::elementSize(type));
  at::Tensor t = at::empty({numel}, type);
  std::memcpy(t.data_ptr(), bytes.data(), bytes.size());
  return t.view(shape);
}

// --- a pickle stream written by hand, shaped like torch's, for the tests that need no Python.

void put_u32(std::string& s, uint32_t v) {
  for (int k = 0; k < 4; ++k) s.push_back(static_cast<char>((v >> (8 * k)) & 0xFF));
}
void put_i64(std::string& s, int64_t v) {
  for (int k = 0; k < 8; ++k) {
    s.push_back(static_cast<char>((static_cast<uint64_t>(v) >> (8 * k)) & 0xFF));
  }
}
void put_str(std::string& s, const std::string& v) {  // BINUNICODE
  s.push_back('X');
  put_u32(s, static_cast<uint32_t>(v.size()));
  s += v;
}
void put_int(std::string& s, int64_t v) {  // BININT
  s.push_back('J');
  put_u32(s, static_cast<uint32_t>(static_cast<int32_t>(v)));
}
void put_short_str(std::string& s, const std::string& v) {  // SHORT_BINUNICODE
  s.push_back('\x8c');
  s.push_back(static_cast<char>(v.size()));
  s += v;
}

// The legacy torch.save blob of one float storage (what torch.storage._load_from_bytes reads).
std::string legacy_storage_blob(const std::vector<float>& data, int64_t declared_numel,
                                bool good_magic) {
  std::string b;
  b += "\x80\x02\x8a\x0a";
  b += good_magic ? std::string("\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19", 10)
                  : std::string("\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x18", 10);
  b += ".";
  b += "\x80\x02M";  // BININT2 1001
  b.push_back(static_cast<char>(1001 & 0xFF));
  b.push_back(static_cast<char>(1001 >> 8));
  b += ".";
  b += "\x80\x02}(";
  put_str(b, "little_endian");
  b += "\x88u.";
  b += "\x80\x02(";
  put_str(b, "storage");
  b += "ctorch\nFloatStorage\n";
  put_str(b, "94001");
  put_str(b, "cpu");
  put_int(b, declared_numel);
  b += "NtQ.";
  b += "\x80\x02](";
  put_str(b, "94001");
  b += "e.";
  put_i64(b, static_cast<int64_t>(data.size()));
  b.append(reinterpret_cast<const char*>(data.data()), data.size() * sizeof(float));
  return b;
}

// pickle.dumps of a tensor at protocol 4 without framing: _rebuild_tensor_v2(storage, offset,
// size, stride, requires_grad, OrderedDict()).
std::string tensor_pickle(const std::string& blob, int64_t offset, const std::vector<int64_t>& size,
                          const std::vector<int64_t>& stride) {
  std::string s = "\x80\x04";
  put_short_str(s, "torch._utils");
  put_short_str(s, "_rebuild_tensor_v2");
  s += "\x93(";
  put_short_str(s, "torch.storage");
  put_short_str(s, "_load_from_bytes");
  s += "\x93";
  s += "B";
  put_u32(s, static_cast<uint32_t>(blob.size()));
  s += blob;
  s += "\x85R";
  put_int(s, offset);
  s += "(";
  for (int64_t v : size) put_int(s, v);
  s += "t(";
  for (int64_t v : stride) put_int(s, v);
  s += "t\x88";
  put_short_str(s, "collections");
  put_short_str(s, "OrderedDict");
  s += "\x93)Rt";
  s += "R.";
  return s;
}

}  // namespace

TEST(PklReaderTest, HandWrittenTensorPickleWithOffsetAndStrides) {
  // A [1, 1, 96, 64] view with offset 7 whose last two dims are stored transposed.
  const int64_t offset = 7;
  std::vector<float> storage(static_cast<size_t>(offset + 96 * 64 + 3));
  for (size_t i = 0; i < storage.size(); ++i) storage[i] = static_cast<float>(i) * 0.25f - 100.f;
  const std::string bytes =
      tensor_pickle(legacy_storage_blob(storage, static_cast<int64_t>(storage.size()), true),
                    offset, {1, 1, 96, 64}, {6144, 6144, 1, 96});
  TempDir dir;
  const std::string path = dir.file("hand.pkl");
  write_bytes(path, bytes);

  at::Tensor expected = at::empty({1, 1, 96, 64}, at::kFloat);
  for (int64_t t = 0; t < 96; ++t) {
    for (int64_t m = 0; m < 64; ++m) {
      expected[0][0][t][m] = storage[static_cast<size_t>(offset + t + m * 96)];
    }
  }
  const at::Tensor got = combo::io::read_log_mel_pkl(path);
  EXPECT_TRUE(got.is_contiguous());
  EXPECT_FALSE(got.requires_grad());
  EXPECT_TENSOR_EQ(expected, got);
  EXPECT_TENSOR_EQ(expected, combo::io::parse_pickled_tensor(bytes, "memory"));
}

TEST(PklReaderTest, DamagedHandWrittenPicklesAreErrorsNamingTheFile) {
  std::vector<float> storage(96 * 64, 1.5f);
  const int64_t n = static_cast<int64_t>(storage.size());
  TempDir dir;
  auto try_read = [&](const std::string& name, const std::string& bytes) {
    write_bytes(dir.file(name), bytes);
    const std::string msg = error_message([&] { combo::io::read_log_mel_pkl(dir.file(name)); });
    EXPECT_NE(msg.find(name), std::string::npos) << msg;
    return msg;
  };
  const std::string good =
      tensor_pickle(legacy_storage_blob(storage, n, true), 0, {1, 1, 96, 64}, {6144, 6144, 64, 1});

  std::string msg = try_read("truncated.pkl", good.substr(0, good.size() / 2));
  EXPECT_NE(msg.find("truncated"), std::string::npos) << msg;

  msg = try_read("magic.pkl", tensor_pickle(legacy_storage_blob(storage, n, false), 0,
                                            {1, 1, 96, 64}, {6144, 6144, 64, 1}));
  EXPECT_NE(msg.find("magic number"), std::string::npos) << msg;

  msg = try_read("count.pkl", tensor_pickle(legacy_storage_blob(storage, n + 1, true), 0,
                                            {1, 1, 96, 64}, {6144, 6144, 64, 1}));
  EXPECT_NE(msg.find(std::to_string(n + 1)), std::string::npos) << msg;

  // Size and stride reach past the storage.
  msg = try_read("overrun.pkl", tensor_pickle(legacy_storage_blob(storage, n, true), 1,
                                              {1, 1, 96, 64}, {6144, 6144, 64, 1}));
  EXPECT_NE(msg.find("storage holds 6144"), std::string::npos) << msg;

  msg = try_read("shape.pkl", tensor_pickle(legacy_storage_blob(storage, n, true), 0, {2, 96, 32},
                                            {3072, 32, 1}));
  EXPECT_NE(msg.find("[2, 96, 32]"), std::string::npos) << msg;

  msg = try_read("noise.pkl", "this is not a pickle at all");
  EXPECT_NE(msg.find("not a Python pickle"), std::string::npos) << msg;
  msg = try_read("empty.pkl", "");
  EXPECT_NE(msg.find("empty"), std::string::npos) << msg;
  msg = error_message([&] { combo::io::read_log_mel_pkl(dir.file("absent.pkl")); });
  EXPECT_NE(msg.find("absent.pkl"), std::string::npos) << msg;
}

TEST(PklReaderTest, ReadsTensorsPickledByPythonExactly) {
  COMBO_REQUIRE_PYTHON_TORCH_OR_SKIP();
  TempDir dir;
  const std::vector<std::string> manifest = make_python_pickles(dir);
  ASSERT_GE(manifest.size(), 10u);
  for (const std::string& line : manifest) {
    std::istringstream is(line);
    std::string name, dtype, expected_file;
    is >> name >> dtype >> expected_file;
    std::vector<int64_t> shape;
    for (int64_t d; is >> d;) shape.push_back(d);
    SCOPED_TRACE(name);
    const at::Tensor want = expected_values(dir.path() / expected_file, dtype, shape);
    const std::string path = dir.file(name);

    const at::Tensor raw = combo::io::read_pickled_tensor(path);
    if (name == "bare_storage.pkl") {
      // A bare storage has no shape: it comes back 1-D.
      EXPECT_TENSOR_EQ(want.reshape({-1}), raw);
    } else {
      EXPECT_TENSOR_EQ(want, raw);
    }
    const at::Tensor log_mel = combo::io::read_log_mel_pkl(path);
    EXPECT_EQ(log_mel.scalar_type(), at::kFloat);
    EXPECT_TENSOR_EQ(want.to(at::kFloat), log_mel);
  }
}

TEST(PklReaderTest, PythonPicklesOfOtherThingsAreRejected) {
  COMBO_REQUIRE_PYTHON_TORCH_OR_SKIP();
  TempDir dir;
  make_python_pickles(dir);
  std::string msg =
      error_message([&] { combo::io::read_log_mel_pkl(dir.file("wrong_shape.pkl")); });
  EXPECT_NE(msg.find("wrong_shape.pkl"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[5, 96, 64]"), std::string::npos) << msg;
  msg = error_message([&] { combo::io::read_pickled_tensor(dir.file("dict.pkl")); });
  EXPECT_NE(msg.find("dict.pkl"), std::string::npos) << msg;
  EXPECT_NE(msg.find("expected a pickled torch.Tensor"), std::string::npos) << msg;

  // The AVSBench layout: the data are the last 5*96*64*4 bytes of the BINBYTES payload,
  // preceded by the int64 element count (AVSBENCH_SPEC 2.5). Changing that count is detected.
  std::string bytes = read_bytes(dir.path() / "avsbench.pkl");
  std::string count(8, '\0');
  const int64_t numel = 5 * 96 * 64;
  std::memcpy(&count[0], &numel, 8);
  const size_t at = bytes.find(count);
  ASSERT_NE(at, std::string::npos);
  const int64_t wrong = numel - 1;
  std::memcpy(&bytes[at], &wrong, 8);
  write_bytes(dir.path() / "count.pkl", bytes);
  msg = error_message([&] { combo::io::read_log_mel_pkl(dir.file("count.pkl")); });
  EXPECT_NE(msg.find("count.pkl"), std::string::npos) << msg;
  EXPECT_NE(msg.find(std::to_string(numel - 1)), std::string::npos) << msg;
}
