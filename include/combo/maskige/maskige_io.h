#pragma once
/// Maskige files (COMBO_SPEC 9.2 steps 4-5): mask stacks from `.npy` files or folders of binary
/// PNGs, PIL-exact nearest resizing, and `{frame_stem}_mask_color.png` written as a true 8-bit
/// palette PNG whose decoded RGB equals the official script's output. Part of combo_io.
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "combo/maskige/encode.h"

namespace combo::maskige {

/// The Maskige file name of a frame: "<stem>_mask_color.png".
std::string maskige_file_name(const std::string& frame_stem);

/// Source index of each of `dst` output positions when PIL's `Image.resize(..., NEAREST)` maps
/// `src` positions to `dst`. PIL accumulates `x_in = 0.5 * s, x_in += s` (s = src / dst) in
/// double precision and truncates; this repeats the accumulation (floor((x + 0.5) * s) differs
/// from PIL where the product is an exact integer, e.g. 640 -> 224 at x = 17: 49, not 50). Clamped
/// to [0, src - 1]. Checked against Pillow 9.4 on 400+ size pairs.
std::vector<int64_t> pil_nearest_indices(int64_t src, int64_t dst);

/// uint8 labels [H, W] -> [out_h, out_w] with PIL's nearest rule (`pil_nearest_indices`).
at::Tensor resize_labels_nearest(const at::Tensor& labels, int64_t out_h, int64_t out_w);

/// An 8-bit palette PNG (colour type 3) of uint8 labels [H, W] in memory. The PLTE has 256
/// entries, `label_colors(mode)`: indices past the 150 ADE20K colours are grey (L, L, L) in
/// kOfficial (what Pillow decodes for the official 150-entry palette) and the wrapped colours in
/// kSafe, so any PNG reader that expands palettes (PIL `convert('RGB')`, OpenCV `imread`,
/// detectron2 `read_image(format='RGB')`) gives exactly `colorize_labels(labels, mode)`. The
/// compressed bytes differ from Pillow's; the pixels do not.
std::vector<uint8_t> encode_palette_png(const at::Tensor& labels, LabelMode mode);

/// Writes `encode_palette_png` to `path` atomically (temporary file in the same folder, then
/// rename); creates missing parent folders. Errors name the file.
void write_label_png(const std::string& path, const at::Tensor& labels, LabelMode mode);

/// How a mask stack becomes a Maskige file.
struct MaskigeWriteOptions {
  /// Output side: the label map is resized (PIL nearest) to size x size; 0 keeps the masks'
  /// resolution. S4/MS3: 224; AVSS: 0 (its processed frames are already 224 x 224).
  int64_t size = 224;
  LabelMode mode = LabelMode::kOfficial;
};

/// masks [n, H, W] -> labels -> (resize) -> palette PNG at `path`. In kOfficial an empty stack
/// (n = 0) becomes the official fallback, zero labels of 640 x 640, before resizing.
/// Returns the written labels (uint8 [h, w], after resizing).
at::Tensor write_maskige(const std::string& path, const at::Tensor& masks,
                         const MaskigeWriteOptions& options = {});

/// Reads a mask stack: a `.npy` file ([n, H, W] of bool / uint8 / float32 / float64 / ...; a
/// 2-D array is taken as one mask) or a folder of binary mask PNGs (every *.png in sorted name
/// order, non-zero = inside; all the same size) -> [n, H, W] in the file's dtype (.npy) or bool
/// (folder). Errors name the file.
at::Tensor read_mask_stack(const std::string& path);

}  // namespace combo::maskige
