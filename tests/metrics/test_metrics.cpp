#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "combo/core/check.h"
#include "combo/metrics/binary.h"
#include "combo/metrics/evaluator.h"
#include "combo/metrics/semantic.h"
#include "testing/testing.h"

using namespace combo::metrics;

namespace {

class MetricsTest : public combo::testing::SeededTest {};

at::Tensor mask(std::vector<float> values, int64_t h, int64_t w) {
  return torch::tensor(values, torch::kFloat32).reshape({h, w});
}

// Logits that saturate to the given binary prediction.
at::Tensor logits_of(const at::Tensor& binary) { return binary * 20.0 - 10.0; }

at::Tensor labels(std::vector<int64_t> values, int64_t h, int64_t w) {
  return torch::tensor(values, torch::kInt64).reshape({h, w});
}

float bits_to_float(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

// Random binary videos [T, H, W] with some empty-GT frames and one all-empty video.
struct RandomBinary {
  std::vector<at::Tensor> logits, gt;
};
RandomBinary random_binary(int64_t videos, int64_t t, int64_t h, int64_t w) {
  RandomBinary r;
  for (int64_t v = 0; v < videos; ++v) {
    auto g = (torch::rand({t, h, w}) > 0.6).to(torch::kFloat32);
    g[0].zero_();
    if (v == 1) g.zero_();
    r.gt.push_back(g);
    r.logits.push_back(torch::randn({t, h, w}) * 3 + (g - 0.5) * 2);
  }
  return r;
}

}  // namespace

TEST_F(MetricsTest, ThresholdsMatchLinspaceAndAppendix) {
  auto th = fmeasure_thresholds();
  ASSERT_EQ(th.size(0), kNumFmeasureThresholds);
  EXPECT_EQ(th[0].item<float>(), 0.0f);
  EXPECT_EQ(th[kNumFmeasureThresholds - 1].item<float>(), 1.0f);
  // AVSBENCH_SPEC Appendix A: these indices are one ulp below float32(k / 254).
  const std::vector<int64_t> lower = {9,   13,  18,  26,  36,  52,  72,  73,  74,
                                      75,  76,  77,  78,  79,  104, 105, 106, 107,
                                      108, 109, 110, 111, 143, 175, 207, 239};
  for (int64_t k = 0; k < kNumFmeasureThresholds; ++k) {
    const float exact = static_cast<float>(static_cast<double>(k) / 254.0);
    const bool is_lower = std::find(lower.begin(), lower.end(), k) != lower.end();
    const float expected = is_lower ? std::nextafter(exact, 0.0f) : exact;
    EXPECT_EQ(bits_to_float(kFmeasureThresholdBits[k]), expected) << "k = " << k;
  }
  auto lin = torch::linspace(0, 1 - 1e-10, kNumFmeasureThresholds, torch::kFloat32);
  EXPECT_LE((lin - th).abs().max().item<float>(), 6e-8f);
}

TEST_F(MetricsTest, MaskIouWorkedExample) {
  auto gt_a = mask({1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, 4, 4);
  auto pr_a = mask({1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, 4, 4);
  auto gt_b = torch::zeros({4, 4});
  auto pr_b = mask({0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0}, 4, 4);
  auto pred = logits_of(torch::stack({pr_a, pr_b}));
  auto gt = torch::stack({gt_a, gt_b});
  auto per_frame = frame_mask_iou(torch::sigmoid(pred), gt);
  EXPECT_NEAR(per_frame[0].item<double>(), 4.0 / 6.0, 1e-6);
  EXPECT_NEAR(per_frame[1].item<double>(), 14.0 / 16.0, 1e-7);
  EXPECT_NEAR(mask_iou(pred, gt).item<double>(), 0.7708334, 1e-7);
}

TEST_F(MetricsTest, EmptyGroundTruthIouRules) {
  auto gt = torch::zeros({1, 3, 3});
  // Empty prediction on empty GT scores 1; k predicted pixels score (H*W - k) / (H*W).
  EXPECT_FLOAT_EQ(mask_iou(logits_of(torch::zeros({1, 3, 3})), gt).item<float>(), 1.0f);
  auto two = torch::zeros({1, 3, 3});
  two[0][0][0] = 1;
  two[0][2][1] = 1;
  EXPECT_FLOAT_EQ(mask_iou(logits_of(two), gt).item<float>(), 7.0f / 9.0f);
  // Float32 sigmoid of a tiny positive logit is exactly 0.5: background.
  auto g = torch::tensor({1.0f, 0.0f}).reshape({1, 1, 2});
  auto tiny = torch::tensor({1e-8f, -10.0f}).reshape({1, 1, 2});
  EXPECT_EQ(mask_iou(tiny, g).item<float>(), 0.0f);
}

TEST_F(MetricsTest, PerfectPredictionScoresOne) {
  auto gt = (torch::rand({3, 8, 8}) > 0.5).to(torch::kFloat32);
  auto pred = logits_of(gt);
  EXPECT_NEAR(mask_iou(pred, gt).item<double>(), 1.0, 1e-6);
  EXPECT_NEAR(eval_fmeasure(pred, gt), 1.0, 1e-6);
  auto lab = torch::randint(0, 4, {2, 5, 5}, torch::kInt64);
  lab[0][0][0] = 0, lab[0][0][1] = 1, lab[0][0][2] = 2, lab[0][0][3] = 3;
  auto st = semantic_stats_from_labels(lab, lab, 4);
  auto s = summarize_semantic(st.ious_sum, st.fscores_sum, st.cls_count);
  EXPECT_NEAR(s.miou, 1.0, 1e-6);
  EXPECT_NEAR(s.f_score, 1.0, 1e-6);
}

TEST_F(MetricsTest, FmeasureWorkedExampleAndBatchDependence) {
  auto gt_a = mask({1, 1, 0, 0}, 2, 2);
  auto y_a = mask({0.9f, 0.4f, 0.6f, 0.1f}, 2, 2);
  const auto p = BinaryInput::kProbabilities;
  EXPECT_NEAR(eval_fmeasure(y_a.unsqueeze(0), gt_a.unsqueeze(0), p), 0.8125, 1e-6);
  // A frame with empty GT is skipped.
  auto with_empty = eval_fmeasure(torch::stack({y_a, mask({0.7f, 0.2f, 0.9f, 0.3f}, 2, 2)}),
                                  torch::stack({gt_a, torch::zeros({2, 2})}), p);
  EXPECT_NEAR(with_empty, 0.8125, 1e-6);
  auto gt_b = mask({1, 0, 0, 0}, 2, 2);
  auto y_b = mask({0.3f, 0.2f, 0.1f, 0.05f}, 2, 2);
  EXPECT_NEAR(eval_fmeasure(y_b.unsqueeze(0), gt_b.unsqueeze(0), p), 1.0, 1e-6);
  EXPECT_NEAR(eval_fmeasure(torch::stack({y_a, y_b}), torch::stack({gt_a, gt_b}), p), 0.861111,
              1e-6);
  // The same two frames as two one-frame videos in separate batches average to 0.90625.
  BinaryEvaluatorOptions opts;
  opts.protocol = BinaryProtocol::kAvsbench;
  opts.batch_videos = 1;
  opts.input = p;
  BinaryEvaluator separate(opts);
  separate.process(y_a.unsqueeze(0), gt_a.unsqueeze(0), "a");
  separate.process(y_b.unsqueeze(0), gt_b.unsqueeze(0), "b");
  EXPECT_NEAR(separate.evaluate().metrics.at("F"), 0.90625, 1e-6);
  opts.batch_videos = 2;
  BinaryEvaluator together(opts);
  together.process(y_a.unsqueeze(0), gt_a.unsqueeze(0), "a");
  together.process(y_b.unsqueeze(0), gt_b.unsqueeze(0), "b");
  EXPECT_NEAR(together.evaluate().metrics.at("F"), 0.861111, 1e-6);
}

TEST_F(MetricsTest, AllEmptyGroundTruthVideoScoresZeroF) {
  auto gt = torch::zeros({5, 4, 4});
  auto pred = torch::randn({5, 4, 4});
  EXPECT_EQ(eval_fmeasure(pred, gt), 0.0);
  BinaryEvaluator evaluator;
  evaluator.process(pred, gt, "silent");
  auto r = evaluator.evaluate();
  EXPECT_EQ(r.videos.at(0).values.at("F"), 0.0);
  EXPECT_EQ(r.metrics.at("F"), 0.0);
  EXPECT_GT(r.metrics.at("mIoU"), 0.0);
}

TEST_F(MetricsTest, AvssWorkedExample) {
  auto gt = torch::stack({labels({0, 0, 1, 0, 1, 1}, 2, 3), labels({0, 0, 0, 0, 0, 0}, 2, 3)});
  auto pred = torch::stack({labels({0, 1, 1, 0, 0, 2}, 2, 3), labels({0, 0, 0, 0, 0, 2}, 2, 3)});
  auto st = semantic_stats_from_labels(pred, gt, 4);
  EXPECT_TENSOR_EQ(torch::tensor({2.0f, 1.0f, 2.0f, 0.0f}), st.cls_count);
  EXPECT_TENSOR_NEAR_ABS(torch::tensor({0.5f + 5.0f / 6.0f, 0.25f, 0.0f, 0.0f}), st.ious_sum, 1e-6);
  auto s = summarize_semantic(st.ious_sum, st.fscores_sum, st.cls_count);
  EXPECT_NEAR(s.miou, 0.2291667, 1e-6);
  EXPECT_NEAR(s.miou_drop_last_class, 0.3055556, 1e-6);
  EXPECT_NEAR(s.f_score, 0.3148876, 1e-6);
  EXPECT_EQ(s.num_classes_present, 3);
}

TEST_F(MetricsTest, AvssAbsentClassesCountAsZero) {
  auto lab = torch::stack({labels({0, 1, 1, 0}, 2, 2), labels({0, 0, 1, 1}, 2, 2)});
  auto st = semantic_stats_from_labels(lab, lab, 5);
  auto s = summarize_semantic(st.ious_sum, st.fscores_sum, st.cls_count);
  EXPECT_NEAR(s.miou, 2.0 / 5.0, 1e-6);
  EXPECT_NEAR(s.f_score, 2.0 / 5.0, 1e-6);
  // The official "noBg" drops the last class (absent here), not background.
  EXPECT_NEAR(s.miou_drop_last_class, 2.0 / 4.0, 1e-6);
  EXPECT_EQ(s.num_classes_present, 2);
}

TEST_F(MetricsTest, AvssIgnorePixelsCountAsFalsePositives) {
  auto target = labels({1, 1, 255, 0}, 1, 4).unsqueeze(0);
  auto pred = labels({1, 1, 1, 0}, 1, 4).unsqueeze(0);
  auto st = semantic_stats_from_labels(pred, target, 3);
  EXPECT_TENSOR_EQ(torch::tensor({1.0f, 1.0f, 0.0f}), st.cls_count);
  // Class 1: inter 2, predicted 3, labelled 2 -> IoU 2/3, P 2/3, R 1.
  const double p = 2.0 / 3.0;
  EXPECT_NEAR(st.ious_sum[1].item<double>(), 2.0 / 3.0, 1e-6);
  EXPECT_NEAR(st.fscores_sum[1].item<double>(), 1.3 * p / (0.3 * p + 1.0), 1e-6);
  EXPECT_NEAR(st.ious_sum[0].item<double>(), 1.0, 1e-6);
  // From scores, the argmax gives the same labels.
  auto scores = torch::one_hot(pred, 3).permute({0, 3, 1, 2}).to(torch::kFloat32) * 5;
  auto from_scores = calc_color_miou_fscore(scores, target);
  EXPECT_TENSOR_EQ(st.ious_sum, from_scores.ious_sum);
}

TEST_F(MetricsTest, BinaryEvaluatorEqualsDirectFunctions) {
  auto data = random_binary(5, 3, 8, 8);
  for (auto protocol : {BinaryProtocol::kCombo, BinaryProtocol::kAvsbench}) {
    BinaryEvaluatorOptions opts;
    opts.protocol = protocol;
    opts.batch_videos = 2;
    BinaryEvaluator evaluator(opts);
    for (size_t v = 0; v < data.gt.size(); ++v)
      evaluator.process(data.logits[v], data.gt[v], "v" + std::to_string(v));
    auto r = evaluator.evaluate();
    EXPECT_EQ(r.protocol, to_string(protocol));
    double miou = 0, f = 0;
    float miou32 = 0;
    int64_t groups = 0;
    const int64_t step = protocol == BinaryProtocol::kCombo ? 1 : 2;
    for (int64_t s = 0; s < 5; s += step, ++groups) {
      const int64_t e = std::min<int64_t>(5, s + step);
      std::vector<at::Tensor> l(data.logits.begin() + s, data.logits.begin() + e);
      std::vector<at::Tensor> g(data.gt.begin() + s, data.gt.begin() + e);
      const float m = mask_iou(torch::cat(l), torch::cat(g)).item<float>();
      miou += m;
      miou32 += m;
      f += eval_fmeasure(torch::cat(l), torch::cat(g));
    }
    EXPECT_EQ(r.metrics.at("num_batches"), static_cast<double>(groups));
    if (protocol == BinaryProtocol::kCombo) {
      EXPECT_DOUBLE_EQ(r.metrics.at("mIoU"), miou / groups);
    } else {
      EXPECT_EQ(r.metrics.at("mIoU"), static_cast<double>(miou32 / static_cast<float>(groups)));
    }
    EXPECT_DOUBLE_EQ(r.metrics.at("F"), f / groups);
    EXPECT_EQ(r.videos.size(), 5u);
    EXPECT_EQ(r.videos[1].values.at("F"), 0.0);
  }
}

TEST_F(MetricsTest, BinaryEvaluatorMergeAndReset) {
  auto data = random_binary(6, 2, 6, 6);
  BinaryEvaluatorOptions opts;
  opts.protocol = BinaryProtocol::kAvsbench;
  opts.batch_videos = 4;
  BinaryEvaluator whole(opts), first(opts), second(opts);
  for (size_t v = 0; v < 6; ++v) {
    whole.process(data.logits[v], data.gt[v], "v" + std::to_string(v));
    (v < 3 ? first : second).process(data.logits[v], data.gt[v], "v" + std::to_string(v));
  }
  first.merge(second.state());
  auto a = whole.evaluate();
  auto b = first.evaluate();
  EXPECT_EQ(a.metrics, b.metrics);
  ASSERT_EQ(a.videos.size(), b.videos.size());
  for (size_t i = 0; i < a.videos.size(); ++i) {
    EXPECT_EQ(a.videos[i].video_id, b.videos[i].video_id);
    EXPECT_EQ(a.videos[i].values, b.videos[i].values);
  }
  EXPECT_NE(videos_csv(a).find("video_id,F,frames,mIoU\nv0,"), std::string::npos);
  whole.reset();
  EXPECT_THROW(whole.evaluate(), combo::Error);
  EXPECT_THROW(whole.merge(combo::metrics::EvaluatorState{}), combo::Error);
  EXPECT_THROW(whole.process(torch::zeros({2, 3, 4, 4}), torch::zeros({2, 4, 4}), "bad"),
               combo::Error);
  EXPECT_THROW(parse_binary_protocol("tpavi"), combo::Error);
}

TEST_F(MetricsTest, SemanticEvaluatorEqualsDirectAndMerges) {
  const int64_t c = 6;
  std::vector<at::Tensor> scores, targets;
  for (int v = 0; v < 4; ++v) {
    scores.push_back(torch::randn({3, c, 5, 5}));
    auto t = torch::randint(0, c, {3, 5, 5}, torch::kInt64);
    t[1][0].fill_(255);
    targets.push_back(t);
  }
  SemanticEvaluatorOptions opts;
  opts.num_classes = c;
  SemanticEvaluator whole(opts), first(opts), second(opts);
  for (int v = 0; v < 4; ++v) {
    whole.process(scores[v], targets[v], "v" + std::to_string(v));
    (v < 2 ? first : second).process(scores[v], targets[v], "v" + std::to_string(v));
  }
  auto direct = calc_color_miou_fscore(torch::cat(scores), torch::cat(targets));
  EXPECT_TENSOR_NEAR_ABS(direct.ious_sum, whole.ious_sum(), 1e-5);
  EXPECT_TENSOR_NEAR_ABS(direct.fscores_sum, whole.fscores_sum(), 1e-5);
  EXPECT_TENSOR_EQ(direct.cls_count, whole.cls_count());
  auto s = summarize_semantic(direct.ious_sum, direct.fscores_sum, direct.cls_count);
  auto r = whole.evaluate();
  EXPECT_EQ(r.protocol, "avss_global");
  EXPECT_NEAR(r.metrics.at("mIoU"), s.miou, 1e-6);
  EXPECT_NEAR(r.metrics.at("F"), s.f_score, 1e-6);
  EXPECT_NEAR(r.metrics.at("mIoU_drop_last_class"), s.miou_drop_last_class, 1e-6);
  EXPECT_NEAR(r.metrics.at("F_drop_last_class"), s.f_score_drop_last_class, 1e-6);

  first.merge(second.state());
  auto m = first.evaluate();
  for (const auto& kv : r.metrics) EXPECT_NEAR(m.metrics.at(kv.first), kv.second, 1e-6) << kv.first;
  ASSERT_EQ(m.videos.size(), 4u);
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(m.videos[i].video_id, r.videos[i].video_id);
    EXPECT_NEAR(m.videos[i].values.at("mIoU"), r.videos[i].values.at("mIoU"), 1e-12);
  }
  whole.reset();
  EXPECT_EQ(whole.cls_count().sum().item<float>(), 0.0f);
  EXPECT_THROW(whole.evaluate(), combo::Error);
  EXPECT_THROW(whole.process(torch::randn({3, c + 1, 5, 5}), targets[0], "bad"), combo::Error);
}
