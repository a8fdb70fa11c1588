#include "combo/loss/criterion.h"

#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/torch.h>

#include <algorithm>
#include <numeric>

#include "combo/core/check.h"
#include "combo/core/profile.h"
#include "combo/loss/mask_losses.h"

namespace combo::loss {
namespace {

// Flat positions s * Q + q of the matched queries and the matched target masks, frame-major in
// the order of the matchings (the official _get_src_permutation_idx / _get_tgt_permutation_idx).
struct MatchedIndex {
  at::Tensor flat_queries;  // int64 [M]
  std::vector<at::Tensor> targets_per_frame;
  int64_t total = 0;
};

MatchedIndex gather_matches(const std::vector<MatchIndices>& matches, int64_t num_queries) {
  MatchedIndex out;
  std::vector<at::Tensor> flat;
  for (size_t s = 0; s < matches.size(); ++s) {
    flat.push_back(matches[s].queries.to(at::kLong) + static_cast<int64_t>(s) * num_queries);
    out.targets_per_frame.push_back(matches[s].targets.to(at::kLong));
    out.total += matches[s].queries.numel();
  }
  out.flat_queries = flat.empty() ? at::zeros({0}, at::kLong) : at::cat(flat);
  return out;
}

std::string suffixed(const std::string& name, int64_t i) {
  return i < 0 ? name : name + "_" + std::to_string(i);
}

}  // namespace

DatasetKind parse_dataset_kind(const std::string& name) {
  if (name == "s4") return DatasetKind::kS4;
  if (name == "ms3") return DatasetKind::kMS3;
  if (name == "avss") return DatasetKind::kAVSS;
  COMBO_FAIL("dataset kind: expected 's4', 'ms3' or 'avss', got '", name, "'");
}

std::vector<int64_t> supervised_rows(DatasetKind kind, const std::vector<int64_t>& frames_per_video,
                                     const at::Tensor& gt_flags) {
  for (size_t v = 0; v < frames_per_video.size(); ++v) {
    COMBO_CHECK(frames_per_video[v] > 0, "supervised_rows: video ", v, " has ", frames_per_video[v],
                " frames; expected at least 1");
  }
  const int64_t n = std::accumulate(frames_per_video.begin(), frames_per_video.end(), int64_t{0});
  std::vector<int64_t> rows;
  switch (kind) {
    case DatasetKind::kS4: {
      int64_t start = 0;
      for (int64_t t : frames_per_video) {
        rows.push_back(start);
        start += t;
      }
      break;
    }
    case DatasetKind::kMS3:
      rows.resize(n);
      std::iota(rows.begin(), rows.end(), 0);
      break;
    case DatasetKind::kAVSS: {
      COMBO_CHECK(gt_flags.defined(),
                  "supervised_rows (avss): the per-frame gt flags are required");
      COMBO_CHECK(gt_flags.dim() == 1 && gt_flags.size(0) == n, "supervised_rows (avss): expected ",
                  "gt flags [", n, "] (one per frame of ", frames_per_video.size(),
                  " videos), got shape ", gt_flags.sizes());
      auto flags = gt_flags.to(at::kCPU, at::kDouble).contiguous();
      const double* f = flags.data_ptr<double>();
      for (int64_t r = 0; r < n; ++r) {
        if (f[r] == 1.0) rows.push_back(r);
      }
      break;
    }
  }
  return rows;
}

BatchTargets make_targets(const at::Tensor& labels, const at::Tensor& has_gt,
                          const std::vector<int64_t>& frames_per_video, DatasetKind kind,
                          bool train) {
  COMBO_CHECK(labels.defined() && labels.dim() == 3, "make_targets: expected label maps [N, H, W],",
              " got ", labels.defined() ? labels.sizes() : at::IntArrayRef{});
  const int64_t n = labels.size(0);
  COMBO_CHECK(has_gt.defined() && has_gt.dim() == 1 && has_gt.size(0) == n,
              "make_targets: expected gt flags [", n, "], got ",
              has_gt.defined() ? has_gt.sizes() : at::IntArrayRef{});
  BatchTargets out;
  out.layout.frames_per_video = frames_per_video;
  const auto flags = has_gt.to(at::kCPU, at::kBool).contiguous();
  const bool* f = flags.data_ptr<bool>();
  if (train && kind == DatasetKind::kS4) {
    // The official S4 training split registers one ground truth per video: the first frame.
    out.layout.supervised_rows = supervised_rows(kind, frames_per_video);
  } else {
    // Every frame whose ground truth exists (MS3: all; AVSS: the gt flags; S4 val/test: all).
    for (int64_t i = 0; i < n; ++i)
      if (f[i]) out.layout.supervised_rows.push_back(i);
  }
  for (int64_t row : out.layout.supervised_rows) {
    COMBO_CHECK(row < n && f[row], "make_targets: frame ", row,
                " of the batch has no ground truth");
    const at::Tensor map = labels[row];
    // One target per distinct label value, background included, ignore (255) excluded.
    at::Tensor values = std::get<0>(at::_unique(map.flatten(), /*sorted=*/true));
    values = values.masked_select(values != 255);
    FrameTarget t;
    t.labels = values.to(at::kLong);
    t.masks = map.unsqueeze(0) == values.view({-1, 1, 1});
    out.targets.push_back(std::move(t));
  }
  return out;
}

at::Tensor pad_target_masks(const at::Tensor& masks, int64_t height, int64_t width) {
  COMBO_CHECK(masks.defined() && masks.dim() == 3, "pad_target_masks: expected masks [K, H, W], ",
              "got ", masks.defined() ? masks.sizes() : at::IntArrayRef{});
  COMBO_CHECK(masks.size(1) <= height && masks.size(2) <= width, "pad_target_masks: target masks ",
              "of ", masks.size(1), "x", masks.size(2), " do not fit the padded image of ", height,
              "x", width, " the predictions cover");
  auto m = masks.to(at::kFloat);
  if (m.size(1) == height && m.size(2) == width) return m;
  // prepare_targets: padded_masks = zeros(K, h_pad, w_pad); padded_masks[:, :h, :w] = gt_masks.
  return at::constant_pad_nd(m, {0, width - m.size(2), 0, height - m.size(1)}, 0.0);
}

SetCriterionImpl::SetCriterionImpl(SetCriterionOptions options_)
    : options(std::move(options_)),
      matcher_(HungarianMatcherOptions()
                   .cost_class(options.class_weight())
                   .cost_mask(options.mask_weight())
                   .cost_dice(options.dice_weight())
                   .num_points(options.num_points())) {
  reset();
}

void SetCriterionImpl::reset() {
  COMBO_CHECK(options.num_classes() > 0, "SetCriterion: num_classes must be positive, got ",
              options.num_classes());
  COMBO_CHECK(options.num_points() > 0, "SetCriterion: num_points must be positive, got ",
              options.num_points());
  auto w = torch::ones({options.num_classes() + 1});
  w[options.num_classes()] = options.no_object_weight();
  empty_weight = register_buffer("empty_weight", w);
}

void SetCriterionImpl::pretty_print(std::ostream& stream) const {
  const auto& c = options.consistency();
  const char* type = c.type() == ConsistencyType::kAdaptive ? "adaptive"
                     : c.type() == ConsistencyType::kFixed  ? "fixed"
                                                            : "none";
  stream << "combo::loss::SetCriterion(num_classes=" << options.num_classes()
         << ", class_weight=" << options.class_weight() << ", mask_weight=" << options.mask_weight()
         << ", dice_weight=" << options.dice_weight()
         << ", no_object_weight=" << options.no_object_weight()
         << ", deep_supervision=" << (options.deep_supervision() ? "true" : "false")
         << ", num_points=" << options.num_points()
         << ", oversample_ratio=" << options.oversample_ratio()
         << ", importance_sample_ratio=" << options.importance_sample_ratio()
         << ", consistency=" << type << "/"
         << (c.grouping() == ConsistencyGrouping::kOfficial ? "official" : "per_video") << "x"
         << c.weight() << ")";
}

std::map<std::string, double> SetCriterionImpl::weight_dict(int64_t num_aux) const {
  std::map<std::string, double> w;
  for (int64_t i = -1; i < (options.deep_supervision() ? num_aux : 0); ++i) {
    w[suffixed("loss_ce", i)] = options.class_weight();
    w[suffixed("loss_mask", i)] = options.mask_weight();
    w[suffixed("loss_dice", i)] = options.dice_weight();
  }
  if (options.consistency().type() != ConsistencyType::kNone) {
    for (int64_t i = 0; i < num_aux; ++i) {
      w[suffixed("loss_cosine", i)] = options.consistency().weight();
    }
  }
  return w;
}

at::Tensor SetCriterionImpl::loss_labels(const at::Tensor& pred_logits,
                                         const std::vector<FrameTarget>& targets,
                                         const std::vector<MatchIndices>& matches) const {
  COMBO_CHECK(pred_logits.dim() == 3 && pred_logits.size(2) == options.num_classes() + 1,
              "SetCriterion: expected pred_logits [S, Q, ", options.num_classes() + 1,
              "] (num_classes + 1), got ", pred_logits.sizes());
  COMBO_CHECK(targets.size() == matches.size() &&
                  static_cast<int64_t>(targets.size()) == pred_logits.size(0),
              "SetCriterion: ", pred_logits.size(0), " frames, ", targets.size(), " targets and ",
              matches.size(), " matchings");
  const int64_t frames = pred_logits.size(0);
  const int64_t queries = pred_logits.size(1);
  const auto device = pred_logits.device();
  auto m = gather_matches(matches, queries);
  std::vector<at::Tensor> labels;
  for (size_t s = 0; s < targets.size(); ++s) {
    labels.push_back(
        targets[s].labels.to(device, at::kLong).index_select(0, m.targets_per_frame[s].to(device)));
  }
  auto target_classes = at::full({frames * queries}, options.num_classes(),
                                 at::TensorOptions(at::kLong).device(device));
  if (m.total > 0) target_classes.index_put_({m.flat_queries.to(device)}, at::cat(labels));
  namespace F = torch::nn::functional;
  return F::cross_entropy(
      pred_logits.reshape({frames * queries, -1}), target_classes,
      F::CrossEntropyFuncOptions().weight(empty_weight.to(device, pred_logits.scalar_type())));
}

std::pair<at::Tensor, at::Tensor> SetCriterionImpl::loss_masks(
    const at::Tensor& pred_masks, const std::vector<at::Tensor>& target_masks,
    const std::vector<MatchIndices>& matches, double num_masks, PointSource& points) const {
  COMBO_CHECK(pred_masks.dim() == 4, "SetCriterion: expected pred_masks [S, Q, h, w], got ",
              pred_masks.sizes());
  COMBO_CHECK(target_masks.size() == matches.size() &&
                  static_cast<int64_t>(matches.size()) == pred_masks.size(0),
              "SetCriterion: ", pred_masks.size(0), " frames, ", target_masks.size(),
              " target mask sets and ", matches.size(), " matchings");
  const int64_t frames = pred_masks.size(0);
  const int64_t queries = pred_masks.size(1);
  const auto device = pred_masks.device();
  auto m = gather_matches(matches, queries);
  auto src = pred_masks.reshape({frames * queries, pred_masks.size(2), pred_masks.size(3)})
                 .index_select(0, m.flat_queries.to(device))
                 .unsqueeze(1);  // [M, 1, h, w]
  // The official code stacks the targets with nested_tensor_from_tensor_list, which zero-pads
  // every frame to the largest height and width; sampling coordinates refer to that size.
  int64_t height = 0, width = 0;
  for (const auto& t : target_masks) {
    height = std::max(height, t.size(1));
    width = std::max(width, t.size(2));
  }
  std::vector<at::Tensor> tgt_list;
  for (size_t s = 0; s < target_masks.size(); ++s) {
    auto t =
        target_masks[s].to(device, at::kFloat).index_select(0, m.targets_per_frame[s].to(device));
    if (t.size(1) != height || t.size(2) != width) {
      t = at::constant_pad_nd(t, {0, width - t.size(2), 0, height - t.size(1)}, 0.0);
    }
    tgt_list.push_back(t);
  }
  auto tgt = tgt_list.empty() ? at::zeros({0, height, width}, src.options())
                              : at::cat(tgt_list).unsqueeze(1);  // [M, 1, H, W]
  at::Tensor coords, point_labels;
  {
    at::NoGradGuard no_grad;
    coords = points.mask_loss_points(src.detach(), options.num_points(), options.oversample_ratio(),
                                     options.importance_sample_ratio());
    COMBO_CHECK(coords.dim() == 3 && coords.size(0) == m.total &&
                    coords.size(1) == options.num_points() && coords.size(2) == 2,
                "SetCriterion: the point source returned ", coords.sizes(), " for ", m.total,
                " matched masks; expected [", m.total, ", ", options.num_points(), ", 2]");
    point_labels = point_sample(tgt, coords).squeeze(1);  // [M, P]
  }
  auto point_logits = point_sample(src, coords).squeeze(1);  // [M, P]
  return {sigmoid_ce_loss(point_logits, point_labels, num_masks),
          dice_loss(point_logits, point_labels, num_masks)};
}

TensorDict SetCriterionImpl::forward(const ModelOutputs& outputs,
                                     const std::vector<FrameTarget>& targets,
                                     const BatchLayout& layout, PointSource* points,
                                     std::vector<std::vector<MatchIndices>>* matches_out) {
  // The losses are defined in float32 (COMBO_SPEC 7): keep CUDA/CPU autocast out even when the
  // trainer calls the criterion inside an autocast region.
  c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
  COMBO_CHECK(outputs.pred_logits.defined() && outputs.pred_logits.dim() == 3,
              "SetCriterion: expected pred_logits [N, Q, C+1], got ",
              outputs.pred_logits.defined() ? outputs.pred_logits.sizes() : at::IntArrayRef{});
  const int64_t n = outputs.pred_logits.size(0);
  const int64_t frames_total =
      std::accumulate(layout.frames_per_video.begin(), layout.frames_per_video.end(), int64_t{0});
  COMBO_CHECK(frames_total == n, "SetCriterion: the batch layout has ", frames_total, " frames (",
              layout.frames_per_video.size(), " videos) but the predictions have ", n, " rows");
  const auto& rows = layout.supervised_rows;
  COMBO_CHECK(!rows.empty(), "SetCriterion: the batch has no supervised frame");
  COMBO_CHECK(rows.size() == targets.size(), "SetCriterion: ", rows.size(), " supervised rows but ",
              targets.size(), " targets");
  for (size_t k = 0; k < rows.size(); ++k) {
    COMBO_CHECK(rows[k] >= 0 && rows[k] < n && (k == 0 || rows[k] > rows[k - 1]),
                "SetCriterion: supervised rows must be ascending in [0, ", n, "), got ", rows[k],
                " at position ", k);
  }
  COMBO_CHECK(outputs.image_height > 0 && outputs.image_width > 0,
              "SetCriterion: the outputs do not say which padded image size their masks cover ",
              "(ModelOutputs image_height/image_width, set by model::criterion_inputs), got ",
              outputs.image_height, "x", outputs.image_width);
  const auto device = outputs.pred_logits.device();

  // Targets as float masks on the predictions' device, zero-padded to the padded image size the
  // predictions cover (official prepare_targets), once for all predictions.
  std::vector<FrameTarget> frame_targets;
  std::vector<at::Tensor> target_masks;
  double local_masks = 0.0;
  for (size_t k = 0; k < targets.size(); ++k) {
    const auto& t = targets[k];
    COMBO_CHECK(t.labels.defined() && t.masks.defined() && t.labels.dim() == 1 &&
                    t.masks.dim() == 3 && t.masks.size(0) == t.labels.size(0),
                "SetCriterion: target of frame ", rows[k], " must have labels [K] and masks ",
                "[K, H, W], got ", t.labels.defined() ? t.labels.sizes() : at::IntArrayRef{},
                " and ", t.masks.defined() ? t.masks.sizes() : at::IntArrayRef{});
    FrameTarget ft{t.labels.to(device, at::kLong),
                   pad_target_masks(t.masks.to(device), outputs.image_height, outputs.image_width)};
    target_masks.push_back(ft.masks);
    frame_targets.push_back(std::move(ft));
    local_masks += static_cast<double>(t.labels.size(0));
  }
  const double reduced = reducer_ ? reducer_(local_masks) : local_masks;
  const double num_masks = std::max(reduced, 1.0);

  RandomPointSource default_points;
  PointSource& source = points ? *points : default_points;
  auto row_index = at::tensor(rows, at::kLong).to(device);
  const bool all_rows = static_cast<int64_t>(rows.size()) == n;

  TensorDict losses;
  auto add_prediction = [&](const at::Tensor& logits, const at::Tensor& masks, int64_t i) {
    COMBO_CHECK(logits.defined() && masks.defined() && logits.dim() == 3 && masks.dim() == 4 &&
                    logits.size(0) == n && masks.size(0) == n && masks.size(1) == logits.size(1),
                "SetCriterion: prediction ",
                (i < 0 ? std::string("final") : "aux " + std::to_string(i)), ": expected logits [",
                n, ", Q, C+1] and masks [", n, ", Q, h, w], got ",
                logits.defined() ? logits.sizes() : at::IntArrayRef{}, " and ",
                masks.defined() ? masks.sizes() : at::IntArrayRef{});
    auto l = logits.to(at::kFloat);
    auto m = masks.to(at::kFloat);
    if (!all_rows) {
      l = l.index_select(0, row_index);
      m = m.index_select(0, row_index);
    }
    std::vector<MatchIndices> matches;
    {
      COMBO_PROFILE_SCOPE("matcher");
      matches = matcher_(l, m, frame_targets, source);
    }
    losses[suffixed("loss_ce", i)] =
        loss_labels(l, frame_targets, matches) * options.class_weight();
    auto [bce, dice] = loss_masks(m, target_masks, matches, num_masks, source);
    losses[suffixed("loss_mask", i)] = bce * options.mask_weight();
    losses[suffixed("loss_dice", i)] = dice * options.dice_weight();
    if (matches_out) matches_out->push_back(std::move(matches));
  };

  if (matches_out) matches_out->clear();
  add_prediction(outputs.pred_logits, outputs.pred_masks, -1);
  if (options.deep_supervision()) {
    for (size_t i = 0; i < outputs.aux.size(); ++i) {
      add_prediction(outputs.aux[i].first, outputs.aux[i].second, static_cast<int64_t>(i));
    }
  }
  const auto& consistency = options.consistency();
  if (consistency.type() != ConsistencyType::kNone) {
    COMBO_PROFILE_SCOPE("consistency loss");
    COMBO_CHECK(!outputs.middles.empty(), "SetCriterion: the consistency loss is on (type ",
                consistency.type() == ConsistencyType::kAdaptive ? "adaptive" : "fixed",
                ") but the outputs carry no intermediate mask logits (middles)");
    for (size_t i = 0; i < outputs.middles.size(); ++i) {
      const auto& mid = outputs.middles[i];
      COMBO_CHECK(mid.defined() && mid.dim() >= 2 && mid.size(0) == n, "SetCriterion: middles[", i,
                  "] must have ", n, " rows, got ",
                  mid.defined() ? mid.sizes() : at::IntArrayRef{});
      losses[suffixed("loss_cosine", static_cast<int64_t>(i))] =
          consistency_loss(mid.to(at::kFloat), layout.frames_per_video, consistency) *
          consistency.weight();
    }
  }
  return losses;
}

}  // namespace combo::loss
