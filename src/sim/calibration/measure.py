#!/usr/bin/env python3
"""Step-time benchmark for the simulator's cost model (docs/sim-calibration.md).

Builds a Llama-shaped decoder with random bf16 weights in plain PyTorch (RMSNorm, RoPE, GQA attention
through F.scaled_dot_product_attention over a preallocated KV tensor, SwiGLU MLP, fused QKV and
gate/up projections as vLLM has them, logits only for the last token of each sequence) and times one
forward pass ("engine step") for:
  * prefill of N new tokens with 0 or K cached context tokens,
  * decode of B sequences each with L cached tokens (static KV cache),
  * a few mixed steps (one prefill chunk + a decode batch) used only to validate additivity.
Every step is captured in a CUDA graph and replayed, so the timings are GPU time, not Python launch
time. Timing: CUDA events around each replay, warm-up replays first, median of --reps replays.

Usage: python3 measure.py --model 8b|1b|both --out DIR [--quick] [--reps N] [--decode-attn split|sdpa|bmm]
       [--compare] [--tag SUFFIX]
Writes DIR/steps_<model><SUFFIX>.csv and prints an environment header.
"""
import argparse
import csv
import math
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

MODELS = {
    "llama-3.1-8b": dict(hidden=4096, layers=32, heads=32, kv_heads=8, inter=14336, vocab=128256,
                         tied=False, rope_theta=500000.0),
    "llama-3.2-1b": dict(hidden=2048, layers=16, heads=32, kv_heads=8, inter=8192, vocab=128256,
                         tied=True, rope_theta=500000.0),
}
DT = torch.bfloat16
DEV = "cuda"


