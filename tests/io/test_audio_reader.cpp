#include <gtest/gtest.h>
#include <sndfile.h>
#include <torch/torch.h>

#include <cmath>
#include <random>

#include "audio_test_media.h"
#include "combo/audio/log_mel.h"
#include "combo/io/audio_reader.h"
#include "io_test_helpers.h"
#include "testing/testing.h"

namespace fs = std::filesystem;
using combo::io::AudioClip;
using combo::io::Resampler;
using combo::testing::error_message;
using combo::testing::TempDir;

namespace {

// int16 samples [C, T] of a few tones, different per channel.
at::Tensor tones_int16(int64_t channels, int64_t length, int sample_rate) {
  at::Tensor out = at::empty({channels, length}, at::kShort);
  auto acc = out.accessor<int16_t, 2>();
  for (int64_t c = 0; c < channels; ++c) {
    for (int64_t i = 0; i < length; ++i) {
      const double t = static_cast<double>(i) / sample_rate;
      const double x = 0.3 * std::sin(2 * M_PI * (440.0 + 110.0 * c) * t) +
                       0.2 * std::sin(2 * M_PI * 1234.0 * t + c);
      acc[c][i] = static_cast<int16_t>(std::lrint(x * 32767.0));
    }
  }
  return out;
}

at::Tensor as_float(const at::Tensor& int16) { return int16.to(at::kFloat) / 32768.0f; }

// Best normalised cross-correlation of got against want over lags in [-max_lag, max_lag], for
// lossy codecs whose decoders may shift the signal by their priming delay.
struct Alignment {
  double correlation = -1.0;
  int64_t lag = 0;
  double snr_db = 0.0;
};

Alignment align(const at::Tensor& want_in, const at::Tensor& got_in, int64_t max_lag) {
  const at::Tensor want_t = want_in.to(at::kDouble).contiguous();
  const at::Tensor got_t = got_in.to(at::kDouble).contiguous();
  const double* want = want_t.data_ptr<double>();
  const double* got = got_t.data_ptr<double>();
  const int64_t nw = want_t.size(0);
  const int64_t ng = got_t.size(0);
  // got[i + lag] ~ want[i] over the overlap, skipping codec edges.
  auto stats = [&](int64_t lag, int64_t begin, int64_t end, Alignment* out) {
    double ab = 0, aa = 0, bb = 0, noise = 0;
    for (int64_t i = begin; i < end; ++i) {
      const double a = want[i];
      const double b = got[i + lag];
      ab += a * b;
      aa += a * a;
      bb += b * b;
      noise += (a - b) * (a - b);
    }
    out->correlation = ab / std::sqrt(aa * bb);
    out->lag = lag;
    out->snr_db = 10 * std::log10(aa / std::max(noise, 1e-30));
  };
  // The lag is found on a middle window, the statistics then use the whole overlap.
  const int64_t mid = nw / 2;
  Alignment best;
  for (int64_t lag = -max_lag; lag <= max_lag; ++lag) {
    const int64_t begin = std::max<int64_t>(mid - 4096, -lag);
    const int64_t end = std::min<int64_t>(mid + 4096, ng - lag);
    if (end - begin < 1000) continue;
    Alignment a;
    stats(lag, begin, end, &a);
    if (a.correlation > best.correlation) best = a;
  }
  const int64_t begin = std::max<int64_t>(2048, -best.lag);
  const int64_t end = std::min<int64_t>(nw, ng - best.lag) - 2048;
  if (end - begin >= 1000) stats(best.lag, begin, end, &best);
  return best;
}

std::string write_random_file(const TempDir& dir, const std::string& name, size_t size) {
  std::mt19937 rng(static_cast<unsigned>(size));
  std::string bytes(size, '\0');
  for (char& b : bytes) b = static_cast<char>(rng() & 0xFF);
  combo::testing::write_bytes(dir.file(name), bytes);
  return dir.file(name);
}

}  // namespace

TEST(AudioReaderTest, Int16WavIsExactPerChannel) {
  TempDir dir;
  const at::Tensor src = tones_int16(3, 44100, 44100);
  combo::testing::write_sndfile(dir.file("three.wav"), src, 44100,
                                SF_FORMAT_WAV | SF_FORMAT_PCM_16);
  const AudioClip clip = combo::io::read_audio(dir.file("three.wav"));
  EXPECT_EQ(clip.channels, 3);
  EXPECT_EQ(clip.sample_rate, 44100);
  EXPECT_DOUBLE_EQ(clip.duration(), 1.0);
  ASSERT_EQ(clip.samples.scalar_type(), at::kFloat);
  EXPECT_TENSOR_EQ(as_float(src), clip.samples);
}

