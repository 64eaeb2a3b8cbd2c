// Kubernetes discovery end to end: `kvroute serve` and `kvroute epp` follow an InferencePool through
// a fake API server (fake_kube.mjs) over TLS with a kubeconfig (CA, bearer token), while simulated
// engines (one `kvroute sim` per "pod", each on its own loopback address and the pool's target port)
// come and go: pods turning Ready and NotReady, deletions, a request in flight on a deleted pod,
// dropped watches (reconnect from the last version, bookmarks included), compaction (410 Gone:
// list again), the pool's selector changing.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { FakeKube } from './fake_kube.mjs';
import { MODEL, freePort, run, sleep, stopAll, waitReady, writeConfig } from './lib.mjs';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kvroute-kube-'));
let kube = null;
after(async () => { stopAll(); if (kube) await kube.close(); fs.rmSync(dir, { recursive: true, force: true }); });

const NS = 'llm';
const LABELS = { app: 'vllm', 'llm-d.ai/inferenceServing': 'true' };
const TOKEN = 'kvroute-test-token';

// A self-signed certificate for 127.0.0.1 (openssl, as users make them), trusted through the
// kubeconfig's certificate-authority-data.
function makeCert() {
  const key = path.join(dir, 'key.pem');
  const crt = path.join(dir, 'crt.pem');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', crt,
                           '-days', '1', '-subj', '/CN=kube-apiserver', '-addext', 'subjectAltName=IP:127.0.0.1'],
               { stdio: 'ignore' });
  return { key: fs.readFileSync(key), cert: fs.readFileSync(crt) };
}

function kubeconfig(port, cert, token = TOKEN) {
  const file = path.join(dir, `kubeconfig-${port}-${token.length}`);
  fs.writeFileSync(file, `apiVersion: v1
kind: Config
current-context: test
clusters:
- name: fake
  cluster:
    server: https://127.0.0.1:${port}
    certificate-authority-data: ${Buffer.from(cert).toString('base64')}
contexts:
- name: test
  context: {cluster: fake, user: router, namespace: ${NS}}
users:
- name: router
  user: {token: ${token}}
`);
  return file;
}

async function startPodSim(ip, port) {
  const p = run(['sim', '--engines', '1', '--host', ip, '--port', String(port), '--model', MODEL,
                 '--preset', 'llama-3.1-8b-h100', '--log-level', 'warn']);
  await waitReady(`http://${ip}:${port}/health`, 10000, () => p.exited);
  return p;
}

async function complete(url, prompt, extra = {}) {
  const r = await fetch(`${url}/v1/completions`, {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: MODEL, prompt, max_tokens: 2, ...extra }),
    signal: AbortSignal.timeout(20000),
  });
  const text = await r.text();
  return { status: r.status, backend: r.headers.get('x-kvroute-backend'), text };
}

// The backends that answer `n` distinct prompts (round-robin: every member answers).
async function answering(url, n = 12) {
  const seen = new Set();
  for (let i = 0; i < n; i++) {
    const r = await complete(url, `prompt ${i} ${Math.random()}`);
    if (r.status === 200) seen.add(r.backend);
  }
  return [...seen].sort();
}

async function eventually(fn, want, ms = 10000) {
  const end = Date.now() + ms;
  let got;
  while (Date.now() < end) {
    got = await fn();
    if (JSON.stringify(got) === JSON.stringify(want)) return got;
    await sleep(100);
  }
  assert.deepEqual(got, want);
  return got;
}

