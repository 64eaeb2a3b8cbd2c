// Readmission after an engine restart: how long a restarted engine waits before the router sends it
// traffic again, with the health settings a user gets by default (interval 2s, ejectionTime 10s).
//
// Usage: KVROUTE_BINARY=build/kvroute node scripts/bench/readmit.mjs [REPS=3]
//
// Three `kvroute sim --engines 1` engines, each its own process, behind `kvroute serve --policy
// round-robin --debug-headers` with the health section of tests/e2e/faults.test.mjs except for the
// interval and the ejection time, which stay at their defaults (docs/config.md). One engine (the
// victim) is killed with SIGKILL and restarted on its port, in three scenarios:
//   a  killed under bounded load (8 clients, a mix of streaming and non-streaming chat/completions):
//      its in-flight streams are cut, the requests sent to it fail and it is ejected passively
//      (failureThreshold 3); restarted 1 s after the kill;
//   b  killed while the router's pool to it is full of idle keep-alive connections (64 concurrent
//      requests, then 1 s idle); restarted once the router has marked it unhealthy (its
//      kvroute_backend_healthy gauge reads 0), at least 1 s after the kill;
//   c  as b but restarted at once: the router's pooled connections to it are all stale, and the
//      health check most likely never sees it down.
// A light probe load (one non-streaming request every 20 ms, at most 16 in flight; in a it runs from
// before the kill, in b and c from the restart) drives the router. The measured time runs from the
// moment the restarted engine's /health answers 200 (polled every 10 ms) to the response head of the
// first request whose x-kvroute-backend header names it; it is given up after 60 s (">60").
// Prints one JSON line per scenario: median/min/max seconds over REPS repetitions, each sample, and
// how many requests failed at the client (an error, a non-200, a body that is not a completion, or
// a stream cut by an error event), of how many. Progress goes to stderr.
import {
  MODEL, binary, metricSum, sleep, startRouter, startSimAt, startSims, stopAll, writeConfig,
} from '../../tests/e2e/lib.mjs';

const REPS = Number(process.argv[2] ?? 3);
const WINDOW_MS = 60000;
const PROBE_EVERY_MS = 20;
const PROBE_MAX_INFLIGHT = 16;
const config = writeConfig(`health:
  interval: 2s
  timeout: 500ms
  failureThreshold: 3
  ejectionTime: 10s
`);

const now = () => performance.now();
const log = (...a) => console.error('[readmit]', ...a);
process.on('SIGINT', () => { stopAll(); process.exit(130); });
process.on('SIGTERM', () => { stopAll(); process.exit(143); });

// One request through the router; the record says whether it failed at the client.
async function oneRequest(url, { chat, stream, maxTokens, tag }) {
  const body = { model: MODEL, max_tokens: maxTokens, stream };
  const words = `${tag} ${Math.random().toString(36).slice(2)} tell me something`;
  if (chat) body.messages = [{ role: 'user', content: words }];
  else body.prompt = words;
  const rec = { tSent: now(), tHead: null, status: 0, backend: null, failed: true, why: null };
  let text = '';
  try {
    const r = await fetch(`${url}${chat ? '/v1/chat/completions' : '/v1/completions'}`, {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body),
      signal: AbortSignal.timeout(15000),
    });
    rec.tHead = now();
    rec.status = r.status;
    rec.backend = r.headers.get('x-kvroute-backend');
    text = await r.text();
  } catch (e) {
    rec.why = `${e}${e.cause ? ` (${e.cause})` : ''}`;
    return rec;
  }
  if (rec.status !== 200) { rec.why = `status ${rec.status}`; return rec; }
  try {
    if (!stream) {
      const j = JSON.parse(text);
      if (!Array.isArray(j.choices) || j.error) { rec.why = 'not a completion'; return rec; }
    } else {
      if (!text.endsWith('data: [DONE]\n\n')) { rec.why = 'stream without [DONE]'; return rec; }
      const events = text.split('\n\n').filter((e) => e.length > 0).map((e) => e.replace(/^data: ?/, ''));
      if (events.slice(0, -1).some((e) => JSON.parse(e).error)) { rec.why = 'stream cut (error event)'; return rec; }
    }
  } catch (e) {
    rec.why = `bad body: ${e}`;
    return rec;
  }
  rec.failed = false;
  return rec;
}

