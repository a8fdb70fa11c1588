#include "combo/data/avsbench.h"

#include <ATen/ATen.h>
#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>
#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "combo/audio/log_mel.h"
#include "combo/core/check.h"
#include "combo/io/audio_reader.h"
#include "combo/io/image.h"
#include "combo/io/pkl_reader.h"

namespace combo::data {
namespace {

namespace fs = std::filesystem;

std::string join(const fs::path& a) { return a.string(); }

bool path_exists(const fs::path& p) {
  std::error_code ec;
  return fs::exists(p, ec);
}

// ---- CSV ----------------------------------------------------------------------------------

struct Csv {
  std::vector<std::string> header;  // lower-cased, trimmed; empty when the file has none
  std::vector<std::vector<std::string>> rows;
  std::string path;
  /// Column by header name (any of `names`), else by position; -1 when neither.
  int column(std::initializer_list<const char*> names, int position) const {
    for (const char* n : names) {
      auto it = std::find(header.begin(), header.end(), n);
      if (it != header.end()) return static_cast<int>(it - header.begin());
    }
    return position;
  }
};

std::string trim(std::string s) {
  const auto b = s.find_first_not_of(" \t\r\n\"");
  const auto e = s.find_last_not_of(" \t\r\n\"");
  return b == std::string::npos ? std::string() : s.substr(b, e - b + 1);
}

std::vector<std::string> split_csv_line(const std::string& line) {
  std::vector<std::string> out;
  std::string cur;
  bool quoted = false;
  for (size_t i = 0; i < line.size(); ++i) {
    const char c = line[i];
    if (c == '"') {
      if (quoted && i + 1 < line.size() && line[i + 1] == '"') {
        cur += '"';
        ++i;
      } else {
        quoted = !quoted;
      }
    } else if (c == ',' && !quoted) {
      out.push_back(trim(cur));
      cur.clear();
    } else {
      cur += c;
    }
  }
  out.push_back(trim(cur));
  return out;
}

// A header is recognised by a `split` column (every AVSBench metadata file has one).
Csv read_csv(const std::string& path) {
  std::ifstream in(path);
  COMBO_CHECK(in.good(), "cannot open metadata CSV ", path);
  Csv csv;
  csv.path = path;
  std::string line;
  bool first = true;
  while (std::getline(in, line)) {
    if (trim(line).empty()) continue;
    auto cells = split_csv_line(line);
    if (first) {
      first = false;
      std::vector<std::string> lower = cells;
      for (auto& c : lower) std::transform(c.begin(), c.end(), c.begin(), ::tolower);
      if (std::find(lower.begin(), lower.end(), "split") != lower.end()) {
        csv.header = lower;
        continue;
      }
    }
    csv.rows.push_back(std::move(cells));
  }
  return csv;
}

const std::string& cell(const Csv& csv, size_t row, int col, const char* what) {
  COMBO_CHECK(col >= 0 && col < static_cast<int>(csv.rows[row].size()), csv.path, ": row ",
              row + 1 + (csv.header.empty() ? 0 : 1), " has no ", what, " column (", col, ")");
  return csv.rows[row][col];
}

std::vector<std::string> sorted_dirs(const fs::path& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (e.is_directory()) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

/// Files <prefix>1<suffix>, <prefix>2<suffix>, ... in order (AVSBench numbering). A gap (a
/// higher number present while a lower one is missing) is an error naming the missing file.
std::vector<std::string> numbered(const fs::path& dir, const std::string& prefix,
                                  const std::string& suffix, int first) {
  std::vector<std::string> out;
  for (int k = first;; ++k) {
    const fs::path p = dir / (prefix + std::to_string(k) + suffix);
    if (!path_exists(p)) break;
    out.push_back(p.string());
  }
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name.size() <= prefix.size() + suffix.size() ||
        name.compare(0, prefix.size(), prefix) != 0 ||
        name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0)
      continue;
    const std::string num = name.substr(prefix.size(), name.size() - prefix.size() - suffix.size());
    if (num.find_first_not_of("0123456789") != std::string::npos) continue;
    const int64_t k = std::stoll(num);
    COMBO_CHECK(k < first + static_cast<int64_t>(out.size()), "frame missing: ",
                (dir / (prefix + std::to_string(first + out.size()) + suffix)).string(), " (", name,
                " exists)");
  }
  return out;
}

int64_t count_entries(const fs::path& dir, const std::string& ext) {
  int64_t n = 0;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (e.path().extension() == ext) ++n;
  return n;
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), ::tolower);
  return s;
}

