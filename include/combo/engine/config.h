#pragma once
/// Typed configuration: defaults in code, YAML files on top (with `_base_` inheritance), then
/// `key.path=value` overrides from the command line. Field names are the config keys
/// (`model.decoder.num_queries` is `Config::model.decoder.num_queries`).
///
/// Load order (later wins): defaults -> each `_base_` file (recursively, in list order) -> the
/// file itself -> command-line overrides. Unknown keys, wrong types, values outside a field's
/// choices, missing base files and `_base_` cycles are errors naming the key path and the file.
#include <cstdint>
#include <string>
#include <variant>
#include <vector>

namespace combo::engine {

struct BackboneConfig {
  std::string name = "pvt_v2_b5";  ///< pvt_v2_b0..pvt_v2_b5 | resnet50
  double drop_path_rate = 0.1;     ///< PVT stochastic depth (linspace over all blocks)
  std::string weights;             ///< ImageNet state dict loaded into both encoders ("" = none)
};

struct PreSamConfig {
  bool enabled = true;  ///< Siam-Encoder (Maskige branch); false = the "no SEM" ablation
  bool shared = false;  ///< one encoder for frames and Maskiges (official: two separate copies)
};

struct AudioConfig {
  std::string weights;  ///< VGGish state dict ("" = random, for tests and demos)
  bool freeze = true;   ///< VGGish weights frozen (official)
  int64_t dim = 128;    ///< VGGish embedding size
  /// How VGGish is initialised when `weights` is empty: "pytorch" (PyTorch's default layer init,
  /// what the official code would build) or "he" (He-normal weights, zero biases). PyTorch's
  /// default shrinks the signal through VGGish's nine layers: on the synthetic sounds the
  /// embedding has a norm near 0.08 and varies by about 4% between sounds, so the rest of the
  /// model hardly sees the audio; with "he" the norm is near 37 and it varies by about 28%.
  /// Only for training without AudioSet weights (the demo); ignored when `weights` is set.
  std::string init = "pytorch";
  /// Memoise the frozen VGGish's embedding per distinct log-mel example (ComboModelOptions::
  /// cache_audio): saves VGGish's forward (about a quarter of the demo's step) from the second
  /// epoch on. Off by default (the official code runs VGGish every step).
  bool cache = false;
  int64_t mlp_dim = 4096;  ///< hidden width of the audio MLP (official 4096)
};

struct PixelDecoderConfig {
  int64_t conv_dim = 256;
  int64_t mask_dim = 256;
  int64_t enc_layers = 6;
  int64_t n_heads = 8;
  int64_t n_points = 4;
  int64_t dim_feedforward = 1024;
  double dropout = 0.0;
};

struct FusionConfig {
  std::string type = "bidirectional";  ///< bidirectional | visual_to_audio | audio_only | none
  std::string placement = "late";  ///< late (after the pixel decoder) | early (on backbone maps)
  int64_t n_heads = 8;
  double dropout = 0.1;
  double layer_scale_init = 1e-4;
};

struct DecoderConfig {
  int64_t num_queries = 100;
  int64_t hidden_dim = 256;
  int64_t n_heads = 8;
  int64_t dim_feedforward = 2048;
  int64_t dec_layers = 10;  ///< official meaning: dec_layers - 1 decoder layers
  bool pre_norm = false;
  double dropout = 0.0;
  std::string audio_query_layout = "official";  ///< official (COMBO_SPEC 6.3 index map) | per_frame
};

struct ModelConfig {
  BackboneConfig backbone;
  PreSamConfig pre_sam;
  AudioConfig audio;
  PixelDecoderConfig pixel_decoder;
  FusionConfig fusion;
  DecoderConfig decoder;
  int64_t num_classes = 2;  ///< real classes: 2 for S4/MS3, 71 for AVSS
  std::vector<double> pixel_mean = {123.675, 116.280, 103.530};
  std::vector<double> pixel_std = {58.395, 57.120, 57.375};
  std::string weights;  ///< full-model state dict to start from ("" = none)
  /// Recompute the image encoders' blocks and the deformable encoder layers in backward instead
  /// of keeping their activations: bit-identical results, about 0.3-1.3 GB less training memory
  /// on CPU at the S4 settings, 13-25 % more time per step; under AMP the recomputation runs in
  /// the forward pass's precision. auto | true | false: auto takes the device's default
  /// (engine::default_activation_checkpointing, one definition for every tool).
  std::string activation_checkpointing = "auto";
};

struct ConsistencyConfig {
  std::string type = "adaptive";      ///< adaptive (d*exp(-d)) | fixed (d) | none
  std::string grouping = "official";  ///< official (groups of 5 frames) | per_video
  double weight = 10.0;
};

struct LossConfig {
  double class_weight = 2.0;
  double mask_weight = 5.0;
  double dice_weight = 5.0;
  double no_object_weight = 0.1;
  bool deep_supervision = true;
  int64_t train_num_points = 12544;
  double oversample_ratio = 3.0;
  double importance_sample_ratio = 0.75;
  ConsistencyConfig consistency;
};

struct AugmentConfig {
  bool enabled = true;
  std::vector<int64_t> short_sides = {112, 134, 156, 179, 201, 224, 246, 268,
                                      291, 313, 336, 358, 380, 403, 425, 448};
  int64_t max_size = 896;
  int64_t crop_size = 224;
  int64_t pad_size = 224;  ///< pad bottom/right to exactly this (0 = none); official 224
  bool color_jitter = true;
  bool jitter_maskige = true;  ///< official: Maskiges get their own colour jitter
  double flip_prob = 0.5;
};

/// The in-memory synthetic task (data.source = synthetic; data/synthetic_dataset.h): the content
/// of combo-synth (2-3 moving objects of different sound classes per video, the sound decides
/// which one is annotated) drawn in load(), nothing read from disk, no media library needed.
/// A video is a function of (seed, split, index) alone. No augmentation (data.augment.* is for
/// the files source).
struct SyntheticDataConfig {
  int64_t train_videos = 64;  ///< videos of the train split
  int64_t eval_videos = 16;   ///< videos of the val split and of the test split (each its own)
  int64_t frames = 0;         ///< frames per video; 0 = the dataset's own (S4/MS3 5, AVSS 10)
  int64_t image_size = 0;     ///< frame size; 0 = data.image_size
  int64_t seed = 0;           ///< content seed (not runtime.seed: the data stay when that changes)
  int64_t classes = 4;        ///< sound classes, 2..70 (combo-synth --classes)
  /// Object size factor (combo-synth --object-scale): 1.0 = radius 0.11-0.16 of the frame side;
  /// the demo's easier task uses 1.6 with style flat.
  double object_scale = 1.0;
  std::string style = "textured";  ///< textured | flat (combo-synth --style)
};

struct DataConfig {
  std::string dataset = "s4";  ///< s4 | ms3 | avss
  /// Where videos come from: files (the AVSBench layout under data.root; needs a build with the
  /// media stack, COMBO_WITH_MEDIA) | synthetic (in memory, data.synthetic.*; every build).
  std::string source = "files";
  std::string root;  ///< AVSBench root folder (data.source = files)
  std::string train_split = "train";
  std::string val_split = "val";
  std::string test_split = "test";
  std::string audio_source = "wav";  ///< wav (log-mel computed from the wav) | pkl (AVSBench files)
  int64_t image_size = 224;
  int64_t num_workers = 2;
  int64_t prefetch = 4;              ///< batches kept ready by the loader
  std::string avss_frames = "auto";  ///< auto | processed (COMBO) | raw (AVSBench + resize rules)
  bool skip_bad = false;             ///< skip broken videos with a warning instead of stopping
  bool check_masks = true;           ///< S4/MS3 ground truth must hold only 0 and 255
  bool silence_audio = false;        ///< ablation: every clip gets the log-mel of silence
  AugmentConfig augment;
  SyntheticDataConfig synthetic;
};

struct ClipGradientsConfig {
  bool enabled = true;
  std::string type = "full_model";  ///< full_model | norm | value
  double value = 0.01;
  double norm_type = 2.0;
};

struct AmpConfig {
  bool enabled = false;        ///< CUDA only; CPU always runs fp32
  std::string dtype = "fp16";  ///< fp16 | bf16
};

struct SolverConfig {
  std::string optimizer = "adamw";
  double base_lr = 1e-4;
  double weight_decay = 0.05;
  double weight_decay_norm = 0.0;
  double weight_decay_embed = 0.0;
  double backbone_multiplier = 0.1;
  std::vector<double> betas = {0.9, 0.999};
  double eps = 1e-8;
  std::string lr_scheduler = "poly";  ///< poly | constant
  double poly_power = 0.9;
  int64_t warmup_iters = 0;
  double warmup_factor = 1.0;
  int64_t max_iter = 90000;
  int64_t ims_per_batch = 8;  ///< videos per iteration (all processes together)
  int64_t checkpoint_period = 5000;
  int64_t keep_last = 3;
  int64_t log_period = 20;  ///< iterations per metrics line (losses are read from the device then)
  /// A NaN or infinite loss: stop (error naming the iteration and the loss terms; the last
  /// checkpoint stays) | skip (no update; counted, logged and in metrics.jsonl).
  std::string non_finite = "stop";
  ClipGradientsConfig clip_gradients;
  AmpConfig amp;
};

struct TestConfig {
  int64_t eval_period = 5000;
  std::string metric_protocol = "combo";  ///< combo (per video) | avsbench (per test batch)
  int64_t batch_size = 1;                 ///< videos per test batch
};

struct RuntimeConfig {
  int64_t seed = 0;     ///< < 0: drawn at random and logged
  int64_t threads = 0;  ///< intra-op threads; 0 = all cores
  /// auto (the first CUDA device when there is one, else the CPU) | cpu | cuda | cuda:N
  std::string device = "auto";
  /// TF32 for float32 matrix products and convolutions on the GPU (combo::set_tf32):
  /// default (LibTorch's: cuDNN convolutions may use TF32, cuBLAS matrix products do not, as the
  /// official PyTorch code ran) | on (both: faster on Ampere and newer, about 1e-3 relative
  /// error per product) | off (neither: full float32, as the parity tests run).
  std::string tf32 = "default";
  /// Data-parallel runs (several processes, launched by torchrun or Slurm): the c10d backend
  /// (auto = NCCL on CUDA, Gloo on the CPU), the rendezvous and collective timeout in seconds
  /// (a dead or missing peer ends every process with an error after at most this long), and
  /// the gradient bucket size in MB.
  std::string dist_backend = "auto";
  double dist_timeout = 1800;
  double dist_bucket_mb = 25;
};

struct Config {
  ModelConfig model;
  LossConfig loss;
  DataConfig data;
  SolverConfig solver;
  TestConfig test;
  RuntimeConfig runtime;
  std::string output_dir = "output";
};

/// A pointer to one typed field of a Config.
using FieldRef = std::variant<bool*, int64_t*, double*, std::string*, std::vector<int64_t>*,
                              std::vector<double>*, std::vector<std::string>*>;

struct FieldInfo {
  std::string path;                  ///< "model.decoder.num_queries"
  FieldRef ref;                      ///< where the value lives
  std::vector<std::string> choices;  ///< allowed values of a string field (empty = any)
};

/// Every field of `config`, in declaration order.
std::vector<FieldInfo> config_fields(Config& config);

/// The type of a field as a word ("int", "float", "bool", "string", "list of int", ...).
std::string field_type_name(const FieldRef& ref);

/// Loads a YAML file (with `_base_` chain) onto the defaults, then applies `overrides`
/// ("key.path=value"). An empty `path` means defaults plus overrides.
Config load_config(const std::string& path, const std::vector<std::string>& overrides = {});

/// Applies "key.path=value" overrides to a config (values typed by the field they set).
void apply_overrides(Config& config, const std::vector<std::string>& overrides);

/// The config as YAML; `load_config` of the dump gives an equal config.
std::string dump_config(const Config& config);

/// Field-by-field equality.
bool operator==(const Config& a, const Config& b);
inline bool operator!=(const Config& a, const Config& b) { return !(a == b); }

}  // namespace combo::engine