class Llama:
    def __init__(self, cfg, max_pos):
        self.cfg = cfg
        h, H, Hkv = cfg["hidden"], cfg["heads"], cfg["kv_heads"]
        self.D = h // H
        self.H, self.Hkv, self.G = H, Hkv, H // Hkv
        D = self.D
        g = torch.Generator(device=DEV)
        g.manual_seed(1234)

        def w(*shape):
            t = torch.empty(*shape, device=DEV, dtype=DT)
            t.normal_(0.0, 0.02, generator=g)
            return t

        self.embed = w(cfg["vocab"], h)
        self.layers = []
        for _ in range(cfg["layers"]):
            self.layers.append(dict(
                ln1=torch.ones(h, device=DEV, dtype=DT),
                wqkv=w((H + 2 * Hkv) * D, h),
                wo=w(h, H * D),
                ln2=torch.ones(h, device=DEV, dtype=DT),
                wgu=w(2 * cfg["inter"], h),
                wd=w(h, cfg["inter"]),
            ))
        self.norm = torch.ones(h, device=DEV, dtype=DT)
        self.lm_head = self.embed if cfg["tied"] else w(cfg["vocab"], h)
        inv = 1.0 / (cfg["rope_theta"] ** (torch.arange(0, D, 2, device=DEV, dtype=torch.float32) / D))
        ang = torch.outer(torch.arange(max_pos, device=DEV, dtype=torch.float32), inv)
        self.cos = torch.cos(ang).to(DT)
        self.sin = torch.sin(ang).to(DT)
        self.prefill_variant = None

    def weight_bytes(self):
        n = self.embed.numel() + (0 if self.cfg["tied"] else self.lm_head.numel())
        for L in self.layers:
            n += sum(t.numel() for t in L.values())
        return n * 2

    def kv_bytes_per_token(self):
        return self.cfg["layers"] * 2 * self.Hkv * self.D * 2

    @staticmethod
    def rms(x, wt):
        return F.rms_norm(x, (x.shape[-1],), wt, 1e-5)

    def rope(self, x, pos):  # x [T, heads, D]
        c = self.cos[pos].unsqueeze(1)
        s = self.sin[pos].unsqueeze(1)
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat((x1 * c - x2 * s, x2 * c + x1 * s), dim=-1)

    def _prefill_attn(self, q, k, v, n, ctx):
        """q [1,H,n,D]; k,v [1,Hkv,ctx+n,D]; causal with the new tokens at the end."""
        if self.prefill_variant is None:
            self.prefill_variant = self._pick_prefill_variant()
        var = self.prefill_variant
        if ctx == 0:
            if var == "repeat":
                k = k.repeat_interleave(self.G, dim=1)
                v = v.repeat_interleave(self.G, dim=1)
                return F.scaled_dot_product_attention(q, k, v, is_causal=True)
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        from torch.nn.attention.bias import causal_lower_right
        mask = causal_lower_right(n, ctx + n)
        if var == "repeat":
            k = k.repeat_interleave(self.G, dim=1)
            v = v.repeat_interleave(self.G, dim=1)
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)

    def _pick_prefill_variant(self):
        """Checks that SDPA accepts GQA + lower-right causal bias and agrees with a reference."""
        from torch.nn.attention.bias import causal_lower_right
        n, ctx, D = 37, 50, self.D
        q = torch.randn(1, self.H, n, D, device=DEV, dtype=DT)
        k = torch.randn(1, self.Hkv, ctx + n, D, device=DEV, dtype=DT)
        v = torch.randn(1, self.Hkv, ctx + n, D, device=DEV, dtype=DT)
        kr, vr = k.repeat_interleave(self.G, 1), v.repeat_interleave(self.G, 1)
        i = torch.arange(n, device=DEV).unsqueeze(1) + ctx
        j = torch.arange(ctx + n, device=DEV).unsqueeze(0)
        ref = torch.softmax(((q.float() @ kr.float().transpose(-1, -2)) / math.sqrt(D))
                            .masked_fill(j > i, float("-inf")), -1) @ vr.float()
        try:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=causal_lower_right(n, ctx + n),
                                                 enable_gqa=True)
            out0 = F.scaled_dot_product_attention(q[:, :, :n], k[:, :, :n], v[:, :, :n],
                                                  is_causal=True, enable_gqa=True)
            ref0 = torch.softmax(((q.float() @ kr[:, :, :n].float().transpose(-1, -2)) / math.sqrt(D))
                                 .masked_fill(j[:, :n] > torch.arange(n, device=DEV).unsqueeze(1),
                                              float("-inf")), -1) @ vr[:, :, :n].float()
            e1 = (out.float() - ref).abs().max().item()
            e0 = (out0.float() - ref0).abs().max().item()
            print(f"# prefill attn gqa check: err ctx={e1:.4f} noctx={e0:.4f}", flush=True)
            if e1 < 0.05 and e0 < 0.05:
                return "gqa"
        except Exception as ex:  # noqa: BLE001
            print(f"# prefill attn gqa variant failed: {ex!r}", flush=True)
        return "repeat"

    def num_splits(self, B, L):
        s = 1
        while B * self.Hkv * s < 264 and L // (2 * s) >= 256 and L % (2 * s) == 0:
            s *= 2
        return s

    def split_kv_decode(self, qg, K, V, B, L):
        """Flash-decoding: split the context into S chunks, attend each (flash kernel, gives the
        log-sum-exp), then merge. qg [B,Hkv,G,D]; K,V [B,Hkv,L,D] views of a cache with capacity L."""
        S = self.num_splits(B, L)
        if S == 1:
            return F.scaled_dot_product_attention(qg, K, V)
        Hkv, G, D, c = self.Hkv, self.G, self.D, L // S
        Ks = K.reshape(B, Hkv * S, c, D)  # a view: the cache capacity equals L
        Vs = V.reshape(B, Hkv * S, c, D)
        qs = qg.unsqueeze(2).expand(B, Hkv, S, G, D).reshape(B, Hkv * S, G, D)
        r = torch.ops.aten._scaled_dot_product_flash_attention(qs, Ks, Vs, 0.0, False, False)
        o, lse = r[0].view(B, Hkv, S, G, D), r[1].view(B, Hkv, S, G)
        mx = lse.amax(2, keepdim=True)
        w = torch.exp(lse - mx)
        o = (o.float() * w.unsqueeze(-1)).sum(2) / w.sum(2).unsqueeze(-1)
        return o.to(DT)

    def check_split(self):
        B, L = 2, 4096
        q = torch.randn(B, self.Hkv, self.G, self.D, device=DEV, dtype=DT)
        K = torch.randn(B, self.Hkv, L, self.D, device=DEV, dtype=DT)
        V = torch.randn(B, self.Hkv, L, self.D, device=DEV, dtype=DT)
        e = (self.split_kv_decode(q, K, V, B, L).float()
             - F.scaled_dot_product_attention(q, K, V).float()).abs().max().item()
        print(f"# split-kv decode check: splits={self.num_splits(B, L)} max err {e:.5f}", flush=True)
        return e < 0.02

    def forward(self, tokens, pos, prefills, pf_cache, dec, dec_cache, last_idx, decode_attn):
        """tokens/pos [T]; prefills: list of (n, ctx); dec: (B, L) or None.
        pf_cache [layers,2,nseq,Hkv,cap,D]; dec_cache [layers,2,B,Hkv,cap,D]."""
        T = tokens.shape[0]
        H, Hkv, D, G = self.H, self.Hkv, self.D, self.G
        x = self.embed[tokens]
        for li, Lw in enumerate(self.layers):
            hN = self.rms(x, Lw["ln1"])
            qkv = F.linear(hN, Lw["wqkv"])
            q = qkv[:, :H * D].view(T, H, D)
            k = qkv[:, H * D:(H + Hkv) * D].view(T, Hkv, D)
            v = qkv[:, (H + Hkv) * D:].view(T, Hkv, D)
            q = self.rope(q, pos)
            k = self.rope(k, pos)
            outs = []
            off = 0
            for si, (n, ctx) in enumerate(prefills):
                kc = pf_cache[li, 0, si]
                vc = pf_cache[li, 1, si]
                kc[:, ctx:ctx + n].copy_(k[off:off + n].transpose(0, 1))
                vc[:, ctx:ctx + n].copy_(v[off:off + n].transpose(0, 1))
                o = self._prefill_attn(q[off:off + n].transpose(0, 1).unsqueeze(0),
                                       kc[:, :ctx + n].unsqueeze(0), vc[:, :ctx + n].unsqueeze(0),
                                       n, ctx)
                outs.append(o[0].transpose(0, 1).reshape(n, H * D))
                off += n
            if dec is not None:
                B, L = dec
                kd = dec_cache[li, 0, :B]
                vd = dec_cache[li, 1, :B]
                # L = tokens attended, the new one included (L - 1 were cached before the step).
                kd[:, :, L - 1].copy_(k[off:off + B])
                vd[:, :, L - 1].copy_(v[off:off + B])
                # GQA decode: the G query heads of one KV head form a length-G query block.
                qg = q[off:off + B].view(B, Hkv, G, D)
                Kc, Vc = kd[:, :, :L], vd[:, :, :L]
                if decode_attn == "split":
                    o = self.split_kv_decode(qg, Kc, Vc, B, L)
                elif decode_attn == "sdpa":
                    o = F.scaled_dot_product_attention(qg, Kc, Vc)
                else:  # "bmm": two batched GEMMs, reads K and V once, split over the context by cuBLAS
                    s = torch.matmul(qg, Kc.transpose(-1, -2)).float() * (1.0 / math.sqrt(D))
                    o = torch.matmul(torch.softmax(s, -1).to(DT), Vc)
                outs.append(o.reshape(B, H * D))
            a = outs[0] if len(outs) == 1 else torch.cat(outs, 0)
            x = x + F.linear(a, Lw["wo"])
            hN = self.rms(x, Lw["ln2"])
            gu = F.linear(hN, Lw["wgu"])
            gate, up = gu.chunk(2, dim=-1)
            x = x + F.linear(F.silu(gate) * up, Lw["wd"])
        xl = self.rms(x[last_idx], self.norm)
        logits = F.linear(xl, self.lm_head)
        return torch.argmax(logits, dim=-1)


