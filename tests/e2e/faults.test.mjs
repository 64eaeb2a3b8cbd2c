// Faults end to end: engines that die and come back, a router that shuts down mid-stream, and an
// upstream whose SSE events end in CRLF. Every engine is its own `kvroute sim` process, so one can be
// killed (SIGKILL) and restarted on its port while the router keeps serving.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import {
  MODEL, metricSum, sleep, startRouter, startSimAt, startSims, stopAll, writeConfig,
} from './lib.mjs';

after(stopAll);

const now = () => performance.now();

// The router's active health check runs every HEALTH_INTERVAL_MS; an ejection by failures would last
// EJECTION_MS (far longer than the test), so only a passing health check can bring an engine back.
const HEALTH_INTERVAL_MS = 500;
const EJECTION_MS = 60000;
const BACK_SLACK_MS = 1000;
const faultConfig = writeConfig(`health:
  interval: ${HEALTH_INTERVAL_MS}ms
  timeout: 500ms
  failureThreshold: 3
  ejectionTime: ${EJECTION_MS}ms
`);

// SSE events of a raw body (the simulator and the router frame events with "\n\n").
function sseEvents(text) {
  return text.split('\n\n').filter((e) => e.length > 0).map((e) => e.replace(/^data: ?/, ''));
}

// One request through the router: chat or completions, streaming or not. The body is read raw
// through the body reader; tHead is when the response head came, which (for a stream) is as soon as
// the router picked an engine and the engine started answering.
async function oneRequest(url, { chat, stream, maxTokens, tag, onHead = () => {} }) {
  const body = { model: MODEL, max_tokens: maxTokens, stream };
  const words = `${tag} ${Math.random().toString(36).slice(2)} tell me something`;
  if (chat) body.messages = [{ role: 'user', content: words }];
  else body.prompt = words;
  const rec = { chat, stream, tag, tSent: now(), status: 0, text: '', backend: null, error: null };
  try {
    const r = await fetch(`${url}${chat ? '/v1/chat/completions' : '/v1/completions'}`, {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body),
      signal: AbortSignal.timeout(15000),
    });
    rec.tHead = now();
    rec.status = r.status;
    rec.backend = r.headers.get('x-kvroute-backend');
    onHead(rec);
    const reader = r.body.getReader();
    const dec = new TextDecoder();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      rec.text += dec.decode(value, { stream: true });
    }
    rec.tEnd = now();
  } catch (e) {
    rec.error = `${e}${e.cause ? ` (${e.cause})` : ''}`;
  }
  return rec;
}

// What a client may see while engines fail: a non-streaming request (it had not started when the
// engine died, or it is retried elsewhere) always gets a 200 with a completion; a stream either
// completes normally or, cut mid-stream, ends with one error event followed by [DONE].
// Returns 'ok' or 'cut'; throws with the request's record otherwise.
function classify(rec) {
  const where = () => JSON.stringify({ ...rec, text: rec.text.slice(-600) });
  assert.equal(rec.error, null, `request failed at the client: ${where()}`);
  assert.equal(rec.status, 200, `non-200 answer: ${where()}`);
  if (!rec.stream) {
    const j = JSON.parse(rec.text);
    assert.ok(Array.isArray(j.choices) && j.choices.length === 1 && !j.error, `not a completion: ${where()}`);
    return 'ok';
  }
  assert.ok(rec.text.endsWith('data: [DONE]\n\n'), `stream does not end with [DONE] (bare cut?): ${where()}`);
  const events = sseEvents(rec.text);
  assert.equal(events.at(-1), '[DONE]');
  const payloads = events.slice(0, -1).map((e) => JSON.parse(e));
  const errors = payloads.filter((p) => p.error);
  if (errors.length === 0) {
    assert.ok(payloads.length > 0 && payloads.at(-1).choices?.[0]?.finish_reason, `stream without an end: ${where()}`);
    return 'ok';
  }
  assert.equal(errors.length, 1, `more than one error event: ${where()}`);
  assert.ok(payloads.at(-1).error, `the error event is not the last before [DONE]: ${where()}`);
  assert.equal(typeof payloads.at(-1).error.message, 'string');
  return 'cut';
}

const KINDS = [
  { chat: true, stream: true }, { chat: true, stream: false },
  { chat: false, stream: true }, { chat: false, stream: false },
];

