#!/usr/bin/env python3
"""The dashboards and alerts in deploy/observability/ against the real things (docs/observability.md).

1. promtool checks the alert rules and runs their unit tests (kvroute-alerts_test.yaml).
2. The dashboards are well-formed: stable uids, a Prometheus datasource input and variable, the
   namespace/pod/model variables, every query on the datasource variable, rates over $__rate_interval;
   and they conform to Grafana's published dashboard schema (npm @grafana/schema): each, without its
   export-only __inputs, is type-checked by the TypeScript compiler as a Dashboard object literal
   (unknown fields and wrong types are errors).
3. Debian's Prometheus scrapes a live `kvroute serve` (its admin port) and two simulated vLLM engines
   publishing KV events, while a bounded load of shared-prefix requests runs through the router;
   then every dashboard query and every alert expression (its comparisons removed: the signal, not the
   verdict) is evaluated through Prometheus's HTTP API and must return data.

Usage: observability_check.py SOURCE_DIR KVROUTE_BINARY. Loopback only, OS-chosen ports, every wait
bounded. Exit status 1 with the problems listed.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

import yaml

import livetest
from livetest import free_port
from livetest import get as http

problems = []


def check(ok, message):
    if not ok:
        problems.append(message)
    return ok


def wait_for(pred, seconds, what):
    if livetest.wait_for(pred, seconds, poll=0.2):
        return True
    problems.append(f"timed out waiting for {what}")
    return False


def panel_queries(dashboard):
    for p in dashboard["panels"]:
        for t in p.get("targets", []):
            yield p["title"], t


def check_dashboards(src):
    out = {}
    uids = set()
    for name in sorted(os.listdir(os.path.join(src, "deploy/observability/dashboards"))):
        path = os.path.join(src, "deploy/observability/dashboards", name)
        d = json.load(open(path))
        out[name] = d
        check(d.get("uid") == name.removesuffix(".json"), f"{name}: uid {d.get('uid')} is not its file name")
        check(d["uid"] not in uids, f"{name}: uid repeats")
        uids.add(d["uid"])
        check(any(i.get("pluginId") == "prometheus" for i in d.get("__inputs", [])), f"{name}: no Prometheus datasource input")
        variables = {v["name"]: v for v in d["templating"]["list"]}
        check(variables.get("datasource", {}).get("type") == "datasource", f"{name}: no datasource variable")
        for v in ("namespace", "pod", "model"):
            check(v in variables, f"{name}: no {v} variable")
        ids = [p["id"] for p in d["panels"]]
        check(len(ids) == len(set(ids)), f"{name}: panel ids repeat")
        for title, t in panel_queries(d):
            check(t.get("datasource", {}).get("uid") == "${datasource}", f"{name}: '{title}' is not on ${{datasource}}")
            for m in re.finditer(r"\[([^\]]+)\]", t["expr"]):
                check(m.group(1) == "$__rate_interval", f"{name}: '{title}' uses [{m.group(1)}], not [$__rate_interval]")
    return out


def check_schema(src, dashboards, work):
    npm = os.path.join(os.path.abspath(src), "tools/npm/node_modules")
    lines = ["import type { Dashboard } from '@grafana/schema';"]
    for i, (name, d) in enumerate(sorted(dashboards.items())):
        d = dict(d)
        d.pop("__inputs", None)
        lines.append(f"// {name}\nexport const d{i}: Dashboard = {json.dumps(d, indent=1)};")
    with open(os.path.join(work, "dashboards.ts"), "w") as f:
        f.write("\n".join(lines) + "\n")
    config = {"compilerOptions": {
        "strict": True, "noEmit": True, "module": "esnext", "moduleResolution": "bundler", "target": "es2022",
        "skipLibCheck": True, "baseUrl": ".",
        "paths": {"@grafana/schema": [os.path.join(npm, "@grafana/schema/dist/types/index")]}},
        "files": ["dashboards.ts"]}
    with open(os.path.join(work, "tsconfig.json"), "w") as f:
        json.dump(config, f)
    r = subprocess.run(["node", os.path.join(npm, "typescript/bin/tsc"), "-p", os.path.join(work, "tsconfig.json")],
                       capture_output=True, text=True, timeout=120)
    check(r.returncode == 0, "the dashboards do not match Grafana's schema (@grafana/schema):\n" + r.stdout + r.stderr)


def signal(expr):
    """An alert's expression without its thresholds: what it watches."""
    return re.sub(r"\s*(==|!=|>=|<=|>|<)\s*[0-9.e+-]+", "", expr)


