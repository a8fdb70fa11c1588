#pragma once
/// Shared entry point of the combo-* executables: errors become `error: <message>` on stderr
/// and a non-zero exit status.
#include <functional>

namespace combo::engine {

/// Runs `body`; returns its status, or 1 after printing `error: ...` if it throws.
int run_tool(const std::function<int()>& body);

}  // namespace combo::engine
