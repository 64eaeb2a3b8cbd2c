// HF tokenizers side of the tokenizer benchmark (docs/benchmarks/tokenizer.md). Single thread: one encode at
// a time (each call runs on one libuv worker; RAYON_NUM_THREADS=1 is set for the batch API anyway).
//   RAYON_NUM_THREADS=1 node hf_bench.js <node_modules dir> <tokenizer.json> <corpus.json written by tokenizer_bench>
'use strict';
const fs = require('fs');
const path = require('path');

async function main() {
  const [, , modulesDir, tokPath, corpusPath] = process.argv;
  const { Tokenizer } = require(path.resolve(modulesDir, 'tokenizers'));
  const tok = Tokenizer.fromFile(tokPath);
  const corpus = JSON.parse(fs.readFileSync(corpusPath, 'utf8'));
  const chunks = corpus.chunks;
  const bytes = chunks.reduce((a, c) => a + Buffer.byteLength(c, 'utf8'), 0);
  const runs = [];
  for (let r = 0; r < 4; r++) {
    let tokens = 0;
    const t0 = process.hrtime.bigint();
    const c0 = process.cpuUsage();
    for (const c of chunks) tokens += (await tok.encode(c, null, { addSpecialTokens: false })).getIds().length;
    const wall = Number(process.hrtime.bigint() - t0) / 1e9;
    const cu = process.cpuUsage(c0);
    const s = (cu.user + cu.system) / 1e6;  // CPU seconds of the process (all threads), as Google Benchmark's CPU time
    if (r > 0) runs.push({ s, wall, tokens });  // run 0 warms HF's BPE cache
  }
  runs.sort((a, b) => a.s - b.s);
  const med = runs[Math.floor(runs.length / 2)];
  console.log(`corpus: ${chunks.length} chunks, ${bytes} bytes, ${med.tokens} tokens`);
  console.log(`HF encode: median ${med.s.toFixed(3)} s = ${(bytes / med.s / 1e6).toFixed(2)} MB/s, ` +
              `${(med.tokens / med.s / 1e6).toFixed(3)} M tokens/s (CPU s per run: ${runs.map((r) => r.s.toFixed(3)).join(', ')}; wall s: ${runs.map((r) => r.wall.toFixed(3)).join(', ')})`);
  const lat = [];
  let n = 0;
  for (let i = 0; i < 30; i++) {
    const c0 = process.cpuUsage();
    n = (await tok.encode(corpus.chat, null, { addSpecialTokens: false })).getIds().length;
    const cu = process.cpuUsage(c0);
    lat.push(cu.user + cu.system);
  }
  lat.sort((a, b) => a - b);
  console.log(`HF chat request: ${n} tokens, ${Buffer.byteLength(corpus.chat, 'utf8')} bytes, median ${lat[15].toFixed(0)} us CPU`);
}
main().catch((e) => { console.error(e); process.exit(1); });
