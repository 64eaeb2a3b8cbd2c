#!/usr/bin/env python3
"""Flow control benchmarks (issue 18; docs/BENCHMARKS.md "Flow control").

Runs `kvroute bench compare` on simulated engines in real time, flow control off (the kvroute preset)
against on (a policy config with flowControl), in the same invocation (--simultaneous: each on its own
engines and router, so a stall of the machine hits both alike), repeated, and reports per traffic class
(--class) TTFT p50/p99 with 95% bootstrap intervals over the pooled requests, and every outcome
(ok, 429, 503, failed: nothing may be lost silently).

  scripts/bench/flow_bench.py priority [--repeat 3]
  scripts/bench/flow_bench.py fairness
  scripts/bench/flow_bench.py cache
  scripts/bench/flow_bench.py overhead
  scripts/bench/flow_bench.py all --out build/flow-bench

Scenarios:
  priority  two bands at 2x capacity in total (critical at 0.5x, standard at 1.5x) against critical
            alone at 0.5x: critical TTFT p99 ratio (goal <= 1.5), standard's outcomes.
  fairness  one tenant at 10x the rate of nine others, 0.9x capacity in total, against the nine alone:
            the light tenants' TTFT p99 ratio (goal <= 1.3), round-robin and VTC.
  cache     shared-prefix and multi-turn at 0.9, 1.0, 1.1, 1.2x capacity: hit rate and TTFT p99, on
            against off.
  overhead  zero-time engines (--preset none), closed loop: requests/s through the router, on against
            off (nothing saturates), runs interleaved (goal: within 3%).
"""
import argparse
import csv
import json
import os
import random
import re
import statistics
import subprocess
import sys

KV = "build/kvroute"
OBJ = "x-gateway-inference-objective"
FID = "x-gateway-inference-fairness-id"

FLOW_YAML = """routing: {{policy: kvroute}}
health: {{metricsScrapeInterval: {scrape}}}
flowControl:
  enabled: true
  saturationDetector: {{queueDepthThreshold: {qd}, metricsStalenessThreshold: {stale}}}
  fairness: {fairness}
  pickAmong: {pick}
  defaultRequestTTL: 120s
  objectives:
    - {{name: critical, priority: 100}}
    - {{name: standard, priority: 0}}
"""

# The engines: 4 simulated Llama-3.1-8B/H100 engines at a quarter of real time (so that two routers
# with four engines each, at twice their capacity, fit the 2-core VM); shared-prefix requests of
# 1,024 + 64 tokens with exponentially distributed outputs (mean 128 tokens).
ENGINES = ["--engines", "4", "--time-scale", "0.25"]


def workload(prompts_per_group, name="shared-prefix"):
    if name == "multi-turn":
        return ["--workload", "multi-turn", "--mt-sessions", str(prompts_per_group), "--mt-turns", "4",
                "--mt-system-len", "1024", "--mt-turn-len", "128", "--output-len", "128",
                "--output-len-dist", "exponential", "--think-time", "2s"]
    return ["--workload", "shared-prefix", "--sp-groups", "16", "--sp-prompts-per-group",
            str(prompts_per_group), "--sp-system-len", "1024", "--sp-question-len", "64",
            "--output-len", "128", "--output-len-dist", "exponential"]


def run(args, log):
    cmd = [KV, "bench", "compare", "--quiet", "--no-plots"] + args
    print("$ " + " ".join(cmd), file=log, flush=True)
    out = subprocess.run(cmd, capture_output=True, text=True)
    log.write(out.stdout)
    log.write(out.stderr)
    log.flush()
    if out.returncode != 0:
        sys.exit(f"failed ({out.returncode}): {' '.join(cmd)}\n{out.stderr[-2000:]}")
    return out.stdout


def capacity(wl, log):
    out = run(wl + ENGINES + ["--policies", "round-robin", "--capacity-only", "--steady-capacity",
                              "--saturation-concurrency", "1024"], log)
    m = re.search(r"capacity: ([0-9.]+) req/s", out)
    if not m:
        sys.exit("no capacity in the output")
    return float(m.group(1))


