#pragma once
// The tiny COMBO config the tool smoke tests train: a 32 px S4 tree, a few iterations in seconds.
#include <filesystem>
#include <fstream>
#include <string>

#include "testing/testing.h"

namespace combo::testing {

/// Writes the config to `file`: data.root `data`, output_dir `out`, plus `extra` YAML lines
/// (top-level sections not set here, e.g. "runtime:\n  dist_timeout: 120\n").
inline void write_tiny_config(const std::filesystem::path& file, const std::filesystem::path& data,
                              const std::filesystem::path& out, const std::string& extra = "") {
  std::ofstream(file)
      << "_base_: " << (source_dir() / "configs/_base_/avs_s4.yaml").string() << "\n"
      << "model:\n  backbone:\n    name: pvt_v2_b0\n"
      << "  decoder:\n    num_queries: 4\n    dec_layers: 2\n    dim_feedforward: 32\n"
      << "  pixel_decoder:\n    enc_layers: 1\n    dim_feedforward: 32\n"
      << "loss:\n  train_num_points: 256\n"
      << "data:\n  root: " << data.string() << "\n  num_workers: 1\n"
      << "  augment:\n    short_sides: [32, 40]\n    crop_size: 32\n    pad_size: 32\n"
      << "solver:\n  max_iter: 4\n  ims_per_batch: 2\n  checkpoint_period: 2\n"
      << "  base_lr: 0.0001\n"
      << "test:\n  eval_period: 2\n"
      << extra << "output_dir: " << out.string() << "\n";
}

}  // namespace combo::testing
