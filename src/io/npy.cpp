// NumPy .npy reader and writer
// (https://numpy.org/doc/stable/reference/generated/numpy.lib.format.html).
#include "combo/io/npy.h"

#include <ATen/ATen.h>

#include <cstring>
#include <fstream>
#include <limits>
#include <vector>

#include "combo/core/check.h"

namespace combo::io {

namespace {

struct DtypeInfo {
  at::ScalarType type;  // the tensor dtype the data is read into
  int64_t item_bytes;   // bytes per element in the file
  bool widen_unsigned;  // uint16/uint32/uint64 stored bytes, widened on read
};

bool host_is_little_endian() {
  const uint16_t one = 1;
  uint8_t first = 0;
  std::memcpy(&first, &one, 1);
  return first == 1;
}

// descr such as '<f4', '|b1', '|u1', '=i8'.
DtypeInfo parse_descr(const std::string& descr, const std::string& path) {
  COMBO_CHECK(descr.size() >= 3, "read_npy: ", path, ": unsupported dtype descr '", descr, "'");
  const char order = descr[0];
  const std::string kind = descr.substr(1);
  COMBO_CHECK(order != '>', "read_npy: ", path, ": big-endian data ('", descr,
              "') is not supported; save it with arr.astype(arr.dtype.newbyteorder('<'))");
  COMBO_CHECK(order == '<' || order == '|' || order == '=', "read_npy: ", path,
              ": unsupported dtype descr '", descr, "'");
  if (kind == "b1") return {at::kBool, 1, false};
  if (kind == "u1") return {at::kByte, 1, false};
  if (kind == "i1") return {at::kChar, 1, false};
  if (kind == "i2") return {at::kShort, 2, false};
  if (kind == "i4") return {at::kInt, 4, false};
  if (kind == "i8") return {at::kLong, 8, false};
  if (kind == "u2") return {at::kInt, 2, true};
  if (kind == "u4") return {at::kLong, 4, true};
  if (kind == "u8") return {at::kLong, 8, true};
  if (kind == "f2") return {at::kHalf, 2, false};
  if (kind == "f4") return {at::kFloat, 4, false};
  if (kind == "f8") return {at::kDouble, 8, false};
  COMBO_FAIL("read_npy: ", path, ": unsupported dtype '", descr,
             "' (supported: bool, (u)int8/16/32/64, float16/32/64; object arrays are never "
             "unpickled)");
}

// The value of `key` in the header dict text, e.g. 'descr': '<f4'.
std::string dict_value(const std::string& header, const std::string& key, const std::string& path) {
  const std::string quoted1 = "'" + key + "'";
  const std::string quoted2 = "\"" + key + "\"";
  size_t pos = header.find(quoted1);
  size_t len = quoted1.size();
  if (pos == std::string::npos) {
    pos = header.find(quoted2);
    len = quoted2.size();
  }
  COMBO_CHECK(pos != std::string::npos, "read_npy: ", path, ": header lacks '", key, "': ", header);
  size_t p = header.find(':', pos + len);
  COMBO_CHECK(p != std::string::npos, "read_npy: ", path, ": malformed header: ", header);
  ++p;
  while (p < header.size() && header[p] == ' ') ++p;
  COMBO_CHECK(p < header.size(), "read_npy: ", path, ": malformed header: ", header);
  if (header[p] == '\'' || header[p] == '"') {
    const char q = header[p];
    const size_t end = header.find(q, p + 1);
    COMBO_CHECK(end != std::string::npos, "read_npy: ", path, ": malformed header: ", header);
    return header.substr(p + 1, end - p - 1);
  }
  if (header[p] == '(') {
    const size_t end = header.find(')', p);
    COMBO_CHECK(end != std::string::npos, "read_npy: ", path, ": malformed header: ", header);
    return header.substr(p, end - p + 1);
  }
  size_t end = p;
  while (end < header.size() && header[end] != ',' && header[end] != '}') ++end;
  std::string v = header.substr(p, end - p);
  while (!v.empty() && v.back() == ' ') v.pop_back();
  return v;
}

std::vector<int64_t> parse_shape(const std::string& tuple, const std::string& path) {
  COMBO_CHECK(tuple.size() >= 2 && tuple.front() == '(' && tuple.back() == ')', "read_npy: ", path,
              ": malformed shape ", tuple);
  std::vector<int64_t> shape;
  const std::string inner = tuple.substr(1, tuple.size() - 2);
  size_t i = 0;
  while (i < inner.size()) {
    while (i < inner.size() && (inner[i] == ' ' || inner[i] == ',')) ++i;
    if (i >= inner.size()) break;
    size_t j = i;
    while (j < inner.size() && inner[j] >= '0' && inner[j] <= '9') ++j;
    // Python 2 era files may write 3L.
    COMBO_CHECK(j > i, "read_npy: ", path, ": malformed shape ", tuple);
    shape.push_back(std::stoll(inner.substr(i, j - i)));
    i = j;
    if (i < inner.size() && inner[i] == 'L') ++i;
  }
  return shape;
}

}  // namespace

at::Tensor read_npy(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  COMBO_CHECK(in.good(), "read_npy: cannot open ", path);
  char magic[8] = {};
  in.read(magic, 8);
  COMBO_CHECK(in.gcount() == 8 && std::memcmp(magic, "\x93NUMPY", 6) == 0, "read_npy: ", path,
              ": not a .npy file (bad magic string)");
  const int major = static_cast<uint8_t>(magic[6]);
  COMBO_CHECK(major >= 1 && major <= 3, "read_npy: ", path, ": unsupported format version ", major,
              ".", static_cast<int>(static_cast<uint8_t>(magic[7])));
  uint64_t header_len = 0;
  if (major == 1) {
    uint8_t b[2] = {};
    in.read(reinterpret_cast<char*>(b), 2);
    COMBO_CHECK(in.gcount() == 2, "read_npy: ", path, ": truncated header");
    header_len = b[0] | (static_cast<uint64_t>(b[1]) << 8);
  } else {
    uint8_t b[4] = {};
    in.read(reinterpret_cast<char*>(b), 4);
    COMBO_CHECK(in.gcount() == 4, "read_npy: ", path, ": truncated header");
    header_len = b[0] | (static_cast<uint64_t>(b[1]) << 8) | (static_cast<uint64_t>(b[2]) << 16) |
                 (static_cast<uint64_t>(b[3]) << 24);
  }
  COMBO_CHECK(header_len < (uint64_t{1} << 24), "read_npy: ", path, ": implausible header length ",
              header_len);
  std::string header(header_len, '\0');
  in.read(header.data(), static_cast<std::streamsize>(header_len));
  COMBO_CHECK(static_cast<uint64_t>(in.gcount()) == header_len, "read_npy: ", path,
              ": truncated header");

  const std::string fortran = dict_value(header, "fortran_order", path);
  COMBO_CHECK(fortran == "False", "read_npy: ", path,
              ": Fortran-order arrays are not supported (fortran_order: ", fortran,
              "); save with np.ascontiguousarray");
  const DtypeInfo info = parse_descr(dict_value(header, "descr", path), path);
  const std::vector<int64_t> shape = parse_shape(dict_value(header, "shape", path), path);

  int64_t numel = 1;
  for (int64_t d : shape) {
    COMBO_CHECK(d >= 0 && (d == 0 || numel <= std::numeric_limits<int64_t>::max() / d),
                "read_npy: ", path, ": bad shape");
    numel *= d;
  }
  const int64_t bytes = numel * info.item_bytes;
  std::vector<uint8_t> raw(static_cast<size_t>(bytes));
  in.read(reinterpret_cast<char*>(raw.data()), static_cast<std::streamsize>(bytes));
  COMBO_CHECK(in.gcount() == bytes, "read_npy: ", path, ": truncated data: expected ", bytes,
              " bytes for shape ", at::IntArrayRef(shape), ", found ", in.gcount());
  COMBO_CHECK(host_is_little_endian() || info.item_bytes == 1, "read_npy: ", path,
              ": this reader needs a little-endian host");

  at::Tensor out = at::empty(shape, at::TensorOptions().dtype(info.type));
  if (!info.widen_unsigned) {
    if (info.type == at::kBool) {
      // numpy bools are single bytes 0/1; normalise anything else to true.
      bool* po = out.data_ptr<bool>();
      for (int64_t i = 0; i < numel; ++i) po[i] = raw[i] != 0;
    } else if (bytes > 0) {
      std::memcpy(out.data_ptr(), raw.data(), static_cast<size_t>(bytes));
    }
    return out;
  }
  if (info.item_bytes == 2) {
    int32_t* po = out.data_ptr<int32_t>();
    for (int64_t i = 0; i < numel; ++i) {
      uint16_t v;
      std::memcpy(&v, raw.data() + 2 * i, 2);
      po[i] = v;
    }
  } else if (info.item_bytes == 4) {
    int64_t* po = out.data_ptr<int64_t>();
    for (int64_t i = 0; i < numel; ++i) {
      uint32_t v;
      std::memcpy(&v, raw.data() + 4 * i, 4);
      po[i] = v;
    }
  } else {
    int64_t* po = out.data_ptr<int64_t>();
    for (int64_t i = 0; i < numel; ++i) {
      uint64_t v;
      std::memcpy(&v, raw.data() + 8 * i, 8);
      COMBO_CHECK(v <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()),
                  "read_npy: ", path, ": uint64 value ", v, " does not fit int64");
      po[i] = static_cast<int64_t>(v);
    }
  }
  return out;
}

