#pragma once
/// A synthetic AVSBench generator (`combo-synth`): S4, MS3 and AVSS trees in the exact on-disk
/// layouts of AVSBENCH_SPEC 1 / COMBO_SPEC 10 (frames, ground truth, Maskiges, 16 kHz wavs, raw
/// mp4 with audio, metadata CSVs, label2idx.json), with textured moving objects of which the
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
#include <opencv2/core/mat.hpp>

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

/// Summary of what was written.
struct SynthReport {
  std::string root;  ///< the dataset root to give to the readers (data.root)
  int64_t videos = 0;
  int64_t frames = 0;
  int64_t files = 0;
};

/// Writes the tree under options.out:
///   s4:   <out>/s4_meta_data.csv,
///   <out>/s4_data/{visual_frames,gt_masks,audio_wav,raw_videos,pre_SAM_mask}/... ms3:
///   <out>/ms3_meta_data.csv, <out>/ms3_data/... avss: <out>/metadata.csv, <out>/label2idx.json,
///         <out>/{v1s,v1m,v2}/<uid>/{frames/N.jpg, labels_rgb/N.png, labels_semantic/N.png,
///         audio.wav} (AVSBench layout, frames size*1.5 x size) and COMBO's offline-resized copies
///         <out>/<label>/<uid>/{processed_frames/N.jpg, processed_labels_semantic/N.png} (224, the
///         train crop-resize / val-test direct-resize rules of COMBO_SPEC 10.5), Maskiges under
///         <out>/pre_SAM_mask/AVSBench_semantic/<label>/<uid>/processed_frames/N_mask_color.png
/// Every file is written to a temporary name and renamed; the metadata files come last, so an
/// interrupted run leaves no half-written file and no metadata naming a missing video.
/// Returns the report; throws combo::Error naming the path on a write failure.
SynthReport synthesize(const SynthOptions& options);

// ---------------------------------------------------------------------------------------------
// The pieces synthesize() is made of, for tests and for callers that want the content in memory.

/// Audio sample rate of every synthetic wav.
constexpr int64_t kSynthSampleRate = 16000;

/// The class names: the first K of AVSBench-semantic's 70 class names in id order (so class c
/// has AVSS id c + 1, the id it has in AVSBench's label2idx.json). K in [2, 70].
std::vector<std::string> synth_class_names(int64_t num_classes);

/// AVSS palette colour of class `index` (`get_v2_pallete`: bit-interleaved PASCAL-VOC map).
std::array<uint8_t, 3> avss_palette_color(int64_t index);

/// The fundamental frequency (Hz) of class c's sound among K classes.
double synth_class_fundamental(int64_t class_index, int64_t num_classes);

/// One object of a rendered video.
struct SynthObject {
  int64_t class_index = 0;  ///< 0..K-1
  bool sounding = false;
  std::vector<cv::Mat> masks;  ///< per frame, CV_8UC1 0/1: the VISIBLE pixels (occlusion applied)
};

/// One rendered video, before anything is written.
struct SynthVideo {
  std::string split;                 ///< train | val | test
  int64_t index = 0;                 ///< index within the split
  std::string name;                  ///< S4/MS3 name, AVSS uid
  std::string group;                 ///< S4 category, AVSS label (v1s | v1m | v2), MS3 ""
  std::vector<cv::Mat> frames;       ///< CV_8UC3 RGB; size x size (S4/MS3), 1.5*size x size (AVSS)
  std::vector<SynthObject> objects;  ///< in drawing order (last on top)
  /// Per frame: the background regions (CV_8UC1 0/1, object pixels excluded; empty ones dropped).
  std::vector<std::vector<cv::Mat>> regions;
  std::vector<float> audio;  ///< mono, kSynthSampleRate, 1 s per frame, in [-1, 1]
};

/// Renders video `index` of `split` (train | val | test) exactly as synthesize() writes it.
SynthVideo synth_video(const SynthOptions& options, const std::string& split, int64_t index);

/// The ground truth of a frame: S4/MS3 CV_8UC1 0/255 (union of the sounding objects); AVSS
/// CV_8UC1 class ids (sounding object of class c -> c + 1, everything else 0).
cv::Mat synth_ground_truth(const SynthOptions& options, const SynthVideo& video, int64_t frame);

/// A RIFF/WAVE file's bytes: 16-bit PCM mono at `sample_rate` (samples clipped to [-1, 1] and
/// rounded to the nearest of -32767..32767).
std::string wav_bytes(const std::vector<float>& samples, int64_t sample_rate);

}  // namespace combo::data
