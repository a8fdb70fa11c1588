// combo-info: prints the runtime (LibTorch, device, threads, commit) and the resolved config.
#include <CLI/CLI.hpp>

#include <iostream>

#include "combo/core/env.h"
#include "combo/core/state_dict.h"
#include "combo/engine/config.h"
#include "combo/engine/tool.h"

int main(int argc, char** argv) {
  CLI::App app{"combo-info: runtime and resolved configuration of ComboAVS"};
  std::string config_file;
  std::string dump_path;
  std::vector<std::string> overrides;
  bool fields = false;
  app.add_option("--config", config_file, "YAML config (with _base_ inheritance)");
  app.add_option("--dump", dump_path, "write the resolved config as YAML to this file");
  app.add_flag("--fields", fields, "list every config key with its type and default");
  app.add_option("overrides", overrides, "key.path=value overrides");
  CLI11_PARSE(app, argc, argv);

  return combo::engine::run_tool([&] {
    const combo::engine::Config cfg = combo::engine::load_config(config_file, overrides);
    combo::set_num_threads(static_cast<int>(cfg.runtime.threads));
    std::cout << combo::runtime_info().to_string() << "\n\n";
    if (fields) {
      combo::engine::Config defaults;
      for (const auto& f : combo::engine::config_fields(defaults)) {
        std::cout << f.path << " (" << combo::engine::field_type_name(f.ref) << ")";
        if (!f.choices.empty()) {
          std::cout << " one of:";
          for (const auto& c : f.choices) std::cout << " " << c;
        }
        std::cout << "\n";
      }
      return 0;
    }
    const std::string yaml = combo::engine::dump_config(cfg);
    std::cout << yaml;
    if (!dump_path.empty()) combo::write_file_atomic(dump_path, yaml);
    return 0;
  });
}
