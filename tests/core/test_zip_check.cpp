// Integrity of torch.save zip files: every changed byte that changes what is read, and every
// truncation, is refused with an error naming the file.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <fstream>
#include <iterator>
#include <set>
#include <string>
#include <vector>

#include "combo/core/check.h"
#include "combo/core/state_dict.h"
#include "combo/core/warn.h"
#include "combo/core/zip_check.h"
#include "testing/testing.h"

using combo::testing::TempDir;

namespace {

std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

uint32_t le32(const std::vector<uint8_t>& b, size_t at) {
  return b[at] | (b[at + 1] << 8) | (b[at + 2] << 16) | (static_cast<uint32_t>(b[at + 3]) << 24);
}
uint16_t le16(const std::vector<uint8_t>& b, size_t at) {
  return static_cast<uint16_t>(b[at] | (b[at + 1] << 8));
}

// A small checkpoint-like file: several records, float and integer tensors, text.
std::string write_sample(const TempDir& dir) {
  torch::manual_seed(3);
  combo::TensorDict d{{"model.w", torch::randn({7, 5})},
                      {"model.b", torch::randn({5}, torch::kFloat64)},
                      {"iteration", torch::tensor(int64_t{41})},
                      {"config", torch::tensor({'a', 'b', 'c'}, torch::kUInt8)}};
  const std::string path = dir.file("sample.pth");
  combo::save_state_dict(path, d);
  return path;
}

// Offsets of the header fields that do not change what is read and that the check does not
// compare (central "version made by", internal and external attributes; the zip64 end record's
// versions), found by walking the archive independently of the code under test.
std::set<size_t> unchecked_offsets(const std::vector<uint8_t>& b) {
  std::set<size_t> out;
  size_t end = b.size() - 22;
  while (le32(b, end) != 0x06054b50) --end;
  uint64_t cd = le32(b, end + 16);
  uint64_t entries = le16(b, end + 10);
  if (end >= 20 && le32(b, end - 20) == 0x07064b50) {
    const size_t z = le32(b, end - 20 + 8);
    for (size_t k = 12; k < 16; ++k) out.insert(z + k);
    entries = le32(b, z + 32);
    cd = le32(b, z + 48);
  }
  size_t at = cd;
  for (uint64_t i = 0; i < entries; ++i) {
    for (size_t k : {4, 5, 36, 37, 38, 39, 40, 41}) out.insert(at + k);
    at += 46 + le16(b, at + 28) + le16(b, at + 30) + le16(b, at + 32);
  }
  return out;
}

}  // namespace

TEST(ZipCheckTest, Crc32OfTheStandardCheckString) {
  const std::string s = "123456789";
  EXPECT_EQ(combo::crc32(s.data(), s.size()), 0xCBF43926u);
  // Continuation equals one pass.
  EXPECT_EQ(combo::crc32(s.data() + 4, 5, combo::crc32(s.data(), 4)), 0xCBF43926u);
  // The sliced path (>= 8 bytes) against a bitwise reference on odd lengths.
  std::vector<uint8_t> data(1031);
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(i * 131 + 7);
  uint32_t ref = 0xFFFFFFFFu;
  for (uint8_t byte : data) {
    ref ^= byte;
    for (int k = 0; k < 8; ++k) ref = (ref & 1u) ? 0xEDB88320u ^ (ref >> 1) : ref >> 1;
  }
  EXPECT_EQ(combo::crc32(data.data(), data.size()), ~ref);
}

TEST(ZipCheckTest, IntactFilesPassAndEveryRecordIsChecked) {
  TempDir dir;
  const auto path = write_sample(dir);
  const auto bytes = read_bytes(path);
  const auto s = combo::verify_torch_zip(bytes.data(), bytes.size(), path);
  EXPECT_GE(s.records, 5);  // data.pkl, 4 tensors, version (and more in newer writers)
  EXPECT_EQ(s.unverified, 0);
  EXPECT_GT(s.verified_bytes, int64_t(7 * 5 * 4 + 5 * 8));
  EXPECT_NO_THROW(combo::load_state_dict(path));
}

TEST(ZipCheckTest, EveryChangedByteThatMattersIsRefusedNamingTheFile) {
  TempDir dir;
  const auto path = write_sample(dir);
  const auto good = read_bytes(path);
  const auto unchecked = unchecked_offsets(good);
  int64_t refused = 0, passed_unchecked = 0;
  for (size_t i = 0; i < good.size(); ++i) {
    auto bad = good;
    bad[i] ^= 0x20;
    try {
      combo::verify_torch_zip(bad.data(), bad.size(), path);
      EXPECT_TRUE(unchecked.count(i))
          << "a changed byte at offset " << i << " of " << good.size() << " passed the check";
      ++passed_unchecked;
    } catch (const combo::Error& e) {
      ++refused;
      ASSERT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
    }
  }
  std::cout << "[ INFO ] " << good.size() << " byte positions: " << refused << " refused, "
            << passed_unchecked << " in attribute fields that do not change what is read\n";
  EXPECT_LE(passed_unchecked, static_cast<int64_t>(unchecked.size()));
}

TEST(ZipCheckTest, TensorDataChangedOrFileTruncatedIsRefusedOnLoad) {
  TempDir dir;
  const auto path = write_sample(dir);
  const auto good = read_bytes(path);
  // Change one byte inside the float64 tensor's storage (the same bytes LibTorch would load).
  const auto stored = combo::load_state_dict(path).at("model.b").contiguous();
  const auto* raw = reinterpret_cast<const uint8_t*>(stored.data_ptr<double>());
  const std::vector<uint8_t> needle(raw, raw + 40);
  const auto it = std::search(good.begin(), good.end(), needle.begin(), needle.end());
  ASSERT_NE(it, good.end());
  auto bad = good;
  bad[static_cast<size_t>(it - good.begin()) + 13] ^= 1;
  write_bytes(path, bad);
  try {
    combo::load_state_dict(path);
    FAIL() << "a checkpoint with a changed tensor byte loaded";
  } catch (const combo::Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find(path), std::string::npos) << what;
    EXPECT_NE(what.find("CRC-32"), std::string::npos) << what;
  }
  // Every truncation.
  for (size_t n = 1; n < good.size(); n += (n < 64 || good.size() - n < 64) ? 1 : 7) {
    const std::vector<uint8_t> cut(good.begin(), good.begin() + static_cast<long>(n));
    write_bytes(path, cut);
    EXPECT_THROW(combo::load_state_dict(path), combo::Error) << "truncated to " << n;
  }
  // And a trailing byte.
  auto longer = good;
  longer.push_back(0);
  write_bytes(path, longer);
  EXPECT_THROW(combo::load_state_dict(path), combo::Error);
  write_bytes(path, good);
  EXPECT_NO_THROW(combo::load_state_dict(path));
}

TEST(ZipCheckTest, LegacyFilesWarnThatTheyCarryNoChecksums) {
  TempDir dir;
  const auto path = dir.file("legacy.pth");
  // The legacy torch.save stream starts with a pickled magic number, not "PK".
  write_bytes(path, {0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50,
                     0x19, 0x2e});
  std::vector<std::string> warnings;
  auto previous = combo::set_warning_handler([&](const std::string& m) { warnings.push_back(m); });
  try {
    combo::load_state_dict(path);
  } catch (const std::exception&) {
    // This stream is only a header: reading it fails after the warning.
  }
  combo::set_warning_handler(previous);
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find(path), std::string::npos);
  EXPECT_NE(warnings[0].find("no checksums"), std::string::npos);
}
