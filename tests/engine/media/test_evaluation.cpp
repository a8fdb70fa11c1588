// Evaluation runner: the evaluator gets exactly what the official loops feed (S4/MS3 frames
// with ground truth; AVSS every slot, padded ones as background), in dataset order.
#include <c10/core/InferenceMode.h>

#include "combo/engine/build_model.h"
#include "combo/engine/data_setup.h"
#include "combo/engine/evaluation.h"
#include "combo/engine/report.h"
#include "combo/metrics/evaluator.h"
#include "testing/data_tree.h"
#include "testing/testing.h"

namespace {

namespace fs = std::filesystem;
namespace engine = combo::engine;
namespace data = combo::data;
namespace metrics = combo::metrics;
namespace model = combo::model;
namespace loss = combo::loss;
namespace ct = combo::testing;

engine::Config tiny_config(const std::string& dataset, const fs::path& root) {
  engine::Config c;
  c.data.dataset = dataset;
  c.data.root = root.string();
  c.data.num_workers = 1;
  c.model.backbone.name = "pvt_v2_b0";
  c.model.decoder.num_queries = 4;
  c.model.decoder.dec_layers = 2;
  c.model.decoder.dim_feedforward = 32;
  c.model.pixel_decoder.enc_layers = 1;
  c.model.pixel_decoder.dim_feedforward = 32;
  c.model.num_classes = dataset == "avss" ? 71 : 2;
  c.test.batch_size = 2;
  return c;
}

class EvaluationTest : public ct::SeededTest {};

TEST_F(EvaluationTest, BinaryRunnerFeedsEveryVideoInOrder) {
  ct::TempDir dir;
  ct::TreeSpec spec;
  spec.val = 3;
  ct::write_s4_tree(dir.path(), spec);
  auto cfg = tiny_config("s4", dir.path());
  // One video per call, as the hand-fed evaluator below (batching changes float sums).
  cfg.test.batch_size = 1;
  auto model = engine::build_model(cfg);
  auto ds = engine::build_dataset(cfg, "val", false);
  data::DataLoader loader(ds, engine::eval_loader_options(cfg));
  auto ev = engine::make_evaluator(cfg);
  std::vector<std::string> seen;
  engine::EvaluationOptions eo;
  eo.on_video = [&](const engine::VideoPrediction& v) {
    seen.push_back(v.video_id);
    EXPECT_EQ(v.scores.sizes(), (std::vector<int64_t>{5, 2, 32, 32}));
    EXPECT_EQ(v.masks.sizes(), (std::vector<int64_t>{5, 32, 32}));
  };
  EXPECT_EQ(engine::run_evaluation(*model, loader, *ev, loss::DatasetKind::kS4, eo), 3);
  EXPECT_EQ(seen, (std::vector<std::string>{"vv0", "vv1", "vv2"}));
  // The same figures from a hand-fed evaluator.
  metrics::BinaryEvaluator manual;
  model->eval();
  c10::InferenceMode guard;
  for (int64_t i = 0; i < ds->size(); ++i) {
    data::Rng rng(0);
    auto s = ds->load(i, rng);
    model::ComboInputs in{s.frames, s.maskiges, s.log_mel, {5}};
    manual.process(model->predict(in).scores, s.labels, s.video_id);
  }
  const auto a = ev->evaluate(), b = manual.evaluate();
  EXPECT_EQ(a.protocol, "combo");
  EXPECT_DOUBLE_EQ(a.metrics.at("mIoU"), b.metrics.at("mIoU"));
  EXPECT_DOUBLE_EQ(a.metrics.at("F"), b.metrics.at("F"));
}

TEST_F(EvaluationTest, SemanticRunnerScoresPaddedSlotsAsTheOfficialLoop) {
  ct::TempDir dir;
  ct::write_avss_tree(dir.path(), 32, /*processed=*/true);
  auto cfg = tiny_config("avss", dir.path());
  cfg.test.batch_size = 1;
  auto model = engine::build_model(cfg);
  auto ds = engine::build_dataset(cfg, "test", false);
  data::DataLoader loader(ds, engine::eval_loader_options(cfg));
  auto ev = engine::make_evaluator(cfg);
  ASSERT_EQ(engine::run_evaluation(*model, loader, *ev, loss::DatasetKind::kAVSS), 3);
  // By hand: 5 real frames + 5 padded background slots for v1s / v1m, 10 for v2.
  metrics::SemanticEvaluator manual;
  model->eval();
  c10::InferenceMode guard;
  for (int64_t i = 0; i < ds->size(); ++i) {
    data::Rng rng(0);
    auto s = ds->load(i, rng);
    const int64_t t = s.frames.size(0);
    model::ComboInputs in{s.frames, s.maskiges, s.log_mel, {t}};
    auto scores = model->predict(in).scores;
    auto labels = s.labels;
    if (t < 10) {
      scores = at::cat({scores, at::zeros({10 - t, 71, 32, 32})});
      labels = at::cat({labels, at::zeros({10 - t, 32, 32}, at::kLong)});
    }
    manual.process(scores, labels, s.video_id);
  }
  EXPECT_TENSOR_EQ(manual.ious_sum(), dynamic_cast<metrics::SemanticEvaluator&>(*ev).ious_sum());
  EXPECT_TENSOR_EQ(manual.cls_count(), dynamic_cast<metrics::SemanticEvaluator&>(*ev).cls_count());
}

TEST_F(EvaluationTest, MaxVideosStopsEarlyAndKeepsWhatWasDone) {
  ct::TempDir dir;
  ct::TreeSpec spec;
  spec.val = 3;
  ct::write_s4_tree(dir.path(), spec);
  auto cfg = tiny_config("s4", dir.path());
  cfg.test.batch_size = 1;
  auto model = engine::build_model(cfg);
  data::DataLoader loader(engine::build_dataset(cfg, "val", false),
                          engine::eval_loader_options(cfg));
  auto ev = engine::make_evaluator(cfg);
  engine::EvaluationOptions eo;
  eo.max_videos = 2;
  EXPECT_EQ(engine::run_evaluation(*model, loader, *ev, loss::DatasetKind::kS4, eo), 2);
  EXPECT_EQ(ev->state().video_ids.size(), 2u);
}

TEST(Report, OverlayColoursThePredictionOnly) {
  auto frame = at::full({3, 8, 8}, 100, at::kByte);
  auto mask = at::zeros({8, 8}, at::kBool);
  mask.slice(0, 2, 6).slice(1, 2, 6).fill_(true);
  const cv::Mat o = engine::overlay_prediction(frame, mask, /*semantic=*/false);
  EXPECT_EQ(o.at<cv::Vec3b>(0, 0), cv::Vec3b(100, 100, 100));  // untouched background
  const auto inside = o.at<cv::Vec3b>(3, 3);
  EXPECT_GT(inside[0], inside[1]);  // reddish
  const auto edge = o.at<cv::Vec3b>(2, 2);
  EXPECT_EQ(edge, cv::Vec3b(255, 40, 40));  // solid outline
  auto ids = at::zeros({8, 8}, at::kLong);
  ids[4][4] = 10;  // bus: (64, 128, 0)
  const cv::Mat s = engine::overlay_prediction(frame, ids, /*semantic=*/true);
  EXPECT_EQ(s.at<cv::Vec3b>(4, 4), cv::Vec3b(64, 128, 0));
  const cv::Mat m = engine::mask_image(mask, false);
  EXPECT_EQ(m.at<uint8_t>(3, 3), 255);
  EXPECT_EQ(m.at<uint8_t>(0, 0), 0);
}

}  // namespace
