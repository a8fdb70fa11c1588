// combo-ingest: a folder of raw videos plus the subset's CSV -> the AVSBench layout the loaders
// read (AVSBENCH_SPEC 1.2-1.6): S4 and MS3 frames picked by the official rule and resized to
// 224x224 PNG with 16 kHz mono WAVs; AVSS JPEG frames at the video's own size and audio.wav.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <CLI/CLI.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "combo/core/check.h"
#include "combo/core/state_dict.h"
#include "combo/engine/tool.h"
#include "combo/io/audio_reader.h"
#include "combo/io/video.h"

namespace {

namespace fs = std::filesystem;

constexpr int64_t kWavRate = 16000;
const char* const kVideoExtensions[] = {".mp4", ".mkv", ".webm", ".avi", ".mov"};

struct Options {
  std::string dataset;
  fs::path videos, csv, out;
  int64_t size = 224;
  bool allow_silent = false;
  int jobs = 0;
};

// One video to ingest.
struct Job {
  size_t row = 0;      // 1-based data row of the CSV
  std::string name;    // S4/MS3 name, AVSS uid
  std::string split;   // train / val / test
  std::string group;   // S4 category, AVSS label
  double start = 0.0;  // seconds trimmed from the raw video (S4)
  int64_t frames = 5;  // frames (and seconds of audio) written
};

struct Outcome {
  bool ok = false;
  std::string message;  // the reason of a failure, or what was written
  std::vector<std::string> warnings;
};

// ---------------------------------------------------------------------------------------------
// CSV

std::string trim(const std::string& s) {
  size_t b = 0, e = s.size();
  while (b < e && std::isspace(static_cast<unsigned char>(s[b]))) ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) --e;
  return s.substr(b, e - b);
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

// RFC 4180 records (quoted fields with "" escapes and embedded newlines); blank lines dropped.
std::vector<std::vector<std::string>> parse_csv(const std::string& text, const std::string& path) {
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> row;
  std::string field;
  bool quoted = false, any = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (quoted) {
      if (c == '"' && i + 1 < text.size() && text[i + 1] == '"') {
        field += '"';
        ++i;
      } else if (c == '"') {
        quoted = false;
      } else {
        field += c;
      }
      continue;
    }
    if (c == '"') {
      quoted = true;
      any = true;
    } else if (c == ',') {
      row.push_back(trim(field));
      field.clear();
      any = true;
    } else if (c == '\n' || c == '\r') {
      if (c == '\r' && i + 1 < text.size() && text[i + 1] == '\n') ++i;
      if (any || !trim(field).empty()) {
        row.push_back(trim(field));
        rows.push_back(std::move(row));
      }
      row.clear();
      field.clear();
      any = false;
    } else {
      field += c;
    }
  }
  COMBO_CHECK(!quoted, "CSV '", path, "': a quoted field is not closed");
  if (any || !trim(field).empty()) {
    row.push_back(trim(field));
    rows.push_back(std::move(row));
  }
  return rows;
}

// Column positions, by header name when the first row is a header, else by the official
// position.
class Columns {
 public:
  Columns(const std::vector<std::vector<std::string>>& rows, const std::string& path)
      : path_(path) {
    if (rows.empty()) return;
    static const char* const kHeaderWords[] = {"name",  "uid",   "split", "category",
                                               "label", "start", "vid",   "video_id"};
    for (const auto& f : rows.front()) {
      const std::string l = lower(f);
      if (std::any_of(std::begin(kHeaderWords), std::end(kHeaderWords),
                      [&](const char* w) { return l == w; })) {
        header_ = rows.front();
        break;
      }
    }
  }

  bool has_header() const { return !header_.empty(); }

  /// The column called one of `names` when there is a header, else `position`.
  size_t find(const std::vector<std::string>& names, size_t position, bool required_by_name) const {
    if (has_header()) {
      for (const auto& n : names) {
        for (size_t i = 0; i < header_.size(); ++i) {
          if (lower(header_[i]) == n) return i;
        }
      }
      COMBO_CHECK(!required_by_name, "CSV '", path_, "': no column named '", names.front(),
                  "' in the header");
    }
    return position;
  }

