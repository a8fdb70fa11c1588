#include "combo/core/state_dict.h"

#include <caffe2/serialize/inline_container.h>
#include <torch/csrc/jit/serialization/export.h>
#include <torch/csrc/jit/serialization/pickler.h>
#include <torch/serialize.h>
#include <torch/torch.h>

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <iterator>
#include <sstream>

#include "combo/core/check.h"
#include "combo/core/warn.h"
#include "combo/core/zip_check.h"

namespace combo {
namespace {

std::string shape_str(const std::vector<int64_t>& s) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
  os << "]";
  return os.str();
}

std::string explain_unpickling_error(const std::string& path, const std::string& what) {
  std::string hint;
  if (what.find("Unknown opcode") != std::string::npos && what.find("0x73") != std::string::npos) {
    hint =
        " The file contains a one-entry dict written with the pickle opcode SETITEM, which "
        "LibTorch 1.13 cannot read. Rewrite it with tools/convert_checkpoint.py (it writes plain "
        "dicts with SETITEMS only).";
  } else if (what.find("OrderedDict") != std::string::npos ||
             what.find("None") != std::string::npos ||
             what.find("collections") != std::string::npos) {
    hint =
        " The file probably holds a Python OrderedDict (what module.state_dict() returns), which "
        "LibTorch 1.13 cannot read. Convert it with tools/convert_checkpoint.py, or save "
        "dict(state_dict) from Python.";
  } else {
    hint =
        " Is it a file written by torch.save? tools/convert_checkpoint.py converts .pkl/.pth "
        "checkpoints to a plain name -> tensor dict.";
  }
  // The LibTorch message carries a C++ backtrace after the first line; keep only the first line.
  std::string first = what.substr(0, what.find('\n'));
  return str_cat("cannot read '", path, "': ", first, ".", hint);
}

void flatten_into(const c10::IValue& value, const std::string& prefix, bool skip, TensorDict& out) {
  if (value.isTensor()) {
    COMBO_CHECK(!prefix.empty(), "state dict: the root is a tensor, expected a dict of tensors");
    out[prefix] = value.toTensor();
    return;
  }
  if (value.isGenericDict()) {
    for (const auto& kv : value.toGenericDict()) {
      COMBO_CHECK(kv.key().isString(), "state dict: key under '", prefix, "' is not a string (",
                  kv.key().tagKind(), ")");
      const std::string name =
          prefix.empty() ? kv.key().toStringRef() : prefix + "." + kv.key().toStringRef();
      flatten_into(kv.value(), name, skip, out);
    }
    return;
  }
  COMBO_CHECK(skip, "state dict: key '", prefix, "' holds a ", value.tagKind(),
              ", expected a tensor or a dict");
}

}  // namespace

c10::IValue load_pickle_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  COMBO_CHECK(f.good(), "cannot open '", path, "': ", std::strerror(errno));
  f.seekg(0, std::ios::end);
  const std::streamoff size = f.tellg();
  f.seekg(0, std::ios::beg);
  std::vector<char> bytes(size > 0 ? static_cast<size_t>(size) : 0);
  if (!bytes.empty()) f.read(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  COMBO_CHECK(f.good() || bytes.empty(), "cannot read '", path, "': ", std::strerror(errno));
  COMBO_CHECK(!bytes.empty(), "cannot read '", path, "': the file is empty");
  // LibTorch's reader does not check the records' CRC-32s: a file with changed bytes would load.
  if (looks_like_zip(bytes.data(), bytes.size())) {
    verify_torch_zip(bytes.data(), bytes.size(), path);
  } else {
    warn(str_cat("'", path,
                 "' is a legacy (non-zip) torch.save file: it carries no checksums, so damage "
                 "to it cannot be detected (re-save it with torch.save in PyTorch >= 1.6 or "
                 "tools/convert_checkpoint.py)"));
  }
  try {
    return torch::pickle_load(bytes);
  } catch (const c10::Error& e) {
    throw Error(explain_unpickling_error(path, e.what()));
  } catch (const std::exception& e) {
    throw Error(explain_unpickling_error(path, e.what()));
  }
}

