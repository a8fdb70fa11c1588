#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <string>

#include "combo/metrics/binary.h"
#include "combo/metrics/evaluator.h"
#include "combo/metrics/semantic.h"
#include "testing/testing.h"

using namespace combo::metrics;

namespace {

constexpr double kTol = 1e-6;

// Python's round(x, 4), as the COMBO evaluators report.
double round4(double x) { return std::round(x * 1e4) / 1e4; }

double scalar(const combo::testing::Fixture& fx, const std::string& key) {
  return fx.tensor(key).to(torch::kFloat64).item<double>();
}

// Videos of the binary fixture: the per-video outputs give their number, the frames split evenly.
int64_t binary_num_videos(const combo::testing::Fixture& fx) {
  return fx.tensor("binary/outputs/avsbench_miou_per_video").size(0);
}

}  // namespace

TEST(MetricsParity, BinaryAvsbenchWholeBatch) {
  COMBO_LOAD_FIXTURE_OR_SKIP(fx, "metrics.pt");
  auto logits = fx.tensor("binary/inputs/logits");
  auto gt = fx.tensor("binary/inputs/gt");
  auto miou = mask_iou(logits, gt);
  EXPECT_EQ(miou.scalar_type(), torch::kFloat32);
  EXPECT_NEAR(miou.item<double>(), scalar(fx, "binary/outputs/avsbench_miou_all"), kTol);
  EXPECT_NEAR(eval_fmeasure(logits, gt), scalar(fx, "binary/outputs/avsbench_fscore_all"), kTol);
}

TEST(MetricsParity, BinaryAvsbenchPerVideo) {
  COMBO_LOAD_FIXTURE_OR_SKIP(fx, "metrics.pt");
  auto logits = fx.tensor("binary/inputs/logits");
  auto gt = fx.tensor("binary/inputs/gt");
  const int64_t videos = binary_num_videos(fx);
  ASSERT_EQ(logits.size(0) % videos, 0);
  const int64_t t = logits.size(0) / videos;
  auto ref_miou = fx.tensor("binary/outputs/avsbench_miou_per_video");
  auto ref_f = fx.tensor("binary/outputs/avsbench_fscore_per_video");
  for (int64_t v = 0; v < videos; ++v) {
    auto l = logits.slice(0, v * t, (v + 1) * t);
    auto g = gt.slice(0, v * t, (v + 1) * t);
    EXPECT_NEAR(mask_iou(l, g).item<double>(), ref_miou[v].item<double>(), kTol) << "video " << v;
    EXPECT_NEAR(eval_fmeasure(l, g), ref_f[v].item<double>(), kTol) << "video " << v;
  }
}

TEST(MetricsParity, BinaryComboCopiesOnProbabilities) {
  COMBO_LOAD_FIXTURE_OR_SKIP(fx, "metrics.pt");
  auto probs = torch::sigmoid(fx.tensor("binary/inputs/logits"));
  auto gt = fx.tensor("binary/inputs/gt");
  const auto p = BinaryInput::kProbabilities;
  EXPECT_NEAR(mask_iou(probs, gt, p).item<double>(), scalar(fx, "binary/outputs/combo_miou_all"),
              kTol);
  EXPECT_NEAR(eval_fmeasure(probs, gt, p), scalar(fx, "binary/outputs/combo_fscore_all"), kTol);
  const int64_t videos = binary_num_videos(fx);
  const int64_t t = probs.size(0) / videos;
  auto ref_miou = fx.tensor("binary/outputs/combo_miou_per_video");
  auto ref_f = fx.tensor("binary/outputs/combo_fscore_per_video");
  for (int64_t v = 0; v < videos; ++v) {
    auto pr = probs.slice(0, v * t, (v + 1) * t);
    auto g = gt.slice(0, v * t, (v + 1) * t);
    EXPECT_NEAR(mask_iou(pr, g, p).item<double>(), ref_miou[v].item<double>(), kTol);
    EXPECT_NEAR(eval_fmeasure(pr, g, p), ref_f[v].item<double>(), kTol);
  }
}

TEST(MetricsParity, BinaryComboEvaluatorRounded) {
  COMBO_LOAD_FIXTURE_OR_SKIP(fx, "metrics.pt");
  auto logits = fx.tensor("binary/inputs/logits");
  auto gt = fx.tensor("binary/inputs/gt");
  const int64_t videos = binary_num_videos(fx);
  const int64_t t = logits.size(0) / videos;
  BinaryEvaluatorOptions opts;
  opts.protocol = BinaryProtocol::kCombo;
  BinaryEvaluator evaluator(opts);
  for (int64_t v = 0; v < videos; ++v) {
    auto l = logits.slice(0, v * t, (v + 1) * t);
    // The official evaluator is fed sem_seg = [0, logit] per pixel.
    auto sem_seg = torch::stack({torch::zeros_like(l), l}, 1);
    evaluator.process(sem_seg, gt.slice(0, v * t, (v + 1) * t), "v" + std::to_string(v));
  }
  auto result = evaluator.evaluate();
  EXPECT_EQ(result.protocol, "combo");
  EXPECT_NEAR(round4(result.metrics.at("mIoU")),
              scalar(fx, "binary/outputs/combo_evaluator_miou_rounded"), 1e-12);
  EXPECT_NEAR(round4(result.metrics.at("F")),
              scalar(fx, "binary/outputs/combo_evaluator_fscore_rounded"), 1e-12);
  ASSERT_EQ(static_cast<int64_t>(result.videos.size()), videos);
  auto ref_f = fx.tensor("binary/outputs/combo_fscore_per_video");
  for (int64_t v = 0; v < videos; ++v)
    EXPECT_NEAR(result.videos[v].values.at("F"), ref_f[v].item<double>(), kTol);
}