 private:
  std::string path_;
  std::vector<std::string> header_;
};

const std::string& field(const std::vector<std::string>& row, size_t col, size_t line,
                         const std::string& what, const std::string& path) {
  COMBO_CHECK(col < row.size(), "CSV '", path, "' row ", line, ": no ", what, " column (",
              row.size(), " fields, wanted column ", col + 1, ")");
  COMBO_CHECK(!row[col].empty(), "CSV '", path, "' row ", line, ": the ", what, " is empty");
  return row[col];
}

std::vector<Job> read_jobs(const Options& opt, std::string* csv_bytes) {
  const std::string path = opt.csv.string();
  std::ifstream in(opt.csv, std::ios::binary);
  COMBO_CHECK(in.good(), "cannot read CSV '", path, "'");
  std::ostringstream ss;
  ss << in.rdbuf();
  *csv_bytes = ss.str();
  const auto rows = parse_csv(*csv_bytes, path);
  const Columns cols(rows, path);
  const bool avss = opt.dataset == "avss";
  const bool s4 = opt.dataset == "s4";
  // Official positions: S4 name,start,category,split; MS3 name,split; AVSS col 1 uid, col 5
  // split, col 6 label (AVSBENCH_SPEC 1.2-1.4, 4.3).
  const size_t name_col =
      avss ? cols.find({"uid"}, 1, true) : cols.find({"name", "vid", "video_id", "uid"}, 0, false);
  const size_t split_col = cols.find({"split"}, avss ? 5 : (s4 ? 3 : 1), avss);
  const size_t group_col = avss ? cols.find({"label"}, 6, true) : cols.find({"category"}, 2, false);
  const size_t start_col = cols.find({"start"}, 1, false);

  std::vector<Job> jobs;
  for (size_t r = cols.has_header() ? 1 : 0; r < rows.size(); ++r) {
    const auto& row = rows[r];
    const size_t line = r + 1;
    Job job;
    job.row = jobs.size() + 1;
    job.name = field(row, name_col, line, avss ? "uid" : "name", path);
    job.split = field(row, split_col, line, "split", path);
    if (avss) {
      job.group = field(row, group_col, line, "label", path);
      COMBO_CHECK(job.group == "v1s" || job.group == "v1m" || job.group == "v2", "CSV '", path,
                  "' row ", line, ": label must be v1s, v1m or v2, got '", job.group, "'");
      job.frames = job.group == "v2" ? 10 : 5;
    } else if (s4) {
      job.group = field(row, group_col, line, "category", path);
      const std::string& start = field(row, start_col, line, "start", path);
      try {
        size_t used = 0;
        job.start = std::stod(start, &used);
        COMBO_CHECK(used == start.size(), "trailing characters");
      } catch (const std::exception&) {
        COMBO_FAIL("CSV '", path, "' row ", line, ": start '", start, "' is not a number");
      }
      COMBO_CHECK(job.start >= 0 && job.start < 10, "CSV '", path, "' row ", line,
                  ": start must be in [0, 10) seconds, got ", job.start);
      // preprocess_s4.py: t = 5 if start <= 5 else 10 - start.
      job.frames = job.start <= 5 ? 5 : static_cast<int64_t>(std::floor(10.0 - job.start));
      COMBO_CHECK(job.frames >= 1, "CSV '", path, "' row ", line, ": start ", job.start,
                  " leaves no whole second of video");
    } else {
      job.frames = 5;
    }
    jobs.push_back(std::move(job));
  }
  return jobs;
}

// ---------------------------------------------------------------------------------------------
// Output

