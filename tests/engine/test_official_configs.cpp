// Every shipped official config resolves to the hyper-parameters of COMBO_SPEC 8.
#include <gtest/gtest.h>

#include "combo/engine/config.h"
#include "testing/testing.h"

namespace {

using combo::engine::Config;
using combo::engine::load_config;

struct Official {
  const char* file;
  const char* dataset;
  int64_t max_iter;
  int64_t eval_period;
  int64_t num_classes;
  bool amp;
  const char* backbone;
};

const Official kConfigs[] = {
    {"avs_s4/COMBO_R50_bs8_90k.yaml", "s4", 90000, 5000, 2, false, "resnet50"},
    {"avs_s4/COMBO_PVTV2B5_bs8_90k.yaml", "s4", 90000, 5000, 2, false, "pvt_v2_b5"},
    {"avs_ms3/COMBO_R50_bs8_20k.yaml", "ms3", 20000, 400, 2, false, "resnet50"},
    {"avs_ms3/COMBO_PVTV2B5_bs8_20k.yaml", "ms3", 20000, 400, 2, false, "pvt_v2_b5"},
    {"avss/COMBO_R50_bs8_90k.yaml", "avss", 90000, 5000, 71, true, "resnet50"},
    {"avss/COMBO_PVTV2B5_bs8_90k.yaml", "avss", 90000, 5000, 71, true, "pvt_v2_b5"},
};

Config load(const std::string& rel) {
  return load_config((combo::testing::source_dir() / "configs" / rel).string());
}

TEST(OfficialConfigs, TrainingRecipeOfComboSpec8) {
  for (const auto& o : kConfigs) {
    SCOPED_TRACE(o.file);
    const Config c = load(o.file);
    EXPECT_EQ(c.data.dataset, o.dataset);
    EXPECT_EQ(c.model.backbone.name, o.backbone);
    EXPECT_FALSE(c.model.backbone.weights.empty());
    EXPECT_FALSE(c.model.audio.weights.empty());
    EXPECT_TRUE(c.model.audio.freeze);
    EXPECT_EQ(c.model.num_classes, o.num_classes);
    // 8.1 common recipe.
    EXPECT_EQ(c.solver.optimizer, "adamw");
    EXPECT_DOUBLE_EQ(c.solver.base_lr, 1e-4);
    EXPECT_DOUBLE_EQ(c.solver.backbone_multiplier, 0.1);
    EXPECT_DOUBLE_EQ(c.solver.weight_decay, 0.05);
    EXPECT_DOUBLE_EQ(c.solver.weight_decay_norm, 0.0);
    EXPECT_DOUBLE_EQ(c.solver.weight_decay_embed, 0.0);
    EXPECT_EQ(c.solver.betas, (std::vector<double>{0.9, 0.999}));
    EXPECT_DOUBLE_EQ(c.solver.eps, 1e-8);
    EXPECT_EQ(c.solver.lr_scheduler, "poly");
    EXPECT_DOUBLE_EQ(c.solver.poly_power, 0.9);
    EXPECT_EQ(c.solver.warmup_iters, 0);
    EXPECT_EQ(c.solver.ims_per_batch, 8);
    EXPECT_EQ(c.solver.checkpoint_period, 5000);
    EXPECT_TRUE(c.solver.clip_gradients.enabled);
    EXPECT_EQ(c.solver.clip_gradients.type, "full_model");
    EXPECT_DOUBLE_EQ(c.solver.clip_gradients.value, 0.01);
    EXPECT_DOUBLE_EQ(c.solver.clip_gradients.norm_type, 2.0);
    // 8.2 per dataset.
    EXPECT_EQ(c.solver.max_iter, o.max_iter);
    EXPECT_EQ(c.test.eval_period, o.eval_period);
    EXPECT_EQ(c.solver.amp.enabled, o.amp);
    if (o.amp) {
      EXPECT_EQ(c.solver.amp.dtype, "fp16");
    }
    EXPECT_EQ(c.data.augment.crop_size, 224);
    EXPECT_EQ(c.data.augment.pad_size, 224);
    EXPECT_DOUBLE_EQ(c.data.augment.flip_prob, 0.5);
    EXPECT_TRUE(c.data.augment.color_jitter);
    EXPECT_TRUE(c.data.augment.jitter_maskige);
    if (std::string(o.dataset) == "avss") {
      EXPECT_TRUE(c.data.augment.short_sides.empty());  // frames pre-resized offline
    } else {
      EXPECT_EQ(c.data.augment.short_sides,
                (std::vector<int64_t>{112, 134, 156, 179, 201, 224, 246, 268, 291, 313, 336, 358,
                                      380, 403, 425, 448}));
      EXPECT_EQ(c.data.augment.max_size, 896);
    }
    // Model and losses (COMBO_SPEC 5.1, 6.1, 7.1).
    EXPECT_TRUE(c.model.pre_sam.enabled);
    EXPECT_FALSE(c.model.pre_sam.shared);
    EXPECT_EQ(c.model.fusion.type, "bidirectional");
    EXPECT_EQ(c.model.fusion.placement, "late");
    EXPECT_EQ(c.model.decoder.num_queries, 100);
    EXPECT_EQ(c.model.decoder.dec_layers, 10);
    EXPECT_EQ(c.model.decoder.dim_feedforward, 2048);
    EXPECT_EQ(c.model.pixel_decoder.enc_layers, 6);
    EXPECT_EQ(c.model.pixel_decoder.n_points, 4);
    EXPECT_EQ(c.model.pixel_decoder.dim_feedforward, 1024);
    EXPECT_DOUBLE_EQ(c.loss.class_weight, 2.0);
    EXPECT_DOUBLE_EQ(c.loss.mask_weight, 5.0);
    EXPECT_DOUBLE_EQ(c.loss.dice_weight, 5.0);
    EXPECT_DOUBLE_EQ(c.loss.no_object_weight, 0.1);
    EXPECT_DOUBLE_EQ(c.loss.consistency.weight, 10.0);
    EXPECT_EQ(c.loss.consistency.type, "adaptive");
    EXPECT_EQ(c.loss.train_num_points, 12544);
    EXPECT_DOUBLE_EQ(c.loss.oversample_ratio, 3.0);
    EXPECT_DOUBLE_EQ(c.loss.importance_sample_ratio, 0.75);
  }
}

TEST(OfficialConfigs, TestConfigsOfComboSpec83) {
  for (const auto& o : kConfigs) {
    const std::string file = o.file;
    const std::string test =
        file.substr(0, file.find('/') + 1) + "Test_" + file.substr(file.find('/') + 1);
    SCOPED_TRACE(test);
    const Config c = load(test);
    EXPECT_EQ(c.test.batch_size, 1);
    EXPECT_FALSE(c.solver.amp.enabled);
    EXPECT_NE(c.model.weights.find("model_best.pth"), std::string::npos);
    EXPECT_EQ(c.test.metric_protocol, "combo");
    // The official avs_ss R50 test config runs without the fusion module (MHA-None).
    const bool none = std::string(o.dataset) == "avss" && std::string(o.backbone) == "resnet50";
    EXPECT_EQ(c.model.fusion.type, none ? "none" : "bidirectional");
  }
}

}  // namespace
