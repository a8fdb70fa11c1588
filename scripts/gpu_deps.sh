#!/usr/bin/env bash
# Prepares, on a Debian 12 machine with network, what scripts/gpu_check.sh needs on a CUDA
# machine that has no package manager and no network, in the git-ignored folder .deps/:
#   .deps/debs/      the .deb files of yaml-cpp, spdlog, fmt, CLI11, nlohmann-json, googletest
#                    (about 2 MB; gpu_check.sh unpacks them into its build folder)
#   .deps/fixtures/  a copy of the golden fixtures (COMBO_REFERENCE_DIR, or
#                    ../shared/fixtures/reference), which do not travel otherwise
# Then send the tree with .deps and run scripts/gpu_check.sh there.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .deps/debs
(cd .deps/debs && apt-get download libyaml-cpp-dev libyaml-cpp0.7 libspdlog-dev libspdlog1.10 \
    libfmt-dev libfmt9 libcli11-dev nlohmann-json3-dev libgtest-dev libgmock-dev googletest)
src=${COMBO_REFERENCE_DIR:-../shared/fixtures/reference}
if [ -d "$src" ]; then
  mkdir -p .deps/fixtures
  cp -u "$src"/*.pt .deps/fixtures/ 2>/dev/null || true
  cp -u "$src"/README.md .deps/fixtures/ 2>/dev/null || true
fi
du -sh .deps/debs .deps/fixtures 2>/dev/null || true