TEST(AudioReaderTest, ToMonoIsTheChannelMeanInFloat64) {
  TempDir dir;
  const at::Tensor src = tones_int16(3, 8000, 16000);
  combo::testing::write_sndfile(dir.file("three.wav"), src, 16000,
                                SF_FORMAT_WAV | SF_FORMAT_PCM_16);
  const AudioClip clip = combo::io::read_audio(dir.file("three.wav"));
  const at::Tensor mono = combo::io::to_mono(clip);
  ASSERT_EQ(mono.scalar_type(), at::kDouble);
  ASSERT_EQ(mono.dim(), 1);
  // The official order: float64 samples / 32768, summed over channels, then divided by 3.
  const at::Tensor s = src.to(at::kDouble) / 32768.0;
  EXPECT_TENSOR_EQ((s[0] + s[1] + s[2]) / 3.0, mono);
  // Already-mono [T] input passes through as float64.
  AudioClip flat{clip.samples[1], clip.sample_rate, 1};
  EXPECT_TENSOR_EQ(s[1], combo::io::to_mono(flat));
  // A 16 kHz file needs no resampling: load_audio_16k_mono is exactly the mono mix.
  EXPECT_TENSOR_EQ(mono, combo::io::load_audio_16k_mono(dir.file("three.wav")));
}

TEST(AudioReaderTest, OtherSampleFormatsUseLibsndfileNormalisation) {
  TempDir dir;
  // 24-bit PCM: libsndfile writes the top 24 bits of an int32 and normalises by 2^23.
  at::Tensor ints = at::empty({1, 1000}, at::kInt);
  for (int64_t i = 0; i < 1000; ++i) {
    ints[0][i] = static_cast<int32_t>(((i * 7919) % 16000000) - 8000000) * 256;
  }
  combo::testing::write_sndfile(dir.file("pcm24.wav"), ints, 22050,
                                SF_FORMAT_WAV | SF_FORMAT_PCM_24);
  AudioClip clip = combo::io::read_audio(dir.file("pcm24.wav"));
  EXPECT_EQ(clip.sample_rate, 22050);
  EXPECT_TENSOR_EQ((ints.to(at::kDouble) / 2147483648.0).to(at::kFloat), clip.samples);

  // float32 WAV: the stored floats come back unchanged.
  const at::Tensor floats = torch::linspace(-0.9, 0.9, 999, torch::kFloat32).view({1, 999});
  combo::testing::write_sndfile(dir.file("float.wav"), floats, 8000,
                                SF_FORMAT_WAV | SF_FORMAT_FLOAT);
  clip = combo::io::read_audio(dir.file("float.wav"));
  EXPECT_TENSOR_EQ(floats, clip.samples);
}

TEST(AudioReaderTest, FlacIsLosslessAndOggVorbisIsClose) {
  TempDir dir;
  const at::Tensor src = tones_int16(2, 48000, 48000);
  combo::testing::write_sndfile(dir.file("a.flac"), src, 48000, SF_FORMAT_FLAC | SF_FORMAT_PCM_16);
  AudioClip clip = combo::io::read_audio(dir.file("a.flac"));
  EXPECT_EQ(clip.channels, 2);
  EXPECT_EQ(clip.sample_rate, 48000);
  EXPECT_TENSOR_EQ(as_float(src), clip.samples);

  combo::testing::write_sndfile(dir.file("a.ogg"), as_float(src), 48000,
                                SF_FORMAT_OGG | SF_FORMAT_VORBIS);
  clip = combo::io::read_audio(dir.file("a.ogg"));
  EXPECT_EQ(clip.channels, 2);
  EXPECT_EQ(clip.sample_rate, 48000);
  EXPECT_NEAR(clip.samples.size(1), src.size(1), 1);
  for (int64_t c = 0; c < 2; ++c) {
    const Alignment a = align(as_float(src)[c], clip.samples[c], 0);
    EXPECT_GT(a.correlation, 0.999) << "channel " << c;
    EXPECT_GT(a.snr_db, 25.0) << "channel " << c;
  }
}

