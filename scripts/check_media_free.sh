#!/usr/bin/env bash
# Checks that a build configured with -DCOMBO_WITH_MEDIA=OFF links no media library: no ELF file
# it built (tools, test executables, shared libraries) has a NEEDED entry for OpenCV, FFmpeg
# (libavformat, libavcodec, libswscale, libswresample, libavutil) or libsndfile.
# `ldd` is no use here: Debian's own libtorch_cpu.so links OpenCV and FFmpeg, so ldd lists them
# for anything linked with LibTorch; our own NEEDED entries (readelf -d) are what we control.
# Usage: scripts/check_media_free.sh BUILD_DIR. Exits non-zero, listing the offenders, on any hit,
# and when the media-free tools are missing (a check of nothing is not a pass).
set -euo pipefail
build=${1:?usage: scripts/check_media_free.sh BUILD_DIR}
media='lib(opencv_[a-z0-9_]*|avformat|avcodec|swscale|swresample|avutil|sndfile)\.so'
command -v readelf >/dev/null || { echo "check_media_free: readelf not found (binutils)" >&2; exit 2; }
for t in combo-train combo-eval combo-bench; do
  [ -x "$build/tools/$t" ] || { echo "check_media_free: $build/tools/$t was not built" >&2; exit 1; }
done
checked=0
bad=()
while IFS= read -r -d '' f; do
  head -c 4 "$f" 2>/dev/null | grep -q $'\x7fELF' || continue
  checked=$((checked + 1))
  if hits=$(readelf -d "$f" 2>/dev/null | grep NEEDED | grep -oE "$media"); then
    bad+=("$f: $(echo $hits)")
  fi
done < <(find "$build" -type f \( -perm -u+x -o -name '*.so*' \) ! -path '*/CMakeFiles/*' -print0)
if [ ${#bad[@]} -gt 0 ]; then
  echo "check_media_free: FAILED: ${#bad[@]} of $checked ELF files in $build need media libraries:" >&2
  printf '  %s\n' "${bad[@]}" >&2
  exit 1
fi
echo "check_media_free: $checked ELF files in $build, none with an OpenCV/FFmpeg/libsndfile NEEDED entry"
