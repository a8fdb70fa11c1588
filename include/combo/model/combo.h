#pragma once
/// The COMBO meta-architecture (official `MaskFormer` with the COMBO additions, COMBO_SPEC 1):
/// Siam-Encoder -> deformable pixel decoder -> Bilateral-Fusion -> audio MLP -> masked-attention
/// decoder with audio-conditioned queries. Registered names equal the official checkpoint
/// prefixes: `backbone`, `pre_sam_backbone`, `scale_factor_module`, `audio_backbone`,
/// `sem_seg_head.{pixel_decoder,fusion_module,audio_transformation,predictor}`.
#include <ATen/core/Tensor.h>
#include <torch/arg.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/pimpl.h>

#include <string>
#include <unordered_map>
#include <vector>

#include "combo/audio/audio_mlp.h"
#include "combo/audio/vggish.h"
#include "combo/backbone/backbone.h"
#include "combo/loss/criterion.h"
#include "combo/model/bilateral_fusion.h"
#include "combo/model/pixel_decoder.h"
#include "combo/model/transformer_decoder.h"

namespace combo::model {

/// Where the Bilateral-Fusion Module sits (COMBO_SPEC 4.1, 4.4).
enum class FusionPlacement {
  kLate,   ///< on the pixel decoder's mask features (every released config)
  kEarly,  ///< on the fused backbone map res2, before the pixel decoder
};
FusionPlacement fusion_placement_from_string(const std::string& name);

struct ComboModelOptions {
  // Encoders.
  TORCH_ARG(std::string, backbone) = "pvt_v2_b5";
  TORCH_ARG(double, drop_path_rate) = 0.1;
  /// Recompute the image encoders' blocks and the deformable encoder layers in backward instead
  /// of keeping their activations (nn::checkpoint): same results, less training memory.
  TORCH_ARG(bool, activation_checkpointing) = false;
  /// Siam-Encoder on (Maskige encoder + channel-weighted fusion); off = the "no SEM" ablation.
  TORCH_ARG(bool, pre_sam) = true;
  /// One encoder for frames and Maskiges (official: two independent copies).
  TORCH_ARG(bool, shared_encoders) = false;
  // Audio.
  TORCH_ARG(int64_t, audio_dim) = 128;
  TORCH_ARG(bool, freeze_audio) = true;
  /// Hidden width of the audio MLP (official 4096; its 4096 x 4096 layer is 17 M parameters).
  TORCH_ARG(int64_t, audio_mlp_dim) = 4096;
  /// Memoise the frozen VGGish's embedding of every distinct log-mel example (keyed by its bytes
  /// and the VGGish weights' versions). A miss is computed alone (batch of 1) so a result never
  /// depends on which clips shared a batch; embeddings agree with a batched forward to float
  /// rounding, not bitwise. For training on a small fixed set (the demo), where each epoch
  /// would run VGGish on the same clips again. Ignored when VGGish is not frozen.
  TORCH_ARG(bool, cache_audio) = false;
  // Pixel decoder (COMBO_SPEC 5.1).
  TORCH_ARG(int64_t, conv_dim) = 256;
  TORCH_ARG(int64_t, mask_dim) = 256;
  TORCH_ARG(int64_t, enc_layers) = 6;
  TORCH_ARG(int64_t, enc_heads) = 8;
  TORCH_ARG(int64_t, enc_points) = 4;
  TORCH_ARG(int64_t, enc_dim_feedforward) = 1024;
  TORCH_ARG(double, enc_dropout) = 0.0;
  // Bilateral-Fusion Module (COMBO_SPEC 4).
  TORCH_ARG(FusionType, fusion_type) = FusionType::kBidirectional;
  TORCH_ARG(FusionPlacement, fusion_placement) = FusionPlacement::kLate;
  TORCH_ARG(int64_t, fusion_heads) = 8;
  TORCH_ARG(double, fusion_dropout) = 0.1;
  TORCH_ARG(double, fusion_layer_scale_init) = 1e-4;
  // Transformer decoder (COMBO_SPEC 6).
  TORCH_ARG(int64_t, num_classes) = 2;
  TORCH_ARG(int64_t, num_queries) = 100;
  TORCH_ARG(int64_t, hidden_dim) = 256;
  TORCH_ARG(int64_t, dec_heads) = 8;
  TORCH_ARG(int64_t, dec_dim_feedforward) = 2048;
  TORCH_ARG(int64_t, dec_layers) = 10;
  TORCH_ARG(bool, pre_norm) = false;
  TORCH_ARG(AudioQueryLayout, audio_query_layout) = AudioQueryLayout::kOfficial;
  // Input.
  TORCH_ARG(std::vector<double>, pixel_mean) = std::vector<double>{123.675, 116.280, 103.530};
  TORCH_ARG(std::vector<double>, pixel_std) = std::vector<double>{58.395, 57.120, 57.375};
  TORCH_ARG(int64_t, size_divisibility) = 32;
};

/// One batch of videos, frames of all videos flattened: N = sum(frames_per_video).
struct ComboInputs {
  at::Tensor images;    ///< [N, 3, H, W] RGB on the 0..255 scale (uint8 or float)
  at::Tensor maskiges;  ///< [N, 3, H, W] Maskige images (ignored when the Siam-Encoder is off)
  at::Tensor log_mel;   ///< [N, 1, 96, 64] one VGGish example per frame (real frames only)
  std::vector<int64_t> frames_per_video;  ///< empty = one video of N frames
};

/// Everything the forward pass produces.
struct ComboOutputs {
  TransformerDecoderOutput decoder;  ///< logits, masks, aux predictions, intermediate masks
  int64_t input_height = 0;          ///< unpadded input size
  int64_t input_width = 0;
  int64_t padded_height = 0;  ///< size after padding to size_divisibility
  int64_t padded_width = 0;
};

/// Per-frame results of inference.
struct ComboPrediction {
  at::Tensor scores;  ///< [N, C, H, W] semantic score maps S = sum_q p[q,c] * sigmoid(m[q])
  at::Tensor masks;   ///< S4/MS3 (C = 2): bool [N, H, W] foreground (S1 > S0); AVSS: int64 labels
  at::Tensor probs;   ///< S4/MS3: float [N, H, W] foreground probability sigmoid(S1 - S0)
};

class SemSegHeadImpl : public torch::nn::Cloneable<SemSegHeadImpl> {
 public:
  SemSegHeadImpl(const ComboModelOptions& options, const backbone::FeatureShapes& shapes);
  void reset() override;

