#include "combo/metrics/binary.h"

#include <torch/torch.h>

#include <cstring>

#include "combo/core/check.h"

namespace combo::metrics {

const std::array<uint32_t, kNumFmeasureThresholds> kFmeasureThresholdBits = {
    0x00000000, 0x3b810204, 0x3c010204, 0x3c418306, 0x3c810204, 0x3ca14285, 0x3cc18306, 0x3ce1c387,
    0x3d010204, 0x3d112244, 0x3d214285, 0x3d3162c6, 0x3d418306, 0x3d51a346, 0x3d61c387, 0x3d71e3c8,
    0x3d810204, 0x3d891224, 0x3d912244, 0x3d993265, 0x3da14285, 0x3da952a5, 0x3db162c6, 0x3db972e6,
    0x3dc18306, 0x3dc99326, 0x3dd1a346, 0x3dd9b367, 0x3de1c387, 0x3de9d3a7, 0x3df1e3c8, 0x3df9f3e8,
    0x3e010204, 0x3e050a14, 0x3e091224, 0x3e0d1a34, 0x3e112244, 0x3e152a55, 0x3e193265, 0x3e1d3a75,
    0x3e214285, 0x3e254a95, 0x3e2952a5, 0x3e2d5ab5, 0x3e3162c6, 0x3e356ad6, 0x3e3972e6, 0x3e3d7af6,
    0x3e418306, 0x3e458b16, 0x3e499326, 0x3e4d9b36, 0x3e51a346, 0x3e55ab57, 0x3e59b367, 0x3e5dbb77,
    0x3e61c387, 0x3e65cb97, 0x3e69d3a7, 0x3e6ddbb7, 0x3e71e3c8, 0x3e75ebd8, 0x3e79f3e8, 0x3e7dfbf8,
    0x3e810204, 0x3e83060c, 0x3e850a14, 0x3e870e1c, 0x3e891224, 0x3e8b162c, 0x3e8d1a34, 0x3e8f1e3c,
    0x3e912244, 0x3e93264c, 0x3e952a54, 0x3e972e5c, 0x3e993264, 0x3e9b366c, 0x3e9d3a74, 0x3e9f3e7c,
    0x3ea14285, 0x3ea3468d, 0x3ea54a95, 0x3ea74e9d, 0x3ea952a5, 0x3eab56ad, 0x3ead5ab5, 0x3eaf5ebd,
    0x3eb162c6, 0x3eb366ce, 0x3eb56ad6, 0x3eb76ede, 0x3eb972e6, 0x3ebb76ee, 0x3ebd7af6, 0x3ebf7efe,
    0x3ec18306, 0x3ec3870e, 0x3ec58b16, 0x3ec78f1e, 0x3ec99326, 0x3ecb972e, 0x3ecd9b36, 0x3ecf9f3e,
    0x3ed1a346, 0x3ed3a74e, 0x3ed5ab56, 0x3ed7af5e, 0x3ed9b366, 0x3edbb76e, 0x3eddbb76, 0x3edfbf7e,
    0x3ee1c387, 0x3ee3c78f, 0x3ee5cb97, 0x3ee7cf9f, 0x3ee9d3a7, 0x3eebd7af, 0x3eeddbb7, 0x3eefdfbf,
    0x3ef1e3c8, 0x3ef3e7d0, 0x3ef5ebd8, 0x3ef7efe0, 0x3ef9f3e8, 0x3efbf7f0, 0x3efdfbf8, 0x3f000000,
    0x3f010204, 0x3f020408, 0x3f03060c, 0x3f040810, 0x3f050a14, 0x3f060c18, 0x3f070e1c, 0x3f081020,
    0x3f091224, 0x3f0a1428, 0x3f0b162c, 0x3f0c1830, 0x3f0d1a34, 0x3f0e1c38, 0x3f0f1e3c, 0x3f102040,
    0x3f112245, 0x3f122449, 0x3f13264d, 0x3f142851, 0x3f152a55, 0x3f162c59, 0x3f172e5d, 0x3f183061,
    0x3f193265, 0x3f1a3469, 0x3f1b366d, 0x3f1c3871, 0x3f1d3a75, 0x3f1e3c79, 0x3f1f3e7d, 0x3f204081,
    0x3f214285, 0x3f224489, 0x3f23468d, 0x3f244891, 0x3f254a95, 0x3f264c99, 0x3f274e9d, 0x3f2850a1,
    0x3f2952a5, 0x3f2a54a9, 0x3f2b56ad, 0x3f2c58b1, 0x3f2d5ab5, 0x3f2e5cb9, 0x3f2f5ebd, 0x3f3060c1,
    0x3f3162c6, 0x3f3264ca, 0x3f3366ce, 0x3f3468d2, 0x3f356ad6, 0x3f366cda, 0x3f376ede, 0x3f3870e2,
    0x3f3972e6, 0x3f3a74ea, 0x3f3b76ee, 0x3f3c78f2, 0x3f3d7af6, 0x3f3e7cfa, 0x3f3f7efe, 0x3f408102,
    0x3f418306, 0x3f42850a, 0x3f43870e, 0x3f448912, 0x3f458b16, 0x3f468d1a, 0x3f478f1e, 0x3f489122,
    0x3f499326, 0x3f4a952a, 0x3f4b972e, 0x3f4c9932, 0x3f4d9b36, 0x3f4e9d3a, 0x3f4f9f3e, 0x3f50a142,
    0x3f51a347, 0x3f52a54b, 0x3f53a74f, 0x3f54a953, 0x3f55ab57, 0x3f56ad5b, 0x3f57af5f, 0x3f58b163,
    0x3f59b367, 0x3f5ab56b, 0x3f5bb76f, 0x3f5cb973, 0x3f5dbb77, 0x3f5ebd7b, 0x3f5fbf7f, 0x3f60c183,
    0x3f61c387, 0x3f62c58b, 0x3f63c78f, 0x3f64c993, 0x3f65cb97, 0x3f66cd9b, 0x3f67cf9f, 0x3f68d1a3,
    0x3f69d3a7, 0x3f6ad5ab, 0x3f6bd7af, 0x3f6cd9b3, 0x3f6ddbb7, 0x3f6eddbb, 0x3f6fdfbf, 0x3f70e1c3,
    0x3f71e3c8, 0x3f72e5cc, 0x3f73e7d0, 0x3f74e9d4, 0x3f75ebd8, 0x3f76eddc, 0x3f77efe0, 0x3f78f1e4,
    0x3f79f3e8, 0x3f7af5ec, 0x3f7bf7f0, 0x3f7cf9f4, 0x3f7dfbf8, 0x3f7efdfc, 0x3f800000,
};

namespace {

void check_binary_pair(const at::Tensor& pred, const at::Tensor& target, const char* what) {
  COMBO_CHECK(pred.dim() == 3, what, ": expected predictions [N, H, W], got shape ", pred.sizes());
  COMBO_CHECK(pred.sizes() == target.sizes(), what, ": prediction shape ", pred.sizes(),
              " differs from target shape ", target.sizes());
}

}  // namespace

at::Tensor fmeasure_thresholds() {
  auto out = torch::empty({kNumFmeasureThresholds}, torch::kFloat32);
  std::memcpy(out.data_ptr<float>(), kFmeasureThresholdBits.data(),
              sizeof(float) * kNumFmeasureThresholds);
  return out;
}

at::Tensor foreground_probabilities(const at::Tensor& pred, BinaryInput input) {
  auto x = pred.to(torch::kFloat32);
  return input == BinaryInput::kLogits ? torch::sigmoid(x) : x;
}

at::Tensor frame_mask_iou(const at::Tensor& probs, const at::Tensor& target, double eps) {
  check_binary_pair(probs, target, "frame_mask_iou");
  const int64_t num_pixels = probs.size(1) * probs.size(2);
  auto t = target.to(torch::kFloat32);
  // The official code mixes an int prediction with a float target; every count is exact.
  auto p = (probs.to(torch::kFloat32) > 0.5).to(torch::kInt32);
  auto no_obj = t.sum({1, 2}) == 0;
  auto inter = (p * t).sum({1, 2});
  auto uni = torch::maximum(p, t).sum({1, 2});
  auto inter_no_obj = ((1 - t) * (1 - p)).sum({1, 2});
  inter = torch::where(no_obj, inter_no_obj, inter);
  uni = torch::where(no_obj, torch::full_like(uni, static_cast<double>(num_pixels)), uni);
  return inter / (uni + eps);
}

at::Tensor mask_iou(const at::Tensor& pred, const at::Tensor& target, BinaryInput input,
                    double eps) {
  check_binary_pair(pred, target, "mask_iou");
  COMBO_CHECK(pred.size(0) > 0, "mask_iou: expected at least one frame, got none");
  auto iou = frame_mask_iou(foreground_probabilities(pred, input), target, eps);
  return torch::sum(iou) / pred.size(0);
}

FrameFmeasure frame_fmeasure_curves(const at::Tensor& probs, const at::Tensor& target) {
  check_binary_pair(probs, target, "frame_fmeasure_curves");
  const int64_t n = probs.size(0);
  auto y_all = probs.to(torch::kFloat32).reshape({n, -1});
  auto g_all = target.to(torch::kFloat32).reshape({n, -1});
  auto thresholds = fmeasure_thresholds().to(y_all.device());
  auto curves = torch::zeros({n, kNumFmeasureThresholds}, y_all.options());
  auto nonempty = (g_all.sum(1) > 0).cpu();
  auto nonempty_a = nonempty.accessor<bool, 1>();
  for (int64_t i = 0; i < n; ++i) {
    if (!nonempty_a[i]) continue;
    // Counting #(y >= t) and TP for all thresholds at once on the sorted scores gives the same
    // integers as the official per-threshold loop.
    auto sorted = torch::sort(y_all[i]);
    auto values = std::get<0>(sorted);
    auto gt_sorted = g_all[i].index_select(0, std::get<1>(sorted)).to(torch::kInt64);
    auto cum = torch::cat({torch::zeros({1}, gt_sorted.options()), gt_sorted.cumsum(0)});
    const int64_t num_pixels = values.size(0);
    auto first = torch::searchsorted(values, thresholds, /*out_int32=*/false, /*right=*/false);
    auto total = cum[num_pixels];
    auto tp = (total - cum.index_select(0, first)).to(torch::kFloat32);
    auto npred = (num_pixels - first).to(torch::kFloat32);
    auto ngt = total.to(torch::kFloat32);
    auto prec = tp / (npred + 1e-20);
    auto recall = tp / (ngt + 1e-20);
    auto f = 1.3 * prec * recall / (0.3 * prec + recall);
    f.masked_fill_(torch::isnan(f), 0.0);
    curves[i].copy_(f);
  }
  return {curves, nonempty.to(y_all.device())};
}

double fmeasure_from_curves(const at::Tensor& curves, const at::Tensor& nonempty) {
  COMBO_CHECK(curves.dim() == 2 && curves.size(1) == kNumFmeasureThresholds,
              "fmeasure_from_curves: expected curves [N, ", kNumFmeasureThresholds, "], got ",
              curves.sizes());
  COMBO_CHECK(nonempty.dim() == 1 && nonempty.size(0) == curves.size(0),
              "fmeasure_from_curves: expected nonempty [", curves.size(0), "], got ",
              nonempty.sizes());
  auto flags = nonempty.to(torch::kBool).cpu();
  auto flags_a = flags.accessor<bool, 1>();
  at::Tensor sum;
  int64_t count = 0;
  for (int64_t i = 0; i < curves.size(0); ++i) {
    if (!flags_a[i]) continue;
    sum = count == 0 ? curves[i].clone() : sum + curves[i];
    ++count;
  }
  if (count == 0) return 0.0;
  return static_cast<double>((sum / count).max().item<float>());
}

double eval_fmeasure(const at::Tensor& pred, const at::Tensor& gt, BinaryInput input) {
  check_binary_pair(pred, gt, "eval_fmeasure");
  auto fm = frame_fmeasure_curves(foreground_probabilities(pred, input), gt);
  return fmeasure_from_curves(fm.curves, fm.nonempty);
}

}  // namespace combo::metrics
