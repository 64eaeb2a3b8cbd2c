#!/usr/bin/env bash
# The simulator is never the bottleneck: requests/s of one simulated engine (no time model, 1 output
# token) against kvroute proxying to that engine, and 32 engines in one process answering at once.
# Usage: scripts/bench/sim_throughput.sh [DURATION=5s]
set -euo pipefail
cd "$(dirname "$0")/../.."
D="${1:-5s}"
KVROUTE="${KVROUTE:-build/kvroute}"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
SIM=$(free_port); KV=$(free_port)
many_log=$(mktemp)
"$KVROUTE" sim --engines 1 --port "$SIM" --preset none --model m --default-max-tokens 1 --log-level error & P1=$!
"$KVROUTE" serve --address 127.0.0.1 --port "$KV" --backend "http://127.0.0.1:$SIM" --policy round-robin --log-level error & P2=$!
"$KVROUTE" sim --engines 32 --port 0 --preset llama-3.1-8b-h100 --time-scale 100 --model m --log-level info > "$many_log" 2>&1 & P3=$!
trap 'kill $P1 $P2 $P3 2>/dev/null' EXIT
sleep 2
lua=$(mktemp); cat > "$lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model":"m","prompt":"The quick brown fox jumps over the lazy dog","max_tokens":1}'
LUA
rps() { wrk -t1 -c64 -d"$D" -s "$lua" "$1" | awk '/Requests\/sec/ {print $2}'; }
direct=$(rps "http://127.0.0.1:$SIM/v1/completions")
proxied=$(rps "http://127.0.0.1:$KV/v1/completions")
ok=0
for url in $(grep -o 'http://[0-9.]*:[0-9]*' "$many_log"); do
  curl -sf -o /dev/null -d '{"model":"m","prompt":"a b c","max_tokens":2}' "$url/v1/completions" && ok=$((ok + 1))
done
rss=$(awk '/VmRSS/ {print $2}' /proc/$P3/status)
echo "| one engine direct req/s | kvroute -> that engine req/s | engine/kvroute | 32 engines answering | 32-engine RSS MiB |"
echo "|---|---|---|---|---|"
awk -v a="$direct" -v b="$proxied" -v ok="$ok" -v r="$rss" 'BEGIN {printf "| %.0f | %.0f | %.2f | %d/32 | %.1f |\n", a, b, a/b, ok, r/1024}'
rm -f "$lua" "$many_log"
