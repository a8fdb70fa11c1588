#include <gtest/gtest.h>
#include <torch/torch.h>

#include "combo/backbone/backbone.h"
#include "combo/backbone/pvt_v2.h"
#include "combo/backbone/resnet.h"
#include "combo/core/check.h"
#include "testing/testing.h"

using combo::backbone::Backbone;
using combo::backbone::build_backbone;
using combo::backbone::FeatureMap;
using combo::testing::SeededTest;

namespace {

// The shape of COMBO's Siam-Encoder: two independent encoders under the official names.
struct TwoEncodersImpl : torch::nn::Module {
  explicit TwoEncodersImpl(const std::string& name) {
    backbone = register_module("backbone", build_backbone(name));
    pre_sam_backbone = register_module("pre_sam_backbone", build_backbone(name));
  }
  Backbone backbone{nullptr};
  Backbone pre_sam_backbone{nullptr};
};

}  // namespace

class BackboneTest : public SeededTest {};

TEST_F(BackboneTest, FactoryBuildsEveryNamedEncoder) {
  for (const auto& name : combo::backbone::backbone_names()) {
    SCOPED_TRACE(name);
    if (name == "pvt_v2_b4" || name == "pvt_v2_b5") continue;  // large; covered in PvtV2Test
    Backbone b = build_backbone(name, combo::backbone::BackboneOptions().drop_path_rate(0.2));
    const auto shapes = b->output_shapes();
    ASSERT_EQ(shapes.size(), 4u);
    if (name == "resnet50") {
      EXPECT_NE(b->as<combo::backbone::ResNetImpl>(), nullptr);
      EXPECT_EQ(shapes.at("res5").channels, 2048);
    } else {
      auto* pvt = b->as<combo::backbone::PvtV2Impl>();
      ASSERT_NE(pvt, nullptr);
      const auto expected = combo::backbone::PvtV2Options::variant(name);
      EXPECT_EQ(pvt->options.depths(), expected.depths());
      EXPECT_EQ(pvt->options.drop_path_rate(), 0.2);
      EXPECT_EQ(shapes.at("res5").channels, expected.embed_dims()[3]);
    }
    b->eval();
    torch::NoGradGuard no_grad;
    const FeatureMap out = b->forward(torch::randn({1, 3, 64, 64}));
    for (const auto& [fname, shape] : shapes) {
      ASSERT_TRUE(out.count(fname)) << fname;
      EXPECT_EQ(out.at(fname).size(1), shape.channels) << fname;
      EXPECT_EQ(out.at(fname).size(2) * shape.stride, 64) << fname;
    }
  }
}

TEST_F(BackboneTest, UnknownNameListsTheValidOnes) {
  try {
    build_backbone("pvt_v2_b9");
    ADD_FAILURE() << "expected combo::Error";
  } catch (const combo::Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("pvt_v2_b9"), std::string::npos) << msg;
    for (const auto& n : combo::backbone::backbone_names()) {
      EXPECT_NE(msg.find(n), std::string::npos) << msg;
    }
  }
  EXPECT_THROW(build_backbone("resnet"), combo::Error);
  EXPECT_THROW(build_backbone(""), combo::Error);
}

TEST_F(BackboneTest, TwoEncodersLiveSideBySide) {
  auto model = std::make_shared<TwoEncodersImpl>("pvt_v2_b0");
  const combo::TensorDict sd = combo::module_state_dict(*model);
  EXPECT_EQ(sd.size(), 2 * 176u);
  EXPECT_TRUE(sd.count("backbone.block1.0.attn.sr.weight"));
  EXPECT_TRUE(sd.count("pre_sam_backbone.norm4.bias"));
  // Separate weights: changing one leaves the other.
  torch::NoGradGuard no_grad;
  model->backbone->named_parameters()["norm4.bias"].fill_(3.0);
  EXPECT_FALSE(torch::equal(model->backbone->named_parameters()["norm4.bias"],
                            model->pre_sam_backbone->named_parameters()["norm4.bias"]));
  // Both load from the same checkpoint, as COMBO initialises them.
  const combo::TensorDict ckpt = combo::module_state_dict(*model->backbone);
  combo::backbone::load_backbone_state_dict(*model->pre_sam_backbone, ckpt);
  EXPECT_TENSOR_EQ(model->backbone->named_parameters()["norm4.bias"],
                   model->pre_sam_backbone->named_parameters()["norm4.bias"]);
  model->eval();
  EXPECT_FALSE(model->backbone->is_training());
  EXPECT_FALSE(model->pre_sam_backbone->is_training());
}

TEST_F(BackboneTest, ForwardChecksTheInput) {
  Backbone b = build_backbone("resnet50");
  EXPECT_THROW(b->forward(torch::randn({1, 1, 32, 32})), combo::Error);
  EXPECT_THROW(b->forward(torch::randint(0, 255, {1, 3, 32, 32}, torch::kUInt8)), combo::Error);
  EXPECT_THROW(b->forward(at::Tensor()), combo::Error);
}
