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

#include "combo/data/synthetic_scene.h"

namespace combo::data {

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

/// One object of a rendered video (synth_scene() as OpenCV matrices).
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

}  // namespace combo::data