const KINDS = [
  { chat: true, stream: true }, { chat: true, stream: false },
  { chat: false, stream: true }, { chat: false, stream: false },
];

// `clients` concurrent clients, each sending requests one after another until stop().
function startLoad(url, records, { clients, maxMs, maxTokens: [lo, hi] }) {
  let sent = 0; let stopped = false;
  const deadline = now() + maxMs;
  const worker = async (w) => {
    while (!stopped && now() < deadline) {
      const kind = KINDS[(sent + w) % KINDS.length];
      sent++;
      records.push(await oneRequest(url, { ...kind, maxTokens: lo + Math.floor(Math.random() * (hi - lo + 1)), tag: `l${w}r${sent}` }));
    }
  };
  const all = Promise.all(Array.from({ length: clients }, (_, w) => worker(w)));
  return { stop: () => { stopped = true; return all; } };
}

// The probe: one short non-streaming request every PROBE_EVERY_MS (skipped while PROBE_MAX_INFLIGHT
// are in flight). `onRecord` sees every record as it completes.
function startProbe(url, records, onRecord) {
  let inflight = 0; let n = 0; let stopped = false;
  const pending = new Set();
  const loop = (async () => {
    let next = now();
    while (!stopped) {
      if (inflight < PROBE_MAX_INFLIGHT) {
        inflight++;
        const p = oneRequest(url, { chat: n % 2 === 0, stream: false, maxTokens: 4, tag: `p${n++}` }).then((rec) => {
          inflight--; records.push(rec); pending.delete(p); onRecord(rec);
        });
        pending.add(p);
      }
      next += PROBE_EVERY_MS;
      await sleep(Math.max(0, next - now()));
    }
  })();
  return { stop: async () => { stopped = true; await loop; await Promise.all([...pending]); } };
}

async function until(cond, maxMs) {
  const end = now() + maxMs;
  while (now() < end) {
    if (await cond()) return now();
    await sleep(20);
  }
  return null;
}

async function warmPool(router, victim, records) {
  const warm = await Promise.all(Array.from({ length: 64 }, (_, i) =>
    oneRequest(router.url, { chat: i % 2 === 0, stream: false, maxTokens: 4, tag: `warm${i}` })));
  records.push(...warm);
  return warm.filter((r) => r.backend === victim.url).length;
}

