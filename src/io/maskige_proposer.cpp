// Mask proposers: multi-scale graph segmentation (no weights) and user TorchScript modules.
#include "combo/maskige/proposer.h"

#include <ATen/ATen.h>
#include <torch/script.h>

#include <algorithm>
#include <cmath>
#include <opencv2/imgproc.hpp>
#include <opencv2/ximgproc/segmentation.hpp>
#include <sstream>
#include <unordered_map>

#include "combo/core/check.h"
#include "combo/io/image.h"
#include "combo/maskige/maskige_io.h"

namespace combo::maskige {

// ---------------------------------------------------------------------------------------------
// GraphSegmentationProposer

GraphSegmentationProposer::GraphSegmentationProposer(GraphProposerOptions options)
    : options_(std::move(options)) {
  COMBO_CHECK(!options_.k_values.empty(), "GraphSegmentationProposer: k_values is empty");
  for (double k : options_.k_values) {
    COMBO_CHECK(k > 0, "GraphSegmentationProposer: k values must be positive, got ", k);
  }
  COMBO_CHECK(options_.sigma >= 0, "GraphSegmentationProposer: sigma must be >= 0");
  COMBO_CHECK(options_.min_size_fraction >= 0 && options_.min_size_fraction < 1,
              "GraphSegmentationProposer: min_size_fraction must be in [0, 1)");
  COMBO_CHECK(options_.min_area_fraction >= 0 && options_.min_area_fraction <= 1,
              "GraphSegmentationProposer: min_area_fraction must be in [0, 1]");
  COMBO_CHECK(options_.dedupe_iou > 0 && options_.dedupe_iou <= 1,
              "GraphSegmentationProposer: dedupe_iou must be in (0, 1]");
  COMBO_CHECK(options_.max_side >= 0, "GraphSegmentationProposer: max_side must be >= 0");
}

std::string GraphSegmentationProposer::name() const {
  std::ostringstream os;
  os << "graph(k=";
  for (size_t i = 0; i < options_.k_values.size(); ++i) {
    os << (i ? "," : "") << options_.k_values[i];
  }
  os << ", sigma=" << options_.sigma << ")";
  return os.str();
}

at::Tensor GraphSegmentationProposer::propose(const cv::Mat& rgb) {
  COMBO_CHECK(!rgb.empty() && rgb.type() == CV_8UC3,
              "GraphSegmentationProposer: expected a non-empty CV_8UC3 RGB frame, got type ",
              rgb.type(), " of ", rgb.cols, "x", rgb.rows);
  const int height = rgb.rows, width = rgb.cols;
  cv::Mat work = rgb;
  const int longer = std::max(height, width);
  if (options_.max_side > 0 && longer > options_.max_side) {
    const double s = static_cast<double>(options_.max_side) / longer;
    const int w = std::max(1, static_cast<int>(std::lround(width * s)));
    const int h = std::max(1, static_cast<int>(std::lround(height * s)));
    cv::resize(rgb, work, cv::Size(w, h), 0, 0, cv::INTER_AREA);
  }
  const int64_t work_area = static_cast<int64_t>(work.rows) * work.cols;
  const int min_size =
      std::max(1, static_cast<int>(std::lround(options_.min_size_fraction * work_area)));
  const double min_area = options_.min_area_fraction * static_cast<double>(work_area);

  struct Scale {
    cv::Mat labels;                // CV_32S [h, w] at working size
    std::vector<int64_t> counts;   // pixels per segment
    std::vector<int64_t> kept_id;  // segment -> output mask index, -1 when dropped
  };
  std::vector<Scale> scales;
  int64_t n_kept = 0;
  for (double k : options_.k_values) {
    // One segmenter per call: the OpenCV object is stateful, this keeps propose() thread-safe.
    auto seg = cv::ximgproc::segmentation::createGraphSegmentation(options_.sigma,
                                                                   static_cast<float>(k), min_size);
    Scale sc;
    seg->processImage(work, sc.labels);
    COMBO_CHECK(sc.labels.type() == CV_32S, "GraphSegmentationProposer: unexpected label type");
    double max_label = 0;
    cv::minMaxLoc(sc.labels, nullptr, &max_label);
    const int64_t n_seg = static_cast<int64_t>(max_label) + 1;
    sc.counts.assign(n_seg, 0);
    for (int y = 0; y < sc.labels.rows; ++y) {
      const int* row = sc.labels.ptr<int>(y);
      for (int x = 0; x < sc.labels.cols; ++x) ++sc.counts[row[x]];
    }
    // Largest IoU of each new segment with the masks kept at finer scales. Intersections come
    // from one joint histogram per earlier scale.
    std::vector<double> best_iou(n_seg, 0.0);
    for (const Scale& prev : scales) {
      const int64_t n_prev = static_cast<int64_t>(prev.counts.size());
      std::unordered_map<int64_t, int64_t> inter;
      for (int y = 0; y < sc.labels.rows; ++y) {
        const int* a = sc.labels.ptr<int>(y);
        const int* b = prev.labels.ptr<int>(y);
        for (int x = 0; x < sc.labels.cols; ++x) {
          if (prev.kept_id[b[x]] >= 0) ++inter[static_cast<int64_t>(a[x]) * n_prev + b[x]];
        }
      }
      for (const auto& [key, count] : inter) {
        const int64_t s = key / n_prev, t = key % n_prev;
        const double iou =
            static_cast<double>(count) / static_cast<double>(sc.counts[s] + prev.counts[t] - count);
        best_iou[s] = std::max(best_iou[s], iou);
      }
    }
    sc.kept_id.assign(n_seg, -1);
    for (int64_t s = 0; s < n_seg; ++s) {
      if (static_cast<double>(sc.counts[s]) >= min_area && best_iou[s] <= options_.dedupe_iou) {
        sc.kept_id[s] = n_kept++;
      }
    }
    scales.push_back(std::move(sc));
  }

  at::Tensor masks = at::zeros({n_kept, height, width}, at::kBool);
  if (n_kept == 0) return masks;
  bool* pm = masks.data_ptr<bool>();
  const int64_t hw = static_cast<int64_t>(height) * width;
  // Working-size -> frame-size lookup (nearest, PIL's rule).
  const std::vector<int64_t> ys = pil_nearest_indices(work.rows, height);
  const std::vector<int64_t> xs = pil_nearest_indices(work.cols, width);
  for (const Scale& sc : scales) {
    for (int y = 0; y < height; ++y) {
      const int* row = sc.labels.ptr<int>(static_cast<int>(ys[y]));
      for (int x = 0; x < width; ++x) {
        const int64_t id = sc.kept_id[row[xs[x]]];
        if (id >= 0) pm[id * hw + static_cast<int64_t>(y) * width + x] = true;
      }
    }
  }
  return masks;
}

// ---------------------------------------------------------------------------------------------
// TorchScriptProposer

struct TorchScriptProposer::Impl {
  std::string path;
  TorchScriptProposerOptions options;
  torch::jit::Module module;
  c10::Device device{c10::kCPU};
};

TorchScriptProposer::TorchScriptProposer(const std::string& model_path,
                                         TorchScriptProposerOptions options)
    : impl_(std::make_unique<Impl>()) {
  impl_->path = model_path;
  impl_->options = std::move(options);
  try {
    impl_->device = c10::Device(impl_->options.device);
  } catch (const c10::Error& e) {
    COMBO_FAIL("TorchScriptProposer: bad device '", impl_->options.device,
               "': ", e.what_without_backtrace());
  }
  try {
    impl_->module = torch::jit::load(model_path, impl_->device);
  } catch (const c10::Error& e) {
    COMBO_FAIL("TorchScriptProposer: cannot load the TorchScript module ", model_path, ": ",
               e.what_without_backtrace());
  } catch (const std::exception& e) {
    COMBO_FAIL("TorchScriptProposer: cannot load the TorchScript module ", model_path, ": ",
               e.what());
  }
  COMBO_CHECK(impl_->module.find_method("forward").has_value(), "TorchScriptProposer: ", model_path,
              " has no forward method");
  impl_->module.eval();
}

TorchScriptProposer::~TorchScriptProposer() = default;

std::string TorchScriptProposer::name() const { return "torchscript(" + impl_->path + ")"; }

at::Tensor TorchScriptProposer::propose(const cv::Mat& rgb) {
  COMBO_CHECK(!rgb.empty() && rgb.type() == CV_8UC3, "TorchScriptProposer(", impl_->path,
              "): expected a non-empty CV_8UC3 RGB frame");
  const int64_t height = rgb.rows, width = rgb.cols;
  const at::Tensor image = combo::io::mat_to_chw(rgb).to(impl_->device);
  c10::IValue out;
  {
    torch::NoGradGuard no_grad;
    try {
      out = impl_->module.forward({image});
    } catch (const c10::Error& e) {
      COMBO_FAIL("TorchScriptProposer: forward of ", impl_->path, " failed on a ", width, "x",
                 height, " frame: ", e.what_without_backtrace());
    }
  }
  at::Tensor masks;
  if (out.isTensor()) {
    masks = out.toTensor();
  } else if (out.isTensorList()) {
    const auto list = out.toTensorVector();
    masks = list.empty() ? at::zeros({0, height, width}, at::kBool) : at::stack(list);
  } else {
    COMBO_FAIL("TorchScriptProposer: ", impl_->path, " returned ", out.tagKind(),
               "; the contract is a Tensor [n, H, W]");
  }
  masks = masks.cpu();
  if (masks.dim() == 2) masks = masks.unsqueeze(0);
  COMBO_CHECK(masks.dim() == 3 && masks.size(1) == height && masks.size(2) == width,
              "TorchScriptProposer: ", impl_->path, " returned shape ", masks.sizes(), " for a ",
              width, "x", height, " frame; expected [n, ", height, ", ", width, "]");
  if (masks.scalar_type() == at::kBool) return masks.contiguous();
  if (at::isFloatingType(masks.scalar_type())) {
    return masks.gt(impl_->options.threshold).contiguous();
  }
  COMBO_CHECK(at::isIntegralType(masks.scalar_type(), /*includeBool=*/false),
              "TorchScriptProposer: ", impl_->path, " returned unsupported dtype ",
              masks.scalar_type());
  return masks.ne(0).contiguous();
}

std::unique_ptr<MaskProposer> make_proposer(const std::string& kind,
                                            const std::string& model_path) {
  if (kind == "builtin") return std::make_unique<GraphSegmentationProposer>();
  if (kind == "torchscript") {
    COMBO_CHECK(!model_path.empty(), "make_proposer: the torchscript proposer needs a model file");
    return std::make_unique<TorchScriptProposer>(model_path);
  }
  COMBO_FAIL("make_proposer: unknown proposer '", kind, "' (expected builtin or torchscript)");
}

}  // namespace combo::maskige
