#pragma once

namespace combo {
/// Short git commit of the build ("unknown" outside a git checkout; "-dirty" with local edits).
const char* git_commit();
/// ComboAVS version string (project version).
const char* combo_version();
}  // namespace combo