TEST(AudioReaderTest, FFmpegContainersDecodeToTheSourceSignal) {
  struct Case {
    std::string file;
    combo::testing::MediaSpec spec;
    int sample_rate;
    int64_t channels;
    bool lossless;
  };
  const std::vector<Case> cases = {
      {"tone.mp3", {"libmp3lame", false}, 44100, 2, false},
      {"tone.m4a", {"aac", false}, 44100, 1, false},
      {"clip.mp4", {"aac", true}, 48000, 2, false},
      {"clip.mkv", {"flac", true}, 22050, 2, true},
      {"clip.avi", {"pcm_s16le", true}, 16000, 1, true},
      {"tone.webm", {"libvorbis", false}, 48000, 2, false},
      // MP3 inside a WAV container: libsndfile refuses it, FFmpeg decodes it.
      {"mp3_payload.wav", {"libmp3lame", false}, 32000, 1, false},
  };
  TempDir dir;
  int decoded = 0;
  for (const Case& c : cases) {
    SCOPED_TRACE(c.file);
    const at::Tensor src = as_float(tones_int16(c.channels, c.sample_rate * 3 / 2, c.sample_rate));
    std::string why;
    if (!combo::testing::encode_media(dir.file(c.file), src, c.sample_rate, c.spec, &why)) {
      std::cout << "[ SKIP PART ] " << c.file << ": " << why << std::endl;
      continue;
    }
    const AudioClip clip = combo::io::read_audio(dir.file(c.file));
    ++decoded;
    EXPECT_EQ(clip.sample_rate, c.sample_rate);
    EXPECT_EQ(clip.channels, c.channels);
    if (c.lossless) {
      EXPECT_TENSOR_EQ(src, clip.samples);
      continue;
    }
    // Decoders remove the encoder delay where the container records it; allow a frame of slack.
    EXPECT_NEAR(clip.samples.size(1), src.size(1), 2048);
    for (int64_t ch = 0; ch < c.channels; ++ch) {
      const Alignment a = align(src[ch], clip.samples[ch], 2048);
      std::cout << "[ INFO ] " << c.file << " channel " << ch << ": correlation " << a.correlation
                << ", lag " << a.lag << ", SNR " << a.snr_db << " dB, " << clip.samples.size(1)
                << " samples for " << src.size(1) << std::endl;
      EXPECT_GT(a.correlation, 0.995) << "channel " << ch;
      EXPECT_GT(a.snr_db, 20.0) << "channel " << ch;
    }
  }
  EXPECT_GE(decoded, 5) << "too few FFmpeg encoders available to test the decoder";
}

TEST(AudioReaderTest, Resamples44100To16000) {
  TempDir dir;
  const int sr = 44100;
  const int64_t length = 2 * sr;
  at::Tensor src = at::empty({1, length}, at::kShort);
  for (int64_t i = 0; i < length; ++i) {
    src[0][i] = static_cast<int16_t>(std::lrint(0.5 * 32767 * std::sin(2 * M_PI * 440.0 * i / sr)));
  }
  combo::testing::write_sndfile(dir.file("a.wav"), src, sr, SF_FORMAT_WAV | SF_FORMAT_PCM_16);
  at::Tensor ideal = at::empty({32000}, at::kDouble);
  for (int64_t i = 0; i < 32000; ++i) ideal[i] = 0.5 * std::sin(2 * M_PI * 440.0 * i / 16000.0);
  for (Resampler r : {Resampler::kKaiserBest, Resampler::kSwr}) {
    SCOPED_TRACE(r == Resampler::kSwr ? "swr" : "kaiser_best");
    const at::Tensor got = combo::io::load_audio_16k_mono(dir.file("a.wav"), r);
    ASSERT_EQ(got.scalar_type(), at::kDouble);
    ASSERT_EQ(got.size(0), 32000);
    // Away from the edges, where the filters see zeros beyond the signal.
    const double err =
        (got.slice(0, 200, 31800) - ideal.slice(0, 200, 31800)).abs().max().item<double>();
    std::cout << "[ INFO ] max |resampled - ideal| = " << err << std::endl;
    EXPECT_LT(err, 1e-4);  // int16 quantisation alone is 1.5e-5
  }
}