fs::path find_video(const fs::path& dir, const std::string& name) {
  for (const char* ext : kVideoExtensions) {
    const fs::path p = dir / (name + ext);
    std::error_code ec;
    if (fs::is_regular_file(p, ec)) return p;
  }
  // MS3 names may already carry the extension.
  std::error_code ec;
  if (fs::is_regular_file(dir / name, ec)) return dir / name;
  return {};
}

void write_image(const fs::path& path, const cv::Mat& rgb, bool jpeg) {
  fs::create_directories(path.parent_path());
  cv::Mat bgr;
  cv::cvtColor(rgb, bgr, cv::COLOR_RGB2BGR);
  std::vector<uchar> bytes;
  std::vector<int> params;
  if (jpeg) params = {cv::IMWRITE_JPEG_QUALITY, 95};
  COMBO_CHECK(cv::imencode(jpeg ? ".jpg" : ".png", bgr, bytes, params), "cannot encode '",
              path.string(), "'");
  combo::write_file_atomic(path.string(), std::string(bytes.begin(), bytes.end()));
}

void put_u32(std::string& s, uint32_t v) {
  for (int i = 0; i < 4; ++i) s += static_cast<char>((v >> (8 * i)) & 0xFF);
}
void put_u16(std::string& s, uint16_t v) {
  s += static_cast<char>(v & 0xFF);
  s += static_cast<char>((v >> 8) & 0xFF);
}

// 16-bit PCM mono RIFF/WAVE of samples float [T] in [-1, 1].
void write_wav(const fs::path& path, const at::Tensor& mono, int64_t rate) {
  fs::create_directories(path.parent_path());
  const at::Tensor pcm = mono.to(at::kDouble)
                             .mul(32768.0)
                             .round()
                             .clamp(-32768.0, 32767.0)
                             .to(at::kShort)
                             .contiguous();
  const uint32_t data_bytes = static_cast<uint32_t>(pcm.numel() * 2);
  std::string b;
  b.reserve(44 + data_bytes);
  b += "RIFF";
  put_u32(b, 36 + data_bytes);
  b += "WAVEfmt ";
  put_u32(b, 16);
  put_u16(b, 1);  // PCM
  put_u16(b, 1);  // mono
  put_u32(b, static_cast<uint32_t>(rate));
  put_u32(b, static_cast<uint32_t>(rate * 2));
  put_u16(b, 2);
  put_u16(b, 16);
  b += "data";
  put_u32(b, data_bytes);
  const int16_t* p = pcm.data_ptr<int16_t>();
  for (int64_t i = 0; i < pcm.numel(); ++i) put_u16(b, static_cast<uint16_t>(p[i]));
  combo::write_file_atomic(path.string(), b);
}

// Audio of [start, start + seconds) as 16 kHz mono float64 [T]; silence without an audio track.
at::Tensor clip_audio(const fs::path& video, bool has_audio, double start, int64_t seconds,
                      Outcome* outcome) {
  const int64_t wanted = seconds * kWavRate;
  if (!has_audio) return at::zeros({wanted}, at::kDouble);
  const combo::io::AudioClip clip = combo::io::read_audio(video.string());
  const at::Tensor mono = combo::io::to_mono(clip);
  const int64_t sr = clip.sample_rate;
  COMBO_CHECK(sr > 0, "'", video.string(), "': audio sample rate ", sr);
  const int64_t total = mono.size(0);
  const int64_t s0 = std::min(total, static_cast<int64_t>(std::llround(start * sr)));
  const int64_t s1 = std::min(
      total, static_cast<int64_t>(std::llround((start + seconds) * static_cast<double>(sr))));
  COMBO_CHECK(s1 > s0, "'", video.string(), "': the audio (", clip.duration(),
              " s) ends before the clip starts at ", start, " s");
  at::Tensor out = combo::io::resample_swr(mono.slice(0, s0, s1), sr, kWavRate);
  if (out.size(0) > wanted) out = out.slice(0, 0, wanted);
  if (out.size(0) + kWavRate / 100 < wanted) {
    outcome->warnings.push_back(combo::str_cat("audio is ", out.size(0) / double(kWavRate),
                                               " s, shorter than ", seconds, " s"));
  }
  return out;
}