// `clients` concurrent clients, each sending requests one after another (a mix of the four kinds)
// until stop() is called, `maxRequests` were sent, or `maxMs` passed.
function startLoad(url, { clients, maxRequests, maxMs, maxTokens: [lo, hi] }) {
  const records = [];
  let sent = 0; let stopped = false;
  const deadline = now() + maxMs;
  const worker = async (w) => {
    while (!stopped && sent < maxRequests && now() < deadline) {
      const kind = KINDS[(sent + w) % KINDS.length];
      const maxTokens = lo + Math.floor(Math.random() * (hi - lo + 1));
      sent++;
      records.push(await oneRequest(url, { ...kind, maxTokens, tag: `c${w}r${sent}` }));
    }
  };
  const all = Promise.all(Array.from({ length: clients }, (_, w) => worker(w)));
  return { records, stop: async () => { stopped = true; await all; return records; } };
}

async function routerGauge(router, name, backend) {
  return metricSum(router.url, name, `backend="${backend}"`);
}

async function until(cond, maxMs, what) {
  const end = now() + maxMs;
  while (now() < end) {
    if (await cond()) return now();
    await sleep(20);
  }
  throw new Error(`timed out waiting for ${what}`);
}

async function setup() {
  const sims = await startSims(3);
  const router = await startRouter(sims.map((s) => s.url),
    ['--config', faultConfig, '--policy', 'round-robin', '--debug-headers'], { capture: true });
  return { sims, router };
}

function firstBack(records, victim, after) {
  const back = records.filter((r) => r.backend === victim.url && r.tHead > after).sort((a, b) => a.tHead - b.tHead);
  return back[0];
}

test('an engine killed under load is ejected by failures, its streams end with an error event, and it takes traffic again within one health interval of its restart', async () => {
  const { sims, router } = await setup();
  const victim = sims[1];
  // Long streams (~5 s) until one runs on the victim (the head names the engine): it will be
  // mid-stream when the victim dies. With nothing else in flight yet, round robin puts one of any
  // three there.
  const long = [];
  let sentinel = null;
  for (let i = 0; i < 3 && !sentinel; i++) {
    let onHead;
    const head = new Promise((resolve) => { onHead = resolve; });
    const done = oneRequest(router.url, { chat: i % 2 === 0, stream: true, maxTokens: 600, tag: `long${i}`, onHead });
    long.push(done);
    const rec = await Promise.race([head, done]);
    if (rec.backend === victim.url) sentinel = rec;
  }
  assert.ok(sentinel, 'one of three round-robin streams went to the victim');
  const load = startLoad(router.url, { clients: 8, maxRequests: 600, maxMs: 9000, maxTokens: [8, 40] });
  await sleep(1200);
  // Kill while the victim has several requests in flight: their failures (and those of the requests
  // sent to it before the health check notices) eject it passively.
  await until(async () => (await routerGauge(router, 'kvroute_backend_inflight_requests', victim.url)) >= 3, 1500,
    'three requests in flight on the victim').catch(() => {});
  const tKill = now();
  victim.proc.kill('SIGKILL');
  await victim.proc.done;
  await sleep(1000);
  const ejected = router.proc.log.includes(`backend ${victim.url} ejected`);
  const tRestart = now();
  victim.proc = await startSimAt(victim.port);
  const tUp = now();  // its /health has just answered 200
  // Keep the load on until the victim has served a few requests again (bounded by the load's limits).
  await until(() => load.records.filter((r) => r.backend === victim.url && r.tHead > tRestart).length >= 3
    || now() - tUp > 4000, 5000, 'the load').catch(() => {});
  await sleep(300);
  const records = [...await load.stop(), ...await Promise.all(long)];

  const outcome = { ok: 0, cut: 0 };
  for (const r of records) outcome[classify(r)]++;
  const upstreamErrors = await routerGauge(router, 'kvroute_upstream_errors_total', victim.url);
  const first = firstBack(records, victim, tRestart);
  const diag = JSON.stringify({ requests: records.length, ...outcome, upstreamErrors, ejected,
    killAt: Math.round(tKill), upAt: Math.round(tUp),
    firstBack: first && { tSent: Math.round(first.tSent), tHead: Math.round(first.tHead) },
    log: router.proc.log.split('\n').filter((l) => l.includes(victim.url) && !l.includes('retrying')).slice(0, 8) });
  console.log(diag);
  assert.ok(records.some((r) => r.backend === victim.url && r.tHead < tKill), `the victim took traffic before the kill: ${diag}`);
  assert.equal(classify(sentinel), 'cut', `the stream on the victim was cut mid-stream: ${diag}`);
  assert.ok(sseEvents(sentinel.text).length > 10, `it had streamed tokens before the cut: ${sentinel.text.slice(0, 300)}`);
  assert.ok(upstreamErrors >= 3, `the kill failed requests at the router: ${diag}`);
  assert.ok(ejected, `the victim was ejected passively (failureThreshold 3) before its restart: ${diag}`);
  assert.ok(first, `the restarted engine took no traffic (an ejection of ${EJECTION_MS} ms not ended by its health check?): ${diag}`);
  assert.ok(first.tHead - tUp <= HEALTH_INTERVAL_MS + BACK_SLACK_MS,
    `the restarted engine took traffic ${Math.round(first.tHead - tUp)} ms after its /health answered 200: ${diag}`);
});