test('serve and epp follow an InferencePool through list, watch, 410 and dropped watches', { timeout: 90000 }, async () => {
  const tls = makeCert();
  kube = new FakeKube({ token: TOKEN, tls, bookmarkMs: 150 });
  const apiPort = await kube.listen();
  const port = await freePort();
  // Pods a, b, c on 127.0.0.2-4 serve the pool's target port; d (127.0.0.5) is not selected.
  const ips = { a: '127.0.0.2', b: '127.0.0.3', c: '127.0.0.4', d: '127.0.0.5' };
  for (const ip of Object.values(ips)) await startPodSim(ip, port);
  kube.pool(NS, 'pool', LABELS, [port]);
  kube.pod(NS, 'a', { ip: ips.a, labels: LABELS, ready: true });
  kube.pod(NS, 'b', { ip: ips.b, labels: LABELS, ready: true });
  kube.pod(NS, 'c', { ip: ips.c, labels: LABELS, ready: false });
  kube.pod(NS, 'd', { ip: ips.d, labels: { app: 'other' }, ready: true });

  const cfg = writeConfig(`health:
  interval: 200ms
routing:
  policy: round-robin
  debugHeaders: true
discovery:
  poolName: pool
  kubeconfig: ${kubeconfig(apiPort, tls.cert)}
`);
  const rport = await freePort();
  const router = run(['serve', '--address', '127.0.0.1', '--port', String(rport), '--config', cfg, '--log-level', 'warn']);
  const url = `http://127.0.0.1:${rport}`;
  await waitReady(`${url}/ready`, 15000, () => router.exited);

  // Ready pods only; the other label set is not selected.
  await eventually(() => answering(url), ['a', 'b']);
  assert.ok(kube.count((r) => r.path.endsWith('/pods') && r.query.watch === '1') >= 1, 'the router watches pods');
  assert.equal(kube.count((r) => r.path.endsWith('/pods') && r.query.labelSelector !== 'app=vllm,llm-d.ai/inferenceServing=true'), 0,
               'every pod request carries the pool selector');

  // c turns Ready: it joins.
  kube.pod(NS, 'c', { ip: ips.c, labels: LABELS, ready: true });
  await eventually(() => answering(url), ['a', 'b', 'c']);

  // A streaming request in flight on a when a is deleted: it finishes; a gets no more.
  let inflight = null;
  for (let i = 0; i < 6 && !inflight; i++) {
    const r = await fetch(`${url}/v1/completions`, {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: MODEL, prompt: `long ${i}`, max_tokens: 300, stream: true }),
    });
    if (r.headers.get('x-kvroute-backend') === 'a') inflight = r; else await r.text();
  }
  assert.ok(inflight, 'a request reached a');
  kube.remove('pods', NS, 'a');
  const body = await inflight.text();
  assert.match(body, /data: \[DONE\]/, 'the request in flight on the deleted pod finished');
  await eventually(() => answering(url), ['b', 'c']);

  // Bookmarks move the watch's version on: after other objects change and the watch drops, the
  // router resumes from a bookmark's version, not the list's.
  const listsBefore = kube.count((r) => r.path.endsWith('/pods') && r.query.watch !== '1');
  kube.bump(10);
  const bookmarkRv = kube.rv;
  await sleep(400);
  kube.dropWatches();
  kube.pod(NS, 'a', { ip: ips.a, labels: LABELS, ready: true });  // a comes back while disconnected
  await eventually(() => answering(url), ['a', 'b', 'c']);
  const watches = kube.requests.filter((r) => r.path.endsWith('/pods') && r.query.watch === '1');
  assert.ok(Number(watches.at(-1).query.resourceVersion) >= bookmarkRv, 'resumed from a bookmark');
  assert.equal(kube.count((r) => r.path.endsWith('/pods') && r.query.watch !== '1'), listsBefore,
               'a dropped watch resumes without listing again');

  // Compaction: the next watch from the old version gets 410 Gone, so the router lists again; a pod
  // that went NotReady meanwhile is gone from the pool.
  kube.compact();
  kube.dropWatches();
  kube.pod(NS, 'b', { ip: ips.b, labels: LABELS, ready: false });
  await eventually(() => answering(url), ['a', 'c']);
  await eventually(async () => kube.count((r) => r.path.endsWith('/pods') && r.query.watch !== '1') > listsBefore, true);

  // The pool's selector changes: d's labels are selected now, and no one else's.
  kube.pool(NS, 'pool', { app: 'other' }, [port]);
  await eventually(() => answering(url), ['d']);

  // The endpoint picker follows the same pool: its readiness counts the pool's ready endpoints.
  const [g, h, m] = [await freePort(), await freePort(), await freePort()];
  const epp = run(['epp', '--address', '127.0.0.1', '--grpc-port', String(g), '--grpc-health-port', String(h),
                   '--metrics-port', String(m), '--pool-name', 'pool', '--pool-namespace', NS,
                   '--kubeconfig', kubeconfig(apiPort, tls.cert), '--log-level', 'warn']);
  await waitReady(`http://127.0.0.1:${m}/ready`, 15000, () => epp.exited);
  const metrics = await (await fetch(`http://127.0.0.1:${m}/metrics`)).text();
  assert.match(metrics, /kvroute_backend_healthy\{backend="d"\} 1/);
  assert.doesNotMatch(metrics, /kvroute_backend_healthy\{backend="a"\}/);

  // A wrong token: the API server refuses, the router keeps running and reports no endpoints.
  const bad = run(['epp', '--address', '127.0.0.1', '--grpc-port', '0', '--grpc-health-port', '0', '--metrics-port', String(await freePort()),
                   '--pool-name', 'pool', '--kubeconfig', kubeconfig(apiPort, tls.cert, 'wrong'), '--log-level', 'warn'], { capture: true });
  // Bounded wait: under sanitizers on two busy cores start-up and the TLS handshake can take seconds.
  await eventually(() => /HTTP 401/.test(bad.log), true, 20000);
  assert.equal(bad.exited, false);
  assert.match(bad.log, /HTTP 401/);
});