// ---- per-subset indexes -------------------------------------------------------------------

void s4_record(VideoRecord& r, const fs::path& data, bool train) {
  const fs::path rel = fs::path(r.split) / r.group / r.id;
  const fs::path frames_dir = data / "visual_frames" / rel;
  COMBO_CHECK(path_exists(frames_dir), "S4 video ", r.id,
              ": frame folder missing: ", frames_dir.string());
  r.frames = numbered(frames_dir, r.id + "_", ".png", 1);
  COMBO_CHECK(!r.frames.empty(), "S4 video ", r.id, ": no frame ", r.id, "_1.png in ",
              frames_dir.string());
  const fs::path gt_dir = data / "gt_masks" / rel;
  const size_t n_gt = train ? 1 : r.frames.size();
  for (size_t k = 1; k <= n_gt; ++k)
    r.gts.push_back((gt_dir / (r.id + "_" + std::to_string(k) + ".png")).string());
  for (size_t k = 1; k <= r.frames.size(); ++k)
    r.maskiges.push_back(
        (data / "pre_SAM_mask" / rel / (r.id + "_" + std::to_string(k) + "_mask_color.png"))
            .string());
  r.wav = (data / "audio_wav" / r.split / r.group / (r.id + ".wav")).string();
  r.pkl = (data / "audio_log_mel" / r.split / r.group / (r.id + ".pkl")).string();
}

std::vector<VideoRecord> index_s4(const fs::path& root, const DatasetOptions& o,
                                  std::vector<std::string>& index_errors) {
  const fs::path data = root / "s4_data";
  std::vector<VideoRecord> out;
  const fs::path csv_path = root / "s4_meta_data.csv";
  if (path_exists(csv_path)) {
    const Csv csv = read_csv(csv_path.string());
    const int c_name = csv.column({"name", "video_name", "vid", "video", "uid"}, 0);
    const int c_start = csv.column({"start"}, 1);
    const int c_cat = csv.column({"category"}, 2);
    const int c_split = csv.column({"split"}, 3);
    for (size_t i = 0; i < csv.rows.size(); ++i) {
      if (cell(csv, i, c_split, "split") != o.split) continue;
      VideoRecord r;
      r.id = cell(csv, i, c_name, "name");
      r.group = cell(csv, i, c_cat, "category");
      r.split = o.split;
      const std::string& start = cell(csv, i, c_start, "start");
      r.start = start.empty() ? 0.0 : std::atof(start.c_str());
      out.push_back(std::move(r));
    }
  } else {
    // COMBO's registration: sorted listing of visual_frames/<split>/<category>/<video>.
    const fs::path split_dir = data / "visual_frames" / o.split;
    COMBO_CHECK(path_exists(split_dir), "S4: neither ", csv_path.string(), " nor ",
                split_dir.string(), " exists");
    for (const auto& cat : sorted_dirs(split_dir))
      for (const auto& vid : sorted_dirs(split_dir / cat)) {
        VideoRecord r;
        r.id = vid;
        r.group = cat;
        r.split = o.split;
        out.push_back(std::move(r));
      }
  }
  std::vector<VideoRecord> kept;
  for (auto& r : out) {
    try {
      s4_record(r, data, o.train);
      kept.push_back(std::move(r));
    } catch (const combo::Error& e) {
      if (!o.skip_bad) throw;
      index_errors.push_back(e.what());
    }
  }
  return kept;
}