test('an engine killed while the pool is idle is marked down by the health check and takes traffic again within one health interval of its restart', async () => {
  const { sims, router } = await setup();
  const victim = sims[2];
  // Fill the router's keep-alive pool: several concurrent requests per engine, then nothing.
  const warm = await Promise.all(Array.from({ length: 18 }, (_, i) =>
    oneRequest(router.url, { chat: i % 2 === 0, stream: false, maxTokens: 4, tag: `warm${i}` })));
  for (const r of warm) classify(r);
  assert.ok(warm.some((r) => r.backend === victim.url));
  await sleep(300);

  const tKill = now();
  victim.proc.kill('SIGKILL');
  await victim.proc.done;
  const tDown = await until(async () => (await routerGauge(router, 'kvroute_backend_healthy', victim.url)) === 0,
    HEALTH_INTERVAL_MS + BACK_SLACK_MS + 1000, 'the router to mark the killed engine unhealthy');
  assert.ok(tDown - tKill <= HEALTH_INTERVAL_MS + BACK_SLACK_MS, `marked down ${Math.round(tDown - tKill)} ms after the kill`);
  await sleep(Math.max(0, tKill + 1000 - now()));
  const tRestart = now();
  victim.proc = await startSimAt(victim.port);
  const tUp = now();  // its /health has just answered 200
  const load = startLoad(router.url, { clients: 4, maxRequests: 300, maxMs: 4000, maxTokens: [2, 8] });
  await until(() => firstBack(load.records, victim, tRestart), 4000, 'traffic on the restarted engine').catch(() => {});
  await sleep(200);
  const records = await load.stop();

  for (const r of records) assert.equal(classify(r), 'ok');
  const first = firstBack(records, victim, tRestart);
  const diag = JSON.stringify({ requests: records.length, upAt: Math.round(tUp),
    firstBack: first && { tSent: Math.round(first.tSent), tHead: Math.round(first.tHead) },
    log: router.proc.log.split('\n').filter((l) => l.includes(victim.url)).slice(0, 8) });
  console.log(diag);
  assert.ok(!router.proc.log.includes(`backend ${victim.url} ejected`), `no request failed on the idle victim: ${diag}`);
  assert.ok(first, `the restarted engine took no traffic: ${diag}`);
  assert.ok(first.tHead - tUp <= HEALTH_INTERVAL_MS + BACK_SLACK_MS,
    `the restarted engine took traffic ${Math.round(first.tHead - tUp)} ms after its /health answered 200: ${diag}`);
});

test('an engine killed and restarted at once, its pooled connections stale, loses no request and takes traffic within one health interval', async () => {
  const { sims, router } = await setup();
  const victim = sims[0];
  const warm = await Promise.all(Array.from({ length: 18 }, (_, i) =>
    oneRequest(router.url, { chat: i % 2 === 1, stream: false, maxTokens: 4, tag: `warm${i}` })));
  for (const r of warm) classify(r);
  assert.ok(warm.some((r) => r.backend === victim.url));
  await sleep(300);
  // Down for ~0.1 s: the health check (every 0.5 s) most likely never sees it, and every connection
  // the router keeps to it is dead.
  victim.proc.kill('SIGKILL');
  await victim.proc.done;
  const tRestart = now();
  victim.proc = await startSimAt(victim.port);
  const tUp = now();
  const load = startLoad(router.url, { clients: 4, maxRequests: 300, maxMs: 4000, maxTokens: [2, 8] });
  await until(() => firstBack(load.records, victim, tRestart), 4000, 'traffic on the restarted engine').catch(() => {});
  await sleep(200);
  const records = await load.stop();

  for (const r of records) assert.equal(classify(r), 'ok');
  const first = firstBack(records, victim, tRestart);
  const diag = JSON.stringify({ requests: records.length, downMs: Math.round(tUp - tRestart), upAt: Math.round(tUp),
    firstBack: first && { tSent: Math.round(first.tSent), tHead: Math.round(first.tHead) },
    log: router.proc.log.split('\n').filter((l) => l.includes(victim.url)).slice(0, 8) });
  console.log(diag);
  assert.ok(first, `the restarted engine took no traffic: ${diag}`);
  assert.ok(first.tHead - tUp <= HEALTH_INTERVAL_MS + BACK_SLACK_MS,
    `the restarted engine took traffic ${Math.round(first.tHead - tUp)} ms after its /health answered 200: ${diag}`);
});

