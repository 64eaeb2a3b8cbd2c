#!/usr/bin/env bash
# Routing quality at fixed fractions of the engines' capacity (issue 5) and precise vs approximate
# under eviction pressure (issue 6), on simulated engines (Llama-3.1-8B H100 cost model).
# Each comparison first measures capacity (round-robin, closed loop, 256 users, no think time), then
# runs every policy open loop at 50% and 90% of it (`kvroute bench compare --load-fractions`).
#
#   scripts/bench/quality_at_load.sh [OUT_DIR] [REPEAT=5]     # ~10 min on a 2-core VM
#
# Real time (--time-scale 1): one policy's comparison (engines, router, load generator in one process)
# then uses a quarter of one core, and the VM's scheduling hiccups are small against the engines'
# 8 ms steps; at 4x and more they set the tail. --simultaneous runs all policies at once, each on its
# own engines and router, so a stall of the VM hits all of them alike (run one after the other, a
# stall in one policy's run moved its p99 by +-25%). The comparison runs REPEAT times; the tables give
# the median of the runs' latency percentiles and the pooled hit rate.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT="${1:-build/quality}"
REPEAT="${2:-5}"
mkdir -p "$OUT"
K=build/kvroute
POLICIES=round-robin,session-affinity,kvroute-approx,kvroute
COMMON=(--engines 4 --time-scale 1 --load-fractions 0.5,0.9 --quiet --repeat "$REPEAT" --simultaneous)

echo "## shared-prefix: 64 groups x 32 prompts, 1024-token system prompts, 2048 blocks per engine" | tee "$OUT/summary.md"
"$K" bench compare "${COMMON[@]}" --policies "$POLICIES" --workload shared-prefix --sp-groups 64 \
  --sp-prompts-per-group 32 --num-gpu-blocks 2048 --json "$OUT/shared-prefix.json" \
  --records "$OUT/shared-prefix.csv" | tee -a "$OUT/summary.md"

echo "## multi-turn: 750 sessions x 4 turns, 128-token turns, think 1s, 1024 blocks per engine" | tee -a "$OUT/summary.md"
"$K" bench compare "${COMMON[@]}" --policies "$POLICIES" --workload multi-turn --mt-sessions 750 --mt-turns 4 \
  --mt-turn-len 128 --think-time 1s --num-gpu-blocks 1024 --json "$OUT/multi-turn.json" \
  --records "$OUT/multi-turn.csv" | tee -a "$OUT/summary.md"

echo "## long-doc-qa under eviction pressure: 24 documents x 4096 tokens, 8 questions each, 1024 blocks per engine" | tee -a "$OUT/summary.md"
"$K" bench compare "${COMMON[@]}" --policies round-robin,kvroute-approx,kvroute --workload long-doc-qa --ld-docs 24 \
  --ld-doc-len 4096 --ld-questions 8 --num-gpu-blocks 1024 --json "$OUT/long-doc-qa.json" \
  --records "$OUT/long-doc-qa.csv" | tee -a "$OUT/summary.md"
