#!/usr/bin/env bash
# The standard ComboAVS benchmark set on this machine (combo-bench), at the anchor's settings of
# ../shared/design/PERFORMANCE.md: 2 intra-op threads, 1 video x 5 frames at 224x224, official
# S4 settings, random weights, 2 warm-up runs then 5 timed runs; for the PVT-b0 variant, PVT-v2-b5
# and ResNet-50 models: inference per clip, training step, their component breakdown and peak
# RSS; then the log-mel front end and the data loader.
#   scripts/bench.sh                 # writes bench/bench.json and bench/bench.md (BENCH_OUT=<folder>)
#   BENCH_RUNS=3 scripts/bench.sh    # fewer timed runs
# Needs the tools built (scripts/demo.sh or scripts/test.sh builds them; this script builds them
# too when they are missing).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${COMBO_BUILD_DIR:-build}
out=${BENCH_OUT:-bench}
runs=${BENCH_RUNS:-5}
warmup=${BENCH_WARMUP:-2}
threads=${BENCH_THREADS:-2}
if [ ! -x "$build/tools/combo-bench" ]; then
  export CCACHE_DIR=${CCACHE_DIR:-${HOME:-/tmp}/.cache/ccache}
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCOMBO_BUILD_TOOLS=ON
  cmake --build "$build" -j "$(nproc)" --target combo-bench
fi
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
mkdir -p "$out"
json="$out/bench.json"
rm -f "$json"
bench() {  # label, config, extra args...
  local label=$1 config=$2; shift 2
  echo "== $label"
  "$build/tools/combo-bench" --config "$config" --label "$label" --threads "$threads" \
      --warmup "$warmup" --runs "$runs" --json "$json" "$@"
}
bench pvt_b0_variant configs/avs_s4/COMBO_PVTV2B5_bs8_90k.yaml model.backbone.name=pvt_v2_b0
bench pvt_v2_b5 configs/avs_s4/COMBO_PVTV2B5_bs8_90k.yaml
bench resnet50 configs/avs_s4/COMBO_R50_bs8_90k.yaml
bench front_end configs/avs_s4/COMBO_PVTV2B5_bs8_90k.yaml --what logmel,loader
{
  echo "Produced by \`scripts/bench.sh\` (commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), $(date -u +%Y-%m-%d), $threads threads, $runs runs after $warmup warm-up run(s)):"
  echo
  "$build/tools/combo-bench" --table "$json" --anchor bench/official_anchor.json
} > "$out/bench.md"
echo
cat "$out/bench.md"
echo "wrote $json and $out/bench.md"
