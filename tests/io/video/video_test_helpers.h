#pragma once
/// Helpers of the video tests: frames whose colour encodes their index, test tones, running a
/// command, the message of a combo::Error.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <opencv2/core/mat.hpp>

#include <functional>
#include <string>
#include <vector>

namespace combo::testing {

/// Frames that can be told apart after lossy coding: frame i is a flat CV_8UC3 image whose
/// R, G, B levels are the base-6 digits of i (each digit d -> 51 * d). Up to 216 frames.
std::vector<cv::Mat> index_frames(int64_t count, int width, int height);

/// The index index_frames encoded in `rgb` (read from the centre), -1 when a channel is not
/// within 12 levels of a code value.
int64_t decode_index(const cv::Mat& rgb);

/// A sine tone float32 [channels, seconds * rate] at 0.5 amplitude (channel c at 440 * (c + 1)
/// Hz).
at::Tensor tone(double seconds, int64_t rate, int64_t channels = 1);

/// Runs a shell command, stdout and stderr together in `output`. Returns the exit status.
int run_shell(const std::string& command, std::string* output);

/// The message of the std::exception `fn` throws; records a failure when it throws nothing.
std::string thrown_message(const std::function<void()>& fn);

}  // namespace combo::testing
