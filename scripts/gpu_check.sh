#!/usr/bin/env bash
# One command for a CUDA machine: builds the media-free ComboAVS against python3's LibTorch
# (PyTorch's wheel, CUDA), runs the `cuda` and `parity` tests on the GPU, trains the in-memory
# S4 task in fp32, AMP bf16 and AMP fp16, evaluates, benchmarks, reads the TensorBoard events
# back, and writes gpu_check.json and gpu_check.md into $GPU_CHECK_OUT (default ./gpu_check_out),
# printing a short table last.
#
#   scripts/gpu_check.sh [--cpu] [--stages probe,build,test,train,bench] [--debs DIR]
#                        [--fixtures DIR] [--iters N] [--build DIR] [--jobs N]
#
# --cpu      the same sequence at tiny sizes against Debian's LibTorch on the CPU (CI runs it):
#            what needs a GPU or a package Debian lacks (tensorboard) is skipped with the reason.
# --stages   any of probe (what the machine has, then configure), build, test, train, bench;
#            default all. Later stages configure and build first when the build folder lacks
#            what they need.
# --debs     folder of Debian .deb files (yaml-cpp, spdlog, fmt, CLI11, nlohmann-json,
#            googletest) unpacked into the build folder and used as a prefix: for machines with
#            no package manager (default .deps/debs when it exists; `scripts/gpu_deps.sh` fills it).
# --fixtures the golden fixtures (default $COMBO_REFERENCE_DIR, .deps/fixtures, or
#            ../shared/fixtures/reference).
# Environment: GPU_CHECK_OUT, GPU_CHECK_BUILD, TORCH_CUDA_ARCH_LIST (default 9.0 for the H200),
# GPU_CHECK_TIMEOUT (seconds per test, default 600).
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

cpu=0
stages="probe,build,test,train,bench"
debs=""
fixtures=""
iters=""
build=""
jobs=$(nproc)
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu) cpu=1 ;;
    --stages) stages=$2; shift ;;
    --debs) debs=$2; shift ;;
    --fixtures) fixtures=$2; shift ;;
    --iters) iters=$2; shift ;;
    --build) build=$2; shift ;;
    --jobs) jobs=$2; shift ;;
    -h|--help) sed -n 2,22p "$0"; exit 0 ;;
    *) echo "gpu_check: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

out=${GPU_CHECK_OUT:-$root/gpu_check_out}
mkdir -p "$out"
out=$(cd "$out" && pwd)
log="$out/gpu_check.log"
: > "$log"
status="$out/status.jsonl"  # one JSON line per stage result, read by the report
: > "$status"
t_start=$(date +%s)

say() { echo "gpu_check: $*" | tee -a "$log"; }
record() {  # stage key value-json
  printf '{"stage": "%s", "key": "%s", "value": %s}\n' "$1" "$2" "$3" >> "$status"
}
skip() {  # stage reason
  say "SKIP $1: $2"
  record "$1" skipped "$(printf '%s' "$2" | /usr/bin/env python3 -c 'import json,sys;print(json.dumps(sys.stdin.read()))')"
}
has_stage() { [[ ",$stages," == *",$1,"* ]]; }

if [ "$cpu" = 1 ]; then
  mode=cpu
  build=${build:-${GPU_CHECK_BUILD:-build-nomedia}}
  py=/usr/bin/python3
  device=cpu
  iters=${iters:-12}
else
  mode=gpu
  build=${build:-${GPU_CHECK_BUILD:-build-gpu}}
  py=python3
  device=cuda
  iters=${iters:-30}