std::vector<VideoRecord> index_ms3(const fs::path& root, const DatasetOptions& o,
                                   std::vector<std::string>& index_errors) {
  const fs::path data = root / "ms3_data";
  std::vector<std::string> names;
  const fs::path csv_path = root / "ms3_meta_data.csv";
  if (path_exists(csv_path)) {
    const Csv csv = read_csv(csv_path.string());
    const int c_name = csv.column({"name", "video_name", "vid", "video", "uid"}, 0);
    const int c_split = csv.column({"split"}, 1);
    for (size_t i = 0; i < csv.rows.size(); ++i)
      if (cell(csv, i, c_split, "split") == o.split) names.push_back(cell(csv, i, c_name, "name"));
  } else {
    const fs::path split_dir = data / "gt_masks" / o.split;
    COMBO_CHECK(path_exists(split_dir), "MS3: neither ", csv_path.string(), " nor ",
                split_dir.string(), " exists");
    names = sorted_dirs(split_dir);
  }
  std::vector<VideoRecord> out;
  for (const auto& name : names) {
    VideoRecord r;
    r.id = name;
    r.split = o.split;
    try {
      const fs::path frames_dir = data / "visual_frames" / name;
      COMBO_CHECK(path_exists(frames_dir), "MS3 video ", name,
                  ": frame folder missing: ", frames_dir.string());
      r.frames = numbered(frames_dir, name + ".mp4_", ".png", 1);
      COMBO_CHECK(!r.frames.empty(), "MS3 video ", name, ": no frame ", name, ".mp4_1.png in ",
                  frames_dir.string());
      for (size_t k = 1; k <= r.frames.size(); ++k) {
        r.gts.push_back(
            (data / "gt_masks" / o.split / name / (name + "_" + std::to_string(k) + ".png"))
                .string());
        r.maskiges.push_back((data / "pre_SAM_mask" / name /
                              (name + ".mp4_" + std::to_string(k) + "_mask_color.png"))
                                 .string());
      }
      r.wav = (data / "audio_wav" / o.split / (name + ".wav")).string();
      r.pkl = (data / "audio_log_mel" / o.split / (name + ".pkl")).string();
    } catch (const combo::Error& e) {
      if (!o.skip_bad) throw;
      index_errors.push_back(e.what());
      continue;
    }
    out.push_back(std::move(r));
  }
  return out;
}