TEST(MetricsParity, BinaryAvsbenchEvaluatorBatching) {
  COMBO_LOAD_FIXTURE_OR_SKIP(fx, "metrics.pt");
  auto logits = fx.tensor("binary/inputs/logits");
  auto gt = fx.tensor("binary/inputs/gt");
  const int64_t videos = binary_num_videos(fx);
  const int64_t t = logits.size(0) / videos;
  auto run = [&](int64_t batch) {
    BinaryEvaluatorOptions opts;
    opts.protocol = BinaryProtocol::kAvsbench;
    opts.batch_videos = batch;
    BinaryEvaluator evaluator(opts);
    for (int64_t v = 0; v < videos; ++v)
      evaluator.process(logits.slice(0, v * t, (v + 1) * t), gt.slice(0, v * t, (v + 1) * t),
                        "v" + std::to_string(v));
    return evaluator.evaluate();
  };
  // All videos in one test batch: the fixture's whole-batch call.
  auto one = run(videos);
  EXPECT_EQ(one.protocol, "avsbench");
  EXPECT_NEAR(one.metrics.at("mIoU"), scalar(fx, "binary/outputs/avsbench_miou_all"), kTol);
  EXPECT_NEAR(one.metrics.at("F"), scalar(fx, "binary/outputs/avsbench_fscore_all"), kTol);
  // One video per batch: means of the per-video values.
  auto each = run(1);
  auto ref_miou = fx.tensor("binary/outputs/avsbench_miou_per_video");
  auto ref_f = fx.tensor("binary/outputs/avsbench_fscore_per_video");
  EXPECT_NEAR(each.metrics.at("mIoU"), ref_miou.mean().item<double>(), kTol);
  EXPECT_NEAR(each.metrics.at("F"), ref_f.mean().item<double>(), kTol);
  EXPECT_EQ(each.metrics.at("num_batches"), static_cast<double>(videos));
}

TEST(MetricsParity, AvssCleanAndWithIgnore) {
  COMBO_LOAD_FIXTURE_OR_SKIP(fx, "metrics.pt");
  for (const std::string set : {"avss/clean", "avss/with_ignore"}) {
    SCOPED_TRACE(set);
    auto logits = fx.tensor(set + "/inputs/logits");
    auto target = fx.tensor(set + "/inputs/target");
    auto stats = calc_color_miou_fscore(logits, target);
    EXPECT_TENSOR_NEAR_ABS(fx.tensor(set + "/outputs/avsbench_ious_sum"), stats.ious_sum, kTol);
    EXPECT_TENSOR_NEAR_ABS(fx.tensor(set + "/outputs/avsbench_fscores_sum"), stats.fscores_sum,
                           kTol);
    EXPECT_TENSOR_EQ(fx.tensor(set + "/outputs/avsbench_cls_count"), stats.cls_count);
    EXPECT_TENSOR_NEAR_ABS(fx.tensor(set + "/outputs/avsbench_frame_miou"), stats.frame_miou, kTol);
    auto s = summarize_semantic(stats.ious_sum, stats.fscores_sum, stats.cls_count);
    EXPECT_NEAR(s.miou, scalar(fx, set + "/outputs/avsbench_miou"), kTol);
    EXPECT_NEAR(s.miou_drop_last_class, scalar(fx, set + "/outputs/avsbench_miou_noBg"), kTol);
    EXPECT_NEAR(s.f_score, scalar(fx, set + "/outputs/avsbench_f_score"), kTol);
    EXPECT_NEAR(s.f_score_drop_last_class, scalar(fx, set + "/outputs/avsbench_f_score_noBg"),
                kTol);
    EXPECT_EQ(s.num_classes_present, fx.integer(set + "/outputs/avsbench_num_classes_present"));

    SemanticEvaluatorOptions opts;
    opts.num_classes = logits.size(1);
    SemanticEvaluator evaluator(opts);
    evaluator.process(logits, target, "video");
    auto result = evaluator.evaluate();
    EXPECT_NEAR(round4(result.metrics.at("mIoU")),
                scalar(fx, set + "/outputs/combo_evaluator_miou_rounded"), 1e-12);
    EXPECT_NEAR(round4(result.metrics.at("F")),
                scalar(fx, set + "/outputs/combo_evaluator_fscore_rounded"), 1e-12);
  }
}