def main():
    src, binary = sys.argv[1], sys.argv[2]
    alerts = os.path.join(src, "deploy/observability/alerts")
    r = subprocess.run(["promtool", "check", "rules", "kvroute-alerts.yaml"], cwd=alerts, capture_output=True, text=True)
    check(r.returncode == 0, "promtool check rules: " + r.stdout + r.stderr)
    r = subprocess.run(["promtool", "test", "rules", "kvroute-alerts_test.yaml"], cwd=alerts, capture_output=True, text=True)
    check(r.returncode == 0, "promtool test rules: " + r.stdout + r.stderr)
    dashboards = check_dashboards(src)
    rules = yaml.safe_load(open(os.path.join(alerts, "kvroute-alerts.yaml")))

    work = tempfile.mkdtemp(prefix="kvroute-observability-")
    procs = []
    try:
        check_schema(src, dashboards, work)
        engines = free_port(2)
        kv = free_port(4)
        router, admin, prom = free_port(), free_port(), free_port()
        procs.append(subprocess.Popen([binary, "sim", "--engines", "2", "--port", str(engines), "--kv-events-port", str(kv),
                                       "--preset", "none", "--num-gpu-blocks", "2048", "--log-level", "warn"]))
        wait_for(lambda: http(f"http://127.0.0.1:{engines + 1}/health")[0] == 200, 15, "the engines")
        args = [binary, "serve", "--address", "127.0.0.1", "--port", str(router), "--admin-address", "127.0.0.1",
                "--admin-port", str(admin), "--log-level", "warn"]
        for i in range(2):
            args += ["--backend", f"http://127.0.0.1:{engines + i}", "--kv-events", f"tcp://127.0.0.1:{kv + i}",
                     "--kv-events-replay", f"tcp://127.0.0.1:{kv + 2 + i}"]
        procs.append(subprocess.Popen(args))
        wait_for(lambda: http(f"http://127.0.0.1:{admin}/ready")[0] == 200, 15, "the router")
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [
                {"job_name": "kvroute", "static_configs": [
                    {"targets": [f"127.0.0.1:{admin}"], "labels": {"namespace": "llm", "pod": "kvroute-router-0"}}]},
                {"job_name": "vllm", "static_configs": [
                    {"targets": [f"127.0.0.1:{engines + i}"], "labels": {"namespace": "llm", "pod": f"engine-{i}"}}
                    for i in range(2)]},
            ],
        }
        with open(os.path.join(work, "prometheus.yml"), "w") as f:
            yaml.safe_dump(config, f)
        procs.append(subprocess.Popen(["prometheus", f"--config.file={work}/prometheus.yml", f"--storage.tsdb.path={work}/data",
                                       f"--web.listen-address=127.0.0.1:{prom}", "--log.level=warn"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_for(lambda: http(f"http://127.0.0.1:{prom}/-/ready")[0] == 200, 30, "Prometheus")

        # Load: shared-prefix requests for up to 12 s or 300 requests, from 4 threads.
        docs = [" ".join(f"d{d}w{w}" for w in range(120)) for d in range(4)]
        deadline = time.time() + 12
        sent = [0]
        lock = threading.Lock()

        def client(k):
            n = 0
            while time.time() < deadline:
                with lock:
                    if sent[0] >= 300:
                        return
                    sent[0] += 1
                body = json.dumps({"model": "meta-llama/Llama-3.1-8B-Instruct", "max_tokens": 2,
                                   "prompt": docs[(k + n) % 4] + f" question {n}"}).encode()
                try:
                    http(f"http://127.0.0.1:{router}/v1/completions", body, {"Content-Type": "application/json"})
                except Exception as e:  # counted by the dashboards' error panels; the test needs data
                    problems.append(f"a request failed: {e}")
                    return
                n += 1
                time.sleep(0.02)

        threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        check(sent[0] >= 50, f"only {sent[0]} requests were sent")

        def query(expr):
            q = urllib.parse.quote(expr)
            status, body = http(f"http://127.0.0.1:{prom}/api/v1/query?query={q}")
            return json.loads(body)

        # A few scrapes after the load, so that every rate has two samples in its window.
        wait_for(lambda: float(query('count_over_time(up{job="kvroute"}[1m])')["data"]["result"][0]["value"][1]) >= 8,
                 30, "eight scrapes of the router")
        time.sleep(2)
        subs = {"$__rate_interval": "20s", "$namespace": ".*", "$pod": ".*", "$model": ".*"}
        evaluated = 0
        for name, d in dashboards.items():
            for title, t in panel_queries(d):
                expr = t["expr"]
                for k, v in subs.items():
                    expr = expr.replace(k, v)
                res = query(expr)
                evaluated += 1
                check(res.get("status") == "success", f"{name} '{title}': {res.get('error')}\n  {expr}")
                check(res.get("status") == "success" and len(res["data"]["result"]) > 0,
                      f"{name} '{title}' returned no data:\n  {expr}")
        for g in rules["groups"]:
            for rule in g["rules"]:
                expr = signal(rule["expr"]).replace("[10m]", "[20s]").replace("[15m]", "[20s]").replace("[5m]", "[20s]")
                res = query(expr)
                evaluated += 1
                check(res.get("status") == "success" and len(res["data"]["result"]) > 0,
                      f"alert {rule['alert']}: its signal returned no data:\n  {expr}\n  {res.get('error', '')}")
        check(evaluated >= 20, f"only {evaluated} expressions evaluated")
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(work, ignore_errors=True)
    for p in problems:
        print(p)
    print(f"observability_check: {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
