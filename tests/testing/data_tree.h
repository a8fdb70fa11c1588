#pragma once
/// Small AVSBench trees written by the data tests themselves (frames, masks, Maskiges, wavs),
/// so every reader path can be checked without the dataset or the synthetic generator.
#include <opencv2/core/mat.hpp>

#include <filesystem>
#include <functional>
#include <string>
#include <vector>

namespace combo::testing {

/// 16-bit PCM mono WAV of `seconds` of a sine at `hz` (amplitude 0.5).
void write_test_wav(const std::filesystem::path& path, double seconds, double hz,
                    int sample_rate = 16000);

/// A frame whose pixels encode (video, frame): a gradient plus a square at a known place.
cv::Mat test_frame(int video, int frame, int height, int width);
/// The 0/255 mask of the square drawn by test_frame.
cv::Mat test_mask(int video, int frame, int height, int width);

struct TreeSpec {
  int train = 3, val = 2, test = 2;  ///< videos per split
  int size = 32;                     ///< frame size (square)
  bool csv = true;                   ///< write the metadata CSV
};

/// S4 tree (AVSBENCH_SPEC 1.2) under `root` (the folder that holds s4_data/). Videos are named
/// v<split letter><i>, categories alternate cat_a / cat_b. Returns the names per split order
/// train, val, test.
std::vector<std::string> write_s4_tree(const std::filesystem::path& root, const TreeSpec& spec);
/// MS3 tree (AVSBENCH_SPEC 1.3).
std::vector<std::string> write_ms3_tree(const std::filesystem::path& root, const TreeSpec& spec);
/// AVSS tree (AVSBENCH_SPEC 1.4): per split one v1s, one v1m and one v2 video; raw frames
/// (width 1.5 x size, JPEG), labels_rgb in the AVSS palette and processed_* copies when
/// `processed` is true. Class ids used: 0 and 3 (axe) / 7 (bird).
void write_avss_tree(const std::filesystem::path& root, int size, bool processed);

}  // namespace combo::testing

namespace combo::testing {
/// Whole file as bytes.
std::string read_bytes_for_test(const std::filesystem::path& path);
}  // namespace combo::testing
