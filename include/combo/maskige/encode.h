#pragma once
/// Maskige encoding (COMBO_SPEC 9.2): a stack of class-agnostic binary masks -> a label map
/// (masks sorted by ascending area, the smallest painted first and winning overlaps, label k+1
/// for the k-th mask, 0 where no mask covers) -> a colour image through the 150-colour ADE20K
/// palette (label 0 = (120,120,120)).
#include <ATen/core/Tensor.h>

#include <array>
#include <cstdint>
#include <vector>

namespace combo::maskige {

/// The ADE20K palette of the official script: 150 RGB triplets.
const std::array<std::array<uint8_t, 3>, 150>& ade20k_palette();

/// How labels past the palette or past 255 are treated.
enum class LabelMode {
  /// The official script bit for bit: labels cast to uint8 (wrapping past 255); labels >= 150
  /// have no palette entry and decode as grey (L, L, L), which is what Pillow 9.4 gives for the
  /// official 150-entry palette PNG (COMBO_SPEC 9.2 step 5 says "black in practice"; checked:
  /// it is not). Ties in area ordered as numpy's default argsort would for
  /// the given input (see encode.cpp).
  kOfficial,
  /// Defined behaviour: only the 255 smallest masks are painted (larger ones are dropped as if
  /// absent), ties broken by stack index (stable), and label L >= 150 takes palette entry
  /// 1 + (L - 1) % 149 (never the grey of label 0).
  kSafe,
};

/// masks: [n, H, W] bool / uint8 / float (non-zero = inside). Returns uint8 [H, W] labels.
///
/// kOfficial follows `mask_precess_*.py` literally: the stack is cast to uint8 as numpy's
/// `astype(np.uint8)` does (floats truncate toward zero, so 0.7 counts as outside), the area of
/// a mask is the sum of its cast values, the order is numpy 1.x's `argsort` (introsort; stable
/// for n <= 16, see `numpy_argsort`), and the k-th mask (0-based) paints `value * (k + 1)`
/// (uint8 arithmetic while k + 1 <= 255, uint16 beyond, as numpy 1.x's value-based casting
/// does) into pixels still 0; the result is cast to uint8. For 0/1 masks that is label
/// (k + 1) mod 256. kSafe counts non-zero pixels as inside (any dtype).
/// An empty stack [0, H, W] gives all-zero labels [H, W].
at::Tensor masks_to_labels(const at::Tensor& masks, LabelMode mode = LabelMode::kSafe);

/// The RGB colour of each of the 256 uint8 labels under `mode` (the look-up table that
/// `colorize_labels` applies; also the 256-entry PLTE of the palette PNG the I/O layer writes).
std::array<std::array<uint8_t, 3>, 256> label_colors(LabelMode mode = LabelMode::kSafe);

/// labels uint8 [H, W] -> RGB uint8 [H, W, 3] through the palette (see LabelMode).
at::Tensor colorize_labels(const at::Tensor& labels, LabelMode mode = LabelMode::kSafe);

/// masks [n, H, W] -> the Maskige RGB uint8 [H, W, 3] at the masks' resolution
/// (`colorize_labels(masks_to_labels(masks, mode), mode)`; no resize).
at::Tensor encode_maskige(const at::Tensor& masks, LabelMode mode = LabelMode::kSafe);

/// numpy 1.x's default `np.argsort(keys)` (kind 'quicksort' = introsort: median-of-3
/// quicksort, insertion sort for partitions of <= 16 elements, heapsort past depth
/// 2 * floor(log2 n)), reproduced step for step, ties included (checked against numpy 1.24.2
/// on thousands of random and adversarial arrays). It equals numpy wherever numpy runs its
/// generic C++ sort: every numpy < 1.25, and newer numpy on CPUs where its SIMD argsort
/// (x86-simd-sort: AVX-512 from 1.25, AVX2 later) is not dispatched; there ties may come out in
/// another order. Without ties every sort agrees. For n <= 16 it is a stable sort.
std::vector<int64_t> numpy_argsort(const std::vector<uint64_t>& keys);

}  // namespace combo::maskige
