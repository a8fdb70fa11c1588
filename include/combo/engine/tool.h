#pragma once
/// Shared entry point of the combo-* executables: errors become `error: <message>` on stderr
/// and a non-zero exit status.
#include <functional>

namespace combo::engine {

/// Runs `body`; returns its status, or 1 after printing `error: ...` if it throws.
int run_tool(const std::function<int()>& body);

/// Debian's LibTorch uses libgomp, whose idle threads spin; on a machine doing anything else a
/// 2-thread run then goes several times slower. libgomp reads OMP_WAIT_POLICY when it loads, so
/// when the variable is unset this sets it to PASSIVE and re-executes the program (same
/// arguments). A user's own OMP_WAIT_POLICY, whatever its value, is respected. Call it first in
/// main.
void prefer_passive_openmp(int argc, char** argv);

}  // namespace combo::engine
