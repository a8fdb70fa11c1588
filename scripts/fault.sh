#!/usr/bin/env bash
# The fault tests (CTest label fault): damaged checkpoints and weights refused by every tool,
# non-finite losses through solver.non_finite, and the torture suite that CI leaves out for time
# (label torture, minutes: every checkpoint of the test model holds its 300 MB frozen VGGish):
# combo-train killed with SIGKILL at 21 moments (5 inside a checkpoint write) and resumed each
# time, disk full while a checkpoint or the metrics are written, damaged latest checkpoints. Each
# run must end with the weights of an unbroken run, bit for bit.
# Prints the torture figures (kills, resumes, iterations lost at most, damaged files read).
# Usage: scripts/fault.sh [BUILD_DIR] (default build; configured and built when needed).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-${COMBO_BUILD_DIR:-build}}
export CCACHE_DIR=${CCACHE_DIR:-${HOME:-/tmp}/.cache/ccache}
export CCACHE_BASEDIR=${CCACHE_BASEDIR:-$(pwd)}
[ -f "$build/build.ninja" ] || cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DCOMBO_BUILD_TESTS=ON -DCOMBO_BUILD_TOOLS=ON
cmake --build "$build" -j "$(nproc)" --target test_fault combo-train combo-eval
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
start=$(date +%s)
status=0
(cd "$build" && ctest -L fault --output-on-failure -j "$(nproc)" -V) > "$build/fault.log" 2>&1 ||
    status=$?
grep -E "^[0-9]+: \[ INFO \]|Test +#|tests passed|tests failed" "$build/fault.log" | sed 's/^[0-9]*: //'
echo "fault.sh: $(( $(date +%s) - start )) s, log $build/fault.log, exit $status"
exit $status
