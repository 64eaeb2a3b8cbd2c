#!/usr/bin/env python3
"""Fits the simulator's step-time model (src/sim/cost_model.h) to the committed measurements.

Reads src/sim/calibration/data/steps_<model>_run*.csv (written by measure.py on an H100), keeps the
CUDA-graph rows, and for each step shape takes the fastest median over runs and decode-attention
variants (an engine picks its fastest kernel; see docs/sim-calibration.md). Prefill and decode rows
are fitted; "mixed" rows (a prefill chunk and a decode batch in one step) are held out to check that
the terms add up. Model:

  t = base + per_prefill_token * max(0, P - max(0, free_batch_tokens - D))
      + per_attn_pair * sum(new * (context + new/2))
      + per_decode_seq * D + per_decode_context_token * C

free_batch_tokens (tokens per step that ride on the weight read at no marginal GEMM cost; decode
tokens use that allowance first) is found by a grid search; the other five by least squares on relative error
(every point weighs the same whatever its size), with negative coefficients clamped to zero.

Pure Python (no numpy). Usage: python3 fit.py [--write]   (--write regenerates data/table_<model>.csv,
the per-point table that cost_model_test.cc checks the C++ presets against).
"""
import csv
import glob
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "data")
MODELS = {"llama-3.1-8b": "llama-3.1-8b-h100", "llama-3.2-1b": "llama-3.2-1b-h100"}
NAMES = ["base_s", "per_prefill_token_s", "per_attn_pair_s", "per_decode_seq_s",
         "per_decode_context_token_s"]


def load(model):
    best = {}
    for path in sorted(glob.glob(os.path.join(DATA, f"steps_{model}_run*.csv"))):
        with open(path, newline="") as f:
            for r in csv.DictReader(f):
                if r["graph"] != "1":
                    continue
                key = (r["kind"], int(r["prefill_new"]), int(r["prefill_ctx"]), int(r["decode_seqs"]),
                       int(r["decode_ctx"]))
                ms = float(r["median_ms"])
                if key not in best or ms < best[key][0]:
                    best[key] = (ms, r["decode_attn"])
    return best


def features(key, free):
    _, n, ctx, b, lctx = key
    return [1.0, max(0.0, n - max(0.0, free - b)), n * (ctx + n / 2.0), float(b), float(b * lctx)]


def solve(a, y):
    """Least squares via normal equations with Gaussian elimination (partial pivoting)."""
    k = len(a[0])
    m = [[sum(r[i] * r[j] for r in a) for j in range(k)] + [sum(r[i] * t for r, t in zip(a, y))]
         for i in range(k)]
    for c in range(k):
        p = max(range(c, k), key=lambda i: abs(m[i][c]))
        m[c], m[p] = m[p], m[c]
        if abs(m[c][c]) < 1e-300:
            raise ValueError("singular")
        for i in range(k):
            if i != c:
                f = m[i][c] / m[c][c]
                m[i] = [x - f * z for x, z in zip(m[i], m[c])]
    return [m[i][k] / m[i][i] for i in range(k)]


def fit_fixed_free(points, free):
    """Relative-error least squares with an active set that clamps negative coefficients to 0."""
    active = list(range(5))
    while True:
        a, y = [], []
        for key, t in points:
            x = features(key, free)
            a.append([x[i] / t for i in active])
            y.append(1.0)
        sol = solve(a, y)
        if all(s >= 0 for s in sol):
            coef = [0.0] * 5
            for i, s in zip(active, sol):
                coef[i] = s
            return coef
        worst = min(range(len(sol)), key=lambda i: sol[i])
        del active[worst]


def predict(coef, key, free):
    return sum(c * x for c, x in zip(coef, features(key, free)))


def rel_errors(coef, free, points):
    return [(predict(coef, k, free) - t) / t for k, t in points]


def fit(points):
    best = None
    for free in range(0, 513, 8):
        coef = fit_fixed_free(points, float(free))
        e = rel_errors(coef, float(free), points)
        rms = (sum(x * x for x in e) / len(e)) ** 0.5
        if best is None or rms < best[0]:
            best = (rms, float(free), coef)
    return best


def main():
    write = "--write" in sys.argv[1:]
    for model, preset in MODELS.items():
        best = load(model)
        if not best:
            print(f"no data for {model}", file=sys.stderr)
            return 1
        # Times in seconds from here on.
        fitpts = [(k, v[0] / 1e3) for k, v in best.items() if k[0] in ("prefill", "decode")]
        held = [(k, v[0] / 1e3) for k, v in best.items() if k[0] == "mixed"]
        rms, free, coef = fit(fitpts)
        print(f"== {preset}: {len(fitpts)} fitted points, {len(held)} held-out mixed points")
        for n, c in zip(NAMES, coef):
            print(f"  {n:28s} = {c:.6e}")
        print(f"  {'free_batch_tokens':28s} = {free:.0f}")
        print(f"  rms relative error (fitted) = {100 * rms:.2f}%")
        rows = []
        print(f"  {'kind':7s} {'new':>5s} {'ctx':>6s} {'B':>4s} {'L':>6s} {'meas_ms':>9s} {'pred_ms':>9s} "
              f"{'err%':>7s}  attn")
        for key, t in sorted(fitpts + held):
            p = predict(coef, key, free)
            attn = best[key][1]
            print(f"  {key[0]:7s} {key[1]:5d} {key[2]:6d} {key[3]:4d} {key[4]:6d} {1e3 * t:9.3f} "
                  f"{1e3 * p:9.3f} {100 * (p - t) / t:+7.1f}  {attn}")
            rows.append(list(key) + [f"{1e3 * t:.4f}", f"{1e3 * p:.4f}", attn])
        for label, pts in (("fitted", fitpts), ("mixed", held)):
            e = [abs(x) for x in rel_errors(coef, free, pts)]
            if e:
                print(f"  {label}: max |err| {100 * max(e):.1f}%, mean |err| {100 * sum(e) / len(e):.1f}%")
        big = [abs(x) for (k, t), x in zip(fitpts, rel_errors(coef, free, fitpts)) if t > 0.02]
        if big:
            print(f"  fitted points above 20 ms: max |err| {100 * max(big):.1f}%")
        if write:
            path = os.path.join(DATA, f"table_{model}.csv")
            with open(path, "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["kind", "prefill_new", "prefill_ctx", "decode_seqs", "decode_ctx",
                            "measured_ms", "fit_ms", "decode_attn"])
                w.writerows(rows)
            print(f"  wrote {os.path.relpath(path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
