// combo_dist_worker: one rank of the data-parallel tests (test_distributed.cpp). Reads the
// torchrun variables, trains the tiny model of dist_helpers.h for --steps steps on its share of
// each batch, and rank 0 writes the weights to <out>/weights_rank<r>.pth (every rank does with
// --all-write). --stall-after N makes this rank sleep forever after N steps (a hung peer).
#include <torch/torch.h>

#include <chrono>
#include <fstream>
#include <iostream>
#include <thread>

#include "../dist_helpers.h"
#include "combo/core/env.h"
#include "combo/core/state_dict.h"
#include "combo/engine/distributed.h"

int main(int argc, char** argv) {
  std::string out;
  int64_t steps = 3, stall_after = -1;
  double timeout = 60;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i], v = argv[i + 1];
    if (a == "--out")
      out = v;
    else if (a == "--steps")
      steps = std::stoll(v);
    else if (a == "--timeout")
      timeout = std::stod(v);
    else if (a == "--stall-after")
      stall_after = std::stoll(v);
  }
  try {
    combo::setup_runtime(1, 7);
    const auto env = combo::engine::dist_env_from_environment();
    combo::engine::ProcessGroupOptions po;
    po.timeout_seconds = timeout;
    auto group = combo::engine::ProcessGroup::create(env, at::kCPU, po);
    auto model = combo::train_test::dist_model(11 + env.rank);  // rank 0's weights win
    auto o = combo::train_test::dist_trainer_options(out + "/run", steps);
    o.jsonl = env.rank == 0;
    combo::engine::Trainer trainer(model, combo::train_test::tiny_criterion(), o);
    trainer.set_distributed(group);
    trainer.set_point_source(std::make_shared<combo::train_test::FixedPointSource>());
    trainer.set_after_step([&](int64_t t, const combo::TensorDict&) {
      std::ofstream(out + "/progress_rank" + std::to_string(env.rank)) << t + 1 << "\n";
      if (stall_after >= 0 && t + 1 >= stall_after)
        for (;;) std::this_thread::sleep_for(std::chrono::seconds(1));
    });
    combo::train_test::ShardSource source(env.rank, env.world_size);
    trainer.run(source);
    combo::save_state_dict(out + "/weights_rank" + std::to_string(env.rank) + ".pth",
                           combo::module_state_dict(*model));
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << std::endl;
    return 1;
  }
}
