#pragma once
/// Reading AVSBench's precomputed `audio_log_mel/*.pkl` files without Python (AVSBENCH_SPEC 2.5).
///
/// Such a file is a plain Python pickle (`pickle.dump(tensor, f)`, any protocol 2..5) of a
/// torch.Tensor: `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)` whose
/// storage is `torch.storage._load_from_bytes(<legacy torch.save blob>)`. A small pickle
/// interpreter (no code execution: only the globals below are understood) rebuilds it:
/// the legacy blob is validated (magic number, protocol, storage type, element count) and the
/// size/stride/offset come from the rebuild call. Also accepted, so that re-exported files work:
/// legacy `torch.save(tensor)` files, zip `torch.save(tensor)` files, `torch.nn.Parameter`s and
/// pickled NumPy arrays (`numpy.ndarray`, C or Fortran order).
#include <ATen/ATen.h>

#include <cstdint>
#include <string>

namespace combo::io {

/// Reads a pickled tensor (see above) in its stored dtype and shape, detached and contiguous.
/// Throws combo::Error naming the file when it is missing, truncated, not a pickle, holds
/// something other than a tensor, or its storage does not cover the declared size/stride.
at::Tensor read_pickled_tensor(const std::string& path);

/// Parses pickle bytes already in memory; `name` is used in error messages.
at::Tensor parse_pickled_tensor(const std::string& bytes, const std::string& name);

/// Reads one AVSBench log-mel file: float32 [n, 1, 96, 64] (S4/MS3 files hold n = 5; AVSS
/// `audio.pkl` files n = 10). Floating dtypes are converted to float32. A pickle whose root is a
/// bare storage (no shape) is viewed as [count / 6144, 1, 96, 64] when count is a multiple of
/// 96 * 64. Any other shape is an error naming the file and the shape.
at::Tensor read_log_mel_pkl(const std::string& path);

}  // namespace combo::io
