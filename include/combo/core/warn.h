#pragma once
/// Warnings from the LibTorch-only layer, which has no logger: they go to the handler the engine
/// installs (spdlog, so into log.txt), or to stderr as "warning: <message>".
#include <functional>
#include <string>

namespace combo {

void warn(const std::string& message);

/// Replaces the warning handler (an empty function restores stderr). Returns the previous one.
std::function<void(const std::string&)> set_warning_handler(
    std::function<void(const std::string&)> handler);

}  // namespace combo
