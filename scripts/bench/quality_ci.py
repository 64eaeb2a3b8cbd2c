#!/usr/bin/env python3
"""Confidence intervals for `bench compare` TTFT percentiles (scripts/bench/quality_at_load.sh).

Reads the per-request CSVs that `bench compare --records` writes (label = POLICY@FRACTION; runs of a
--repeat N comparison follow one another, every run the same size) and, for one policy against each
other policy at every load, prints:
  - the TTFT p50 and p99 of all runs pooled, their difference and a 95% bootstrap interval of it
    (400 resamples of the requests; ~1 min for 15,000 requests per policy);
  - run by run (runs of --simultaneous comparisons share the machine's stalls, so they pair up):
    in how many runs the policy's p50 and p99 were lower and higher, with the two-sided sign-test p
    of that count (ties dropped): the paired test, which a few stalled runs do not dominate the way
    they dominate a pooled p99;
  - the usage-based hit rate (cached / prompt tokens) per run.
A difference whose interval excludes 0 is a win or a loss; one that includes 0 is a tie at this sample.

  scripts/bench/quality_ci.py build/quality-sim/multi-turn.csv --policy kvroute --runs 5
"""
import argparse
import collections
import csv
import math
import random


def pct(values, q):
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("csv")
    ap.add_argument("--policy", default="kvroute")
    ap.add_argument("--runs", type=int, default=5, help="the --repeat of the comparison")
    ap.add_argument("--resamples", type=int, default=400)
    args = ap.parse_args()
    rng = random.Random(1)

    by = collections.defaultdict(list)
    for r in csv.DictReader(open(args.csv)):
        by[r["label"]].append(r)
    loads = sorted({label.rsplit("@", 1)[1] for label in by if "@" in label})
    for load in loads:
        mine = by.get(f"{args.policy}@{load}")
        if not mine:
            continue
        runs_mine = split_runs(mine, args.runs)
        print(f"## {args.csv} at {load} of capacity: {args.policy}, {len(mine)} requests"
              f" (hit rate per run: {', '.join(f'{hit(r):.1f}%' for r in runs_mine)})")
        for label in sorted(by):
            peer, _, l = label.rpartition("@")
            if l != load or peer == args.policy:
                continue
            other = by[label]
            a = [ttft(r) for r in mine if r["outcome"] == "ok"]
            b = [ttft(r) for r in other if r["outcome"] == "ok"]
            runs_other = split_runs(other, args.runs)
            cells = []
            for q in (0.5, 0.99):
                d = pct(a, q) - pct(b, q)
                boot = sorted(pct(rng.choices(a, k=len(a)), q) - pct(rng.choices(b, k=len(b)), q)
                              for _ in range(args.resamples))
                lo, hi = boot[int(0.025 * len(boot))], boot[int(0.975 * len(boot)) - 1]
                lower = sum(1 for x, y in zip(runs_mine, runs_other) if run_pct(x, q) < run_pct(y, q))
                higher = sum(1 for x, y in zip(runs_mine, runs_other) if run_pct(x, q) > run_pct(y, q))
                cells.append(f"p{int(q * 100)} {pct(a, q):.0f} vs {pct(b, q):.0f} ms, diff {d:+.0f} "
                             f"[{lo:+.0f}, {hi:+.0f}], runs lower/higher {lower}/{higher} "
                             f"(sign test p={sign_test(lower, higher):.3f})")
            print(f"- vs {peer} (hit rate per run: {', '.join(f'{hit(r):.1f}%' for r in runs_other)}): "
                  + "; ".join(cells))


def sign_test(lower, higher):
    """Two-sided exact binomial sign test of `lower` against `higher` paired outcomes."""
    n = lower + higher
    if n == 0:
        return 1.0
    k = min(lower, higher)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def ttft(r):
    return float(r["ttft_s"]) * 1000


def hit(rows):
    prompt = sum(int(r["prompt_tokens"]) for r in rows)
    return 100.0 * sum(int(r["cached_tokens"]) for r in rows) / max(1, prompt)


def run_pct(rows, q):
    return pct([ttft(r) for r in rows if r["outcome"] == "ok"], q)


def split_runs(rows, runs):
    n = len(rows) // runs
    return [rows[i * n:(i + 1) * n] for i in range(runs)] if n else [rows]


if __name__ == "__main__":
    main()