std::vector<VideoRecord> index_avss(const fs::path& root, const DatasetOptions& o,
                                    std::vector<std::string>& index_errors) {
  const Csv csv = read_csv((root / "metadata.csv").string());
  COMBO_CHECK(!csv.header.empty(), (root / "metadata.csv").string(),
              ": expected a header with the columns uid, label and split");
  const int c_uid = csv.column({"uid"}, -1), c_label = csv.column({"label"}, -1),
            c_split = csv.column({"split"}, -1);
  COMBO_CHECK(c_uid >= 0 && c_label >= 0, (root / "metadata.csv").string(),
              ": the columns uid and label are required");
  COMBO_CHECK(o.avss_frames == "auto" || o.avss_frames == "processed" || o.avss_frames == "raw",
              "data.avss_frames must be auto, processed or raw, got '", o.avss_frames, "'");
  std::vector<VideoRecord> out;
  for (size_t i = 0; i < csv.rows.size(); ++i) {
    if (cell(csv, i, c_split, "split") != o.split) continue;
    VideoRecord r;
    r.id = cell(csv, i, c_uid, "uid");
    r.group = cell(csv, i, c_label, "label");
    r.split = o.split;
    COMBO_CHECK(r.group == "v1s" || r.group == "v1m" || r.group == "v2",
                (root / "metadata.csv").string(), ": video ", r.id, " has label '", r.group,
                "', expected v1s, v1m or v2");
    try {
      const fs::path dir = root / r.group / r.id;
      COMBO_CHECK(path_exists(dir), "AVSS video ", r.id, ": folder missing: ", dir.string());
      const bool processed = o.avss_frames == "processed" ||
                             (o.avss_frames == "auto" && path_exists(dir / "processed_frames"));
      const fs::path fdir = dir / (processed ? "processed_frames" : "frames");
      COMBO_CHECK(path_exists(fdir), "AVSS video ", r.id, ": folder missing: ", fdir.string());
      // The official loader counts the entries and opens 0.jpg .. n-1.jpg.
      const int64_t n = count_entries(fdir, ".jpg");
      COMBO_CHECK(n > 0, "AVSS video ", r.id, ": no .jpg frame in ", fdir.string());
      for (int64_t k = 0; k < n; ++k)
        r.frames.push_back((fdir / (std::to_string(k) + ".jpg")).string());
      // Labels: COMBO's index maps, else AVSBench's colour maps.
      fs::path ldir = dir / (processed ? "processed_labels_semantic" : "labels_semantic");
      if (!processed && !path_exists(ldir)) ldir = dir / "labels_rgb";
      const int64_t expected = r.group == "v2" ? 10 : 5;
      const int64_t n_labels = count_entries(ldir, ".png");
      if (o.split != "train")
        COMBO_CHECK(n_labels == expected, "AVSS video ", r.id, " (", r.group, ", split ", o.split,
                    "): expected ", expected, " label maps in ", ldir.string(), ", found ",
                    n_labels);
      COMBO_CHECK(n_labels > 0, "AVSS video ", r.id, ": no label map in ", ldir.string());
      for (int64_t k = 0; k < n_labels; ++k)
        r.gts.push_back((ldir / (std::to_string(k) + ".png")).string());
      const fs::path mdir = root / "pre_SAM_mask" / "AVSBench_semantic" / r.group / r.id /
                            (processed ? "processed_frames" : "frames");
      for (int64_t k = 0; k < n; ++k)
        r.maskiges.push_back((mdir / (std::to_string(k) + "_mask_color.png")).string());
      r.wav = (dir / "audio.wav").string();
      r.pkl = (dir / "audio.pkl").string();
    } catch (const combo::Error& e) {
      if (!o.skip_bad) throw;
      index_errors.push_back(e.what());
      continue;
    }
    out.push_back(std::move(r));
  }
  return out;
}

std::vector<std::string> read_label2idx(const fs::path& path) {
  std::ifstream in(path);
  COMBO_CHECK(in.good(), "cannot open ", path.string());
  nlohmann::json j;
  try {
    in >> j;
  } catch (const std::exception& e) {
    COMBO_FAIL("cannot parse ", path.string(), ": ", e.what());
  }
  COMBO_CHECK(j.is_object() && !j.empty(), path.string(), ": expected an object name -> id");
  std::vector<std::string> names(j.size());
  for (auto it = j.begin(); it != j.end(); ++it) {
    COMBO_CHECK(it.value().is_number_integer(), path.string(), ": id of '", it.key(),
                "' is not an integer");
    const int64_t id = it.value().get<int64_t>();
    COMBO_CHECK(id >= 0 && id < static_cast<int64_t>(names.size()) && names[id].empty(),
                path.string(), ": ids must be 0..", names.size() - 1, " without repeats; '",
                it.key(), "' has ", id);
    names[id] = it.key();
  }
  return names;
}

// ---- loading ------------------------------------------------------------------------------

at::Tensor stack_chw(const std::vector<cv::Mat>& images) {
  std::vector<at::Tensor> t;
  t.reserve(images.size());
  for (const auto& m : images) t.push_back(io::mat_to_chw(m));
  return at::stack(t);
}

}  // namespace

