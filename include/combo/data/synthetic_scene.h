#pragma once
/// The content of the synthetic AVSBench task, without any media library: the videos that
/// combo-synth writes to disk (data/synthetic.h, media builds) and that the in-memory task
/// (data/synthetic_dataset.h) hands to the loader are both drawn here, so the two cannot drift.
///
/// Textured moving objects of which the
/// SOUND decides which one is sounding: every video shows distractor objects of other classes
/// too, so a model cannot score well without the audio. Output is a function of the options
/// alone (same seed -> identical bytes).
///
/// Content: K sound classes. Class c has a visual identity (one of 8 shapes, one of 4 textures
/// drawn in two class colours; per video the size, shade, rotation and texture phase vary) and a
/// sound (a harmonic tone at a class-specific fundamental, with a class-specific spectral tilt and
/// amplitude-modulation rate, plus a little noise). A video has 2-3 objects of different classes
/// moving smoothly over a moving textured background cut into 2-4 regions; the sounding ones are
/// drawn at random among them, so their place, size and drawing order say nothing.
#include <ATen/core/Tensor.h>

#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace combo::data {

struct SynthOptions {
  std::string dataset = "s4";  ///< s4 | ms3 | avss
  std::string out;             ///< root to write (AVS_dataset-style root, see synthesize())
  int64_t train_videos = 24;
  int64_t val_videos = 8;
  int64_t test_videos = 8;
  int64_t size = 224;       ///< frame size (S4/MS3 square frames; AVSS frames are size*1.5 x size)
  int64_t num_classes = 4;  ///< sound classes used (<= 70 for AVSS; S4 categories come from these)
  int64_t seed = 0;
  /// Object radius = object_scale x (0.11 .. 0.16) x the frame's shorter side. Larger objects make
  /// an easier task (the demo uses 1.6 at 64 px, where the default objects are 7-10 px across).
  double object_scale = 1.0;
  /// "textured": objects drawn in two class colours with a class texture over a textured,
  /// noisy background. "flat": each object in its one class colour over a smooth, untextured
  /// background (an easier task: the look is the colour and the shape). The sounds, shapes,
  /// sizes and motions are the same for the same seed in both styles (object_scale, which
  /// changes the placements, changes the random draws after them, the sounds included).
  std::string style = "textured";
  /// Frames per video; 0 = the AVSBench rule (5; AVSS v2 videos 10). Changes the content.
  int64_t frames = 0;
  bool write_raw_videos = true;  ///< raw_videos/*.mp4 with the audio track
  /// Also write the log-mel examples the official loaders read (combo::audio front end, saved
  /// with torch::pickle_save, which Python's torch.load and combo::io::read_log_mel_pkl read):
  /// S4/MS3 audio_log_mel/...pkl [5,1,96,64] (last example repeated), AVSS <label>/<uid>/audio.pkl
  /// [10,1,96,64] (zero-padded). Off by default: the readers compute them from the wavs.
  bool write_pkl = false;
  /// Videos rendered in parallel (0 = hardware threads). The bytes written do not depend on it:
  /// every video draws from its own generator seeded from (seed, split, index).
  int64_t threads = 1;
  /// When the dataset's own folders/files under `out` already exist: false = error naming them;
  /// true = remove them first (only the paths this generator writes, nothing else under `out`).
  bool overwrite = false;
};

/// Checks what the content depends on (dataset, classes, size, style, scale, counts, frames);
/// throws combo::Error naming the option.
void validate_synth_options(const SynthOptions& options);

/// Audio sample rate of every synthetic wav.
constexpr int64_t kSynthSampleRate = 16000;

/// The class names: the first K of AVSBench-semantic's 70 class names in id order (so class c
/// has AVSS id c + 1, the id it has in AVSBench's label2idx.json). K in [2, 70].
std::vector<std::string> synth_class_names(int64_t num_classes);

/// AVSS palette colour of class `index` (`get_v2_pallete`: bit-interleaved PASCAL-VOC map).
std::array<uint8_t, 3> avss_palette_color(int64_t index);

/// The fundamental frequency (Hz) of class c's sound among K classes.
double synth_class_fundamental(int64_t class_index, int64_t num_classes);

/// One rendered video (tensors on the CPU).
struct SynthScene {
  std::string split;              ///< train | val | test
  int64_t index = 0;              ///< index within the split
  std::string name;               ///< S4/MS3 name, AVSS uid
  std::string group;              ///< S4 category, AVSS label (v1s | v1m | v2), MS3 ""
  int64_t height = 0, width = 0;  ///< size x size (S4/MS3), size x 1.5*size (AVSS)
  at::Tensor frames;              ///< uint8 [T, H, W, 3] RGB
  struct Object {
    int64_t class_index = 0;  ///< 0..K-1
    bool sounding = false;
    at::Tensor masks;  ///< uint8 [T, H, W] 0/1: the VISIBLE pixels (occlusion applied)
  };
  std::vector<Object> objects;  ///< in drawing order (last on top)
  /// Per frame: the background regions (uint8 [H, W] 0/1, object pixels excluded; empty ones
  /// dropped).
  std::vector<std::vector<at::Tensor>> regions;
  std::vector<float> audio;  ///< mono, kSynthSampleRate, 1 s per frame, in [-1, 1]
  int64_t num_frames() const { return frames.defined() ? frames.size(0) : 0; }
};

/// The name synth_scene() gives video `index` of `split` (S4/MS3 "<dataset>_<split>_NNNN",
/// AVSS "<v1s|v1m|v2>_<split>_NNNN"), without drawing it.
std::string synth_video_name(const SynthOptions& options, const std::string& split, int64_t index);

/// Draws video `index` of `split` (train | val | test). A function of (options, split, index):
/// every video draws from its own generator seeded from (seed, split, index). Thread-safe.
SynthScene synth_scene(const SynthOptions& options, const std::string& split, int64_t index);

/// The ground truth of a frame, uint8 [H, W]: S4/MS3 0/255 (union of the sounding objects);
/// AVSS class ids (sounding object of class c -> c + 1, everything else 0).
at::Tensor synth_scene_ground_truth(const SynthOptions& options, const SynthScene& scene,
                                    int64_t frame);

/// The masks a Maskige of frame t is made of: the objects visible in it, then the background
/// regions (uint8 [H, W] 0/1 each).
std::vector<at::Tensor> synth_frame_masks(const SynthScene& scene, int64_t frame);

/// A Maskige from masks (uint8 [H, W] 0/1 each, at least one): masks -> label map -> ADE20K
/// colours (maskige::colorize_labels), uint8 [H, W, 3] RGB.
at::Tensor synth_maskige(const std::vector<at::Tensor>& masks);

/// A RIFF/WAVE file's bytes: 16-bit PCM mono at `sample_rate` (samples clipped to [-1, 1] and
/// rounded to the nearest of -32767..32767).
std::string wav_bytes(const std::vector<float>& samples, int64_t sample_rate);

}  // namespace combo::data
