// `kvroute serve` with no --policy is cache-aware: requests that share a long prefix go to the engine
// that holds it, and the engines' own prefix-cache counters show the reuse. Round-robin, asked for by
// name, scatters the same requests (so the first test can fail).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { MODEL, metricSum, startRouter, startSim, stopAll } from './lib.mjs';

after(stopAll);

const ENGINES = 4;
const system = Array.from({ length: 300 }, (_, i) => `rule${i}`).join(' ');

async function sendAll(router) {
  const backends = []; const reasons = [];
  for (let i = 0; i < 12; i++) {
    const r = await fetch(`${router.url}/v1/chat/completions`, {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: MODEL, max_tokens: 2, messages: [
        { role: 'system', content: system }, { role: 'user', content: `question ${i}` }] }),
    });
    assert.equal(r.status, 200);
    await r.json();
    backends.push(r.headers.get('x-kvroute-backend'));
    reasons.push(r.headers.get('x-kvroute-reason'));
  }
  return { backends, reasons };
}

async function hitRate(urls) {
  let hits = 0; let queries = 0;
  for (const u of urls) {
    hits += await metricSum(u, 'vllm:prefix_cache_hits_total');
    queries += await metricSum(u, 'vllm:prefix_cache_queries_total');
  }
  return queries > 0 ? hits / queries : 0;
}

test('with no --policy, a shared prefix stays on one engine and hits its cache', async () => {
  const sim = await startSim(ENGINES);
  const urls = Array.from({ length: ENGINES }, (_, i) => `http://127.0.0.1:${sim.port + i}`);
  const router = await startRouter(urls, ['--debug-headers']);
  const { backends, reasons } = await sendAll(router);
  assert.equal(new Set(backends).size, 1, `backends: ${backends}`);
  assert.ok(reasons.every((r) => r !== 'round-robin'), `reasons: ${reasons}`);
  assert.ok(await hitRate(urls) > 0.8, 'engines report prefix-cache hits for 11 of 12 requests');
});

test('round-robin by name spreads the same requests over every engine', async () => {
  const sim = await startSim(ENGINES);
  const urls = Array.from({ length: ENGINES }, (_, i) => `http://127.0.0.1:${sim.port + i}`);
  const router = await startRouter(urls, ['--debug-headers', '--policy', 'round-robin']);
  const { backends, reasons } = await sendAll(router);
  assert.equal(new Set(backends).size, ENGINES, `backends: ${backends}`);
  assert.ok(reasons.every((r) => r === 'round-robin'), `reasons: ${reasons}`);
});
