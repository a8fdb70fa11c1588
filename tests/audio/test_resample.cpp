#include <ATen/Parallel.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <string>
#include <vector>

#include "combo/audio/resample.h"
#include "combo/core/check.h"
#include "testing/testing.h"

namespace audio = combo::audio;

namespace {

class ResampleTest : public combo::testing::SeededTest {};

at::Tensor sine(double hz, int64_t sample_rate, int64_t samples) {
  const at::Tensor t = torch::arange(samples, at::kDouble) / static_cast<double>(sample_rate);
  return at::sin(2.0 * M_PI * hz * t);
}

}  // namespace

TEST(ResampleParity, MatchesResampyKaiserBest) {
  COMBO_LOAD_FIXTURE_OR_SKIP(fx, "vggish.pt");
  const int64_t sample_rate = fx.integer("frontend/native/sample_rate");
  // The official input: int16 / 32768.0 in float64 (wav_float32 holds the same values).
  const at::Tensor wav = fx.tensor("frontend/native/wav_int16").to(at::kDouble) / 32768.0;
  const at::Tensor ref = fx.tensor("frontend/native/resampled_16k");
  const at::Tensor got = audio::resample(wav, sample_rate, 16000);
  ASSERT_EQ(got.sizes(), ref.sizes());
  EXPECT_EQ(got.scalar_type(), at::kDouble);
  const double err = combo::testing::max_abs_diff(ref, got);
  std::cout << "[ INFO ] resample " << sample_rate << " -> 16000: max abs error vs resampy " << err
            << std::endl;
  // Same filter table and accumulation order as resampy; only the last bits of sin/i0 may differ.
  EXPECT_TENSOR_NEAR_ABS(ref, got, 1e-10);
  const at::Tensor from_float =
      audio::resample(fx.tensor("frontend/native/wav_float32"), sample_rate, 16000);
  EXPECT_TENSOR_EQ(got, from_float);
}

TEST_F(ResampleTest, EqualRatesReturnACopy) {
  const at::Tensor x = torch::randn({1234});
  const at::Tensor y = audio::resample(x, 22050, 22050);
  EXPECT_EQ(y.scalar_type(), at::kDouble);
  EXPECT_TENSOR_EQ(x.to(at::kDouble), y);
}

TEST_F(ResampleTest, OutputLengthIsTruncated) {
  // resampy 0.4.2: int(len * float(sr_new) / float(sr_orig)).
  const std::vector<std::tuple<int64_t, int64_t, int64_t, int64_t>> cases = {
      {173097, 22050, 16000, 125603}, {441000, 44100, 16000, 160000}, {44101, 44100, 16000, 16000},
      {100, 8000, 16000, 200},        {3, 44100, 16000, 1},           {2, 44100, 16000, 0}};
  for (const auto& [len, sr_orig, sr_new, expected] : cases) {
    const at::Tensor y = audio::resample(torch::zeros({len}), sr_orig, sr_new);
    EXPECT_EQ(y.size(0), expected) << len << " samples " << sr_orig << " -> " << sr_new;
  }
}

TEST_F(ResampleTest, SineFrequencyPreservedWhenDownsampling) {
  const int64_t n = 44100;
  const at::Tensor y = audio::resample(sine(440.0, 44100, n), 44100, 16000);
  ASSERT_EQ(y.size(0), 16000);
  const at::Tensor expected = sine(440.0, 16000, 16000);
  // Away from the edges (64 zero crossings of the filter = 176 input samples) the band-limited
  // interpolation reproduces the sine.
  const int64_t margin = 200;
  EXPECT_TENSOR_NEAR_ABS(expected.narrow(0, margin, 16000 - 2 * margin),
                         y.narrow(0, margin, 16000 - 2 * margin), 1e-4);
  // A tone above the new Nyquist frequency (8 kHz) is removed.
  const at::Tensor alias = audio::resample(sine(12000.0, 44100, n), 44100, 16000);
  EXPECT_LT(alias.narrow(0, margin, 16000 - 2 * margin).abs().max().item<double>(), 1e-4);
}

TEST_F(ResampleTest, SineFrequencyPreservedWhenUpsampling) {
  const at::Tensor y = audio::resample(sine(1000.0, 8000, 8000), 8000, 16000);
  ASSERT_EQ(y.size(0), 16000);
  const int64_t margin = 200;
  EXPECT_TENSOR_NEAR_ABS(sine(1000.0, 16000, 16000).narrow(0, margin, 16000 - 2 * margin),
                         y.narrow(0, margin, 16000 - 2 * margin), 1e-4);
}

TEST_F(ResampleTest, ThreadCountDoesNotChangeTheResult) {
  const at::Tensor x = torch::randn({30000}, at::kDouble);
  const int threads = at::get_num_threads();
  at::set_num_threads(1);
  const at::Tensor one = audio::resample(x, 48000, 16000);
  at::set_num_threads(2);
  const at::Tensor two = audio::resample(x, 48000, 16000);
  at::set_num_threads(threads);
  EXPECT_TENSOR_EQ(one, two);
}

TEST_F(ResampleTest, RejectsBadArguments) {
  auto message = [](const std::function<void()>& fn) -> std::string {
    try {
      fn();
    } catch (const combo::Error& e) {
      return e.what();
    }
    return "no error";
  };
  EXPECT_NE(message([] { audio::resample(torch::zeros({10}), 0, 16000); }).find("sr_orig=0"),
            std::string::npos);
  EXPECT_NE(message([] { audio::resample(torch::zeros({10}), 16000, -1); }).find("sr_new=-1"),
            std::string::npos);
  EXPECT_NE(message([] {
              audio::resample(torch::zeros({2, 10}), 8000, 16000);
            }).find("[2, 10]"),
            std::string::npos);
  // More than 8192:1 downsampling leaves the filter table without a step.
  EXPECT_NE(message([] {
              audio::resample(torch::zeros({100000}), 200000000, 16000);
            }).find("below the filter's resolution"),
            std::string::npos);
}
