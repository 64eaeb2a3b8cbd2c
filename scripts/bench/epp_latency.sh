#!/usr/bin/env bash
# The endpoint picker's added latency and streams per second (docs/BENCHMARKS.md, "Endpoint picker").
#   engines: 4 simulated engines (health probes and metric scrapes only: the EPP never proxies)
#   picker:  build/kvroute epp on CPU 0 (taskset), --tokenizer word, POLICIES in turn
#   load:    build/src/epp/epp_load on CPU 1, playing Envoy in FULL_DUPLEX_STREAMED mode
# For each prompt size and policy, RUNS runs of SECONDS each; prints one JSON line per run: streams/s
# and the time from the body's last message to the headers reply (p50/p90/p99).
# Usage: scripts/bench/epp_latency.sh [SECONDS=5] [RUNS=3] [TOKENS="1000 8000 100000"] [CLIENTS=8]
set -euo pipefail
cd "$(dirname "$0")/../.."
SECS="${1:-5}"; RUNS="${2:-3}"; TOKENS="${3:-1000 8000 100000}"; CLIENTS="${4:-8}"
POLICIES="${POLICIES:-kvroute round-robin}"
KVROUTE="${KVROUTE:-build/kvroute}"
LOAD="${LOAD:-build/src/epp/epp_load}"
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
SIM=$(port)
taskset -c 1 "$KVROUTE" sim --engines 4 --port "$SIM" --model m --preset none --log-level error > "$work/sim.log" 2>&1 &
pids+=($!)
backends=()
for i in 0 1 2 3; do backends+=(--backend "http://127.0.0.1:$((SIM + i))"); done
sleep 1
for policy in $POLICIES; do
  for tokens in $TOKENS; do
    G=$(port); H=$(port); M=$(port)
    taskset -c 0 "$KVROUTE" epp --address 127.0.0.1 --grpc-port "$G" --grpc-health-port "$H" --metrics-port "$M" \
      "${backends[@]}" --tokenizer word --policy "$policy" --log-level error > "$work/epp.log" 2>&1 &
    epp=$!
    for _ in $(seq 50); do curl -sf "http://127.0.0.1:$M/ready" >/dev/null 2>&1 && break; sleep 0.1; done
    for r in $(seq "$RUNS"); do
      out=$(taskset -c 1 "$LOAD" --target "127.0.0.1:$G" --prompt-tokens "$tokens" --clients "$CLIENTS" --seconds "$SECS")
      echo "{\"policy\":\"$policy\",\"run\":$r,${out#\{}"
    done
    kill "$epp"; wait "$epp" 2>/dev/null || true
  done
done
