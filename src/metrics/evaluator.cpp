#include "combo/metrics/evaluator.h"

#include <torch/torch.h>

#include <algorithm>
#include <iomanip>
#include <set>
#include <sstream>

#include "combo/core/check.h"

namespace combo::metrics {

namespace {

const at::Tensor& state_tensor(const EvaluatorState& state, const std::string& key,
                               const char* who) {
  auto it = state.tensors.find(key);
  COMBO_CHECK(it != state.tensors.end(), who, "::merge: state lacks tensor '", key, "'");
  return it->second;
}

double mean(const std::vector<double>& values) {
  double sum = 0;
  for (double v : values) sum += v;
  return values.empty() ? 0.0 : sum / static_cast<double>(values.size());
}

}  // namespace

std::string videos_csv(const EvalResult& result) {
  std::set<std::string> names;
  for (const auto& row : result.videos)
    for (const auto& kv : row.values) names.insert(kv.first);
  std::ostringstream os;
  os << "video_id";
  for (const auto& n : names) os << ',' << n;
  os << '\n' << std::setprecision(10);
  for (const auto& row : result.videos) {
    os << row.video_id;
    for (const auto& n : names) {
      os << ',';
      auto it = row.values.find(n);
      if (it != row.values.end()) os << it->second;
    }
    os << '\n';
  }
  return os.str();
}

std::string to_string(BinaryProtocol protocol) {
  return protocol == BinaryProtocol::kAvsbench ? "avsbench" : "combo";
}

BinaryProtocol parse_binary_protocol(const std::string& name) {
  if (name == "avsbench") return BinaryProtocol::kAvsbench;
  if (name == "combo") return BinaryProtocol::kCombo;
  COMBO_FAIL("unknown binary metric protocol '", name, "': expected 'avsbench' or 'combo'");
}

BinaryEvaluator::BinaryEvaluator(BinaryEvaluatorOptions options) : options_(options) {
  COMBO_CHECK(options_.batch_videos > 0, "BinaryEvaluator: batch_videos must be > 0, got ",
              options_.batch_videos);
}

void BinaryEvaluator::reset() { videos_.clear(); }

std::string BinaryEvaluator::protocol() const { return to_string(options_.protocol); }

void BinaryEvaluator::process(const at::Tensor& pred, const at::Tensor& target,
                              const std::string& video_id) {
  COMBO_CHECK(target.dim() == 3, "BinaryEvaluator: video '", video_id,
              "': expected target [T, H, W], got shape ", target.sizes());
  at::Tensor probs;
  if (pred.dim() == 4) {
    COMBO_CHECK(pred.size(1) == 2, "BinaryEvaluator: video '", video_id,
                "': expected two-class scores [T, 2, H, W], got shape ", pred.sizes());
    probs = torch::softmax(pred.to(torch::kFloat32), 1).select(1, 1);
  } else {
    probs = foreground_probabilities(pred, options_.input);
  }
  COMBO_CHECK(probs.sizes() == target.sizes(), "BinaryEvaluator: video '", video_id,
              "': prediction frames ", probs.sizes(), " differ from target ", target.sizes());
  auto fm = frame_fmeasure_curves(probs, target);
  videos_.push_back(
      {video_id, frame_mask_iou(probs, target).cpu(), fm.curves.cpu(), fm.nonempty.cpu()});
}

EvalResult BinaryEvaluator::evaluate() const {
  COMBO_CHECK(!videos_.empty(), "BinaryEvaluator: no video was processed");
  EvalResult result;
  result.protocol = protocol();
  std::vector<double> video_miou, video_f;
  for (const auto& v : videos_) {
    const double miou = (v.frame_iou.sum() / v.frame_iou.size(0)).item<float>();
    const double f = fmeasure_from_curves(v.curves, v.nonempty);
    video_miou.push_back(miou);
    video_f.push_back(f);
    result.videos.push_back(
        {v.id, {{"mIoU", miou}, {"F", f}, {"frames", static_cast<double>(v.frame_iou.size(0))}}});
  }
  const auto num_videos = static_cast<int64_t>(videos_.size());
  if (options_.protocol == BinaryProtocol::kCombo) {
    result.metrics["mIoU"] = mean(video_miou);
    result.metrics["F"] = mean(video_f);
    result.metrics["num_batches"] = static_cast<double>(num_videos);
  } else {
    // AverageMeter turns its Python-float accumulator into a float32 tensor on the first add.
    float miou_acc = 0.0f;
    std::vector<double> batch_f;
    for (int64_t start = 0; start < num_videos; start += options_.batch_videos) {
      const int64_t end = std::min(num_videos, start + options_.batch_videos);
      std::vector<at::Tensor> ious, curves, nonempty;
      for (int64_t i = start; i < end; ++i) {
        ious.push_back(videos_[i].frame_iou);
        curves.push_back(videos_[i].curves);
        nonempty.push_back(videos_[i].nonempty);
      }
      auto iou = torch::cat(ious);
      miou_acc = miou_acc + (torch::sum(iou) / iou.size(0)).item<float>();
      batch_f.push_back(fmeasure_from_curves(torch::cat(curves), torch::cat(nonempty)));
    }
    const auto num_batches = static_cast<int64_t>(batch_f.size());
    result.metrics["mIoU"] = miou_acc / static_cast<float>(num_batches);
    result.metrics["F"] = mean(batch_f);
    result.metrics["num_batches"] = static_cast<double>(num_batches);
  }
  result.metrics["num_videos"] = static_cast<double>(num_videos);
  return result;
}

EvaluatorState BinaryEvaluator::state() const {
  EvaluatorState state;
  std::vector<at::Tensor> ious, curves, nonempty;
  std::vector<int64_t> frames;
  for (const auto& v : videos_) {
    state.video_ids.push_back(v.id);
    ious.push_back(v.frame_iou);
    curves.push_back(v.curves);
    nonempty.push_back(v.nonempty);
    frames.push_back(v.frame_iou.size(0));
  }
  state.tensors["frame_iou"] = ious.empty() ? torch::zeros({0}, torch::kFloat32) : torch::cat(ious);
  state.tensors["curves"] = curves.empty()
                                ? torch::zeros({0, kNumFmeasureThresholds}, torch::kFloat32)
                                : torch::cat(curves);
  state.tensors["nonempty"] =
      nonempty.empty() ? torch::zeros({0}, torch::kBool) : torch::cat(nonempty);
  state.tensors["frames_per_video"] = torch::tensor(frames, torch::kInt64);
  return state;
}

void BinaryEvaluator::merge(const EvaluatorState& other) {
  const char* who = "BinaryEvaluator";
  auto ious = state_tensor(other, "frame_iou", who).cpu();
  auto curves = state_tensor(other, "curves", who).cpu();
  auto nonempty = state_tensor(other, "nonempty", who).cpu().to(torch::kBool);
  auto frames = state_tensor(other, "frames_per_video", who).cpu().to(torch::kInt64);
  COMBO_CHECK(frames.dim() == 1 && frames.size(0) == static_cast<int64_t>(other.video_ids.size()),
              "BinaryEvaluator::merge: ", other.video_ids.size(),
              " video ids but frames_per_video ", frames.sizes());
  const int64_t total = frames.sum().item<int64_t>();
  COMBO_CHECK(ious.dim() == 1 && ious.size(0) == total && nonempty.dim() == 1 &&
                  nonempty.size(0) == total && curves.dim() == 2 && curves.size(0) == total &&
                  curves.size(1) == kNumFmeasureThresholds,
              "BinaryEvaluator::merge: expected frame_iou [", total, "], nonempty [", total,
              "], curves [", total, ", ", kNumFmeasureThresholds, "], got ", ious.sizes(), ", ",
              nonempty.sizes(), ", ", curves.sizes());
  auto frames_a = frames.accessor<int64_t, 1>();
  int64_t offset = 0;
  for (size_t i = 0; i < other.video_ids.size(); ++i) {
    const int64_t n = frames_a[static_cast<int64_t>(i)];
    videos_.push_back({other.video_ids[i], ious.slice(0, offset, offset + n).clone(),
                       curves.slice(0, offset, offset + n).clone(),
                       nonempty.slice(0, offset, offset + n).clone()});
    offset += n;
  }
}

SemanticEvaluator::SemanticEvaluator(SemanticEvaluatorOptions options) : options_(options) {
  COMBO_CHECK(options_.num_classes >= 2, "SemanticEvaluator: num_classes must be >= 2, got ",
              options_.num_classes);
  reset();
}

void SemanticEvaluator::reset() {
  ious_sum_ = torch::zeros({options_.num_classes}, torch::kFloat32);
  fscores_sum_ = torch::zeros({options_.num_classes}, torch::kFloat32);
  cls_count_ = torch::zeros({options_.num_classes}, torch::kFloat32);
  rows_.clear();
}

std::string SemanticEvaluator::protocol() const { return "avss_global"; }

void SemanticEvaluator::process(const at::Tensor& pred, const at::Tensor& target,
                                const std::string& video_id) {
  if (options_.input != SemanticInput::kLabels) {
    COMBO_CHECK(pred.dim() == 4 && pred.size(1) == options_.num_classes,
                "SemanticEvaluator: video '", video_id, "': expected scores [T, ",
                options_.num_classes, ", H, W], got shape ", pred.sizes());
  }
  auto labels = predicted_classes(pred, options_.input);
  COMBO_CHECK(labels.sizes() == target.sizes(), "SemanticEvaluator: video '", video_id,
              "': prediction frames ", labels.sizes(), " differ from target ", target.sizes());
  auto stats = semantic_stats_from_labels(labels, target, options_.num_classes);
  ious_sum_ += stats.ious_sum;
  fscores_sum_ += stats.fscores_sum;
  cls_count_ += stats.cls_count;
  auto present = stats.cls_count > 0;
  const int64_t n_present = present.sum().item<int64_t>();
  double miou = 0, f = 0;
  if (n_present > 0) {
    miou = (stats.ious_sum.masked_select(present).to(torch::kFloat64) /
            stats.cls_count.masked_select(present).to(torch::kFloat64))
               .mean()
               .item<double>();
    f = (stats.fscores_sum.masked_select(present).to(torch::kFloat64) /
         stats.cls_count.masked_select(present).to(torch::kFloat64))
            .mean()
            .item<double>();
  }
  rows_.push_back(
      {video_id, {{"mIoU", miou}, {"F", f}, {"frames", static_cast<double>(target.size(0))}}});
}

EvalResult SemanticEvaluator::evaluate() const {
  COMBO_CHECK(!rows_.empty(), "SemanticEvaluator: no video was processed");
  auto s = summarize_semantic(ious_sum_, fscores_sum_, cls_count_);
  EvalResult result;
  result.protocol = protocol();
  result.metrics = {{"mIoU", s.miou},
                    {"F", s.f_score},
                    {"mIoU_drop_last_class", s.miou_drop_last_class},
                    {"F_drop_last_class", s.f_score_drop_last_class},
                    {"num_classes_present", static_cast<double>(s.num_classes_present)},
                    {"num_videos", static_cast<double>(rows_.size())}};
  result.videos = rows_;
  return result;
}

EvaluatorState SemanticEvaluator::state() const {
  EvaluatorState state;
  std::vector<double> miou, f;
  std::vector<int64_t> frames;
  for (const auto& row : rows_) {
    state.video_ids.push_back(row.video_id);
    miou.push_back(row.values.at("mIoU"));
    f.push_back(row.values.at("F"));
    frames.push_back(static_cast<int64_t>(row.values.at("frames")));
  }
  state.tensors["ious_sum"] = ious_sum_.clone();
  state.tensors["fscores_sum"] = fscores_sum_.clone();
  state.tensors["cls_count"] = cls_count_.clone();
  state.tensors["video_miou"] = torch::tensor(miou, torch::kFloat64);
  state.tensors["video_f"] = torch::tensor(f, torch::kFloat64);
  state.tensors["video_frames"] = torch::tensor(frames, torch::kInt64);
  return state;
}

void SemanticEvaluator::merge(const EvaluatorState& other) {
  const char* who = "SemanticEvaluator";
  const int64_t c = options_.num_classes;
  auto ious = state_tensor(other, "ious_sum", who).cpu().to(torch::kFloat32);
  auto fs = state_tensor(other, "fscores_sum", who).cpu().to(torch::kFloat32);
  auto count = state_tensor(other, "cls_count", who).cpu().to(torch::kFloat32);
  COMBO_CHECK(ious.sizes() == at::IntArrayRef{c} && fs.sizes() == at::IntArrayRef{c} &&
                  count.sizes() == at::IntArrayRef{c},
              "SemanticEvaluator::merge: expected per-class sums [", c, "], got ", ious.sizes(),
              ", ", fs.sizes(), ", ", count.sizes());
  auto miou = state_tensor(other, "video_miou", who).cpu().to(torch::kFloat64);
  auto f = state_tensor(other, "video_f", who).cpu().to(torch::kFloat64);
  auto frames = state_tensor(other, "video_frames", who).cpu().to(torch::kInt64);
  const auto v = static_cast<int64_t>(other.video_ids.size());
  COMBO_CHECK(miou.numel() == v && f.numel() == v && frames.numel() == v,
              "SemanticEvaluator::merge: ", v, " video ids but per-video tensors of ", miou.numel(),
              ", ", f.numel(), ", ", frames.numel(), " entries");
  ious_sum_ += ious;
  fscores_sum_ += fs;
  cls_count_ += count;
  for (int64_t i = 0; i < v; ++i) {
    rows_.push_back({other.video_ids[static_cast<size_t>(i)],
                     {{"mIoU", miou[i].item<double>()},
                      {"F", f[i].item<double>()},
                      {"frames", static_cast<double>(frames[i].item<int64_t>())}}});
  }
}

}  // namespace combo::metrics
