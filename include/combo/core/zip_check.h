#pragma once
/// Integrity of `torch.save` files before anything reads them.
///
/// A `torch.save` file (Python >= 1.6, LibTorch's `torch::save`/`pickle_save`, our checkpoints)
/// is a zip archive of stored records (`<archive>/data.pkl`, `<archive>/data/<n>` tensor storage,
/// `<archive>/version`, ...), each with a CRC-32 in its headers. LibTorch's reader does not check
/// those CRCs (miniz is built with the checks off), so a checkpoint with bytes changed inside its
/// tensor data loads without a word. `verify_torch_zip` checks the whole archive:
///   - the end-of-central-directory record (zip64 too) is where it must be, with nothing after it:
///     a truncated file fails here;
///   - every central-directory entry has a local header with the same name, method, flags, CRC
///     and sizes, and its data lies inside the file;
///   - the CRC-32 of every stored record's bytes equals the recorded one;
///   - a local header holds no extra field but PyTorch's alignment padding ("FB", only its 'Z'
///     filler) and zip64 sizes; the data descriptor after each record repeats the directory;
///   - local records, the central directory and the end records tile the file with no gap and
///     no overlap, so no byte is outside what is checked.
/// Not checked (they do not change what is read): the central directory's "version made by",
/// internal and external attributes, which have no copy in the local header.
#include <cstddef>
#include <cstdint>
#include <string>

namespace combo {

/// CRC-32 (the zip/PNG polynomial 0xEDB88320), continuing from `crc` (0 to start).
uint32_t crc32(const void* data, size_t size, uint32_t crc = 0);

/// True when `data` starts with a zip local-file-header signature ("PK\x03\x04").
bool looks_like_zip(const void* data, size_t size);

/// What verify_torch_zip found.
struct ZipSummary {
  int64_t records = 0;         ///< entries in the central directory
  int64_t verified_bytes = 0;  ///< record bytes whose CRC-32 was checked
  int64_t unverified = 0;      ///< compressed records (their CRC is not checked)
};

/// Checks the archive as described above. Throws combo::Error naming `source` (the file), the
/// record and what is wrong ("truncated", "CRC-32 mismatch", ...).
ZipSummary verify_torch_zip(const void* data, size_t size, const std::string& source);

}  // namespace combo
