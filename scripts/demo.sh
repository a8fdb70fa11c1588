#!/usr/bin/env bash
# The main ComboAVS job on an embedded default, on any Debian 12 machine (no GPU, no data):
#   1. installs the Debian packages and builds the tools;
#   2. writes a synthetic AVSBench S4 tree (combo-synth): 2-3 moving objects of different sound
#      classes per video (flat colours at 64 px), only the one whose sound plays is annotated;
#   3. trains a small COMBO on it on the CPU (combo-train, configs/demo/demo.yaml), validating
#      as it goes;
#   4. evaluates the best checkpoint on the test split with the official metrics (combo-eval)
#      and writes overlay pictures and overlay videos with the sound;
#   5. plots the training curves.
# Everything lands in demo_out/ (COMBO_DEMO_OUT). `--ablation` also trains the same model with
# the audio silenced (data.silence_audio=true) and prints both test scores.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${COMBO_BUILD_DIR:-build}
out=${COMBO_DEMO_OUT:-demo_out}
ablation=0
for a in "$@"; do
  case "$a" in
    --ablation) ablation=1 ;;
    *) echo "demo.sh: unknown argument $a (only --ablation)" >&2; exit 2 ;;
  esac
done

scripts/install_deps.sh
# ccache needs a cache folder even where HOME is not set (some CI environments).
export CCACHE_DIR=${CCACHE_DIR:-${HOME:-/tmp}/.cache/ccache}
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCOMBO_BUILD_TESTS=OFF -DCOMBO_BUILD_TOOLS=ON
cmake --build "$build" -j "$(nproc)"

export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
t0=$(date +%s)
mkdir -p "$out"
data="$out/data/AVSBench_object/Single-source"
echo "== 1/4 synthetic AVSBench S4 tree -> $data"
"$build/tools/combo-synth" --dataset s4 --out "$data" --train 160 --val 16 --test 16 --size 64 \
    --classes 4 --style flat --object-scale 1.6 --seed 0 --overwrite

train() {  # name, extra overrides...
  local name=$1; shift
  echo "== training $name -> $out/$name"
  "$build/tools/combo-train" --config configs/demo/demo.yaml "data.root=$data" \
      "output_dir=$out/$name" "$@"
  echo "== evaluating $name on the test split"
  "$build/tools/combo-eval" --config configs/demo/demo.yaml "data.root=$data" \
      "output_dir=$out/$name" --weights "$out/$name/model_best.pth" --out "$out/$name/eval_test" \
      --overwrite --overlays --videos "$@"
}
echo "== 2/4 training (CPU) and 3/4 evaluation"
train train
if [ "$ablation" = 1 ]; then
  train train_silent data.silence_audio=true
fi

echo "== 4/4 pictures"
if /usr/bin/python3 -c "import matplotlib" 2>/dev/null; then
  runs=("$out/train")
  [ "$ablation" = 1 ] && runs+=("$out/train_silent")
  /usr/bin/python3 tools/plot_runs.py --out "$out/curves.png" "${runs[@]}" || \
      echo "demo.sh: plotting failed (the run itself is complete)"
fi

echo
echo "demo.sh: done in $(( $(date +%s) - t0 )) s (after the build)"
echo "  test metrics:      $out/train/eval_test/metrics.json"
echo "  per-video scores:  $out/train/eval_test/videos.csv"
echo "  overlays:          $out/train/eval_test/overlays/<video>/<frame>.png"
echo "  overlay videos:    $out/train/eval_test/videos/<video>.mp4 (with the sound)"
echo "  training log:      $out/train/log.txt, metrics.jsonl, TensorBoard events"
[ -f "$out/curves.png" ] && echo "  curves:            $out/curves.png"
if [ "$ablation" = 1 ]; then
  echo "  audio silenced:    $out/train_silent/eval_test/metrics.json"
fi
exit 0