TEST(AudioReaderTest, BadFilesAreErrorsNamingTheFile) {
  TempDir dir;
  std::string msg = error_message([&] { combo::io::read_audio(dir.file("nowhere.wav")); });
  EXPECT_NE(msg.find("nowhere.wav"), std::string::npos) << msg;
  EXPECT_NE(msg.find("does not exist"), std::string::npos) << msg;

  for (const std::string name : {"noise.wav", "noise.mp4", "noise.mp3", "noise.flac", "noise.ogg",
                                 "noise.mkv", "noise.m4a"}) {
    for (size_t size : {size_t{0}, size_t{37}, size_t{5000}, size_t{100000}}) {
      const std::string path = write_random_file(dir, name, size);
      msg = error_message([&] { combo::io::read_audio(path); });
      EXPECT_NE(msg.find(name), std::string::npos) << size << " bytes: " << msg;
    }
  }

  // A WAV whose data chunk is cut short decodes what is there; a header cut inside the
  // "fmt " chunk is an error.
  const at::Tensor src = tones_int16(1, 16000, 16000);
  combo::testing::write_sndfile(dir.file("cut.wav"), src, 16000, SF_FORMAT_WAV | SF_FORMAT_PCM_16);
  const std::string whole = combo::testing::read_bytes(dir.file("cut.wav"));
  combo::testing::write_bytes(dir.file("cut.wav"), whole.substr(0, 20));
  msg = error_message([&] { combo::io::read_audio(dir.file("cut.wav")); });
  EXPECT_NE(msg.find("cut.wav"), std::string::npos) << msg;
  combo::testing::write_bytes(dir.file("short.wav"), whole.substr(0, whole.size() - 10000));
  const AudioClip clip = combo::io::read_audio(dir.file("short.wav"));
  EXPECT_TENSOR_EQ(as_float(src).slice(1, 0, clip.samples.size(1)), clip.samples);
  EXPECT_LT(clip.samples.size(1), 16000);
}

TEST(AudioReaderTest, VideoWithoutAudioSaysSo) {
  TempDir dir;
  combo::testing::MediaSpec spec;
  spec.with_video = true;
  std::string why;
  if (!combo::testing::encode_media(dir.file("silent_film.mp4"), at::zeros({1, 0}), 16000, spec,
                                    &why)) {
    std::cout << "[ SKIP REASON ] " << why << std::endl;
    GTEST_SKIP() << why;
  }
  const std::string msg =
      error_message([&] { combo::io::read_audio(dir.file("silent_film.mp4")); });
  EXPECT_NE(msg.find("silent_film.mp4"), std::string::npos) << msg;
  EXPECT_NE(msg.find("no audio stream"), std::string::npos) << msg;
  EXPECT_NE(msg.find("mpeg4"), std::string::npos) << msg;
}

TEST(AudioReaderTest, SilentFileGivesPaddedSilenceExamples) {
  TempDir dir;
  // 2.5 s of digital silence at 16 kHz: two whole examples.
  combo::testing::write_sndfile(dir.file("silence.wav"), at::zeros({2, 40000}, at::kShort), 16000,
                                SF_FORMAT_WAV | SF_FORMAT_PCM_16);
  const at::Tensor examples = combo::io::audio_file_to_examples(dir.file("silence.wav"));
  ASSERT_EQ(examples.sizes(), (std::vector<int64_t>{2, 1, 96, 64}));
  const float silence = static_cast<float>(std::log(combo::audio::kLogOffset));
  EXPECT_TENSOR_EQ(at::full({2, 1, 96, 64}, silence), examples);

  const at::Tensor s4 = combo::io::audio_file_to_examples(dir.file("silence.wav"), 5,
                                                          combo::audio::PadMode::kRepeatLast);
  EXPECT_TENSOR_EQ(at::full({5, 1, 96, 64}, silence), s4);
  const at::Tensor avss =
      combo::io::audio_file_to_examples(dir.file("silence.wav"), 10, combo::audio::PadMode::kZeros);
  ASSERT_EQ(avss.size(0), 10);
  EXPECT_TENSOR_EQ(examples, avss.slice(0, 0, 2));
  EXPECT_TENSOR_EQ(at::zeros({8, 1, 96, 64}), avss.slice(0, 2));

  // More examples than wanted: an error naming the file (the official S4 preprocessing fails).
  const std::string msg = error_message([&] {
    combo::io::audio_file_to_examples(dir.file("silence.wav"), 1,
                                      combo::audio::PadMode::kRepeatLast);
  });
  EXPECT_NE(msg.find("silence.wav"), std::string::npos) << msg;
}