// One repetition of one scenario: { readmitS (null: not within the window), failed, requests, ... }.
async function runOnce(scenario) {
  const sims = await startSims(3);
  const router = await startRouter(sims.map((s) => s.url),
    ['--config', config, '--policy', 'round-robin', '--debug-headers'], { capture: true });
  const victim = sims[1];
  const records = [];
  let tRestart = Infinity; let tUp = Infinity; let tFirst = null;
  let resolveBack; const back = new Promise((r) => { resolveBack = r; });
  const onRecord = (rec) => {
    if (tFirst === null && rec.backend === victim.url && rec.tHead !== null && rec.tHead > tRestart) {
      tFirst = rec.tHead; resolveBack();
    }
  };
  const extra = {};
  let probe = null; let load = null;
  if (scenario === 'a') {
    probe = startProbe(router.url, records, onRecord);
    load = startLoad(router.url, records, { clients: 8, maxMs: 10000, maxTokens: [8, 40] });
    await sleep(1200);
    await until(async () => (await metricSum(router.url, 'kvroute_backend_inflight_requests', `backend="${victim.url}"`)) >= 3, 1500);
    const tKill = now();
    extra.victimServedBeforeKill = records.filter((r) => r.backend === victim.url).length;
    victim.proc.kill('SIGKILL');
    await victim.proc.done;
    await sleep(Math.max(0, tKill + 1000 - now()));
    load.stop();  // finishes in the background; its records still count
  } else {
    extra.warmOnVictim = await warmPool(router, victim, records);
    await sleep(1000);
    const tKill = now();
    victim.proc.kill('SIGKILL');
    await victim.proc.done;
    if (scenario === 'b') {
      const tDown = await until(async () => (await metricSum(router.url, 'kvroute_backend_healthy', `backend="${victim.url}"`)) === 0, 6000);
      extra.markedDownAfterS = tDown === null ? null : +((tDown - tKill) / 1000).toFixed(3);
      await sleep(Math.max(0, tKill + 1000 - now()));
    }
  }
  extra.ejectedBeforeRestart = router.proc.log.includes(`backend ${victim.url} ejected`);
  tRestart = now();
  victim.proc = await startSimAt(victim.port);
  tUp = now();
  extra.downS = +((tUp - tRestart) / 1000).toFixed(3);
  if (!probe) probe = startProbe(router.url, records, onRecord);
  let timer;
  await Promise.race([back, new Promise((r) => { timer = setTimeout(r, WINDOW_MS); })]);
  clearTimeout(timer);
  await probe.stop();
  if (load) await load.stop();
  extra.upstreamErrorsVictim = await metricSum(router.url, 'kvroute_upstream_errors_total', `backend="${victim.url}"`);
  extra.ejectedEver = router.proc.log.includes(`backend ${victim.url} ejected`);
  const failed = records.filter((r) => r.failed);
  const whys = {};
  for (const r of failed) whys[r.why] = (whys[r.why] ?? 0) + 1;
  router.proc.kill('SIGKILL');
  for (const s of sims) s.proc.kill('SIGKILL');
  await Promise.all([router.proc.done, ...sims.map((s) => s.proc.done)]);
  return {
    readmitS: tFirst === null ? null : +((tFirst - tUp) / 1000).toFixed(3),
    failed: failed.length, requests: records.length, failedWhy: whys, ...extra,
  };
}

const NAMES = { a: 'a_killed_under_load', b: 'b_killed_idle_pool', c: 'c_killed_restarted_at_once' };
const fmt = (x) => (Number.isFinite(x) ? +x.toFixed(3) : `>${WINDOW_MS / 1000}`);

try {
  for (const scenario of ['a', 'b', 'c']) {
    const runs = [];
    for (let i = 0; i < REPS; i++) {
      const r = await runOnce(scenario);
      log(NAMES[scenario], `rep ${i + 1}/${REPS}`, JSON.stringify(r));
      runs.push(r);
    }
    const xs = runs.map((r) => (r.readmitS === null ? Infinity : r.readmitS)).sort((p, q) => p - q);
    const median = xs.length % 2 ? xs[(xs.length - 1) / 2] : (xs[xs.length / 2 - 1] + xs[xs.length / 2]) / 2;
    console.log(JSON.stringify({
      binary, scenario: NAMES[scenario], reps: REPS,
      median_s: fmt(median), min_s: fmt(xs[0]), max_s: fmt(xs.at(-1)),
      samples_s: runs.map((r) => fmt(r.readmitS ?? Infinity)),
      readmitted: runs.filter((r) => r.readmitS !== null).length,
      failed: runs.reduce((s, r) => s + r.failed, 0), requests: runs.reduce((s, r) => s + r.requests, 0),
      failed_per_rep: runs.map((r) => r.failed),
      ejected_per_rep: runs.map((r) => r.ejectedEver),
      upstream_errors_victim_per_rep: runs.map((r) => r.upstreamErrorsVictim),
    }));
  }
} finally {
  stopAll();
}
