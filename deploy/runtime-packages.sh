#!/usr/bin/env bash
# Prints the Debian packages that hold the shared libraries BINARY loads (ldd, then dpkg -S), one per
# line: deploy/Dockerfile's runtime stage installs exactly these, so the image carries what the
# build linked and nothing of the toolchain. Fails when ldd cannot resolve a library or dpkg owns no
# package for one.
# Usage: deploy/runtime-packages.sh BINARY
set -euo pipefail
bin="$1"
out=$(ldd "$bin")
if grep -q "not found" <<<"$out"; then
  echo "runtime-packages: unresolved libraries:" >&2
  grep "not found" <<<"$out" >&2
  exit 1
fi
for lib in $(awk '/=> \// {print $3} /^\t\/lib/ {print $1}' <<<"$out"); do
  real=$(readlink -f "$lib")
  pkg=""
  for cand in "$lib" "$real" "/usr$lib" "${lib#/usr}" "/usr$real" "${real#/usr}"; do
    pkg=$(dpkg -S "$cand" 2>/dev/null | head -1 | cut -d: -f1) && [ -n "$pkg" ] && break
  done
  if [ -z "$pkg" ]; then
    echo "runtime-packages: no package owns $lib" >&2
    exit 1
  fi
  echo "$pkg"
done | sort -u
