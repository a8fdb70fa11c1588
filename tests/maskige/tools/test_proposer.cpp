// Mask proposers: the built-in multi-scale graph segmentation and TorchScript modules.
#include <torch/script.h>
#include <torch/torch.h>

#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>

#include "combo/core/check.h"
#include "combo/maskige/encode.h"
#include "combo/maskige/proposer.h"
#include "testing/testing.h"

namespace cm = combo::maskige;
using combo::testing::TempDir;

namespace {

// 224 x 224 RGB: a grey background with mild noise and three flat rectangles.
cv::Mat three_rectangles(std::vector<cv::Rect>* rects) {
  cv::Mat img(224, 224, CV_8UC3, cv::Scalar(128, 128, 128));
  cv::Mat noise(224, 224, CV_8UC3);
  cv::randu(noise, cv::Scalar(0, 0, 0), cv::Scalar(6, 6, 6));
  img += noise;
  *rects = {cv::Rect(10, 15, 80, 60), cv::Rect(120, 30, 70, 90), cv::Rect(40, 140, 120, 60)};
  const cv::Scalar colours[3] = {cv::Scalar(220, 30, 30), cv::Scalar(30, 200, 40),
                                 cv::Scalar(20, 40, 230)};
  for (int i = 0; i < 3; ++i) img((*rects)[i]).setTo(colours[i]);
  return img;
}

}  // namespace

TEST(MaskigeProposer, BuiltinCoversEachFlatRectangle) {
  cv::setRNGSeed(0);
  std::vector<cv::Rect> rects;
  const cv::Mat img = three_rectangles(&rects);
  cm::GraphSegmentationProposer proposer;
  const torch::Tensor masks = proposer.propose(img);
  ASSERT_EQ(masks.dim(), 3);
  EXPECT_EQ(masks.scalar_type(), torch::kBool);
  EXPECT_EQ(masks.size(1), 224);
  EXPECT_EQ(masks.size(2), 224);
  EXPECT_GE(masks.size(0), 3);
  EXPECT_LE(masks.size(0), 40);
  for (size_t i = 0; i < rects.size(); ++i) {
    torch::Tensor r = torch::zeros({224, 224}, torch::kBool);
    r.slice(0, rects[i].y, rects[i].y + rects[i].height)
        .slice(1, rects[i].x, rects[i].x + rects[i].width)
        .fill_(true);
    // Some mask holds most of the rectangle and little else (the Gaussian smoothing before
    // segmenting, sigma 0.8, gives the edge pixels to a neighbour segment).
    double best_cover = 0;
    for (int64_t k = 0; k < masks.size(0); ++k) {
      const double inter = (masks[k] & r).sum().item<double>();
      const double precision = inter / masks[k].sum().item<double>();
      if (precision >= 0.9) best_cover = std::max(best_cover, inter / r.sum().item<double>());
    }
    EXPECT_GT(best_cover, 0.8) << "rectangle " << i;
  }
  // Every mask is at least min_area_fraction of the frame.
  const auto areas = masks.flatten(1).sum(1);
  EXPECT_GE(areas.min().item<int64_t>(), static_cast<int64_t>(0.01 * 224 * 224));
  // The stack encodes to a Maskige without error; three rectangles give three labels + more.
  const torch::Tensor labels = cm::masks_to_labels(masks);
  EXPECT_GE(std::get<0>(at::_unique(labels)).numel(), 4);
}

TEST(MaskigeProposer, BuiltinScalesLargeFramesAndIsDeterministic) {
  cv::Mat img(480, 640, CV_8UC3, cv::Scalar(50, 60, 70));
  img(cv::Rect(100, 100, 300, 200)).setTo(cv::Scalar(250, 240, 10));
  cm::GraphSegmentationProposer proposer;
  const torch::Tensor a = proposer.propose(img);
  ASSERT_EQ(a.sizes().slice(1), (torch::IntArrayRef{480, 640}));
  EXPECT_GE(a.size(0), 2);
  EXPECT_TENSOR_EQ(a, proposer.propose(img));
  EXPECT_NE(proposer.name().find("graph"), std::string::npos);
  EXPECT_THROW(proposer.propose(cv::Mat(10, 10, CV_8UC1)), combo::Error);
  cm::GraphProposerOptions no_scales;
  no_scales.k_values.clear();
  EXPECT_THROW(cm::GraphSegmentationProposer{no_scales}, combo::Error);
  EXPECT_THROW(cm::make_proposer("sam"), combo::Error);
}

TEST(MaskigeProposer, TorchScriptModuleFollowsTheContract) {
  TempDir dir;
  // forward(uint8 [3, H, W]) -> float [2, H, W]: red channel > 127 at 0.9, the rest at 0.3.
  torch::jit::Module m("TinyProposer");
  m.define(R"JIT(
def forward(self, image: Tensor) -> Tensor:
    red = image[0].float()
    bright = (red > 127.0).float() * 0.9
    low = torch.ones_like(red) * 0.3
    return torch.stack([bright, low])
)JIT");
  const std::string path = dir.file("tiny.pt");
  m.save(path);

  cv::Mat img(20, 30, CV_8UC3, cv::Scalar(10, 10, 10));
  img(cv::Rect(0, 0, 15, 20)).setTo(cv::Scalar(200, 0, 0));  // RGB: red on the left half
  cm::TorchScriptProposer proposer(path);
  const torch::Tensor masks = proposer.propose(img);
  ASSERT_EQ(masks.sizes(), (torch::IntArrayRef{2, 20, 30}));
  EXPECT_EQ(masks.scalar_type(), torch::kBool);
  EXPECT_EQ(masks[0].sum().item<int64_t>(), 15 * 20);
  EXPECT_TRUE(masks[0][5][3].item<bool>());
  EXPECT_FALSE(masks[0][5][20].item<bool>());
  EXPECT_EQ(masks[1].sum().item<int64_t>(), 0);  // 0.3 <= threshold 0.5
  EXPECT_NE(proposer.name().find("tiny.pt"), std::string::npos);
  auto via_factory = cm::make_proposer("torchscript", path);
  EXPECT_TENSOR_EQ(masks, via_factory->propose(img));

  // A module that breaks the contract: the error names the file and the shape.
  torch::jit::Module bad("BadProposer");
  bad.define(R"JIT(
def forward(self, image: Tensor) -> Tensor:
    return torch.zeros([1, 3, 3])
)JIT");
  const std::string bad_path = dir.file("bad.pt");
  bad.save(bad_path);
  cm::TorchScriptProposer bad_proposer(bad_path);
  try {
    bad_proposer.propose(img);
    ADD_FAILURE() << "expected an error";
  } catch (const combo::Error& e) {
    EXPECT_NE(std::string(e.what()).find("bad.pt"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("[1, 3, 3]"), std::string::npos) << e.what();
  }
  try {
    cm::TorchScriptProposer missing(dir.file("missing.pt"));
    ADD_FAILURE() << "expected an error";
  } catch (const combo::Error& e) {
    EXPECT_NE(std::string(e.what()).find("missing.pt"), std::string::npos) << e.what();
  }
}
