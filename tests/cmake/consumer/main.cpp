#include <torch/torch.h>

#include <iostream>

#include "combo/core/env.h"
#include "combo/core/state_dict.h"

int main(int argc, char** argv) {
  if (argc < 2) return 2;
  const std::string path = std::string(argv[1]) + "/consumer.pt";
  combo::save_state_dict(path, {{"w", torch::arange(4.0)}});
  const auto back = combo::load_state_dict(path);
  std::cout << combo::runtime_info().to_string() << "\n";
  return torch::equal(back.at("w"), torch::arange(4.0)) ? 0 : 1;
}
