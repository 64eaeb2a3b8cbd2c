#!/usr/bin/env bash
# TLS on the client side, kvroute against nginx, side by side on loopback (docs/BENCHMARKS.md,
# docs/adr/0022). As proxy_vs_nginx.sh, with both proxies terminating TLS (the same P-256 certificate,
# made here with openssl; TLS 1.3 as wrk negotiates it) in front of the same plain nginx upstream:
#   keep-alive: wrk on CONNECTIONS persistent TLS connections: requests/s and p99
#   new connections: every request on a new TLS connection (Connection: close): handshakes/s
# alternating, RUNS times each; prints medians and ratios.
# Usage: scripts/bench/tls_vs_nginx.sh [THREADS=1] [DURATION=10s] [CONNECTIONS=64] [RUNS=3]
set -euo pipefail
cd "$(dirname "$0")/../.."
THREADS="${1:-1}"; DURATION="${2:-10s}"; CONNS="${3:-64}"; RUNS="${4:-3}"
PIN="${PIN:-0}"
PROXY_CPU=(); LOAD_CPU=()
if [ "$PIN" = 1 ]; then PROXY_CPU=(taskset -c 1); LOAD_CPU=(taskset -c 0); fi
KVROUTE="${KVROUTE:-build/kvroute}"
work=$(mktemp -d)
source scripts/bench/nginx_peer.sh
trap 'nginx_peer_cleanup "$work"' EXIT
nginx_peer_setup "$work" "$THREADS" on
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$work/tls.key" \
  -out "$work/tls.crt" -days 1 -subj /CN=bench -addext subjectAltName=IP:127.0.0.1 2>/dev/null
# The peer: the same proxy configuration, listening with TLS.
sed -i "s|listen 127.0.0.1:$PX;|listen 127.0.0.1:$PX ssl; ssl_certificate $work/tls.crt; ssl_certificate_key $work/tls.key; ssl_protocols TLSv1.2 TLSv1.3; ssl_session_cache shared:SSL:10m;|" "$work/px.conf"
grep -q "ssl_certificate" "$work/px.conf" || { echo "could not enable TLS in the nginx peer"; exit 1; }
"${LOAD_CPU[@]}" nginx -c "$work/up.conf" -p "$work" &
"${PROXY_CPU[@]}" nginx -c "$work/px.conf" -p "$work" &
NG_MASTER=$!
"${PROXY_CPU[@]}" "$KVROUTE" serve --address 127.0.0.1 --port "$KV" --threads "$THREADS" --backend "http://127.0.0.1:$UP" \
  --policy round-robin --log-level error --tls-cert "$work/tls.crt" --tls-key "$work/tls.key" > "$work/kv.log" 2>&1 &
KV_PID=$!
sleep 2
for p in $PX $KV; do curl -sfk -o /dev/null -X POST -d '{"prompt":"x"}' "https://127.0.0.1:$p/v1/completions" || { echo "port $p not ready"; cat "$work"/*.err "$work/kv.log"; exit 1; }; done
cat > "$work/close.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Connection"] = "close"
wrk.body = '{"model":"m","prompt":"The quick brown fox jumps over the lazy dog","max_tokens":5}'
LUA
run() { # port script -> "rps p99_ms"
  local port=$1 script=$2
  "${LOAD_CPU[@]}" wrk -t1 -c"$CONNS" -d"$DURATION" --latency -s "$script" "https://127.0.0.1:$port/v1/completions" > "$work/wrk.out"
  local rps p99
  rps=$(awk '/Requests\/sec/ {print $2}' "$work/wrk.out")
  p99=$(awk '$1=="99%" {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v=v*1000}; print v}' "$work/wrk.out")
  echo "$rps $p99"
}
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2)? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
echo "| mode | threads | nginx req/s | kvroute req/s | ratio (kvroute/nginx) | kvroute ahead | nginx p99 ms | kvroute p99 ms |"
echo "|---|---|---|---|---|---|---|---|"
for mode in keep-alive new-connections; do
  script="$work/post.lua"; [ "$mode" = new-connections ] && script="$work/close.lua"
  NG_RPS=(); NG_P99=(); KV_RPS=(); KV_P99=()
  for i in $(seq 1 "$RUNS"); do
    read -r r p < <(run "$PX" "$script"); NG_RPS+=("$r"); NG_P99+=("$p")
    read -r r p < <(run "$KV" "$script"); KV_RPS+=("$r"); KV_P99+=("$p")
    echo "$mode run $i: nginx ${NG_RPS[-1]} req/s p99 ${NG_P99[-1]} ms | kvroute ${KV_RPS[-1]} req/s p99 ${KV_P99[-1]} ms" >&2
  done
  wins=0; for i in "${!KV_RPS[@]}"; do awk -v a="${KV_RPS[$i]}" -v b="${NG_RPS[$i]}" 'BEGIN {exit !(a >= b)}' && wins=$((wins + 1)); done
  awk -v m="$mode" -v t="$THREADS" -v a="$(median "${NG_RPS[@]}")" -v b="$(median "${KV_RPS[@]}")" \
    -v c="$(median "${NG_P99[@]}")" -v d="$(median "${KV_P99[@]}")" -v w="$wins/$RUNS" \
    'BEGIN {printf "| %s | %s | %.0f | %.0f | %.2f | %s | %.2f | %.2f |\n", m, t, a, b, b/a, w, c, d}'
done