namespace {

/// Writes a file through `fill` to a temporary name next to `path`, flushes it to the disk and
/// renames it over `path`; on any failure removes the temporary file, keeps the previous `path`
/// and throws naming it. `fill` returns false when a write failed (errno set).
void write_atomic_with(const std::string& path, const std::function<bool(std::FILE*)>& fill) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  COMBO_CHECK(f != nullptr, "cannot write '", path, "': ", std::strerror(errno));
  std::setvbuf(f, nullptr, _IOFBF, 1 << 20);
  bool ok = false;
  int err = 0;
  std::string what;
  try {
    ok = fill(f);
    err = errno;
  } catch (const std::exception& e) {
    what = e.what();
  }
  ok = ok && std::fflush(f) == 0;
  ok = ok && ::fsync(::fileno(f)) == 0;
  if (!ok && err == 0) err = errno;
  ok = (std::fclose(f) == 0) && ok;
  if (!ok) {
    std::remove(tmp.c_str());
    COMBO_FAIL("cannot write '", path, "': ", what.empty() ? std::strerror(err) : what,
               " (the previous file is kept)");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int rerr = errno;
    std::remove(tmp.c_str());
    COMBO_FAIL("cannot write '", path, "': rename failed: ", std::strerror(rerr));
  }
}

}  // namespace

void write_file_atomic(const std::string& path, const std::string& bytes) {
  write_atomic_with(path, [&](std::FILE* f) {
    return std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size();
  });
}

namespace {

// Fault injection for the torture tests (tests/fault): COMBO_FAULT_KILL_IN_WRITE=<n> kills this
// process with SIGKILL in the middle of the n-th file save_pickle_file writes (1-based), once
// part of it is in the temporary file. Unset (always, outside those tests) it costs one check.
int64_t fault_kill_in_write() {
  static const int64_t n = [] {
    const char* v = std::getenv("COMBO_FAULT_KILL_IN_WRITE");
    return v && *v ? std::atoll(v) : int64_t{0};
  }();
  return n;
}
std::atomic<int64_t> g_pickle_writes{0};

}  // namespace

void save_pickle_file(const std::string& path, const c10::IValue& value) {
  const bool kill_in_this_write =
      fault_kill_in_write() > 0 && ++g_pickle_writes == fault_kill_in_write();
  // What torch::pickle_save does, but the zip archive streams into the file instead of being
  // assembled in memory and copied (for a 400 MB checkpoint: about 1.5 s instead of 8-14 s).
  // Python's torch.load and torch::pickle_load read the result.
  std::vector<char> pickle_bytes;
  torch::jit::Pickler pickler([&](const char* data, size_t size) {
    pickle_bytes.insert(pickle_bytes.end(), data, data + size);
  });
  pickler.protocol();
  pickler.pushIValue(value);
  pickler.stop();
  write_atomic_with(path, [&](std::FILE* f) {
    // A failed write (disk full, file size limit) is remembered, not reported to the zip writer:
    // PyTorchStreamWriter throws on a short write and its destructor then tries to finish the
    // archive again, which can throw from a destructor. It completes into nothing instead, and
    // the system's reason is reported.
    bool ok = true;
    int write_errno = 0;
    caffe2::serialize::PyTorchStreamWriter writer([&](const void* data, size_t size) -> size_t {
      if (!ok) return size;
      const size_t written = std::fwrite(data, 1, size, f);
      if (written != size) {
        ok = false;
        write_errno = errno;
      }
      if (kill_in_this_write && std::ftell(f) > 4096) {
        std::fflush(f);
        ::kill(::getpid(), SIGKILL);
      }
      return size;
    });
    torch::jit::writeArchiveAndTensors("data", pickle_bytes.data(), pickle_bytes.size(),
                                       pickler.tensorData(), writer);
    writer.writeEndOfFile();
    if (!ok) errno = write_errno;
    return ok;
  });
}

