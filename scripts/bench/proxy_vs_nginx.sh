#!/usr/bin/env bash
# Proxy overhead of kvroute against nginx, side by side on loopback (docs/BENCHMARKS.md).
#   upstream: an nginx that returns a fixed completion JSON (1 worker)
#   peer:     nginx as a keep-alive reverse proxy (worker_processes = THREADS)
#   kvroute:  build/kvroute serve --threads THREADS --policy round-robin
# wrk drives both with the same POST, alternating, RUNS times each; prints medians and ratios, and the
# proxies' CPU time per request (user + system, from /proc/PID/stat around each run).
# Usage: scripts/bench/proxy_vs_nginx.sh [THREADS=1] [DURATION=10s] [CONNECTIONS=64] [RUNS=3]
set -euo pipefail
cd "$(dirname "$0")/../.."
THREADS="${1:-1}"; DURATION="${2:-10s}"; CONNS="${3:-64}"; RUNS="${4:-3}"
# PIN=1 (with THREADS=1 on a 2-CPU machine): the proxies run on CPU 1, wrk and the upstream on CPU 0,
# so the proxy's own cost sets the throughput instead of where the scheduler happened to put three
# busy processes on two CPUs.
PIN="${PIN:-0}"
PROXY_CPU=(); LOAD_CPU=()
if [ "$PIN" = 1 ]; then PROXY_CPU=(taskset -c 1); LOAD_CPU=(taskset -c 0); fi
KVROUTE="${KVROUTE:-build/kvroute}"
work=$(mktemp -d)
source scripts/bench/nginx_peer.sh
trap 'nginx_peer_cleanup "$work"' EXIT
nginx_peer_setup "$work" "$THREADS" on
"${LOAD_CPU[@]}" nginx -c "$work/up.conf" -p "$work" &
"${PROXY_CPU[@]}" nginx -c "$work/px.conf" -p "$work" &
NG_MASTER=$!
"${PROXY_CPU[@]}" "$KVROUTE" serve --address 127.0.0.1 --port "$KV" --threads "$THREADS" --backend "http://127.0.0.1:$UP" \
  --policy round-robin --log-level error > "$work/kv.log" 2>&1 &
KV_PID=$!
sleep 2
for p in $UP $PX $KV; do curl -sf -o /dev/null -X POST -d '{"prompt":"x"}' "http://127.0.0.1:$p/v1/completions" || { echo "port $p not ready"; cat "$work"/*.err "$work/kv.log"; exit 1; }; done
ticks() { local t=0 p; for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo "$t"; }
HZ=$(getconf CLK_TCK)
run() { # port pids... -> "rps p99_ms cpu_us_per_request"
  local port=$1; shift
  local t0; t0=$(ticks "$@")
  "${LOAD_CPU[@]}" wrk -t1 -c"$CONNS" -d"$DURATION" --latency -s "$work/post.lua" "http://127.0.0.1:$port/v1/completions" > "$work/wrk.out"
  local t1; t1=$(ticks "$@")
  local rps p99 n
  rps=$(awk '/Requests\/sec/ {print $2}' "$work/wrk.out")
  n=$(awk '/requests in/ {print $1}' "$work/wrk.out")
  p99=$(awk '$1=="99%" {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v=v*1000}; print v}' "$work/wrk.out")
  echo "$rps $p99 $(awk -v d=$((t1 - t0)) -v hz="$HZ" -v n="$n" 'BEGIN {printf "%.2f", d / hz * 1e6 / n}')"
}
NG_PIDS=("$NG_MASTER" $(pgrep -P "$NG_MASTER" | tr '\n' ' '))
declare -a NG_RPS NG_P99 NG_CPU KV_RPS KV_P99 KV_CPU
for i in $(seq 1 "$RUNS"); do
  read -r r p c < <(run "$PX" "${NG_PIDS[@]}"); NG_RPS+=("$r"); NG_P99+=("$p"); NG_CPU+=("$c")
  read -r r p c < <(run "$KV" "$KV_PID"); KV_RPS+=("$r"); KV_P99+=("$p"); KV_CPU+=("$c")
  echo "run $i: nginx ${NG_RPS[-1]} req/s p99 ${NG_P99[-1]} ms cpu ${NG_CPU[-1]} us/req | kvroute ${KV_RPS[-1]} req/s p99 ${KV_P99[-1]} ms cpu ${KV_CPU[-1]} us/req" >&2
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2)? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
ng_r=$(median "${NG_RPS[@]}"); ng_p=$(median "${NG_P99[@]}"); kv_r=$(median "${KV_RPS[@]}"); kv_p=$(median "${KV_P99[@]}")
ng_c=$(median "${NG_CPU[@]}"); kv_c=$(median "${KV_CPU[@]}")
wins=0; for i in "${!KV_RPS[@]}"; do awk -v a="${KV_RPS[$i]}" -v b="${NG_RPS[$i]}" 'BEGIN {exit !(a >= b)}' && wins=$((wins + 1)); done
echo "| threads | nginx req/s | kvroute req/s | ratio (kvroute/nginx) | kvroute ahead | nginx p99 ms | kvroute p99 ms | p99 ratio | nginx CPU us/req | kvroute CPU us/req |"
echo "|---|---|---|---|---|---|---|---|---|---|"
awk -v t="$THREADS" -v a="$ng_r" -v b="$kv_r" -v c="$ng_p" -v d="$kv_p" -v w="$wins/$RUNS" -v e="$ng_c" -v f="$kv_c" \
  'BEGIN {printf "| %s | %.0f | %.0f | %.2f | %s | %.2f | %.2f | %.2f | %.2f | %.2f |\n", t, a, b, b/a, w, c, d, d/c, e, f}'
