#!/usr/bin/env python3
"""`kvroute top` in a real terminal (tmux), against a live router and two simulated engines.

A `kvroute serve` with an admin port routes a bounded shared-prefix load to two `kvroute sim`
engines; `kvroute top` runs in a detached tmux session 160x40; the test reads the screen with
capture-pane until a frame shows both engines with their KV usage and hit rate and the router with
a request rate and decisions, checks the numbers against the processes' own /metrics (the engines'
count, the router's healthy engines), presses q and expects the session to end.

Usage: top_check.py KVROUTE_BINARY. Loopback only, OS-chosen ports, every wait bounded.
"""
import json
import os
import re
import subprocess
import sys
import threading
import time

from livetest import free_port, get, wait_for

problems = []


def main():
    binary = os.path.abspath(sys.argv[1])
    session = f"kvroute-top-{os.getpid()}"
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
        stop = [False]

        def load():
            n = 0
            end = time.time() + 20
            while not stop[0] and time.time() < end and n < 2000:
                body = json.dumps({"model": "meta-llama/Llama-3.1-8B-Instruct", "max_tokens": 1,
                                   "prompt": " ".join(f"doc{n % 3}w{i}" for i in range(80)) + f" q{n}"}).encode()
                try:
                    get(f"http://127.0.0.1:{router}/v1/completions", body)
                except Exception:
                    pass
                n += 1
                time.sleep(0.01)

        t = threading.Thread(target=load)
        t.start()
        subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "160", "-y", "40",
                        f"{binary} top http://127.0.0.1:{admin} --interval 0.5"], check=True)
        screen = [""]

        def frame_ready():
            screen[0] = subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True,
                                       text=True).stdout
            s = screen[0]
            return ("ENGINE" in s and s.count(f"http://127.0.0.1:{engines}") >= 1 and
                    f"http://127.0.0.1:{engines + 1}" in s and re.search(r"prefix-hit \d+%|load-balance \d+%", s) and
                    re.search(r"\d+\.\d%\s+\d+\.\d", s))

        if not wait_for(frame_ready, 15):
            problems.append("no complete frame on the screen:\n" + screen[0])
        s = screen[0]
        # The numbers agree with the processes' own metrics.
        m = re.search(r"kvroute top: (\d+) router\(s\), (\d+) engine\(s\)", s)
        if not m or m.group(1) != "1" or m.group(2) != "2":
            problems.append("header does not say 1 router and 2 engines:\n" + s)
        healthy = len(re.findall(r"^kvroute_backend_healthy\{[^}]*\} 1", get(f"http://127.0.0.1:{admin}/metrics")[1], re.M))
        if s.count(" up ") != healthy:
            problems.append(f"{healthy} engines healthy at the router, {s.count(' up ')} shown up:\n{s}")
        rate = re.search(rf"http://127\.0\.0\.1:{admin}\s+(\d+\.\d)", s)
        if not rate or float(rate.group(1)) <= 0:
            problems.append("the router's request rate is not positive:\n" + s)
        if os.environ.get("KVROUTE_SHOW_SCREEN"):
            print(s)
        subprocess.run(["tmux", "send-keys", "-t", session, "q"], check=True)
        gone = wait_for(lambda: subprocess.run(["tmux", "has-session", "-t", session],
                                               capture_output=True).returncode != 0, 5)
        if not gone:
            problems.append("q did not end kvroute top")
        stop[0] = True
        t.join(30)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
    for p in problems:
        print(p)
    print(f"top_check: {len(problems)} problems")


if __name__ == "__main__":
    main()
    sys.exit(1 if problems else 0)