def records(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def pct(v, q):
    v = sorted(v)
    return v[min(len(v) - 1, int(q * len(v)))] if v else float("nan")


def ttfts(rows, label, cls=None):
    return [float(r["ttft_s"]) * 1000 for r in rows
            if r["label"].startswith(label + "@") and (cls is None or r["class"] in cls)
            and r["outcome"] == "ok" and float(r["ttft_s"]) >= 0]


def outcomes(rows, label, cls=None):
    c = {"sent": 0, "ok": 0, "429": 0, "503": 0, "failed": 0, "cancelled": 0}
    for r in rows:
        if not r["label"].startswith(label + "@") or (cls is not None and r["class"] not in cls):
            continue
        c["sent"] += 1
        if r["outcome"] == "ok":
            c["ok"] += 1
        elif r["outcome"] == "cancelled":
            c["cancelled"] += 1
        elif r["status"] in ("429", "503"):
            c[r["status"]] += 1
        else:
            c["failed"] += 1
    return c


def boot_ci(num, den, q, combine=lambda a, b: a / b, resamples=400, seed=1):
    """combine(q-quantile of num, that of den), with a 95% bootstrap interval (requests resampled)."""
    rng = random.Random(seed)
    point = combine(pct(num, q), pct(den, q))
    rs = []
    for _ in range(resamples):
        a = [num[rng.randrange(len(num))] for _ in num]
        b = [den[rng.randrange(len(den))] for _ in den]
        rs.append(combine(pct(a, q), pct(b, q)))
    rs.sort()
    return point, rs[int(0.025 * len(rs))], rs[int(0.975 * len(rs)) - 1]


def flow_config(out, name, qd=5, fairness="round-robin", pick="best", scrape="50ms", stale="1s"):
    path = os.path.join(out, name + ".yaml")
    with open(path, "w") as f:
        f.write(FLOW_YAML.format(qd=qd, fairness=fairness, pick=pick, scrape=scrape, stale=stale))
    return path


def priority(out, repeat, log):
    wl = workload(150)
    cap = capacity(wl, log)
    on = flow_config(out, "flow")
    base_csv, over_csv = os.path.join(out, "priority-base.csv"), os.path.join(out, "priority-over.csv")
    common = wl + ENGINES + ["--capacity", f"{cap:.2f}", "--simultaneous", "--repeat", str(repeat),
                             "--policies", "kvroute", "--policy-config", f"kvroute-flow={on}"]
    run(common + ["--load-fractions", "0.5", "--requests", "1200",
                  "--class", f"critical:1:{OBJ}=critical", "--records", base_csv], log)
    run(common + ["--load-fractions", "2.0", "--class", f"critical:1:{OBJ}=critical",
                  "--class", f"standard:3:{OBJ}=standard", "--records", over_csv], log)
    base, over = records(base_csv), records(over_csv)
    lines = [f"capacity {cap:.1f} req/s; {repeat} runs of each; TTFT in ms (ok requests), pooled",
             "", "| router | critical alone at 0.5x: p50 / p99 | critical at 2x: p50 / p99 | "
             "p99 ratio [95% CI] | standard at 2x: p50 / p99 | standard outcomes |",
             "|---|---:|---:|---:|---:|---|"]
    for label in ("kvroute", "kvroute-flow"):
        b, o = ttfts(base, label, {"critical"}), ttfts(over, label, {"critical"})
        s = ttfts(over, label, {"standard"})
        r, lo, hi = boot_ci(o, b, 0.99)
        lines.append(f"| {'flow control on' if 'flow' in label else 'off'} | {pct(b, .5):.0f} / "
                     f"{pct(b, .99):.0f} | {pct(o, .5):.0f} / {pct(o, .99):.0f} | {r:.2f} "
                     f"[{lo:.2f}, {hi:.2f}] | {pct(s, .5):.0f} / {pct(s, .99):.0f} | "
                     f"{outcomes(over, label, {'standard'})} |")
    return "\n".join(lines)


def fairness(out, repeat, log):
    wl = workload(150)
    cap = capacity(wl, log)
    cfgs = {"kvroute-rr": flow_config(out, "flow-rr"), "kvroute-vtc": flow_config(out, "flow-vtc", fairness="vtc")}
    light = [f"light{i}:1:{FID}=light{i}" for i in range(1, 10)]
    heavy = f"heavy:10:{FID}=heavy"
    base_csv, mix_csv = os.path.join(out, "fairness-base.csv"), os.path.join(out, "fairness-mix.csv")
    common = wl + ENGINES + ["--capacity", f"{cap:.2f}", "--simultaneous", "--repeat", str(repeat),
                             "--policies", "kvroute"]
    for name, path in cfgs.items():
        common += ["--policy-config", f"{name}={path}"]
    light_frac = 0.9 * 9 / 19
    run(common + ["--load-fractions", f"{light_frac:.4f}", "--requests", "1200", "--records", base_csv]
        + sum((["--class", c] for c in light), []), log)
    run(common + ["--load-fractions", "0.9", "--records", mix_csv, "--class", heavy]
        + sum((["--class", c] for c in light), []), log)
    base, mix = records(base_csv), records(mix_csv)
    names = {f"light{i}" for i in range(1, 10)}
    lines = [f"capacity {cap:.1f} req/s; {repeat} runs of each; light = the nine light tenants' "
             "requests pooled; TTFT in ms", "",
             "| router | light alone ({:.2f}x): p50 / p99 | light with heavy (0.9x): p50 / p99 | "
             "p99 ratio [95% CI] | heavy p50 / p99 | outcomes (light; heavy) |".format(light_frac),
             "|---|---:|---:|---:|---:|---|"]
    for label in ("kvroute", "kvroute-rr", "kvroute-vtc"):
        b, m = ttfts(base, label, names), ttfts(mix, label, names)
        h = ttfts(mix, label, {"heavy"})
        r, lo, hi = boot_ci(m, b, 0.99)
        lines.append(f"| {label} | {pct(b, .5):.0f} / {pct(b, .99):.0f} | {pct(m, .5):.0f} / "
                     f"{pct(m, .99):.0f} | {r:.2f} [{lo:.2f}, {hi:.2f}] | {pct(h, .5):.0f} / "
                     f"{pct(h, .99):.0f} | {outcomes(mix, label, names)}; {outcomes(mix, label, {'heavy'})} |")
    return "\n".join(lines)


def cache(out, repeat, log):
    on = flow_config(out, "flow")
    on5 = flow_config(out, "flow-with-room", pick="with-room")
    lines = ["| workload | load | router | hit rate | TTFT p50 | TTFT p99 [95% CI of on - off] | ok/sent |",
             "|---|---:|---|---:|---:|---:|---:|"]
    for name, size in (("shared-prefix", 100), ("multi-turn", 300)):
        wl = workload(size, name)
        cap = capacity(workload(150) if name == "shared-prefix" else wl, log)
        js = os.path.join(out, f"cache-{name}.json")
        rec = os.path.join(out, f"cache-{name}.csv")
        run(wl + ENGINES + ["--capacity", f"{cap:.2f}", "--simultaneous", "--repeat", str(repeat),
                            "--policies", "kvroute", "--policy-config", f"kvroute-flow={on}",
                            "--policy-config", f"kvroute-flow-q5={on5}",
                            "--load-fractions", "0.9,1.0,1.1,1.2", "--json", js, "--records", rec],
            log)
        rows = records(rec)
        for f in ("0.9", "1", "1.1", "1.2"):
            with open(js.replace(".json", f"-{float(f) * 100:.0f}.json")) as fh:
                runs = {r["label"]: r for r in json.load(fh)["runs"]}
            def ok_ttft(label):
                return [float(r["ttft_s"]) * 1000 for r in rows
                        if r["label"] == f"{label}@{f}" and r["outcome"] == "ok"]
            off_t = ok_ttft("kvroute")
            for label in ("kvroute", "kvroute-flow", "kvroute-flow-q5"):
                s = runs[label]
                t = ok_ttft(label)
                ci = ""
                if label != "kvroute":
                    _, lo, hi = boot_ci(t, off_t, .99, combine=lambda a, b: a - b, resamples=300)
                    ci = f" [{lo:+.0f}, {hi:+.0f}]"
                mode = {"kvroute": "off", "kvroute-flow": "on (best)", "kvroute-flow-q5": "on (with-room)"}[label]
                lines.append(f"| {name} | {f}x ({cap:.0f} req/s) | {mode} | "
                             f"{s['hit_rate'] * 100:.1f}% | {pct(t, .5):.0f} | {pct(t, .99):.0f}{ci} | "
                             f"{s['completed']}/{s['sent']} |")
    return "\n".join(lines)


def overhead(out, repeat, log):
    # Not saturated: zero-time engines never queue, and a queue-depth threshold above the users
    # keeps every request on the admission fast path (the cost measured is flow control's
    # bookkeeping, not waiting), at the preset's 1 s scrapes so that only flow control differs.
    on = flow_config(out, "flow", qd=64, scrape="1s", stale="3s")
    js = os.path.join(out, "overhead.json")
    rps = {"kvroute": [], "kvroute-flow": []}
    for i in range(repeat):
        for label in (["kvroute", "kvroute-flow"] if i % 2 == 0 else ["kvroute-flow", "kvroute"]):
            args = ["--workload", "shared-prefix", "--sp-groups", "16", "--sp-prompts-per-group", "1000",
                    "--sp-system-len", "1024", "--sp-question-len", "64", "--output-len", "8",
                    "--engines", "4", "--preset", "none", "--concurrency", "32", "--json", js,
                                   "--policy-config", f"kvroute-flow={on}", "--policies", label]
            run(args, log)
            with open(js) as fh:
                rps[label].append(json.load(fh)["runs"][0]["request_throughput"])
    off, onr = statistics.median(rps["kvroute"]), statistics.median(rps["kvroute-flow"])
    ratios = sorted(a / b for a, b in zip(rps["kvroute-flow"], rps["kvroute"]))
    return (f"requests/s through the router (zero-time engines, 32 users, {repeat} runs each, "
            f"alternating): off median {off:.0f} {sorted(round(x) for x in rps['kvroute'])}, on median "
            f"{onr:.0f} {sorted(round(x) for x in rps['kvroute-flow'])}; on/off {onr / off:.3f} "
            f"(pairwise ratios {', '.join(f'{r:.3f}' for r in ratios)})")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scenario", choices=["priority", "fairness", "cache", "overhead", "all"])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", default="build/flow-bench")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "log.txt"), "a") as log:
        for name in (["priority", "fairness", "cache", "overhead"] if args.scenario == "all" else [args.scenario]):
            n = args.repeat * (4 if name == "overhead" else 1)
            print(f"## {name}\n\n{globals()[name](args.out, n, log)}\n", flush=True)


if __name__ == "__main__":
    main()
