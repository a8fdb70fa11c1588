#!/usr/bin/env bash
# Compiles (syntax only) every translation unit of a configured build against ANOTHER LibTorch's
# headers, to catch API differences between LibTorch versions without that LibTorch's libraries:
#   scripts/check_torch_headers.sh <torch-include-root> [build-dir] [regex of files]
# <torch-include-root> holds ATen/, c10/ and torch/csrc/api/include (e.g. the headers of Debian
# trixie's libtorch-dev 2.6, unpacked with `apt-get download libtorch-dev; dpkg -x`).
# Prints one line per failing file and the first errors; exits non-zero when any file fails.
set -euo pipefail
inc=${1:?usage: check_torch_headers.sh <torch-include-root> [build-dir] [regex]}
build=${2:-build}
filter=${3:-.}
std=${COMBO_CHECK_STD:-c++17}
[ -f "$build/compile_commands.json" ] || { echo "no $build/compile_commands.json (configure first)" >&2; exit 2; }
[ -f "$inc/ATen/ATen.h" ] || { echo "$inc/ATen/ATen.h missing" >&2; exit 2; }
log=$(mktemp -d)
/usr/bin/python3 - "$build/compile_commands.json" "$inc" "$filter" "$std" > "$log/cmds" <<'PY'
import json, re, shlex, sys
db, inc, flt, std = sys.argv[1:5]
seen = set()
for e in json.load(open(db)):
    f = e["file"]
    if not f.endswith((".cpp", ".cc")) or "cmake_pch" in f or not re.search(flt, f) or f in seen:
        continue
    seen.add(f)
    args = shlex.split(e["command"])
    out, skip = [args[0], "-isystem", inc, "-isystem", inc + "/torch/csrc/api/include"], False
    for a in args[1:]:
        if skip:
            skip = False
            continue
        if a in ("-o", "-include"):
            skip = True
            continue
        if a in ("-c", "-Winvalid-pch") or a.startswith("-std="):
            continue
        if a == f:
            continue
        out.append(a)
    out += ["-std=" + std, "-fsyntax-only", f]
    print(e["directory"] + "\t" + f + "\t" + shlex.join(out))
PY
fail=0; n=0
while IFS=$'\t' read -r dir file cmd; do
  n=$((n + 1))
  if ! (cd "$dir" && eval "$cmd") > "$log/err" 2>&1; then
    fail=$((fail + 1))
    echo "FAIL $file"
    grep -m 8 "error" "$log/err" | sed 's/^/    /'
  elif grep -q "warning:" "$log/err"; then
    echo "WARN $file"; grep -m 4 "warning:" "$log/err" | sed 's/^/    /'
  fi
done < "$log/cmds"
echo "check_torch_headers: $n files, $fail failed (headers: $inc, -std=$std)"
rm -rf "$log"
[ "$fail" -eq 0 ]
