# Sourced by the proxy benchmarks (proxy_vs_nginx.sh, syscalls_per_request.sh): the nginx upstream that
# returns a fixed completion JSON, nginx as the keep-alive reverse-proxy peer, and wrk's POST script.
#   nginx_peer_setup WORKDIR PEER_WORKERS [PEER_MASTER=on]
# sets UP, PX and KV (free loopback ports) and writes WORKDIR/up.conf, px.conf and post.lua; the caller
# starts the processes. Its EXIT trap should call nginx_peer_cleanup WORKDIR.

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

nginx_peer_setup() {
  local work=$1 workers=$2 master=${3:-on}
  UP=$(free_port); PX=$(free_port); KV=$(free_port)
  local body='{"id":"cmpl-1","object":"text_completion","created":0,"model":"m","choices":[{"index":0,"text":" the cache routes a token","logprobs":null,"finish_reason":"length"}],"usage":{"prompt_tokens":8,"completion_tokens":5,"total_tokens":13}}'
  cat > "$work/up.conf" <<CONF
worker_processes 1; daemon off; pid $work/up.pid; error_log $work/up.err;
events { worker_connections 4096; }
http { access_log off;
  server { listen 127.0.0.1:$UP; keepalive_requests 1000000;
    location / { default_type application/json; return 200 '$body'; } } }
CONF
  cat > "$work/px.conf" <<CONF
worker_processes $workers; daemon off; master_process $master; pid $work/px.pid; error_log $work/px.err;
events { worker_connections 4096; }
http { access_log off;
  upstream up { server 127.0.0.1:$UP; keepalive 256; keepalive_requests 1000000; }
  server { listen 127.0.0.1:$PX; keepalive_requests 1000000;
    location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
CONF
  cat > "$work/post.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model":"m","prompt":"The quick brown fox jumps over the lazy dog","max_tokens":5}'
LUA
}

nginx_peer_cleanup() {
  local work=$1 f
  kill $(jobs -p) 2>/dev/null
  for f in up px; do [ -f "$work/$f.pid" ] && kill "$(cat "$work/$f.pid" 2>/dev/null)" 2>/dev/null; done
  rm -rf "$work"
}
