#!/usr/bin/env python3
"""The status page (/status on the admin listener) in Debian's headless Chromium.

A `kvroute serve` routes a bounded shared-prefix load to two `kvroute sim` engines; when the load is
over, Chromium loads the page (its JavaScript polls /status.json and /metrics), and the rendered DOM
must agree with the router's /metrics: requests answered, healthy engines, the engines listed, the
recent decisions' reasons among the router's decision reasons; the page polled more than once, shows
no error, and logged nothing to the console at error level. A screenshot is taken (a PNG of sensible
size).

Usage: status_page_check.py KVROUTE_BINARY. Loopback only, OS-chosen ports, every wait bounded.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

from livetest import free_port, get, wait_for

problems = []


CHROMIUM = ["chromium", "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--disable-extensions", "--hide-scrollbars", "--virtual-time-budget=4000"]


def main():
    binary = os.path.abspath(sys.argv[1])
    work = tempfile.mkdtemp(prefix="kvroute-status-")
    procs = []
    try:
        engines = free_port(2)
        router, admin = free_port(), free_port()
        procs.append(subprocess.Popen([binary, "sim", "--engines", "2", "--port", str(engines), "--preset", "none",
                                       "--log-level", "warn"]))
        if not wait_for(lambda: get(f"http://127.0.0.1:{engines + 1}/health")[0] == 200, 15):
            problems.append("the engines did not start")
            return
        procs.append(subprocess.Popen([binary, "serve", "--address", "127.0.0.1", "--port", str(router),
                                       "--admin-address", "127.0.0.1", "--admin-port", str(admin), "--log-level", "warn",
                                       "--backend", f"http://127.0.0.1:{engines}",
                                       "--backend", f"http://127.0.0.1:{engines + 1}"]))
        if not wait_for(lambda: get(f"http://127.0.0.1:{admin}/ready")[0] == 200, 15):
            problems.append("the router did not start")
            return
        end = time.time() + 3
        n = 0
        while time.time() < end and n < 400:
            body = json.dumps({"model": "meta-llama/Llama-3.1-8B-Instruct", "max_tokens": 1,
                               "prompt": " ".join(f"doc{n % 3}w{i}" for i in range(100)) + f" q{n}"}).encode()
            get(f"http://127.0.0.1:{router}/v1/completions", body)
            n += 1
        time.sleep(1.5)  # the router scrapes the engines every second
        metrics = get(f"http://127.0.0.1:{admin}/metrics")[1]
        total = sum(float(v) for v in re.findall(r"^kvroute_requests_total\{[^}]*\} (\S+)", metrics, re.M))
        healthy = len(re.findall(r"^kvroute_backend_healthy\{[^}]*\} 1", metrics, re.M))
        reasons = set(re.findall(r'^kvroute_routing_decisions_total\{[^}]*reason="([^"]+)"', metrics, re.M))

        url = f"http://127.0.0.1:{admin}/status"
        r = subprocess.run(CHROMIUM + ["--enable-logging=stderr", "--v=0", "--dump-dom", url],
                           capture_output=True, text=True, timeout=90)
        dom = r.stdout
        console = [l for l in r.stderr.splitlines() if "CONSOLE" in l]
        # The page writes nothing to the console: any message is an error or a warning.
        for line in console:
            problems.append("console: " + line)
        shown = re.search(r'id="requests-total" data-value="([^"]+)"', dom)
        if not shown or float(shown.group(1)) != total:
            problems.append(f"requests answered: page {shown and shown.group(1)}, /metrics {total}")
        h = re.search(r'id="healthy" data-value="([^"]+)"', dom)
        if not h or int(h.group(1)) != healthy or healthy != 2:
            problems.append(f"healthy engines: page {h and h.group(1)}, /metrics {healthy}")
        listed = set(re.findall(r'data-engine="([^"]+)"', dom))
        want = {f"http://127.0.0.1:{engines}", f"http://127.0.0.1:{engines + 1}"}
        if listed != want:
            problems.append(f"engines listed {sorted(listed)}, expected {sorted(want)}")
        polls = re.search(r'data-polls="(\d+)"', dom)
        if not polls or int(polls.group(1)) < 2:
            problems.append(f"the page polled {polls and polls.group(1)} times")
        err = re.search(r'<span id="error" class="bad">([^<]*)</span>', dom)
        if err is None or err.group(1).strip():
            problems.append("the page shows an error: " + (err.group(1) if err else "(no error element)"))
        shown_reasons = set(re.findall(r'data-key="reason">([^<]+)<', dom))
        if not shown_reasons or not shown_reasons <= reasons:
            problems.append(f"decisions' reasons {sorted(shown_reasons)} not among the router's {sorted(reasons)}")
        png = os.path.join(work, "status.png")
        subprocess.run(CHROMIUM + ["--window-size=1200,760", f"--screenshot={png}", url], capture_output=True,
                       timeout=90)
        if not os.path.exists(png) or os.path.getsize(png) < 10000:
            problems.append("no screenshot")
        elif os.environ.get("KVROUTE_STATUS_SCREENSHOT"):
            shutil.copy(png, os.environ["KVROUTE_STATUS_SCREENSHOT"])
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
    for p in problems:
        print(p)
    print(f"status_page_check: {len(problems)} problems")
    sys.exit(1 if problems else 0)
