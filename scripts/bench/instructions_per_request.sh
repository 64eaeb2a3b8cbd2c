#!/usr/bin/env bash
# User-space instructions per proxied request, kvroute against nginx, counted by callgrind
# (docs/BENCHMARKS.md, docs/adr/0013). Unlike requests/s on a shared VM, the count does not move with
# the machine's load: it is the comparison that resolves a few percent. Both proxies run under
# valgrind with the nginx upstream and the POST of proxy_vs_nginx.sh; a client on 8 keep-alive
# connections sends WARMUP requests, the counters are zeroed, then REQUESTS more are counted.
# Kernel time is not counted here: syscalls_per_request.sh compares the system calls.
# Usage: scripts/bench/instructions_per_request.sh [REQUESTS=8000]
set -euo pipefail
cd "$(dirname "$0")/../.."
REQUESTS="${1:-8000}"; WARMUP=800
KVROUTE="${KVROUTE:-build/kvroute}"
work=$(mktemp -d)
source scripts/bench/nginx_peer.sh
trap 'nginx_peer_cleanup "$work"' EXIT
nginx_peer_setup "$work" 1 off
nginx -c "$work/up.conf" -p "$work" &
valgrind --tool=callgrind --callgrind-out-file="$work/cg.nginx" nginx -c "$work/px.conf" -p "$work" 2> "$work/vg.nginx" &
NG=$!
valgrind --tool=callgrind --callgrind-out-file="$work/cg.kvroute" "$KVROUTE" serve --address 127.0.0.1 --port "$KV" \
  --threads 1 --backend "http://127.0.0.1:$UP" --policy round-robin --log-level error 2> "$work/vg.kvroute" &
KVP=$!
for p in $PX $KV; do
  for _ in $(seq 1 60); do curl -sf -o /dev/null -X POST -d '{"prompt":"x"}' "http://127.0.0.1:$p/v1/completions" && break; sleep 1; done
done
echo "| proxy | requests | user instructions/request |"
echo "|---|---|---|"
declare -A IR
for t in "nginx:$PX:$NG" "kvroute:$KV:$KVP"; do
  IFS=: read -r name port pid <<< "$t"
  python3 scripts/bench/keepalive_client.py "$port" "$WARMUP"
  callgrind_control -z "$pid" > /dev/null 2>&1
  python3 scripts/bench/keepalive_client.py "$port" "$REQUESTS"
  callgrind_control -d "$pid" > /dev/null 2>&1
  sleep 1
  total=$(callgrind_annotate "$work/cg.$name.1" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
  IR[$name]=$((total / REQUESTS))
  echo "| $name | $REQUESTS | ${IR[$name]} |"
done
awk -v a="${IR[kvroute]}" -v b="${IR[nginx]}" 'BEGIN {printf "\nkvroute/nginx: %.2f\n", a / b}'
kill -INT "$KVP" 2>/dev/null || true
kill "$NG" 2>/dev/null || true
wait "$KVP" "$NG" 2>/dev/null || true