  ComboModelOptions options;
  backbone::FeatureShapes shapes;
  MSDeformAttnPixelDecoder pixel_decoder{nullptr};
  BilateralFusion fusion_module{nullptr};         ///< late placement only
  audio::AudioMlp audio_transformation{nullptr};  ///< late placement only
  MultiScaleMaskedTransformerDecoder predictor{nullptr};
};
TORCH_MODULE(SemSegHead);

class ComboModelImpl : public torch::nn::Cloneable<ComboModelImpl> {
 public:
  explicit ComboModelImpl(ComboModelOptions options = {});
  void reset() override;

  /// Training and inference share this pass (COMBO_SPEC 1.2 steps 1-6).
  ComboOutputs forward(const ComboInputs& inputs);

  /// Score maps at the input size, binary masks (C = 2) or label maps (C > 2), COMBO_SPEC 1.2
  /// steps 8-9. Runs forward itself.
  ComboPrediction predict(const ComboInputs& inputs);

  /// Turns decoder outputs into per-frame results (upsample the masks to the padded size,
  /// semantic inference, crop to the input size).
  ComboPrediction postprocess(const ComboOutputs& outputs) const;

  /// Parameter counts per top-level module, with trainable and frozen totals.
  std::string summary() const;

  /// (x - mean) / std, then zero padding to a multiple of size_divisibility.
  at::Tensor normalize(const at::Tensor& images) const;

  /// VGGish embeddings [N, 128] of log-mel examples [N, 1, 96, 64], through the cache when
  /// options.cache_audio() and VGGish is frozen (no autograd in either case when frozen).
  at::Tensor audio_embeddings(const at::Tensor& log_mel);

  /// Entries in the audio cache (0 when it is off).
  size_t audio_cache_size() const { return audio_cache_.size(); }

  ComboModelOptions options;
  backbone::Backbone backbone{nullptr};
  backbone::Backbone pre_sam_backbone{nullptr};        ///< Siam-Encoder with separate weights only
  torch::nn::ModuleList scale_factor_module{nullptr};  ///< Siam-Encoder only
  audio::Vggish audio_backbone{nullptr};
  BilateralFusion fusion_module{nullptr};         ///< early placement only
  audio::AudioMlp audio_transformation{nullptr};  ///< early placement only
  SemSegHead sem_seg_head{nullptr};

 private:
  at::Tensor pixel_mean_;  // [1, 3, 1, 1], not part of the state dict (official: non-persistent)
  at::Tensor pixel_std_;
  // Copies of the two on the device of the last normalize() call: made once, not per batch (a
  // copy from host memory per call would stall the GPU queue every step).
  mutable at::Tensor pixel_mean_device_, pixel_std_device_;
  std::unordered_map<size_t, at::Tensor> audio_cache_;  ///< hash of the example's bytes -> [128]
  int64_t audio_cache_weights_version_ = -1;            ///< VGGish weights the entries belong to
};
TORCH_MODULE(ComboModel);

/// The decoder outputs in the form the criterion takes (no copies), with the padded image size
/// the masks cover (the canvas the criterion pads the targets to, official `prepare_targets`).
loss::ModelOutputs criterion_inputs(const ComboOutputs& outputs);

/// Keys of official COMBO checkpoints that ComboModel does not hold as parameters
/// (`criterion.empty_weight`, and the official-only parts of the chosen fusion type).
std::vector<std::string> ignored_checkpoint_prefixes(const ComboModelImpl& model);

/// Loads a converted COMBO checkpoint (official key names). Strict by default, ignoring
/// ignored_checkpoint_prefixes(model).
LoadReport load_combo_checkpoint(ComboModelImpl& model, const TensorDict& dict, bool strict = true,
                                 const std::string& source = "checkpoint");

/// Loads one ImageNet backbone file into the RGB encoder and, when present, the Maskige encoder
/// (what the official code needs a patched detectron2 for).
void load_backbone_weights(ComboModelImpl& model, const TensorDict& dict,
                           const std::string& source = "backbone weights");

}  // namespace combo::model