class Bench:
    def __init__(self, model, kv_token_budget, reps, warm):
        self.m = model
        self.reps, self.warm = reps, warm
        c = model.cfg
        self.kv = torch.empty(kv_token_budget * c["layers"] * 2 * model.Hkv * model.D, device=DEV, dtype=DT)
        self.kv.normal_(0, 1)
        self.budget = kv_token_budget

    def cache_view(self, nseq, cap):
        m = self.m
        need = m.cfg["layers"] * 2 * nseq * m.Hkv * cap * m.D
        assert need <= self.kv.numel(), (nseq, cap)
        return self.kv[:need].view(m.cfg["layers"], 2, nseq, m.Hkv, cap, m.D)

    def step(self, prefills, dec, decode_attn="bmm", graph=True):
        """Returns list of per-replay milliseconds for one step shape."""
        m = self.m
        toks, pos, last = [], [], []
        off = 0
        for n, ctx in prefills:
            pos.append(torch.arange(ctx, ctx + n))
            off += n
            last.append(off - 1)
        if dec is not None:
            B, L = dec
            pos.append(torch.full((B,), L - 1, dtype=torch.long))
            last.extend(range(off, off + B))
            off += B
        T = off
        tokens = torch.randint(0, m.cfg["vocab"], (T,), device=DEV)
        pos = torch.cat(pos).to(DEV)
        last = torch.tensor(last, device=DEV)
        pf_cache = None
        if prefills:
            cap = max(n + ctx for n, ctx in prefills)
            pf_cache = self.cache_view(len(prefills), cap)
        dec_cache = None
        if dec is not None:
            # Decode region after the prefill region in the same pool.
            pf_need = 0 if pf_cache is None else pf_cache.numel()
            m_ = m
            need = m_.cfg["layers"] * 2 * dec[0] * m_.Hkv * dec[1] * m_.D
            assert pf_need + need <= self.kv.numel(), (prefills, dec)
            dec_cache = self.kv[pf_need:pf_need + need].view(m_.cfg["layers"], 2, dec[0], m_.Hkv,
                                                              dec[1], m_.D)

        def fwd():
            return m.forward(tokens, pos, prefills, pf_cache, dec, dec_cache, last, decode_attn)

        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(2):
                fwd()
        torch.cuda.current_stream().wait_stream(s)
        torch.cuda.synchronize()
        if graph:
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g):
                out = fwd()
            run = g.replay
        else:
            run = fwd
        for _ in range(self.warm):
            run()
        torch.cuda.synchronize()
        e0 = torch.cuda.Event(enable_timing=True)
        e1 = torch.cuda.Event(enable_timing=True)
        times = []
        for _ in range(self.reps):
            e0.record()
            run()
            e1.record()
            e1.synchronize()
            times.append(e0.elapsed_time(e1))
        if graph:
            del g, out
        torch.cuda.empty_cache()
        return times