TEST(AudioReaderTest, VeryShortAndEmptyFilesDoNotCrash) {
  TempDir dir;
  // 0.1 s at 44.1 kHz (fewer samples than one STFT window after resampling).
  combo::testing::write_sndfile(dir.file("blip.wav"), tones_int16(2, 4410, 44100), 44100,
                                SF_FORMAT_WAV | SF_FORMAT_PCM_16);
  for (Resampler r : {Resampler::kKaiserBest, Resampler::kSwr}) {
    EXPECT_EQ(combo::io::load_audio_16k_mono(dir.file("blip.wav"), r).size(0), 1600);
    EXPECT_EQ(combo::io::audio_file_to_examples(dir.file("blip.wav"), r).size(0), 0);
  }
  const at::Tensor padded = combo::io::audio_file_to_examples(dir.file("blip.wav"), 5,
                                                              combo::audio::PadMode::kRepeatLast);
  EXPECT_EQ(padded.sizes(), (std::vector<int64_t>{5, 1, 96, 64}));
  EXPECT_TRUE(torch::isfinite(padded).all().item<bool>());

  // A header and no samples.
  combo::testing::write_sndfile(dir.file("empty.wav"), at::zeros({1, 0}, at::kShort), 16000,
                                SF_FORMAT_WAV | SF_FORMAT_PCM_16);
  const AudioClip clip = combo::io::read_audio(dir.file("empty.wav"));
  EXPECT_EQ(clip.samples.size(-1), 0);
  EXPECT_EQ(clip.sample_rate, 16000);
  EXPECT_EQ(combo::io::audio_file_to_examples(dir.file("empty.wav")).size(0), 0);
  EXPECT_TENSOR_EQ(
      at::zeros({10, 1, 96, 64}),
      combo::io::audio_file_to_examples(dir.file("empty.wav"), 10, combo::audio::PadMode::kZeros));
  for (Resampler r : {Resampler::kKaiserBest, Resampler::kSwr}) {
    combo::testing::write_sndfile(dir.file("empty44.wav"), at::zeros({1, 0}, at::kShort), 44100,
                                  SF_FORMAT_WAV | SF_FORMAT_PCM_16);
    EXPECT_EQ(combo::io::load_audio_16k_mono(dir.file("empty44.wav"), r).size(0), 0);
  }
}

TEST(AudioReaderParityTest, WavFileThroughTheOfficialFrontEnd) {
  COMBO_LOAD_FIXTURE_OR_SKIP(fx, "vggish.pt");
  TempDir dir;
  for (const std::string set : {"native", "sr16k"}) {
    SCOPED_TRACE(set);
    const std::string key = "frontend/" + set + "/";
    const at::Tensor wav = fx.tensor(key + "wav_int16");
    const int64_t sr = fx.integer(key + "sample_rate");
    const std::string path = dir.file(set + ".wav");
    combo::testing::write_sndfile(path, wav.view({1, -1}), static_cast<int>(sr),
                                  SF_FORMAT_WAV | SF_FORMAT_PCM_16);
    // The official reader: int16 / 32768, exact.
    const AudioClip clip = combo::io::read_audio(path);
    EXPECT_TENSOR_EQ(fx.tensor(key + "wav_float32"), clip.samples[0]);
    if (fx.has(key + "resampled_16k")) {
      const at::Tensor ref16k = fx.tensor(key + "resampled_16k");
      EXPECT_TENSOR_NEAR_ABS(ref16k, combo::io::load_audio_16k_mono(path), 1e-4);
      // libswresample is an approximation (1.1e-3 on the espeak fixture); 1e-2 catches a
      // misconfigured filter or a misaligned output.
      const double swr_diff = combo::testing::max_abs_diff(
          ref16k, combo::io::load_audio_16k_mono(path, Resampler::kSwr));
      std::cout << "[ INFO ] " << set << ": libswresample vs resampy max abs difference "
                << swr_diff << std::endl;
      EXPECT_LT(swr_diff, 1e-2);
    }
    EXPECT_TENSOR_NEAR_ABS(fx.tensor(key + "examples"), combo::io::audio_file_to_examples(path),
                           1e-4);
  }
}