fi
case "$build" in /*) ;; *) build="$root/$build" ;; esac
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
say "mode $mode, stages $stages, build $build, out $out"

# --- fixtures --------------------------------------------------------------------------------
if [ -z "$fixtures" ]; then
  for c in "${COMBO_REFERENCE_DIR:-}" "$root/.deps/fixtures" "$root/../shared/fixtures/reference"; do
    if [ -n "$c" ] && [ -d "$c" ]; then fixtures=$c; break; fi
  done
fi
if [ -n "$fixtures" ]; then
  export COMBO_REFERENCE_DIR=$(cd "$fixtures" && pwd)
  say "fixtures: $COMBO_REFERENCE_DIR"
else
  say "fixtures: none found (parity tests will skip)"
fi

# --- dependencies from .deb files -------------------------------------------------------------
prefix_path=""
if [ -z "$debs" ] && [ "$mode" = gpu ] && [ -d "$root/.deps/debs" ]; then debs="$root/.deps/debs"; fi
if [ -n "$debs" ]; then
  deproot="$build/deps-root"
  mkdir -p "$deproot"
  if [ ! -f "$deproot/.unpacked" ]; then
    for f in "$debs"/*.deb; do
      if command -v dpkg-deb > /dev/null; then
        dpkg-deb -x "$f" "$deproot" || { say "cannot unpack $f"; exit 1; }
      else
        # No dpkg: a .deb is an ar archive holding data.tar.*.
        "$py" - "$f" "$deproot" <<'PY' || { say "cannot unpack $f"; exit 1; }
import io, sys, tarfile
deb, dest = sys.argv[1:3]
data = open(deb, "rb").read()
assert data[:8] == b"!<arch>\n", deb + ": not an ar archive"
pos = 8
while pos < len(data):
    name = data[pos:pos + 16].decode().strip().rstrip("/")
    size = int(data[pos + 48:pos + 58].decode().strip())
    body = data[pos + 60:pos + 60 + size]
    if name.startswith("data.tar"):
        tarfile.open(fileobj=io.BytesIO(body)).extractall(dest)
    pos += 60 + size + (size & 1)
PY
      fi
    done
    touch "$deproot/.unpacked"
  fi
  prefix_path="$deproot/usr;$deproot/usr/lib/x86_64-linux-gnu/cmake"
  export LD_LIBRARY_PATH="$deproot/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  say "dependencies unpacked from $debs into $deproot"
fi

# --- probe -----------------------------------------------------------------------------------
probe() {
  {
    echo "== date: $(date -u +%FT%TZ)"
    echo "== uname: $(uname -a)"
    echo "== cpus: $(nproc)"
    grep -m1 MemTotal /proc/meminfo || true
    echo "== compilers"
    (c++ --version | head -1) 2>&1 || echo "no c++"
    (nvcc --version | tail -2) 2>&1 || echo "no nvcc on PATH"
    (cmake --version | head -1) 2>&1 || echo "no cmake"
    (ninja --version) 2>&1 || echo "no ninja"
    echo "== GPU"
    (nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv) 2>&1 || echo "no nvidia-smi"
    echo "== python torch"
    "$py" - <<'PY' 2>&1
import importlib.util, os, sys
print("python", sys.version.split()[0], sys.executable)
try:
    import torch
    print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
    print("cmake_prefix_path", torch.utils.cmake_prefix_path)
    print("cxx11_abi", torch._C._GLIBCXX_USE_CXX11_ABI)
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        print("device", p.name, p.total_memory, "cc", p.major, p.minor, "sms", p.multi_processor_count)
    print("cudnn", torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None)
except Exception as e:
    print("torch: not importable:", e)
for m in ("tensorboard", "nvidia.nvtx", "numpy"):
    print(m, "present" if importlib.util.find_spec(m.split(".")[0]) and (m != "nvidia.nvtx" or importlib.util.find_spec(m)) else "absent")
PY
    echo "== libraries (OpenCV/FFmpeg/libsndfile/yaml-cpp/spdlog/gtest on the system)"
    for l in libopencv_core libavformat libsndfile libyaml-cpp libspdlog libgtest; do
      printf '%s: %s\n' "$l" "$( (ldconfig -p 2>/dev/null | grep -m1 "$l") || echo absent)"
    done
  } > "$out/probe.txt" 2>&1
  cat "$out/probe.txt" | tee -a "$log" > /dev/null
}

torch_prefix=""
nvtx_args=()
find_torch() {
  if [ "$mode" = cpu ]; then return; fi
  torch_prefix=$("$py" -c 'import torch;print(torch.utils.cmake_prefix_path)' 2>/dev/null) || {
    say "python3 has no torch"; exit 1; }
  # PyTorch's CUDA config wants NVTX 3 headers; the toolkit or the nvidia-nvtx wheel has them.
  local nvtx
  nvtx=$("$py" - <<'PY' 2>/dev/null
import os
cands = []
try:
    import nvidia.nvtx as n
    for p in list(getattr(n, "__path__", [])):
        cands.append(os.path.join(p, "include"))
except Exception:
    pass
for base in ("/usr/local/cuda/include", "/usr/local/cuda/targets/x86_64-linux/include", "/usr/include"):
    cands.append(base)
for c in cands:
    if os.path.isdir(os.path.join(c, "nvtx3")):
        print(c)
        break
PY
)
  # cuda.cmake runs find_path(nvtx3_dir NAMES nvtx3 ...): the folder that holds nvtx3/.
  if [ -n "$nvtx" ]; then nvtx_args=("-Dnvtx3_dir=$nvtx"); say "NVTX 3 headers: $nvtx"; fi
}

configure() {
  find_torch
  local args=(-S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release
              -DCOMBO_WITH_MEDIA=OFF -DCOMBO_BUILD_TESTS=ON -DCOMBO_BUILD_TOOLS=ON)
  # Extra configure arguments from the environment (e.g. -DCOMBO_WARNINGS_AS_ERRORS=ON).
  # shellcheck disable=SC2206
  [ -n "${GPU_CHECK_CMAKE_ARGS:-}" ] && args+=(${GPU_CHECK_CMAKE_ARGS})
  local pp="$prefix_path"
  if [ -n "$torch_prefix" ]; then pp="$torch_prefix${pp:+;$pp}"; fi
  [ -n "$pp" ] && args+=("-DCMAKE_PREFIX_PATH=$pp")
  if [ "$mode" = gpu ]; then
    args+=(-DCOMBO_USE_CCACHE=OFF "-DTORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST" "${nvtx_args[@]}")
    command -v nvcc > /dev/null || { [ -x /usr/local/cuda/bin/nvcc ] && export PATH=/usr/local/cuda/bin:$PATH; }
  else
    export CCACHE_DIR=${CCACHE_DIR:-${HOME:-/tmp}/.cache/ccache}
  fi
  say "configure: cmake ${args[*]}"
  local t0=$(date +%s)
  if ! cmake "${args[@]}" > "$out/configure.log" 2>&1; then
    tail -40 "$out/configure.log" | tee -a "$log"
    record configure ok false
    say "configure FAILED (log: $out/configure.log)"
    return 1
  fi
  grep -E "ComboAVS|CUDA|nvtx|NVTX|cuDNN|Warning" "$out/configure.log" | head -30 | tee -a "$log" > /dev/null
  record configure seconds $(( $(date +%s) - t0 ))
  record configure ok true
}

build_all() {
  [ -f "$build/build.ninja" ] || configure || return 1
  local t0=$(date +%s)
  say "build: cmake --build $build -j $jobs"
  if ! cmake --build "$build" -j "$jobs" -- -k 0 > "$out/build.log" 2>&1; then
    grep -E "error|Error" "$out/build.log" | head -60 | tee -a "$log"
    record build ok false
    say "build FAILED (log: $out/build.log)"
    return 1
  fi
  local warnings
  warnings=$(grep -c "warning:" "$out/build.log" || true)
  record build seconds $(( $(date +%s) - t0 ))
  record build warnings "${warnings:-0}"
  record build ok true
  say "build: done in $(( $(date +%s) - t0 )) s, $warnings warning(s)"
  # Our own NEEDED entries: none may be a media library (the GPU machine's configuration; a build
  # with the media stack, as CI's CPU run on the main build, has nothing to check).
  if grep -q '^COMBO_WITH_MEDIA:BOOL=ON' "$build/CMakeCache.txt" 2>/dev/null; then
    skip media_free "$build has the media stack (COMBO_WITH_MEDIA=ON)"
    return 0
  fi
  local bad=""
  for f in "$build"/tools/combo-* "$build"/*.so "$build"/*.a; do
    [ -f "$f" ] || continue
    if readelf -d "$f" 2>/dev/null | grep NEEDED | grep -Eiq "opencv|avformat|avcodec|swscale|swresample|avutil|sndfile"; then
      bad="$bad $(basename "$f")"
    fi
  done
  if [ -n "$bad" ]; then
    say "media libraries in NEEDED of:$bad"
    record build media_free false
    return 1
  fi
  record build media_free true
}

# --- test ------------------------------------------------------------------------------------
run_tests() {
  [ -f "$build/CTestTestfile.cmake" ] || build_all || return 1
  # GPU_CHECK_TEST_LABELS narrows the labels (scripts/test.sh: cuda only, the full suite has run
  # the parity tests on the CPU already).
  local labels=${GPU_CHECK_TEST_LABELS:-cuda|parity}
  export COMBO_TEST_DEVICE=$device
  say "test: ctest -L '$labels' with COMBO_TEST_DEVICE=$device"
  local t0=$(date +%s)
  (cd "$build" && ctest -L "$labels" --output-on-failure --timeout "${GPU_CHECK_TIMEOUT:-600}" \
       -j "$([ "$mode" = gpu ] && echo 4 || echo 2)" --output-junit "$out/ctest.xml") > "$out/ctest.log" 2>&1
  local rc=$?
  tail -15 "$out/ctest.log" | tee -a "$log" > /dev/null
  "$py" - "$out/ctest.xml" "$status" <<'PY'
import json, sys, xml.etree.ElementTree as ET
path, status = sys.argv[1:3]
passed = failed = skipped = 0
names = {"failed": [], "skipped": []}
try:
    for tc in ET.parse(path).getroot().iter("testcase"):
        st = tc.get("status", "")
        if st == "run" and tc.find("failure") is None:
            passed += 1
        elif st in ("notrun", "disabled") or tc.find("skipped") is not None:
            skipped += 1; names["skipped"].append(tc.get("name"))
        else:
            failed += 1; names["failed"].append(tc.get("name"))
except Exception as e:
    failed = -1; names["failed"].append("cannot read %s: %s" % (path, e))
with open(status, "a") as f:
    for k, v in (("tests_passed", passed), ("tests_failed", failed), ("tests_skipped", skipped),
                 ("failed_names", names["failed"]), ("skipped_names", names["skipped"])):
        f.write(json.dumps({"stage": "test", "key": k, "value": v}) + "\n")
print("tests: %d passed, %d failed, %d skipped" % (passed, failed, skipped))
PY
  record test seconds $(( $(date +%s) - t0 ))
  return $rc
}

# --- train -----------------------------------------------------------------------------------
tool() { echo "$build/tools/$1"; }
train_one() {  # name precision dataset extra-overrides...
  local name=$1 precision=$2 dataset=$3; shift 3
  local dir="$out/train_$name"
  rm -rf "$dir"
  local amp=(solver.amp.enabled=false)
  case "$precision" in
    bf16) amp=(solver.amp.enabled=true solver.amp.dtype=bf16) ;;
    fp16) amp=(solver.amp.enabled=true solver.amp.dtype=fp16) ;;
  esac
  local size_args=()
  if [ "$mode" = cpu ]; then
    # Tiny: the demo's small model at 64 px, 2 videos per batch.
    size_args=(model.backbone.name=pvt_v2_b0 model.pixel_decoder.enc_layers=1
               model.pixel_decoder.dim_feedforward=64 model.decoder.num_queries=8
               model.decoder.dec_layers=3 model.decoder.dim_feedforward=64 model.audio.mlp_dim=64
               loss.train_num_points=256 data.image_size=64 data.synthetic.image_size=64
               data.augment.enabled=false solver.ims_per_batch=2 data.synthetic.train_videos=8
               data.synthetic.eval_videos=4 test.batch_size=2 runtime.threads=2)
  else
    size_args=(data.augment.enabled=false solver.ims_per_batch=8 data.synthetic.train_videos=64
               data.synthetic.eval_videos=16 test.batch_size=4 runtime.tf32=default)
  fi
  say "train $name: $dataset $precision, $iters iterations"
  local t0=$(date +%s)
  "$(tool combo-train)" --config "configs/synthetic/$dataset.yaml" \
      "output_dir=$dir" "solver.max_iter=$iters" solver.log_period=1 solver.checkpoint_period=0 \
      test.eval_period=0 solver.base_lr=0.0002 solver.warmup_iters=0 "runtime.device=$device" \
      "${size_args[@]}" "${amp[@]}" "$@" --no-eval > "$out/train_$name.log" 2>&1
  local rc=$?
  local secs=$(( $(date +%s) - t0 ))
  if [ $rc -ne 0 ]; then
    tail -20 "$out/train_$name.log" | tee -a "$log"
    say "train $name FAILED"
  fi
  "$py" - "$dir" "$name" "$precision" "$dataset" "$iters" "$secs" "$rc" "$status" <<'PY'
import json, sys, os
d, name, precision, dataset, iters, secs, rc, status = sys.argv[1:9]
rec = {"name": name, "model": "", "dataset": dataset, "precision": precision, "batch": 0,
       "frames_per_video": 0, "iterations": int(iters), "ok": rc == "0", "wall_s": int(secs)}
lines = []
p = os.path.join(d, "metrics.jsonl")
if os.path.exists(p):
    lines = [json.loads(l) for l in open(p) if l.strip()]
losses = [l["total_loss"] for l in lines if "total_loss" in l and l["total_loss"] is not None]
times = [l["time"] for l in lines if "time" in l]
if losses:
    k = min(10, len(losses))
    rec["loss_first"] = sum(losses[:k]) / k
    rec["loss_last"] = sum(losses[-k:]) / k
if len(times) > 5:
    steady = sorted(times[3:])
    rec["it_per_s"] = 1.0 / steady[len(steady) // 2]
peaks = [l.get("gpu_mem_peak_allocated", 0) for l in lines]
peaks_r = [l.get("gpu_mem_peak_reserved", 0) for l in lines]
rec["peak_gpu_mem_bytes"] = max(peaks) if peaks else 0
rec["peak_gpu_reserved_bytes"] = max(peaks_r) if peaks_r else 0
c = os.path.join(d, "config.yaml")
if os.path.exists(c):
    import re
    txt = open(c).read()
    m = re.search(r"backbone:\s*\n\s*name:\s*(\S+)", txt)
    rec["model"] = m.group(1) if m else ""
    m = re.search(r"ims_per_batch:\s*(\d+)", txt)
    rec["batch"] = int(m.group(1)) if m else 0
    m = re.search(r"synthetic:(?:\n\s+.*)*?\n\s+frames:\s*(\d+)", txt)
    fr = int(m.group(1)) if m else 0
    rec["frames_per_video"] = fr if fr > 0 else (10 if dataset == "avss" else 5)
rec["events"] = sorted(f for f in os.listdir(d) if f.startswith("events.out.tfevents")) if os.path.isdir(d) else []
with open(status, "a") as f:
    f.write(json.dumps({"stage": "train", "key": "run", "value": rec}) + "\n")
print("train %s: loss %s -> %s, %s it/s" % (name, rec.get("loss_first"), rec.get("loss_last"), rec.get("it_per_s")))
PY
  return $rc
}

tensorboard_check() {  # dir
  local dir=$1
  if ! "$py" -c "import tensorboard" 2> /dev/null; then
    skip tensorboard "the tensorboard Python package is not installed here (Debian has none)"
    return 0
  fi
  "$py" - "$dir" "$status" <<'PY'
import json, os, sys
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
d, status = sys.argv[1:3]
acc = EventAccumulator(d, size_guidance={"scalars": 0})
acc.Reload()
tags = acc.Tags().get("scalars", [])
jsonl = [json.loads(l) for l in open(os.path.join(d, "metrics.jsonl")) if l.strip()]
tb_total = {e.step: e.value for e in acc.Scalars("total_loss")} if "total_loss" in tags else {}
mismatch = 0
for l in jsonl:
    it = l.get("iteration")
    if it in tb_total and abs(tb_total[it] - l["total_loss"]) > 1e-4 * max(1.0, abs(l["total_loss"])):
        mismatch += 1
ok = bool(tags) and len(tb_total) == len(jsonl) and mismatch == 0
res = {"tags": len(tags), "total_loss_points": len(tb_total), "jsonl_lines": len(jsonl),
       "mismatches": mismatch, "ok": ok}
with open(status, "a") as f:
    f.write(json.dumps({"stage": "tensorboard", "key": "result", "value": res}) + "\n")
print("tensorboard:", res)
sys.exit(0 if ok else 1)
PY
}

train_all() {
  [ -x "$(tool combo-train)" ] || build_all || return 1
  local rc=0
  for p in fp32 bf16 fp16; do
    if [ "$mode" = cpu ] && [ "$p" != fp32 ]; then
      skip "train_$p" "AMP runs on CUDA only (the CPU trains in fp32)"
      continue
    fi
    train_one "s4_$p" "$p" s4 || rc=1
  done
  tensorboard_check "$out/train_s4_fp32" | tee -a "$log" || rc=1
  # Evaluation of the fp32 run's final weights on the synthetic test split.
  local w="$out/train_s4_fp32/model_final.pth"
  if [ -f "$w" ]; then
    local eval_args=()
    [ "$mode" = cpu ] && eval_args=(model.backbone.name=pvt_v2_b0 model.pixel_decoder.enc_layers=1
        model.pixel_decoder.dim_feedforward=64 model.decoder.num_queries=8 model.decoder.dec_layers=3
        model.decoder.dim_feedforward=64 model.audio.mlp_dim=64 data.image_size=64
        data.synthetic.image_size=64 data.synthetic.eval_videos=4 test.batch_size=2)
    say "eval: combo-eval on the synthetic test split"
    if "$(tool combo-eval)" --config configs/synthetic/s4.yaml --weights "$w" \
         --out "$out/eval_s4_fp32" --overwrite "output_dir=$out/train_s4_fp32" \
         "runtime.device=$device" \
         "${eval_args[@]}" > "$out/eval.log" 2>&1; then
      local res
      res=$(ls "$out"/eval_s4_fp32/*.json 2>/dev/null | head -1)
      record eval ok true
      [ -n "$res" ] && record eval metrics "$(cat "$res" | "$py" -c 'import json,sys;d=json.load(sys.stdin);print(json.dumps({k:v for k,v in (d.get("metrics",d)).items() if isinstance(v,(int,float))}))' 2>/dev/null || echo '{}')"
    else
      tail -20 "$out/eval.log" | tee -a "$log"
      record eval ok false
      rc=1
    fi
  fi
  return $rc
}

# --- bench -----------------------------------------------------------------------------------
bench_all() {
  [ -x "$(tool combo-bench)" ] || build_all || return 1
  local rc=0
  local runs=(
    # label | config | what | videos | frames | overrides
    "s4_pvt_b5_fp32|configs/synthetic/s4.yaml|train,inference|8|5|"
    "s4_r50_fp32|configs/synthetic/s4.yaml|train,inference|8|5|model.backbone.name=resnet50"
    "avss_pvt_b5_fp16|configs/synthetic/avss.yaml|train,inference|8|10|solver.amp.enabled=true solver.amp.dtype=fp16"
    "avss_pvt_b5_fp16_no_ckpt|configs/synthetic/avss.yaml|train|8|10|solver.amp.enabled=true solver.amp.dtype=fp16 model.activation_checkpointing=false"
    "avss_r50_fp16|configs/synthetic/avss.yaml|train|8|10|model.backbone.name=resnet50 solver.amp.enabled=true solver.amp.dtype=fp16"
  )
  local warm=1 reps=3 size=224
  if [ "$mode" = cpu ]; then
    runs=("tiny_s4_b0|configs/synthetic/s4.yaml|train,inference|1|5|model.backbone.name=pvt_v2_b0 model.pixel_decoder.enc_layers=1 model.decoder.dec_layers=3 model.decoder.num_queries=8 model.audio.mlp_dim=64 loss.train_num_points=256")
    warm=1 reps=2 size=64
  fi
  for r in "${runs[@]}"; do
    IFS='|' read -r label cfg what videos frames extra <<< "$r"
    say "bench $label"
    rm -f "$out/bench_$label.json"
    # shellcheck disable=SC2086
    if ! "$(tool combo-bench)" --config "$cfg" --what "$what" --device "$device" --videos "$videos" \
         --frames "$frames" --size "$size" --warmup "$warm" --runs "$reps" --label "$label" \
         --json "$out/bench_$label.json" $extra > "$out/bench_$label.log" 2>&1; then
      tail -15 "$out/bench_$label.log" | tee -a "$log"
      say "bench $label FAILED"
      record bench "$label" '{"ok": false}'
      rc=1
      continue
    fi
    record bench "$label" "$("$py" -c 'import json,sys;print(json.dumps(json.load(open(sys.argv[1]))[-1]))' "$out/bench_$label.json")"
  done
  return $rc
}

# --- run the stages --------------------------------------------------------------------------
overall=0
if has_stage probe; then
  probe
  configure || overall=1
fi
if has_stage build; then build_all || overall=1; fi
if has_stage test; then run_tests || overall=1; fi
if has_stage train; then train_all || overall=1; fi
if has_stage bench; then bench_all || overall=1; fi
record total seconds $(( $(date +%s) - t_start ))

"$py" "$root/scripts/gpu_check_report.py" --status "$status" --probe "$out/probe.txt" \
    --mode "$mode" --out "$out" || overall=1
say "total $(( $(date +%s) - t_start )) s, exit $overall"
exit $overall