std::string resolve_root(DatasetKind kind, const std::string& root) {
  const fs::path r(root);
  std::vector<fs::path> tries;
  auto ok = [&](const fs::path& p) {
    switch (kind) {
      case DatasetKind::kS4:
        return path_exists(p / "s4_data");
      case DatasetKind::kMS3:
        return path_exists(p / "ms3_data");
      case DatasetKind::kAVSS:
        return path_exists(p / "metadata.csv");
    }
    return false;
  };
  switch (kind) {
    case DatasetKind::kS4:
      tries = {r, r / "Single-source", r / "AVSBench_object" / "Single-source",
               r / "avsbench_data" / "Single-source",
               r / "AVS_dataset" / "AVSBench_object" / "Single-source"};
      break;
    case DatasetKind::kMS3:
      tries = {r, r / "Multi-sources", r / "AVSBench_object" / "Multi-sources",
               r / "avsbench_data" / "Multi-sources",
               r / "AVS_dataset" / "AVSBench_object" / "Multi-sources"};
      break;
    case DatasetKind::kAVSS:
      tries = {r, r / "AVSBench_semantic", r / "AVSS", r / "AVS_dataset" / "AVSBench_semantic",
               r / "v2_data"};
      break;
  }
  for (const auto& p : tries)
    if (ok(p)) return p.string();
  std::ostringstream msg;
  msg << "no " << to_string(kind) << " dataset under '" << root << "'; looked for "
      << (kind == DatasetKind::kS4    ? "s4_data/"
          : kind == DatasetKind::kMS3 ? "ms3_data/"
                                      : "metadata.csv")
      << " in:";
  for (const auto& p : tries) msg << " " << p.string();
  COMBO_FAIL(msg.str());
}

std::vector<std::array<uint8_t, 3>> avss_palette(int64_t num_classes) {
  std::vector<std::array<uint8_t, 3>> pal(num_classes);
  for (int64_t j = 0; j < num_classes; ++j) {
    int64_t lab = j;
    int r = 0, g = 0, b = 0;
    for (int i = 0; lab > 0; ++i, lab >>= 3) {
      r |= ((lab >> 0) & 1) << (7 - i);
      g |= ((lab >> 1) & 1) << (7 - i);
      b |= ((lab >> 2) & 1) << (7 - i);
    }
    pal[j] = {static_cast<uint8_t>(r), static_cast<uint8_t>(g), static_cast<uint8_t>(b)};
  }
  return pal;
}

cv::Mat avss_color_to_labels(const cv::Mat& rgb) {
  COMBO_CHECK(rgb.type() == CV_8UC3, "avss_color_to_labels: expected an RGB image");
  static const auto pal = avss_palette(71);
  // Colour -> first palette index (the official argmax over equality maps picks the first).
  std::map<uint32_t, uint8_t> lut;
  for (size_t i = pal.size(); i-- > 0;)
    lut[(pal[i][0] << 16) | (pal[i][1] << 8) | pal[i][2]] = static_cast<uint8_t>(i);
  cv::Mat out(rgb.rows, rgb.cols, CV_8UC1);
  for (int y = 0; y < rgb.rows; ++y) {
    const auto* p = rgb.ptr<cv::Vec3b>(y);
    auto* o = out.ptr<uint8_t>(y);
    for (int x = 0; x < rgb.cols; ++x) {
      const auto it = lut.find((p[x][0] << 16) | (p[x][1] << 8) | p[x][2]);
      o[x] = it == lut.end() ? 0 : it->second;  // no palette colour -> background
    }
  }
  return out;
}

AvsDataset::AvsDataset(DatasetOptions options) : options_(std::move(options)) {
  COMBO_CHECK(options_.audio_source == "wav" || options_.audio_source == "pkl",
              "data.audio_source must be wav or pkl, got '", options_.audio_source, "'");
  root_ = resolve_root(options_.kind, options_.root);
  switch (options_.kind) {
    case DatasetKind::kS4:
      records_ = index_s4(root_, options_, index_errors_);
      class_names_ = {"background", "object"};
      break;
    case DatasetKind::kMS3:
      records_ = index_ms3(root_, options_, index_errors_);
      class_names_ = {"background", "object"};
      break;
    case DatasetKind::kAVSS: {
      records_ = index_avss(root_, options_, index_errors_);
      const fs::path l2i = fs::path(root_) / "label2idx.json";
      class_names_ = path_exists(l2i) ? read_label2idx(l2i) : std::vector<std::string>{};
      break;
    }
  }
  for (const auto& e : index_errors_)
    spdlog::warn("skipping a video of split {}: {}", options_.split, e);
  COMBO_CHECK(!records_.empty(), "no video of split '", options_.split, "' in ", root_,
              index_errors_.empty() ? "" : str_cat(" (", index_errors_.size(), " skipped as bad)"));
  if (options_.augment)
    augmentation_ = std::make_unique<ClipAugmentation>(options_.augment_options);
}

