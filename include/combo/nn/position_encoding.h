#pragma once
/// Sine positional encoding of DETR/Mask2Former (`PositionEmbeddingSine`, COMBO_SPEC 5.4), used by
/// the pixel decoder, the Bilateral-Fusion Module and the transformer decoder.
#include <ATen/core/Tensor.h>

#include <cstdint>

namespace combo::nn {

/// Positional encoding for a feature map of size `height` x `width` with no padding mask:
/// y = 1..H, x = 1..W, normalised to (0, 2*pi] (divided by H + 1e-6, W + 1e-6, times 2*pi);
/// channel i of each half is sin (even i) or cos (odd i) of pos /
/// 10000^(2*floor(i/2)/num_pos_feats). Returns [1, 2*num_pos_feats, H, W] with the y half first;
/// broadcast it over the batch.
at::Tensor sine_position_encoding(int64_t height, int64_t width, int64_t num_pos_feats = 128,
                                  double temperature = 10000.0,
                                  const at::TensorOptions& options = {});

}  // namespace combo::nn
