#!/usr/bin/env python3
"""RSS of `kvroute serve` holding N idle keep-alive client connections (default 10,000).

Starts kvroute against a dummy backend, opens N connections, sends one GET /health on each
(keep-alive), keeps them open, and reads VmRSS from /proc before and after.
Usage: scripts/bench/idle_connections.py [N] [KVROUTE_BINARY]
"""
import os, resource, socket, subprocess, sys, time

n = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
binary = sys.argv[2] if len(sys.argv) > 2 else "build/kvroute"
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + 1024), hard))

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0

port = free_port()
proc = subprocess.Popen([binary, "serve", "--address", "127.0.0.1", "--port", str(port),
                         "--backend", f"http://127.0.0.1:{free_port()}", "--log-level", "error"],
                        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + 1024), hard)))
try:
    time.sleep(1.0)
    before = rss_kib(proc.pid)
    socks = []
    req = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(req)
        socks.append(s)
    ok = 0
    for s in socks:
        s.settimeout(10)
        if s.recv(4096).startswith(b"HTTP/1.1 200"):
            ok += 1
    time.sleep(0.5)
    after = rss_kib(proc.pid)
    print(f"| idle keep-alive connections | answered | RSS before (MiB) | RSS after (MiB) | per connection (KiB) |")
    print(f"|---|---|---|---|---|")
    print(f"| {n} | {ok} | {before/1024:.1f} | {after/1024:.1f} | {(after-before)/max(1,n):.2f} |")
    for s in socks:
        s.close()
finally:
    proc.terminate()
    proc.wait(timeout=10)