def plan(model_name, quick):
    """(kind, prefills, dec, decode_attn, graph) tuples."""
    big = model_name == "llama-3.1-8b"
    pts = []
    if quick:
        for n in (16, 512, 2048):
            pts.append(("prefill", [(n, 0)], None))
        pts.append(("prefill", [(512, 4096)], None))
        for B, L in ((1, 128), (1, 8192), (64, 2048)):
            pts.append(("decode", [], (B, L)))
        pts.append(("mixed", [(512, 0)], (32, 1024)))
        return pts
    for n in (16, 32, 64, 128, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096, 6144, 8192):
        pts.append(("prefill", [(n, 0)], None))
    for ctx in (2048, 8192, 24576):
        for n in (64, 256, 1024, 4096):
            pts.append(("prefill", [(n, ctx)], None))
    budget = 262144 if big else 1048576
    for B in (1, 2, 4, 8, 16, 32, 64, 96, 128, 192, 256):
        for L in (128, 512, 1024, 2048, 4096, 8192, 16384):
            if B * L <= budget:
                pts.append(("decode", [], (B, L)))
    pts.append(("mixed", [(512, 0)], (32, 1024)))
    pts.append(("mixed", [(2048, 0)], (64, 512)))
    pts.append(("mixed", [(1024, 4096)], (128, 1024)))
    pts.append(("mixed", [(256, 0)], (16, 2048)))
    return pts