const VideoRecord& AvsDataset::record(int64_t index) const {
  COMBO_CHECK(index >= 0 && index < size(), "dataset index ", index, " out of range [0, ", size(),
              ")");
  return records_[index];
}

VideoSample AvsDataset::load(int64_t index, Rng& rng) const {
  const VideoRecord& r = record(index);
  const bool avss = options_.kind == DatasetKind::kAVSS;
  const int64_t t = static_cast<int64_t>(r.frames.size());

  // AVSS raw frames follow the official loaders' geometry; processed frames are used as they are.
  AvssResize avss_rule = AvssResize::kNone;
  if (avss && r.frames.front().find("/processed_frames/") == std::string::npos)
    avss_rule = options_.train ? AvssResize::kCropResize : AvssResize::kDirectResize;

  std::vector<cv::Mat> frames, maskiges, labels;
  for (int64_t k = 0; k < t; ++k) {
    cv::Mat f = io::read_rgb(r.frames[k]);
    if (avss_rule != AvssResize::kNone) f = avss_resize(f, avss_rule, options_.image_size, false);
    if (!frames.empty())
      COMBO_CHECK(f.size() == frames.front().size(), "frame ", r.frames[k], " is ", f.cols, "x",
                  f.rows, ", frame 1 of the video is ", frames.front().cols, "x",
                  frames.front().rows);
    frames.push_back(f);
  }
  const int64_t h = frames.front().rows, w = frames.front().cols;

  if (options_.load_maskige) {
    for (int64_t k = 0; k < t; ++k) {
      COMBO_CHECK(path_exists(r.maskiges[k]), "Maskige missing: ", r.maskiges[k],
                  " (make them with combo-maskige, or set model.pre_sam.enabled=false)");
      cv::Mat m = io::read_rgb(r.maskiges[k]);
      if (avss_rule != AvssResize::kNone) m = avss_resize(m, avss_rule, options_.image_size, true);
      if (m.rows != h || m.cols != w) {
        // Maskiges are label images: nearest keeps their colours.
        cv::Mat resized;
        cv::resize(m, resized, cv::Size(static_cast<int>(w), static_cast<int>(h)), 0, 0,
                   cv::INTER_NEAREST);
        m = resized;
      }
      maskiges.push_back(m);
    }
  }

  // Ground truth: which frames carry it (AVSBENCH_SPEC 1.7 / 2.3 with COMBO's v1s rule).
  std::vector<bool> has_gt(t, false);
  for (int64_t k = 0; k < t; ++k) {
    bool g = k < static_cast<int64_t>(r.gts.size());
    if (avss && r.group == "v1s" && options_.train) g = k == 0;
    has_gt[k] = g;
  }
  for (int64_t k = 0; k < t; ++k) {
    if (!has_gt[k]) {
      labels.emplace_back(static_cast<int>(h), static_cast<int>(w), CV_8UC1, cv::Scalar(255));
      continue;
    }
    const std::string& path = r.gts[k];
    cv::Mat lab;
    if (avss) {
      if (path.find("/labels_rgb/") != std::string::npos) {
        lab = avss_color_to_labels(io::read_rgb(path));
      } else {
        lab = io::read_label_map(path);
      }
      if (avss_rule != AvssResize::kNone)
        lab = avss_resize(lab, avss_rule, options_.image_size, true);
      const int64_t nc = class_names_.empty() ? 71 : static_cast<int64_t>(class_names_.size());
      double maxv = 0;
      cv::Mat valid = lab != 255;
      cv::minMaxLoc(lab, nullptr, &maxv, nullptr, nullptr, valid);
      COMBO_CHECK(maxv < nc, "label map ", path, " holds class ", maxv, ", the dataset has ", nc,
                  " classes (0..", nc - 1, ", 255 = ignore)");
    } else {
      cv::Mat raw = io::read_label_map(path);
      if (options_.check_masks) {
        const int bad = cv::countNonZero((raw != 0) & (raw != 255));
        if (bad > 0) {
          cv::Mat mask = (raw != 0) & (raw != 255);
          cv::Point at;
          cv::minMaxLoc(mask, nullptr, nullptr, nullptr, &at);
          COMBO_FAIL("mask ", path, " holds values other than 0 and 255 (", bad,
                     " pixels, e.g. value ", static_cast<int>(raw.at<uint8_t>(at)), " at x=", at.x,
                     " y=", at.y,
                     "); AVSBench masks are 0/255 (set data.check_masks=false to "
                     "read them as the official code does: value // 255)");
        }
      }
      // COMBO's mapper: integer division by 255.
      lab = (raw == 255) / 255;
    }
    COMBO_CHECK(lab.rows == h && lab.cols == w, "ground truth ", path, " is ", lab.cols, "x",
                lab.rows, ", its frame is ", w, "x", h);
    labels.push_back(lab);
  }

  // Audio: one VGGish example per frame.
  at::Tensor mel;
  const audio::PadMode pad = avss ? audio::PadMode::kZeros : audio::PadMode::kRepeatLast;
  if (options_.silence_audio) {
    mel = at::full({t, 1, audio::kExampleWindowFrames, audio::kNumMelBins},
                   std::log(audio::kLogOffset), at::kFloat);
  } else if (options_.audio_source == "pkl") {
    COMBO_CHECK(path_exists(r.pkl), "log-mel file missing: ", r.pkl,
                " (or use data.audio_source=wav)");
    mel = io::read_log_mel_pkl(r.pkl);
    mel = audio::pad_examples(mel, std::max<int64_t>(t, mel.size(0)), pad);
  } else {
    COMBO_CHECK(path_exists(r.wav), "audio file missing: ", r.wav);
    mel = io::audio_file_to_examples(r.wav);
    // S4/MS3 clips have one second per frame; a wav too short for its frames is damaged
    // (for example truncated), not a clip to pad silently. AVSS pads with zeros officially.
    COMBO_CHECK(avss || mel.size(0) >= t, "audio ", r.wav, " gives ", mel.size(0),
                " VGGish example(s) (0.96 s each), the video has ", t,
                " frames: the file is too short or truncated");
    mel = audio::pad_examples(mel, std::max<int64_t>(t, mel.size(0)), pad);
  }
  mel = mel.slice(0, 0, t).contiguous();

  VideoSample s;
  s.orig_height = h;
  s.orig_width = w;
  if (augmentation_) {
    const ClipGeometry g = augmentation_->draw(h, w, rng);
    for (auto& f : frames) {
      f = augmentation_->apply_image(f, g);
      augmentation_->color_jitter(f, rng);
    }
    for (auto& m : maskiges) {
      m = augmentation_->apply_image(m, g);
      if (augmentation_->options().jitter_maskige) augmentation_->color_jitter(m, rng);
    }
    for (auto& l : labels) l = augmentation_->apply_labels(l, g);
  }

  s.video_id = r.id;
  s.group = r.group;
  s.index = index;
  s.frames = stack_chw(frames);
  if (!maskiges.empty()) s.maskiges = stack_chw(maskiges);
  s.log_mel = mel;
  s.labels = stack_chw(labels).squeeze(1).to(at::kLong);
  s.has_gt = at::empty({t}, at::kBool);
  for (int64_t k = 0; k < t; ++k) s.has_gt.data_ptr<bool>()[k] = has_gt[k];
  s.slots = avss ? 10 : t;
  s.frame_files = r.frames;
  return s;
}

void register_media_datasets() {
  register_dataset_source("files", [](const DatasetOptions& o) -> std::shared_ptr<const Dataset> {
    return std::make_shared<const AvsDataset>(o);
  });
}

}  // namespace combo::data
