#pragma once
/// Logging through spdlog: the console and `<output_dir>/log.txt`.
#include <spdlog/spdlog.h>

#include <string>

namespace combo::engine {

/// Installs the default spdlog logger: console (stderr) plus, when `output_dir` is not empty,
/// `<output_dir>/log.txt` (appended; created with its folder). On `rank` > 0 the console only
/// shows warnings and the file is `log.txt.rank<rank>`. `level`: trace, debug, info, warn, error.
void setup_logging(const std::string& output_dir = "", int rank = 0,
                   const std::string& level = "info");

}  // namespace combo::engine
