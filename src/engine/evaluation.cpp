#include "combo/engine/evaluation.h"

#include <c10/core/InferenceMode.h>
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <chrono>

#include "combo/core/check.h"
#include "combo/core/state_dict.h"
#include "combo/engine/checkpointer.h"
#include "combo/engine/distributed.h"

namespace combo::engine {

std::unique_ptr<metrics::Evaluator> make_evaluator(const Config& config) {
  const auto kind = loss::parse_dataset_kind(config.data.dataset);
  if (kind == loss::DatasetKind::kAVSS) {
    metrics::SemanticEvaluatorOptions o;
    o.num_classes = config.model.num_classes;
    o.input = metrics::SemanticInput::kLogits;
    return std::make_unique<metrics::SemanticEvaluator>(o);
  }
  metrics::BinaryEvaluatorOptions o;
  o.protocol = metrics::parse_binary_protocol(config.test.metric_protocol);
  o.batch_videos = config.test.batch_size;
  return std::make_unique<metrics::BinaryEvaluator>(o);
}

int64_t run_evaluation(model::ComboModelImpl& model, data::DataLoader& loader,
                       metrics::Evaluator& evaluator, loss::DatasetKind kind,
                       const EvaluationOptions& options) {
  const bool was_training = model.is_training();
  model.eval();
  c10::InferenceMode guard;
  const auto t0 = std::chrono::steady_clock::now();
  const int64_t total = loader.batches_per_epoch();  // batches; videos logged below
  int64_t videos = 0, batches = 0;
  while (auto batch = loader.next()) {
    ++batches;
    const data::VideoBatch b = data::to_device(*batch, options.device);
    const model::ComboPrediction pred = model.predict(b.inputs);
    const at::Tensor scores = pred.scores.to(at::kFloat).cpu();
    const at::Tensor masks = pred.masks.cpu();
    const at::Tensor labels = batch->labels;
    int64_t row = 0;
    for (int64_t v = 0; v < batch->size(); ++v) {
      const int64_t t = batch->inputs.frames_per_video[v];
      VideoPrediction vp;
      vp.video_id = batch->video_ids[v];
      vp.group = batch->groups[v];
      vp.index = batch->indices[v];
      vp.frame_files = batch->frame_files[v];
      vp.frames = batch->inputs.images.slice(0, row, row + t);
      vp.scores = scores.slice(0, row, row + t);
      vp.masks = masks.slice(0, row, row + t);
      vp.labels = labels.slice(0, row, row + t);
      vp.has_gt = batch->has_gt.slice(0, row, row + t);
      row += t;
      if (kind == loss::DatasetKind::kAVSS) {
        // The official AVSS loop scores all slots; padded slots predict zeros (class 0 after
        // argmax) against zero labels.
        at::Tensor s = vp.scores, l = vp.labels;
        const int64_t pad = batch->slots[v] - t;
        if (pad > 0) {
          s = at::cat({s, at::zeros({pad, s.size(1), s.size(2), s.size(3)}, s.options())});
          l = at::cat({l, at::zeros({pad, l.size(1), l.size(2)}, l.options())});
        }
        evaluator.process(s, l, vp.video_id);
      } else {
        const at::Tensor keep = vp.has_gt.nonzero().flatten();
        COMBO_CHECK(keep.numel() > 0, "evaluation: video ", vp.video_id,
                    " has no frame with ground truth (evaluate a val/test split)");
        evaluator.process(vp.scores.index_select(0, keep), vp.labels.index_select(0, keep),
                          vp.video_id);
      }
      ++videos;
      if (options.on_video) options.on_video(vp);
      if (options.max_videos >= 0 && videos >= options.max_videos) break;
    }
    if (options.log_every > 0 && (videos % options.log_every < batch->size() || batches == total)) {
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      const double rate = videos / std::max(s, 1e-9);
      const double eta = (total - batches) * (s / batches);
      spdlog::info("eval: {}/{} batches, {} videos, {:.2f} videos/s, ETA {:.0f} s", batches, total,
                   videos, rate, eta);
    }
    if (options.max_videos >= 0 && videos >= options.max_videos) break;
  }
  if (was_training) model.train();
  return videos;
}

void merge_across_ranks(metrics::Evaluator& evaluator, ProcessGroup& group) {
  const auto state = evaluator.state();
  TensorDict dict = state.tensors;
  std::string ids;
  for (const auto& id : state.video_ids) ids += id + "\n";
  dict["__video_ids__"] = string_to_tensor(ids);
  dict["__rank__"] = at::full({1}, group.rank(), at::kLong);  // never a one-entry dict
  const auto bytes = torch::pickle_save(to_ivalue(dict));
  const auto all = group.all_gather_bytes(std::string(bytes.begin(), bytes.end()),
                                          "all-gather of the evaluation states");
  evaluator.reset();
  for (size_t r = 0; r < all.size(); ++r) {
    TensorDict part =
        flatten_tensor_dict(torch::pickle_load(std::vector<char>(all[r].begin(), all[r].end())));
    COMBO_CHECK(part.count("__video_ids__"), "evaluation state of rank ", r, " has no video ids");
    metrics::EvaluatorState s;
    const std::string text = tensor_to_string(part.at("__video_ids__"));
    part.erase("__video_ids__");
    part.erase("__rank__");
    for (size_t begin = 0; begin < text.size();) {
      const size_t end = text.find('\n', begin);
      s.video_ids.push_back(text.substr(begin, end - begin));
      begin = end + 1;
    }
    s.tensors = std::move(part);
    if (!s.video_ids.empty()) evaluator.merge(s);
  }
}

}  // namespace combo::engine
