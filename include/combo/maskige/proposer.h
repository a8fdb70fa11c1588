#pragma once
/// Class-agnostic mask proposers (COMBO_SPEC 9.1): a frame in, a stack of binary masks out, to be
/// encoded as a Maskige (`encode.h`, `maskige_io.h`). The official pipeline runs Semantic-SAM
/// (Swin-L, level 3); here two proposers share one interface:
/// - `GraphSegmentationProposer`: needs no weights. Felzenszwalb-Huttenlocher graph segmentation
///   (OpenCV contrib ximgproc) at several scales k, so that coarse segments contain fine ones
///   and masks overlap like SAM's part/whole hierarchy.
/// - `TorchScriptProposer`: any user-exported SAM-style TorchScript module (contract below).
/// Part of combo_io.
#include <ATen/core/Tensor.h>
#include <opencv2/core/mat.hpp>

#include <memory>
#include <string>
#include <vector>

namespace combo::maskige {

/// A frame -> class-agnostic masks.
class MaskProposer {
 public:
  virtual ~MaskProposer() = default;
  /// rgb: CV_8UC3, RGB order, [H, W]. Returns bool [n, H, W] at the frame's resolution, n >= 0,
  /// in the proposer's own order (the Maskige encoder sorts by area). Safe to call from several
  /// threads at once on one proposer.
  virtual at::Tensor propose(const cv::Mat& rgb) = 0;
  /// A short description for logs ("graph(k=...)", "torchscript(<file>)").
  virtual std::string name() const = 0;
};

/// Options of the built-in graph-segmentation proposer. Defaults give roughly 5-40 masks on a
/// 224 x 224 natural frame.
struct GraphProposerOptions {
  /// Felzenszwalb-Huttenlocher scale parameters k, one segmentation each (larger = coarser).
  std::vector<double> k_values = {150.0, 500.0, 1500.0};
  /// Gaussian smoothing before segmenting.
  double sigma = 0.8;
  /// Components smaller than this fraction of the (working) frame area are merged into a
  /// neighbour inside the segmentation.
  double min_size_fraction = 0.004;
  /// Masks smaller than this fraction of the frame area are dropped.
  double min_area_fraction = 0.01;
  /// A mask whose IoU with an already kept mask (of a finer scale) exceeds this is dropped.
  double dedupe_iou = 0.9;
  /// Frames whose longer side exceeds this are segmented at a reduced size (INTER_AREA) and the
  /// masks scaled back with nearest neighbours; 0 segments at full resolution.
  int64_t max_side = 320;
};

class GraphSegmentationProposer : public MaskProposer {
 public:
  explicit GraphSegmentationProposer(GraphProposerOptions options = {});
  at::Tensor propose(const cv::Mat& rgb) override;
  std::string name() const override;
  const GraphProposerOptions& options() const { return options_; }

 private:
  GraphProposerOptions options_;
};

struct TorchScriptProposerOptions {
  /// Float outputs: a pixel is inside where value > threshold.
  double threshold = 0.5;
  /// Device the module and the frame go to ("cpu", "cuda", "cuda:1").
  std::string device = "cpu";
};

/// A TorchScript module exported by the user (`torch.jit.script(m).save(path)` or
/// `torch.jit.trace`). Contract:
///   forward(image: Tensor) -> Tensor
///   image: uint8 [3, H, W], RGB, 0..255, on `options.device`;
///   returns masks [n, H, W] (n >= 0) of bool, uint8 (non-zero = inside) or float
///   (value > threshold = inside), at the input's H, W. A [H, W] result is one mask.
/// Any resizing, normalisation, prompting (point grid), score filtering and NMS happen inside the
/// module. Calls run under torch::NoGradGuard; one module serves every thread.
class TorchScriptProposer : public MaskProposer {
 public:
  /// Loads the module; throws combo::Error naming the file when it cannot be loaded or has no
  /// forward method.
  explicit TorchScriptProposer(const std::string& model_path,
                               TorchScriptProposerOptions options = {});
  ~TorchScriptProposer() override;
  at::Tensor propose(const cv::Mat& rgb) override;
  std::string name() const override;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// "builtin" -> GraphSegmentationProposer (model_path ignored), "torchscript" ->
/// TorchScriptProposer(model_path). Anything else is an error.
std::unique_ptr<MaskProposer> make_proposer(const std::string& kind,
                                            const std::string& model_path = "");

}  // namespace combo::maskige
