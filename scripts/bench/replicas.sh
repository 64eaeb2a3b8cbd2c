#!/usr/bin/env bash
# Active-active replicas (issue 17): hit rate, TTFT and imbalance with 1, 2, 4 and 8 routers per
# policy in front of the same 4 simulated engines, requests spread round-robin over the routers,
# with the exchange on ("P xN") and off ("P xN uncoord"), on multi-turn and shared-prefix.
#
#   scripts/bench/replicas.sh [OUT_DIR] [TIME_SCALE=10]     # ~5 min on a 2-core VM at 10x
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT="${1:-build/replicas}"
TS="${2:-10}"
mkdir -p "$OUT"
K=build/kvroute
POLICIES=kvroute-approx,kvroute
COMMON=(--quiet --engines 4 --time-scale "$TS" --policies "$POLICIES")
run() {
  local name=$1
  shift
  for n in 1 2 4 8; do
    local ex=both
    [ "$n" = 1 ] && ex=on
    "$K" bench compare "${COMMON[@]}" "$@" --replicas "$n" --replica-exchange "$ex" \
      --json "$OUT/$name-x$n.json" | grep '^| ' | grep -v '^| policy' | grep -v '^|---'
  done
}
echo "## multi-turn: 200 sessions x 4 turns, 128-token turns, think 0.2 s, 1024 blocks per engine" | tee "$OUT/summary.md"
run multi-turn --workload multi-turn --mt-sessions 200 --mt-turns 4 --mt-turn-len 128 --think-time 0.2s \
  --num-gpu-blocks 1024 | tee -a "$OUT/summary.md"
echo "## shared-prefix: 64 groups x 16 prompts, 1024-token system prompts, 2048 blocks per engine" | tee -a "$OUT/summary.md"
run shared-prefix --workload shared-prefix --sp-groups 64 --sp-prompts-per-group 16 --num-gpu-blocks 2048 \
  | tee -a "$OUT/summary.md"