void write_npy(const std::string& path, const at::Tensor& array) {
  COMBO_CHECK(array.defined(), "write_npy: ", path, ": undefined tensor");
  const at::Tensor a = array.contiguous().cpu();
  std::string descr;
  switch (a.scalar_type()) {
    case at::kBool:
      descr = "|b1";
      break;
    case at::kByte:
      descr = "|u1";
      break;
    case at::kChar:
      descr = "|i1";
      break;
    case at::kShort:
      descr = "<i2";
      break;
    case at::kInt:
      descr = "<i4";
      break;
    case at::kLong:
      descr = "<i8";
      break;
    case at::kHalf:
      descr = "<f2";
      break;
    case at::kFloat:
      descr = "<f4";
      break;
    case at::kDouble:
      descr = "<f8";
      break;
    default:
      COMBO_FAIL("write_npy: ", path, ": unsupported dtype ", a.scalar_type());
  }
  COMBO_CHECK(host_is_little_endian(), "write_npy: ", path, ": needs a little-endian host");
  std::string shape = "(";
  for (int64_t d = 0; d < a.dim(); ++d) {
    shape += std::to_string(a.size(d));
    if (a.dim() == 1 || d + 1 < a.dim()) shape += ",";
    if (d + 1 < a.dim()) shape += " ";
  }
  shape += ")";
  std::string header =
      "{'descr': '" + descr + "', 'fortran_order': False, 'shape': " + shape + ", }";
  // Pad with spaces so that magic + length + header + '\n' is a multiple of 64.
  const size_t unpadded = 10 + header.size() + 1;
  header.append((64 - unpadded % 64) % 64, ' ');
  header.push_back('\n');
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  COMBO_CHECK(out.good(), "write_npy: cannot create ", path);
  out.write("\x93NUMPY\x01\x00", 8);
  const uint16_t len = static_cast<uint16_t>(header.size());
  const char len_bytes[2] = {static_cast<char>(len & 0xFF), static_cast<char>(len >> 8)};
  out.write(len_bytes, 2);
  out.write(header.data(), static_cast<std::streamsize>(header.size()));
  out.write(static_cast<const char*>(a.data_ptr()),
            static_cast<std::streamsize>(a.numel() * a.element_size()));
  COMBO_CHECK(out.good(), "write_npy: failed writing ", path);
}

}  // namespace combo::io