def env_header():
    p = torch.cuda.get_device_properties(0)
    free, total = torch.cuda.mem_get_info()
    import transformers  # noqa: F401  (only for the version line)
    return [
        f"torch={torch.__version__} cuda={torch.version.cuda} cudnn={torch.backends.cudnn.version()}",
        f"transformers={transformers.__version__}",
        f"gpu={p.name} sms={p.multi_processor_count} mem_total_gib={total / 2**30:.1f} "
        f"free_gib={free / 2**30:.1f} cc={p.major}.{p.minor}",
        f"python={sys.version.split()[0]}",
    ]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="both")
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--reps", type=int, default=9)
    ap.add_argument("--warm", type=int, default=3)
    ap.add_argument("--decode-attn", default="split", choices=("split", "bmm", "sdpa"))
    ap.add_argument("--compare", action="store_true", help="also time sdpa decode and eager steps")
    ap.add_argument("--tag", default="", help="suffix of the CSV file names")
    args = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        hdr = env_header()
    except Exception as ex:  # noqa: BLE001
        hdr = [f"env header failed: {ex!r}"]
    for line in hdr:
        print("#", line, flush=True)
    names = list(MODELS) if args.model == "both" else [
        {"8b": "llama-3.1-8b", "1b": "llama-3.2-1b"}.get(args.model, args.model)]
    for name in names:
        t0 = time.time()
        cfg = MODELS[name]
        m = Llama(cfg, max_pos=40000)
        free, _ = torch.cuda.mem_get_info()
        budget = 262144 if name == "llama-3.1-8b" else 1048576
        if args.quick:
            budget = 140000
        budget = min(budget + 32768, int((free - 8 * 2**30) / m.kv_bytes_per_token()))
        bench = Bench(m, budget, args.reps, args.warm)
        if args.decode_attn == "split" and not m.check_split():
            print("# split-kv decode disagrees with sdpa; aborting", flush=True)
            sys.exit(2)
        print(f"# {name}: weights {m.weight_bytes() / 1e9:.2f} GB, kv {m.kv_bytes_per_token()} B/token, "
              f"kv pool {budget} tokens, built in {time.time() - t0:.1f}s", flush=True)
        path = os.path.join(args.out, f"steps_{name}{args.tag}.csv")
        with open(path, "w", newline="") as f:
            wr = csv.writer(f)
            wr.writerow(["model", "kind", "prefill_new", "prefill_ctx", "decode_seqs", "decode_ctx",
                         "median_ms", "min_ms", "max_ms", "reps", "graph", "decode_attn", "prefill_attn"])
            pts = [(k, p, d, args.decode_attn, True) for k, p, d in plan(name, args.quick)]
            if args.compare:
                for B, L in ((1, 8192), (8, 4096), (64, 2048), (1, 512), (256, 512)):
                    if B * L < budget:
                        pts.append(("decode", [], (B, L), "sdpa", True))
                for B, L in ((1, 512), (64, 1024)):
                    pts.append(("decode", [], (B, L), args.decode_attn, False))
                pts.append(("prefill", [(512, 0)], None, args.decode_attn, False))
            for kind, pf, dec, da, graph in pts:
                try:
                    ts = bench.step(pf, dec, da, graph)
                except Exception as ex:  # noqa: BLE001
                    print(f"# FAILED {kind} {pf} {dec} {da} graph={graph}: {ex!r}", flush=True)
                    torch.cuda.empty_cache()
                    continue
                n, ctx = (pf[0] if pf else (0, 0))
                B, L = (dec[0], dec[1] - 1) if dec else (0, 0)  # record tokens cached before the step
                row = [name, kind, n, ctx, B, L, f"{statistics.median(ts):.4f}", f"{min(ts):.4f}",
                       f"{max(ts):.4f}", len(ts), int(graph), da if dec else "", m.prefill_variant or ""]
                wr.writerow(row)
                f.flush()
                print(",".join(map(str, row)), flush=True)
        print(f"# {name} done in {time.time() - t0:.1f}s", flush=True)
        del bench, m
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
