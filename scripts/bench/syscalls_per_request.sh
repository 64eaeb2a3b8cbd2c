#!/usr/bin/env bash
# System calls per proxied request, kvroute against nginx, under the same wrk load as proxy_vs_nginx.sh
# (docs/BENCHMARKS.md, docs/adr/0012). Counts the proxy process's receive, send and epoll_wait calls with
# `perf stat` on syscall tracepoints, and the receives that returned EAGAIN (a read that found nothing).
# Needs perf (linux-perf) and permission to trace (root, or kernel.perf_event_paranoid <= 1).
# Usage: scripts/bench/syscalls_per_request.sh [DURATION_S=5] [CONNECTIONS=64]
set -euo pipefail
cd "$(dirname "$0")/../.."
DURATION="${1:-5}"; CONNS="${2:-64}"
KVROUTE="${KVROUTE:-build/kvroute}"
work=$(mktemp -d)
source scripts/bench/nginx_peer.sh
trap 'nginx_peer_cleanup "$work"' EXIT
nginx_peer_setup "$work" 1 off
nginx -c "$work/up.conf" -p "$work" &
nginx -c "$work/px.conf" -p "$work" &   # no master: its one process is the worker
PX_PID=$!
"$KVROUTE" serve --address 127.0.0.1 --port "$KV" --threads 1 --backend "http://127.0.0.1:$UP" \
  --policy round-robin --log-level error > "$work/kv.log" 2>&1 &
KV_PID=$!
sleep 2
for p in $PX $KV; do curl -sf -o /dev/null -X POST -d '{"prompt":"x"}' "http://127.0.0.1:$p/v1/completions" || { echo "port $p not ready"; exit 1; }; done
EV=()
for s in recvfrom recvmsg read readv sendto sendmsg write writev epoll_wait epoll_ctl; do EV+=(-e "syscalls:sys_enter_$s"); done
EV+=(-e syscalls:sys_exit_recvfrom --filter 'ret == -11' -e syscalls:sys_exit_recvmsg --filter 'ret == -11')
echo "| proxy | requests | receives/req | of which EAGAIN | sends/req | epoll_wait/req | epoll_ctl/req |"
echo "|---|---|---|---|---|---|---|"
for target in "nginx:$PX_PID:$PX" "kvroute:$KV_PID:$KV"; do
  IFS=: read -r name pid port <<< "$target"
  perf stat -x, "${EV[@]}" -p "$pid" -o "$work/stat.csv" -- sleep "$DURATION" &
  perf_pid=$!
  wrk -t1 -c"$CONNS" -d"${DURATION}s" -s "$work/post.lua" "http://127.0.0.1:$port/v1/completions" > "$work/wrk.out"
  wait "$perf_pid"
  req=$(awk '/requests in/ {print $1}' "$work/wrk.out")
  awk -F, -v n="$name" -v r="$req" '
    $3 ~ /sys_enter_(recvfrom|recvmsg|read|readv)$/ {rx += $1}
    $3 ~ /sys_enter_(sendto|sendmsg|write|writev)$/ {tx += $1}
    $3 ~ /sys_exit_/ {again += $1}
    $3 ~ /sys_enter_epoll_wait$/ {ew = $1}
    $3 ~ /sys_enter_epoll_ctl$/ {ec = $1}
    END {printf "| %s | %d | %.3f | %.3f | %.3f | %.3f | %.3f |\n", n, r, rx/r, again/r, tx/r, ew/r, ec/r}' "$work/stat.csv"
done
