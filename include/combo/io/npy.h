#pragma once
/// NumPy `.npy` files (format versions 1.0, 2.0 and 3.0): C-order, little-endian (or
/// byte-order-free) arrays of bool, (u)int8/16/32/64, float16/32/64. The official Maskige step
/// stores its mask stacks this way (`{frame_stem}_mask.npy`, [n, H, W] bool).
/// Every error names the file.
#include <ATen/core/Tensor.h>

#include <string>

namespace combo::io {

/// Reads a `.npy` file into a CPU tensor of the same shape and dtype (uint16/32/64 have no
/// LibTorch dtype: uint16/uint32 widen to int32/int64, uint64 is read as int64 and rejected if a
/// value exceeds its range). Throws combo::Error naming the file for a bad magic string or
/// header, Fortran order, big-endian data, an unsupported dtype (object arrays included:
/// pickles are never loaded), or truncated data.
at::Tensor read_npy(const std::string& path);

/// Writes a contiguous CPU copy of `array` as a version 1.0 `.npy` file (C order,
/// little-endian). dtypes: bool, uint8, int8, int16, int32, int64, float16, float32, float64.
void write_npy(const std::string& path, const at::Tensor& array);

}  // namespace combo::io
