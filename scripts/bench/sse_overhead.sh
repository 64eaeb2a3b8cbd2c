#!/usr/bin/env bash
# Streaming overhead: a 500-event SSE completion from a simulated engine (no time model), fetched
# directly and through kvroute, alternating; prints the median end-to-end times and the difference.
# Usage: scripts/bench/sse_overhead.sh [REQUESTS=30]
set -euo pipefail
cd "$(dirname "$0")/../.."
N="${1:-30}"
KVROUTE="${KVROUTE:-build/kvroute}"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
SIM=$(free_port); KV=$(free_port)
"$KVROUTE" sim --engines 1 --port "$SIM" --preset none --model m --log-level error &
SIM_PID=$!
"$KVROUTE" serve --address 127.0.0.1 --port "$KV" --backend "http://127.0.0.1:$SIM" --log-level error &
KV_PID=$!
trap 'kill $SIM_PID $KV_PID 2>/dev/null' EXIT
sleep 1.5
body='{"model":"m","prompt":"a b c d e f g h","max_tokens":500,"stream":true}'
fetch() { curl -sN -o /dev/null -w '%{time_total}\n' -H 'Content-Type: application/json' -d "$body" "http://127.0.0.1:$1/v1/completions"; }
events=$(curl -sN -H 'Content-Type: application/json' -d "$body" "http://127.0.0.1:$KV/v1/completions" | grep -c '^data: ')
direct=(); proxied=()
for i in $(seq 1 "$N"); do direct+=("$(fetch "$SIM")"); proxied+=("$(fetch "$KV")"); done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2)? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
d=$(median "${direct[@]}"); p=$(median "${proxied[@]}")
awk -v d="$d" -v p="$p" -v e="$events" -v n="$N" 'BEGIN {printf "| SSE events per response | requests | direct median ms | via kvroute median ms | added ms |\n|---|---|---|---|---|\n| %d | %d | %.2f | %.2f | %.2f |\n", e, n, d*1000, p*1000, (p-d)*1000}'
