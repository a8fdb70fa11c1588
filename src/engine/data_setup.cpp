#include "combo/engine/data_setup.h"

#include <mutex>

#include "combo/core/check.h"

namespace combo::engine {

data::DatasetOptions dataset_options(const Config& c, const std::string& split, bool train) {
  data::DatasetOptions o;
  o.kind = loss::parse_dataset_kind(c.data.dataset);
  o.root = c.data.root;
  o.split = split;
  o.audio_source = c.data.audio_source;
  o.load_maskige = c.model.pre_sam.enabled;
  o.train = train;
  o.augment = train && c.data.augment.enabled;
  o.avss_frames = c.data.avss_frames;
  o.image_size = c.data.image_size;
  o.skip_bad = c.data.skip_bad;
  o.check_masks = c.data.check_masks;
  o.silence_audio = c.data.silence_audio;
  auto& a = o.augment_options;
  a.short_sides = c.data.augment.short_sides;
  a.max_size = c.data.augment.max_size;
  a.crop_size = c.data.augment.crop_size;
  a.pad_size = c.data.augment.pad_size;
  a.color_jitter = c.data.augment.color_jitter;
  a.jitter_maskige = c.data.augment.jitter_maskige;
  a.flip_prob = c.data.augment.flip_prob;
  auto& s = o.synthetic;
  s.train_videos = c.data.synthetic.train_videos;
  s.eval_videos = c.data.synthetic.eval_videos;
  s.frames = c.data.synthetic.frames;
  s.image_size = c.data.synthetic.image_size;
  s.seed = c.data.synthetic.seed;
  s.classes = c.data.synthetic.classes;
  s.object_scale = c.data.synthetic.object_scale;
  s.style = c.data.synthetic.style;
  return o;
}

data::LoaderOptions train_loader_options(const Config& c, int64_t rank, int64_t world_size) {
  COMBO_CHECK(c.solver.ims_per_batch % world_size == 0, "solver.ims_per_batch (",
              c.solver.ims_per_batch, ") must be divisible by the number of processes (",
              world_size, ")");
  data::LoaderOptions o;
  o.batch_videos = c.solver.ims_per_batch / world_size;
  o.num_workers = c.data.num_workers;
  o.prefetch = c.data.prefetch;
  o.shuffle = true;
  o.infinite = true;
  o.seed = static_cast<uint64_t>(c.runtime.seed);
  o.rank = rank;
  o.world_size = world_size;
  return o;
}

data::LoaderOptions eval_loader_options(const Config& c, int64_t rank, int64_t world_size) {
  data::LoaderOptions o;
  o.batch_videos = c.test.batch_size;
  o.num_workers = c.data.num_workers;
  o.prefetch = c.data.prefetch;
  o.shuffle = false;
  o.infinite = false;
  o.contiguous_shards = true;
  o.rank = rank;
  o.world_size = world_size;
  return o;
}

bool has_media_stack() {
#if defined(COMBO_WITH_MEDIA)
  return true;
#else
  return false;
#endif
}

std::shared_ptr<const data::Dataset> build_dataset(const Config& config, const std::string& split,
                                                   bool train) {
#if defined(COMBO_WITH_MEDIA)
  static std::once_flag registered;
  std::call_once(registered, [] { data::register_media_datasets(); });
#endif
  return data::make_dataset(config.data.source, dataset_options(config, split, train));
}

}  // namespace combo::engine
