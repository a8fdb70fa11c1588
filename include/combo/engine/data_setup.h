#pragma once
/// From the config to the data pipeline: dataset and loader options for training and
/// evaluation (the network code never sees the config).
#include <memory>
#include <string>

#include "combo/data/dataset.h"
#include "combo/data/loader.h"
#include "combo/engine/config.h"

namespace combo::engine {

/// Dataset options of `split`. `train` selects the training semantics (S4 first-frame ground
/// truth, AVSS crop rule, augmentation when data.augment.enabled).
data::DatasetOptions dataset_options(const Config& config, const std::string& split, bool train);

/// The training loader of this rank: infinite, shuffled, solver.ims_per_batch / world_size
/// videos per batch, seeded from runtime.seed.
data::LoaderOptions train_loader_options(const Config& config, int64_t rank = 0,
                                         int64_t world_size = 1);

/// An evaluation loader: one pass in order, test.batch_size videos per batch.
data::LoaderOptions eval_loader_options(const Config& config, int64_t rank = 0,
                                        int64_t world_size = 1);

/// Builds the dataset of `split` (shared by loaders) from data.source: "files" (AVSBench on
/// disk, builds with the media stack) or "synthetic" (in memory, every build). In media builds
/// the first call registers the on-disk readers (data::register_media_datasets).
std::shared_ptr<const data::Dataset> build_dataset(const Config& config, const std::string& split,
                                                   bool train);

/// True when this build has the media stack (COMBO_WITH_MEDIA): on-disk datasets, overlays.
bool has_media_stack();

}  // namespace combo::engine
