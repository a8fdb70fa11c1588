// build_model: config keys that only switch how the model computes reach every module.
#include "combo/engine/build_model.h"

#include "combo/core/device.h"
#include "combo/engine/config.h"
#include "testing/testing.h"

namespace {

namespace engine = combo::engine;

engine::Config small_config() {
  engine::Config c;
  c.model.backbone.name = "pvt_v2_b0";
  c.model.decoder.num_queries = 4;
  c.model.decoder.dec_layers = 2;
  c.model.pixel_decoder.enc_layers = 1;
  return c;
}

}  // namespace

TEST(BuildModelTest, ActivationCheckpointingIsOnByDefaultAndTheKeyTurnsItOffEverywhere) {
  auto cfg = small_config();
  ASSERT_TRUE(cfg.model.pre_sam.enabled);
  ASSERT_FALSE(cfg.model.pre_sam.shared);
  ASSERT_EQ(cfg.model.activation_checkpointing, "auto");
  EXPECT_EQ(engine::activation_checkpointing(cfg),
            engine::default_activation_checkpointing(combo::resolve_device(cfg.runtime.device)));
  EXPECT_TRUE(engine::default_activation_checkpointing(c10::Device(c10::kCPU)));
  for (bool on : {true, false}) {
    SCOPED_TRACE(on);
    engine::apply_overrides(
        cfg, {std::string("model.activation_checkpointing=") + (on ? "true" : "false")});
    EXPECT_EQ(engine::activation_checkpointing(cfg), on);
    auto model = engine::build_model(cfg);
    EXPECT_EQ(model->options.activation_checkpointing(), on);
    EXPECT_EQ(model->backbone->checkpoint_blocks, on);
    ASSERT_TRUE(model->pre_sam_backbone);
    EXPECT_EQ(model->pre_sam_backbone->checkpoint_blocks, on);
    EXPECT_EQ(model->sem_seg_head->pixel_decoder->transformer->encoder->checkpoint_layers, on);
  }
  EXPECT_NE(engine::dump_config(cfg).find("activation_checkpointing: false"), std::string::npos)
      << engine::dump_config(cfg);
}
