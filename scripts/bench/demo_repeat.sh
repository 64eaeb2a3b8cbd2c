#!/usr/bin/env bash
# Runs `kvroute demo` RUNS times and counts the runs whose verdict line says kvroute had the lowest
# TTFT p50 and p99 among the balanced policies (issue 21's target: 9 of 10, quiet and loaded).
#
#   scripts/bench/demo_repeat.sh [RUNS=10] [--loaded] [OUT_DIR=build/demo-repeat]
#
# --loaded keeps one busy loop per core running (nice 0) for the whole series, as another tenant
# of a shared machine would. Every run's output is kept in OUT_DIR/run-N.txt.
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS="${1:-10}"
LOADED=0
[ "${2:-}" = "--loaded" ] && LOADED=1
OUT="${3:-build/demo-repeat}"
mkdir -p "$OUT"
hogs=()
cleanup() { for p in "${hogs[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
if [ "$LOADED" = 1 ]; then
  for _ in $(seq "$(nproc)"); do (while :; do :; done) & hogs+=($!); done
  sleep 5
fi
wins=0
for i in $(seq "$RUNS"); do
  build/kvroute demo --seed "$i" > "$OUT/run-$i.txt"
  verdict=$(grep -E '^kvroute: ' "$OUT/run-$i.txt")
  speed=$(grep -oE '[0-9.]+x real time, ' "$OUT/run-$i.txt" | head -1)
  secs=$(grep -oE 'Finished in [0-9.]+ s' "$OUT/run-$i.txt")
  echo "run $i (${speed%, }, $secs): $verdict"
  case "$verdict" in "kvroute: lowest"*) wins=$((wins + 1)) ;; esac
done
echo "kvroute lowest TTFT p50 and p99 among balanced policies in $wins of $RUNS runs (loaded=$LOADED)"
