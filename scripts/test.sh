#!/usr/bin/env bash
# Installs the dependencies, configures, builds and runs the whole CTest suite.
# Exits non-zero on any failure. Environment: COMBO_BUILD_DIR (default build),
# COMBO_REFERENCE_DIR (golden fixtures; default ../shared/fixtures/reference), CTEST_ARGS.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
build=${COMBO_BUILD_DIR:-build}
jobs=$(nproc)

scripts/install_deps.sh
# ccache needs a cache folder even where HOME is not set (some CI environments).
export CCACHE_DIR=${CCACHE_DIR:-${HOME:-/tmp}/.cache/ccache}

start=$(date +%s)
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCOMBO_BUILD_TESTS=ON -DCOMBO_BUILD_TOOLS=ON
cmake --build "$build" -j "$jobs"
echo "test.sh: build took $(( $(date +%s) - start )) s"

if [ -z "${COMBO_REFERENCE_DIR:-}" ] && [ -d "$root/../shared/fixtures/reference" ]; then
  export COMBO_REFERENCE_DIR="$root/../shared/fixtures/reference"
fi
echo "test.sh: golden fixtures: ${COMBO_REFERENCE_DIR:-none (parity tests will skip)}"

cd "$build"
# libgomp's threads spin while waiting; with two test processes on two cores that spinning
# starves the other process (measured: 3-7x slower). Passive waiting avoids it.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
# Each test uses every core itself; running two at a time still overlaps process start-up.
ctest --output-on-failure --no-tests=error -j "$jobs" ${CTEST_ARGS:-}
