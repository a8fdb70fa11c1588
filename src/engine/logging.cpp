#include "combo/engine/logging.h"

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>

#include <filesystem>
#include <vector>

#include "combo/core/check.h"
#include "combo/core/warn.h"

namespace combo::engine {

void setup_logging(const std::string& output_dir, int rank, const std::string& level) {
  const auto lvl = spdlog::level::from_str(level);
  COMBO_CHECK(lvl != spdlog::level::off || level == "off", "unknown log level '", level,
              "' (trace, debug, info, warn, error, off)");
  std::vector<spdlog::sink_ptr> sinks;
  auto console = std::make_shared<spdlog::sinks::stderr_color_sink_mt>();
  console->set_level(rank == 0 ? lvl : spdlog::level::warn);
  console->set_pattern(rank == 0 ? std::string("[%H:%M:%S %^%l%$] %v")
                                 : "[%H:%M:%S %^%l%$ rank " + std::to_string(rank) + "] %v");
  sinks.push_back(console);
  if (!output_dir.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(output_dir, ec);
    COMBO_CHECK(!ec, "cannot create output folder '", output_dir, "': ", ec.message());
    const std::string file =
        output_dir + "/log.txt" + (rank == 0 ? std::string() : ".rank" + std::to_string(rank));
    try {
      auto file_sink = std::make_shared<spdlog::sinks::basic_file_sink_mt>(file, false);
      file_sink->set_level(lvl);
      file_sink->set_pattern("[%Y-%m-%d %H:%M:%S.%e %l] %v");
      sinks.push_back(file_sink);
    } catch (const spdlog::spdlog_ex& e) {
      COMBO_FAIL("cannot open log file '", file, "': ", e.what());
    }
  }
  auto logger = std::make_shared<spdlog::logger>("combo", sinks.begin(), sinks.end());
  logger->set_level(lvl);
  logger->flush_on(spdlog::level::info);
  spdlog::set_default_logger(logger);
  // Warnings of the LibTorch-only layer (e.g. a weights file without checksums) go to the log.
  set_warning_handler([](const std::string& message) { spdlog::warn("{}", message); });
}

}  // namespace combo::engine