Outcome ingest(const Options& opt, const Job& job) {
  Outcome outcome;
  const fs::path video = find_video(opt.videos, job.name);
  if (video.empty()) {
    outcome.message = combo::str_cat("no video file '", (opt.videos / job.name).string(),
                                     ".{mp4,mkv,webm,avi,mov}'");
    return outcome;
  }
  try {
    const combo::io::VideoInfo info = combo::io::probe_video(video.string());
    if (!info.has_audio) {
      if (!opt.allow_silent) {
        outcome.message = combo::str_cat("'", video.string(),
                                         "' has no audio track (use --allow-silent to write "
                                         "silence)");
        return outcome;
      }
      outcome.warnings.push_back(
          combo::str_cat("'", video.string(), "' has no audio track: wrote silence"));
    }
    combo::io::FrameSelection sel;
    sel.mode = combo::io::FrameSelection::Mode::kAvsbench;
    sel.count = job.frames;
    sel.start = job.start;
    const bool avss = opt.dataset == "avss";
    if (!avss && opt.size > 0) sel.width = sel.height = opt.size;
    const combo::io::DecodedFrames decoded = combo::io::read_video_frames(video.string(), sel);
    COMBO_CHECK(static_cast<int64_t>(decoded.frames.size()) == job.frames, "'", video.string(),
                "': decoded ", decoded.frames.size(), " frames, wanted ", job.frames);
    // Clamped positions repeat the last frame's index.
    const auto& index = decoded.frame_index;
    if (index.size() >= 2 && index.back() == index[index.size() - 2]) {
      outcome.warnings.push_back(combo::str_cat("the video is short (", decoded.info.num_frames,
                                                " frames): the last frame is repeated"));
    }

    fs::path wav;
    for (int64_t k = 0; k < job.frames; ++k) {
      const cv::Mat& frame = decoded.frames[static_cast<size_t>(k)];
      fs::path png;
      if (opt.dataset == "s4") {
        png = opt.out / "s4_data" / "visual_frames" / job.split / job.group / job.name /
              combo::str_cat(job.name, "_", k + 1, ".png");
      } else if (opt.dataset == "ms3") {
        png = opt.out / "ms3_data" / "visual_frames" / job.name /
              combo::str_cat(job.name, ".mp4_", k + 1, ".png");
      } else {
        png = opt.out / job.group / job.name / "frames" / combo::str_cat(k, ".jpg");
      }
      write_image(png, frame, avss);
    }
    if (opt.dataset == "s4") {
      wav = opt.out / "s4_data" / "audio_wav" / job.split / job.group / (job.name + ".wav");
    } else if (opt.dataset == "ms3") {
      wav = opt.out / "ms3_data" / "audio_wav" / job.split / (job.name + ".wav");
    } else {
      wav = opt.out / job.group / job.name / "audio.wav";
    }
    const at::Tensor audio = clip_audio(video, info.has_audio, job.start, job.frames, &outcome);
    write_wav(wav, audio, kWavRate);
    outcome.ok = true;
    outcome.message = combo::str_cat(job.frames, " frames ", decoded.frames.front().cols, "x",
                                     decoded.frames.front().rows, " (", decoded.info.fps, " fps), ",
                                     audio.size(0) / double(kWavRate), " s audio");
  } catch (const std::exception& e) {
    outcome.ok = false;
    outcome.message = e.what();
  }
  return outcome;
}

