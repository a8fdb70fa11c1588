#pragma once
/// The adaptive inter-frame consistency loss of COMBO (`get_similarity_loss`, COMBO_SPEC 7.6,
/// 15(b) item 6).
#include <ATen/core/Tensor.h>
#include <torch/arg.h>

#include <cstdint>
#include <string>
#include <vector>

namespace combo::loss {

/// How the distance d = 1 - cos of adjacent frames becomes a loss.
enum class ConsistencyType {
  kAdaptive,  ///< d * exp(-d), exp not detached (the paper and the released code)
  kFixed,     ///< d
  kNone,      ///< no consistency loss
};

/// Which frames count as adjacent.
enum class ConsistencyGrouping {
  kOfficial,  ///< consecutive groups of `group_size` rows of the batch (released code: 5)
  kPerVideo,  ///< frames t, t+1 of the same video, any video length
};

/// "adaptive" | "fixed" | "none"; anything else throws combo::Error.
ConsistencyType parse_consistency_type(const std::string& name);
/// "official" | "per_video"; anything else throws combo::Error.
ConsistencyGrouping parse_consistency_grouping(const std::string& name);

struct ConsistencyOptions {
  TORCH_ARG(ConsistencyType, type) = ConsistencyType::kAdaptive;
  TORCH_ARG(ConsistencyGrouping, grouping) = ConsistencyGrouping::kOfficial;
  /// COSINE_WEIGHT; applied by SetCriterion, not by consistency_loss.
  TORCH_ARG(double, weight) = 10.0;
  /// Group length of the official grouping (n_frame = 5 in the released code).
  TORCH_ARG(int64_t, group_size) = 5;
};

/// Row pairs (r, r+1) compared by `grouping` for a batch of videos with `frames_per_video`
/// frames each (rows video-major). kOfficial ignores the videos and pairs rows within
/// consecutive groups of `group_size`; it requires N % group_size == 0.
std::vector<int64_t> adjacent_pair_rows(ConsistencyGrouping grouping,
                                        const std::vector<int64_t>& frames_per_video,
                                        int64_t group_size = 5);

/// d = 1 - <x, y> / sqrt((|x|^2 + 1e-12)(|y|^2 + 1e-12)) for every pair (r, r+1) of
/// adjacent_pair_rows, where x, y are rows of `middle` [N, ...] flattened (for COMBO:
/// [N, Q, h*w] mask logits, no sigmoid). Returns [num_pairs] in middle's dtype.
at::Tensor adjacent_cosine_distance(const at::Tensor& middle,
                                    const std::vector<int64_t>& frames_per_video,
                                    ConsistencyGrouping grouping, int64_t group_size = 5);

/// The unweighted loss of one intermediate prediction: the mean over adjacent pairs of
/// d * exp(-d) (kAdaptive) or d (kFixed); 0 (still attached to `middle`) when there are no
/// pairs. kNone is an error: SetCriterion emits no consistency terms then.
at::Tensor consistency_loss(const at::Tensor& middle, const std::vector<int64_t>& frames_per_video,
                            const ConsistencyOptions& options);

}  // namespace combo::loss
