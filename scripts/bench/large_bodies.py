#!/usr/bin/env python3
"""Large request bodies against `kvroute serve`: do they stall other connections, and does the
memory come back afterwards? (docs/BENCHMARKS.md)

Starts one simulated engine (`kvroute sim`) and `kvroute serve` (default policy, which tokenizes),
probes GET /health every 10 ms on its own keep-alive connection, and meanwhile sends COUNT
chat requests with a prompt of SIZE_MB megabytes at once. Prints the /health latency (median, p99,
max) during the large requests, and the router's RSS before, at its peak and 2 s after.
The body limit (server.maxBodyBytes) is 32 MiB by default: SIZE_MB up to ~31.
Usage: scripts/bench/large_bodies.py [SIZE_MB=30] [COUNT=2] [KVROUTE_BINARY=build/kvroute]
"""
import http.client, json, socket, statistics, subprocess, sys, threading, time

size_mb = float(sys.argv[1]) if len(sys.argv) > 1 else 30
count = int(sys.argv[2]) if len(sys.argv) > 2 else 2
binary = sys.argv[3] if len(sys.argv) > 3 else "build/kvroute"
MODEL = "meta-llama/Llama-3.1-8B-Instruct"

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def rss_mib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0

def wait_ok(port, path, deadline=15):
    end = time.time() + deadline
    while time.time() < end:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=1); c.request("GET", path)
            if c.getresponse().status == 200: return
        except OSError: pass
        time.sleep(0.05)
    raise SystemExit(f"port {port}{path} not ready")

sim_port, port = free_port(), free_port()
procs = [subprocess.Popen([binary, "sim", "--engines", "1", "--port", str(sim_port), "--model", MODEL,
                           "--preset", "none", "--log-level", "error"])]
procs.append(subprocess.Popen([binary, "serve", "--address", "127.0.0.1", "--port", str(port),
                               "--backend", f"http://127.0.0.1:{sim_port}", "--log-level", "error", *sys.argv[4:]], stderr=None))
try:
    wait_ok(sim_port, "/health"); wait_ok(port, "/ready"); time.sleep(0.5)
    router = procs[1].pid
    before = rss_mib(router)
    words = ("lorem ipsum dolor sit amet consectetur adipiscing elit " * 1024)
    text = (words * (int(size_mb * 2**20) // len(words) + 1))[: int(size_mb * 2**20)]
    done = threading.Event(); lat = []; peak = [before]; statuses = []

    def probe():
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while not done.is_set():
            t = time.perf_counter(); c.request("GET", "/health"); c.getresponse().read()
            lat.append((time.perf_counter() - t) * 1000); peak[0] = max(peak[0], rss_mib(router))
            time.sleep(0.01)

    # Encoded before the probe starts: json.dumps of 30 MB holds Python's GIL, which would stall
    # the probe thread and be measured as the router's latency.
    bodies = [json.dumps({"model": MODEL, "max_tokens": 1,
                          "messages": [{"role": "user", "content": f"{i} " + text}]}).encode()
              for i in range(count)]

    def big(i):
        body = bodies[i]
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        c.request("POST", "/v1/chat/completions", body=body, headers={"Content-Type": "application/json"})
        r = c.getresponse(); r.read(); statuses.append(r.status)

    prober = threading.Thread(target=probe); prober.start()
    time.sleep(0.2)
    t0 = time.time()
    senders = [threading.Thread(target=big, args=(i,)) for i in range(count)]
    for s in senders: s.start()
    for s in senders: s.join()
    wall = time.time() - t0
    done.set(); prober.join()
    time.sleep(2.0)
    after = rss_mib(router)
    lat.sort()
    print(json.dumps({"size_mb": size_mb, "count": count, "statuses": statuses, "wall_s": round(wall, 2),
                      "health_probes": len(lat), "health_ms_p50": round(statistics.median(lat), 2),
                      "health_ms_p99": round(lat[int(0.99 * (len(lat) - 1))], 2), "health_ms_max": round(lat[-1], 2),
                      "rss_mib_before": round(before, 1), "rss_mib_peak": round(peak[0], 1),
                      "rss_mib_after_2s": round(after, 1)}))
finally:
    for p in procs: p.kill()