int run(const Options& opt) {
  std::error_code ec;
  COMBO_CHECK(fs::is_directory(opt.videos, ec), "--videos '", opt.videos.string(),
              "' is not a folder");
  std::string csv_bytes;
  const std::vector<Job> jobs = read_jobs(opt, &csv_bytes);
  COMBO_CHECK(!jobs.empty(), "CSV '", opt.csv.string(), "' lists no videos");
  fs::create_directories(opt.out);
  const char* meta = opt.dataset == "s4"    ? "s4_meta_data.csv"
                     : opt.dataset == "ms3" ? "ms3_meta_data.csv"
                                            : "metadata.csv";
  combo::write_file_atomic((opt.out / meta).string(), csv_bytes);

  // Parallel over videos; each libav* decoder then runs on one thread of its own.
  const unsigned hw = std::max(1u, std::thread::hardware_concurrency());
  const size_t threads =
      std::min(jobs.size(), static_cast<size_t>(opt.jobs > 0 ? opt.jobs : static_cast<int>(hw)));
  at::set_num_threads(1);
  std::cout << "combo-ingest: " << jobs.size() << " " << opt.dataset << " videos from '"
            << opt.videos.string() << "' -> '" << opt.out.string() << "' with " << threads
            << " job(s)" << std::endl;

  std::vector<Outcome> outcomes(jobs.size());
  std::atomic<size_t> next{0};
  std::atomic<size_t> done{0};
  std::mutex print;
  auto worker = [&] {
    while (true) {
      const size_t i = next.fetch_add(1);
      if (i >= jobs.size()) return;
      outcomes[i] = ingest(opt, jobs[i]);
      const size_t n = done.fetch_add(1) + 1;
      std::lock_guard<std::mutex> lock(print);
      std::cout << "[" << n << "/" << jobs.size() << "] " << jobs[i].name << ": "
                << (outcomes[i].ok ? "ok, " : "FAILED: ") << outcomes[i].message << "\n";
      for (const auto& w : outcomes[i].warnings) {
        std::cout << "  warning: " << jobs[i].name << ": " << w << "\n";
      }
      std::cout.flush();
    }
  };
  std::vector<std::thread> pool;
  for (size_t t = 1; t < threads; ++t) pool.emplace_back(worker);
  worker();
  for (auto& t : pool) t.join();

  size_t ok = 0, warned = 0;
  for (const auto& o : outcomes) {
    ok += o.ok ? 1 : 0;
    warned += (o.ok && !o.warnings.empty()) ? 1 : 0;
  }
  const size_t failed = jobs.size() - ok;
  std::cout << "summary: " << ok << " ok (" << warned << " with warnings), " << failed
            << " failed\n";
  for (size_t i = 0; i < jobs.size(); ++i) {
    if (!outcomes[i].ok) {
      std::cout << "  failed: " << jobs[i].name << " (CSV row " << jobs[i].row
                << "): " << outcomes[i].message << "\n";
    }
  }
  std::cout.flush();
  return failed == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  combo::engine::prefer_passive_openmp(argc, argv);
  CLI::App app{
      "combo-ingest: raw videos + a subset CSV -> the AVSBench layout (frames and 16 kHz WAVs)"};
  Options opt;
  std::string videos, csv, out;
  app.add_option("--dataset", opt.dataset, "subset layout: s4, ms3 or avss")
      ->required()
      ->check(CLI::IsMember({"s4", "ms3", "avss"}));
  app.add_option("--videos", videos, "folder of raw videos <name>.{mp4,mkv,webm,avi,mov}")
      ->required();
  app.add_option("--csv", csv,
                 "subset CSV (s4: name,start,category,split; ms3: name,split; avss: uid, label, "
                 "split by name)")
      ->required();
  app.add_option("--out", out, "output root (the Single-source / Multi-sources / AVSS folder)")
      ->required();
  app.add_option("--size", opt.size, "s4/ms3 frame size (0 keeps the video's size)")
      ->check(CLI::NonNegativeNumber);
  app.add_flag("--allow-silent", opt.allow_silent,
               "write silence (with a warning) for videos without an audio track");
  app.add_option("--jobs", opt.jobs, "videos processed in parallel (0 = one per core)")
      ->check(CLI::NonNegativeNumber);
  CLI11_PARSE(app, argc, argv);
  opt.videos = videos;
  opt.csv = csv;
  opt.out = out;
  return combo::engine::run_tool([&] { return run(opt); });
}