TensorDict flatten_tensor_dict(const c10::IValue& value, const std::string& prefix,
                               bool skip_non_tensors) {
  TensorDict out;
  flatten_into(value, prefix, skip_non_tensors, out);
  return out;
}

c10::IValue to_ivalue(const TensorDict& dict) {
  c10::Dict<std::string, at::Tensor> d;
  for (const auto& [k, v] : dict) d.insert(k, v);
  return d;
}

TensorDict load_state_dict(const std::string& path, const std::string& key) {
  c10::IValue root = load_pickle_file(path);
  if (!key.empty()) {
    COMBO_CHECK(root.isGenericDict(), "'", path, "': expected a dict at the root to read key '",
                key, "', got ", root.tagKind());
    auto dict = root.toGenericDict();
    auto it = dict.find(c10::IValue(key));
    COMBO_CHECK(it != dict.end(), "'", path, "': no key '", key, "' at the root");
    root = it->value();
  }
  try {
    return flatten_tensor_dict(root);
  } catch (const Error& e) {
    throw Error(str_cat("'", path, "': ", e.what()));
  }
}

void save_state_dict(const std::string& path, const TensorDict& dict) {
  save_pickle_file(path, to_ivalue(dict));
}

int64_t count_parameters(const torch::nn::Module& module, bool trainable_only) {
  int64_t n = 0;
  for (const auto& p : module.parameters(/*recurse=*/true))
    if (!trainable_only || p.requires_grad()) n += p.numel();
  return n;
}

TensorDict module_state_dict(const torch::nn::Module& module) {
  TensorDict out;
  for (const auto& p : module.named_parameters(/*recurse=*/true)) out[p.key()] = p.value();
  for (const auto& b : module.named_buffers(/*recurse=*/true)) out[b.key()] = b.value();
  return out;
}

std::string LoadReport::to_string() const {
  std::ostringstream os;
  os << "loaded " << loaded << " tensors";
  if (!missing.empty()) {
    os << "\n  missing keys (" << missing.size() << "):";
    for (const auto& k : missing) os << "\n    " << k;
  }
  if (!unexpected.empty()) {
    os << "\n  unexpected keys (" << unexpected.size() << "):";
    for (const auto& k : unexpected) os << "\n    " << k;
  }
  if (!mismatched.empty()) {
    os << "\n  shape mismatches (" << mismatched.size() << "):";
    for (const auto& m : mismatched)
      os << "\n    " << m.key << ": model " << shape_str(m.expected) << ", file "
         << shape_str(m.got);
  }
  return os.str();
}

LoadReport load_state_dict_into(torch::nn::Module& module, const TensorDict& dict,
                                const LoadOptions& options) {
  auto ignored = [&](const std::string& k) {
    for (const auto& p : options.ignore_prefixes)
      if (k.rfind(p, 0) == 0) return true;
    return false;
  };
  TensorDict target = module_state_dict(module);
  LoadReport report;
  for (const auto& [k, t] : target) {
    auto it = dict.find(k);
    if (it == dict.end()) {
      report.missing.push_back(k);
    } else if (!it->second.sizes().equals(t.sizes())) {
      report.mismatched.push_back({k, t.sizes().vec(), it->second.sizes().vec()});
    }
  }
  for (const auto& [k, t] : dict) {
    if (!ignored(k) && target.find(k) == target.end()) report.unexpected.push_back(k);
  }
  if (options.strict && !report.clean()) {
    COMBO_FAIL("strict load of ", options.source, " into ", module.name(),
               " failed: ", report.to_string());
  }
  torch::NoGradGuard no_grad;
  for (auto& [k, t] : target) {
    auto it = dict.find(k);
    if (it == dict.end() || !it->second.sizes().equals(t.sizes())) continue;
    t.copy_(it->second);
    ++report.loaded;
  }
  return report;
}

}  // namespace combo
