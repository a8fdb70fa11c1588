#!/usr/bin/env bash
# Installs the dependencies, configures, builds and runs the whole CTest suite; then builds the
# media-free tests and tools of the configuration without the media stack
# (-DCOMBO_WITH_MEDIA=OFF), checks that none of them links OpenCV, FFmpeg or libsndfile, runs
# them (label media_free), and runs `scripts/gpu_check.sh --cpu` on the main build.
# Exits non-zero on any failure. Environment: COMBO_BUILD_DIR (default build),
# COMBO_NOMEDIA_BUILD_DIR (default build-nomedia; COMBO_SKIP_NOMEDIA=1 skips that part),
# COMBO_REFERENCE_DIR (golden fixtures; default ../shared/fixtures/reference), CTEST_ARGS.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
build=${COMBO_BUILD_DIR:-build}
jobs=$(nproc)

scripts/install_deps.sh
# ccache needs a cache folder even where HOME is not set (some CI environments).
export CCACHE_DIR=${CCACHE_DIR:-${HOME:-/tmp}/.cache/ccache}
# Paths relative to the source tree, so the two build folders share cache entries.
export CCACHE_BASEDIR=${CCACHE_BASEDIR:-$root}

start=$(date +%s)
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCOMBO_BUILD_TESTS=ON -DCOMBO_BUILD_TOOLS=ON
cmake --build "$build" -j "$jobs"
echo "test.sh: build took $(( $(date +%s) - start )) s"

if [ -z "${COMBO_REFERENCE_DIR:-}" ] && [ -d "$root/../shared/fixtures/reference" ]; then
  export COMBO_REFERENCE_DIR="$root/../shared/fixtures/reference"
fi
echo "test.sh: golden fixtures: ${COMBO_REFERENCE_DIR:-none (parity tests will skip)}"

pushd "$build" >/dev/null
# libgomp's threads spin while waiting; with two test processes on two cores that spinning
# starves the other process (measured: 3-7x slower). Passive waiting avoids it.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
# Each test uses every core itself; running two at a time still overlaps process start-up.
# The torture tests (kills, disk full: minutes of checkpoint writes) run in scripts/fault.sh; the
# rest of label fault runs here.
ctest --output-on-failure --no-tests=error -j "$jobs" -LE torture ${CTEST_ARGS:-}
popd >/dev/null

if [ "${COMBO_SKIP_NOMEDIA:-0}" = 1 ]; then
  echo "test.sh: COMBO_SKIP_NOMEDIA=1: the media-free configuration is not built"
  exit 0
fi
# The configuration of a machine without OpenCV/FFmpeg/libsndfile (the GPU machine).
nomedia=${COMBO_NOMEDIA_BUILD_DIR:-build-nomedia}
start=$(date +%s)
cmake -S . -B "$nomedia" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCOMBO_BUILD_TESTS=ON \
      -DCOMBO_BUILD_TOOLS=ON -DCOMBO_WITH_MEDIA=OFF
# Only what the media_free label runs (and the tools): the rest compiles the same sources as the
# main build, and the whole media-free tree is built by scripts/gpu_check.sh on the GPU machine.
cmake --build "$nomedia" -j "$jobs" --target combo_media_free_tests
echo "test.sh: media-free build took $(( $(date +%s) - start )) s"
scripts/check_media_free.sh "$nomedia"
cd "$nomedia"
ctest --output-on-failure --no-tests=error -j "$jobs" -L media_free ${CTEST_ARGS:-}
cd "$root"
# The GPU check's sequence at tiny sizes on the CPU (what needs a GPU is skipped with the reason),
# so the script is known to work before it meets a GPU. On the main build, which is complete (its
# build stage has nothing left to do; no probe stage, whose configure would turn the media stack
# off there); its test stage runs the cuda label only: the parity tests ran above.
GPU_CHECK_TEST_LABELS=cuda GPU_CHECK_OUT=${GPU_CHECK_OUT:-$build/gpu_check_out} \
    scripts/gpu_check.sh --cpu --build "$build" --stages build,test,train,bench
echo "test.sh: media-free configuration took $(( $(date +%s) - start )) s"