// A POST through a connection of its own (no keep-alive pool): { status, body } or { error: code }.
function rawPost(port, path, body) {
  return new Promise((resolve) => {
    const req = http.request({ host: '127.0.0.1', port, path, method: 'POST', agent: false,
      headers: { 'content-type': 'application/json' }, timeout: 10000 }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { text += d; });
      res.on('end', () => resolve({ status: res.statusCode, body: text }));
      res.on('error', (e) => resolve({ error: e.code ?? String(e) }));
    });
    req.on('error', (e) => resolve({ error: e.code ?? String(e) }));
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.end(JSON.stringify(body));
  });
}

test('at the end of the shutdown grace period a stream ends with an error event and [DONE], a request not yet answered gets a 503, and new connections are refused', async () => {
  const GRACE_MS = 1500;
  // Ten times slower than an H100: ~85 ms per output token, so 300 tokens outlast the grace period.
  const port = (await startSims(1, ['--time-scale', '0.1']))[0].port;
  const config = writeConfig(`server:\n  shutdownGracePeriod: ${GRACE_MS}ms\n`);
  const router = await startRouter([`http://127.0.0.1:${port}`], ['--config', config], { capture: true });

  // The stream, read as it comes.
  const chunks = [];
  const streamDone = (async () => {
    const r = await fetch(`${router.url}/v1/chat/completions`, {
      method: 'POST', headers: { 'content-type': 'application/json' }, signal: AbortSignal.timeout(20000),
      body: JSON.stringify({ model: MODEL, max_tokens: 300, stream: true, messages: [{ role: 'user', content: 'a long story' }] }),
    });
    assert.equal(r.status, 200);
    const reader = r.body.getReader();
    const dec = new TextDecoder();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push({ t: now(), text: dec.decode(value, { stream: true }) });
    }
    return now();
  })();
  // A non-streaming request: its response head comes only when the whole completion is done.
  const pendingDone = rawPost(router.port, '/v1/completions', { model: MODEL, max_tokens: 300, prompt: 'another long story' });
  await until(() => chunks.length >= 3, 5000, 'the stream to start');
  await sleep(200);

  const tTerm = now();
  router.proc.kill('SIGTERM');
  await sleep(300);
  const late = await rawPost(router.port, '/v1/completions', { model: MODEL, max_tokens: 2, prompt: 'too late' });
  const tStreamEnd = await streamDone;
  const pending = await pendingDone;
  const exit = await Promise.race([router.proc.done, sleep(GRACE_MS + 5000).then(() => 'still running')]);

  const text = chunks.map((c) => c.text).join('');
  const diag = JSON.stringify({ late, pending, exit, streamEndAfterTerm: Math.round(tStreamEnd - tTerm), tail: text.slice(-400) });
  console.log(diag);
  // The stream kept flowing during the grace period, then was cut at its end, cleanly.
  assert.ok(chunks.some((c) => c.t > tTerm + 300), `no events during the grace period: ${diag}`);
  assert.ok(tStreamEnd - tTerm >= GRACE_MS - 100, `stream cut before the grace period ended: ${diag}`);
  assert.ok(text.endsWith('data: [DONE]\n\n'), `the stream does not end with [DONE]: ${diag}`);
  const events = sseEvents(text);
  const error = JSON.parse(events.at(-2)).error;
  assert.ok(error && /shutting down/.test(error.message), `no error event before [DONE]: ${diag}`);
  assert.ok(!events.slice(0, -1).some((e) => /finish_reason":"(length|stop)"/.test(e)), 'the stream was cut, not finished');
  // The request whose response had not started: a 503 with an OpenAI error body.
  assert.equal(pending.status, 503, diag);
  assert.ok(JSON.parse(pending.body).error.message, diag);
  // A request after SIGTERM: the listener is closed (or, at worst, a 503).
  assert.ok(late.error === 'ECONNREFUSED' || late.status === 503, `a request after SIGTERM: ${diag}`);
  assert.deepEqual(exit, { code: 0, signal: null }, `the router exits 0 after the grace period: ${diag}`);
});

test('SSE events that end in CRLF are relayed as they arrive, byte for byte', async (t) => {
  const FAKE = 'fake/crlf-model';
  // Events as a CRLF engine (sse-starlette) writes them, one write per event ~300 ms apart; one event
  // comes in two writes split inside its blank line, another split inside its data line.
  const ev = (i) => `data: {"id":"c1","object":"chat.completion.chunk","model":"${FAKE}","choices":[{"index":0,"delta":{"content":"tok${i}"},"finish_reason":null}]}\r\n\r\n`;
  const writes = [
    ev(0),
    ev(1),
    ev(2).slice(0, -1), '\n',
    ev(3).slice(0, 30), ev(3).slice(30),
    ': a comment line\r\n\r\n',
    `data: {"id":"c1","object":"chat.completion.chunk","model":"${FAKE}","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\r\n\r\n`,
    'data: [DONE]\r\n\r\n',
  ];
  const upstream = { writes: [], end: null, streams: 0 };
  const server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (d) => { body += d; });
    req.on('end', async () => {
      if (req.method === 'GET' && req.url === '/health') { res.writeHead(200, { 'content-type': 'application/json' }); res.end('{}'); return; }
      if (req.method === 'GET' && req.url === '/v1/models') {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ object: 'list', data: [{ id: FAKE, object: 'model', owned_by: 'test' }] }));
        return;
      }
      if (req.method === 'GET' && req.url === '/metrics') {
        res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' });
        res.end('# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting{model_name="x"} 0\n');
        return;
      }
      if (req.method === 'POST' && req.url === '/v1/chat/completions') {
        upstream.streams++;
        res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
        for (const w of writes) {
          await sleep(300);
          res.write(w);
          upstream.writes.push(now());
        }
        await sleep(1000);  // holds the stream open after [DONE]
        upstream.end = now();
        res.end();
        return;
      }
      res.writeHead(404); res.end();
    });
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  t.after(() => { server.closeAllConnections(); server.close(); });
  const router = await startRouter([`http://127.0.0.1:${server.address().port}`]);

  const r = await fetch(`${router.url}/v1/chat/completions`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, signal: AbortSignal.timeout(15000),
    body: JSON.stringify({ model: FAKE, stream: true, messages: [{ role: 'user', content: 'hi' }] }),
  });
  assert.equal(r.status, 200);
  assert.match(r.headers.get('content-type'), /^text\/event-stream/);
  const got = [];
  const reader = r.body.getReader();
  const dec = new TextDecoder();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    got.push({ t: now(), text: dec.decode(value, { stream: true }) });
  }
  const tClosed = now();
  const text = got.map((g) => g.text).join('');
  // Time by which the client had the first k bytes of the stream.
  const arrival = (k) => { let n = 0; for (const g of got) { n += g.text.length; if (n >= k) return g.t; } return Infinity; };
  const expected = writes.join('');
  const diag = JSON.stringify({ chunks: got.map((g) => ({ t: Math.round(g.t), len: g.text.length })),
    upstreamWrites: upstream.writes.map(Math.round), upstreamEnd: Math.round(upstream.end), tClosed: Math.round(tClosed) });
  assert.equal(upstream.streams, 1);
  assert.equal(text, expected, `bytes changed on the way: ${diag}`);
  // The first event reached the client long before the upstream ended the stream (1 s after [DONE]),
  // and every event, [DONE] included, before the upstream ended it.
  const firstAt = arrival(ev(0).length);
  assert.ok(firstAt < upstream.writes[2], `the first event was held back: ${diag}`);
  assert.ok(arrival(expected.length) < upstream.end, `events were held until the upstream ended the stream: ${diag}`);
  // And each whole event no later than ~one event gap after the write that completed it.
  let offset = 0;
  for (let i = 0; i < writes.length; i++) {
    offset += writes[i].length;
    const whole = /\r\n\r?$/.test(writes[i]) || writes[i] === '\n';
    if (whole) assert.ok(arrival(offset) - upstream.writes[i] < 1000, `write ${i} arrived late: ${diag}`);
  }
});
