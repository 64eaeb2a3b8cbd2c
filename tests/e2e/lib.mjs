// Helpers shared by the end-to-end tests: free ports, readiness waits, and the real binary's
// `sim` and `serve` as child processes (killed when the test file ends).
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

export const binary = process.env.KVROUTE_BINARY ?? 'build/kvroute';
export const MODEL = 'meta-llama/Llama-3.1-8B-Instruct';
const procs = [];
const tmpDirs = [];

export function freePort() {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); });
  });
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export async function waitReady(url, deadlineMs = 10000, gone = () => false, pollMs = 50) {
  const end = Date.now() + deadlineMs;
  while (Date.now() < end && !gone()) {
    try { const r = await fetch(url); if (r.status === 200) return; } catch {}
    await sleep(pollMs);
  }
  throw new Error(`not ready: ${url}`);
}

// With `capture`, the child's stdout and stderr (the log) accumulate in p.log instead of the test's
// output. p.done resolves with { code, signal } when the process has exited. `ulimit` (e.g. '-n 256'
// or '-S -n 256') runs the binary under that shell limit.
export function run(args, { capture = false, ulimit = '' } = {}) {
  const stdio = capture ? ['ignore', 'pipe', 'pipe'] : 'inherit';
  const p = ulimit
    ? spawn('bash', ['-c', `ulimit ${ulimit} && exec "$0" "$@"`, binary, ...args], { stdio })
    : spawn(binary, args, { stdio });
  p.exited = false;
  p.log = '';
  if (capture) {
    p.stdout.on('data', (d) => { p.log += d; });
    p.stderr.on('data', (d) => { p.log += d; });
  }
  p.done = new Promise((resolve) => p.on('exit', (code, signal) => { p.exited = true; resolve({ code, signal }); }));
  procs.push(p);
  return p;
}

export function stopAll() {
  for (const p of procs) if (!p.exited) p.kill('SIGKILL');
  for (const d of tmpDirs) fs.rmSync(d, { recursive: true, force: true });
}

// Writes a `kvroute serve --config` YAML file into a temporary directory (removed by stopAll).
export function writeConfig(yaml) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kvroute-e2e-'));
  tmpDirs.push(dir);
  const file = path.join(dir, 'config.yaml');
  fs.writeFileSync(file, yaml);
  return file;
}

// One simulated engine as its own process on `port` (a restart reuses its port): tries again while
// the port is not yet free. Resolves with the process as soon as its /health answers 200 (polled
// every 10 ms, so the caller can time what follows from that moment).
export async function startSimAt(port, extra = [], attempts = 10) {
  for (let attempt = 0; attempt < attempts; attempt++) {
    const p = run(['sim', '--engines', '1', '--port', String(port), '--model', MODEL, '--log-level', 'warn', ...extra]);
    try {
      await waitReady(`http://127.0.0.1:${port}/health`, 5000, () => p.exited, 10);
      return p;
    } catch {
      p.kill('SIGKILL');
      await p.done;
      await sleep(100);
    }
  }
  throw new Error(`could not start a simulated engine on port ${port}`);
}

// `n` simulated engines, each its own process on a port of its own: [{ port, url, proc }].
export async function startSims(n, extra = []) {
  const sims = [];
  for (let i = 0; i < n; i++) {
    let started = null;
    for (let attempt = 0; attempt < 5 && !started; attempt++) {
      const port = await freePort();
      try { started = { port, url: `http://127.0.0.1:${port}`, proc: await startSimAt(port, extra, 1) }; } catch {}
    }
    if (!started) throw new Error('could not start the simulated engines');
    sims.push(started);
  }
  return sims;
}

// `engines` simulated engines on ports sim..sim+engines-1. Only `sim` was reserved and another test
// may hold the others: then the sim exits, and this tries again with fresh ports.
export async function startSim(engines, extra = []) {
  for (let attempt = 0; attempt < 5; attempt++) {
    const sim = await freePort();
    const p = run(['sim', '--engines', String(engines), '--port', String(sim), '--model', MODEL, '--preset', 'none',
                   '--log-level', 'warn', ...extra]);
    try {
      for (let i = 0; i < engines; i++) await waitReady(`http://127.0.0.1:${sim + i}/health`, 5000, () => p.exited);
      return { port: sim, proc: p };
    } catch {
      p.kill('SIGKILL');
    }
  }
  throw new Error('could not start the simulated engines');
}

// `kvroute serve` on a free port in front of `backends` (URLs); resolves once it is ready and has
// learned the engines' models.
export async function startRouter(backends, extra = [], { capture = false, ulimit = '' } = {}) {
  const port = await freePort();
  const args = ['serve', '--address', '127.0.0.1', '--port', String(port), ...extra];
  if (!extra.includes('--log-level')) args.push('--log-level', 'warn');
  for (const b of backends) args.push('--backend', b);
  const proc = run(args, { capture, ulimit });
  await waitReady(`http://127.0.0.1:${port}/ready`, 10000, () => proc.exited);
  const end = Date.now() + 10000;
  while (Date.now() < end) {
    const r = await (await fetch(`http://127.0.0.1:${port}/v1/models`)).json();
    if (r.data.length > 0) break;
    await sleep(50);
  }
  return { port, proc, url: `http://127.0.0.1:${port}` };
}

// Sums one counter over the Prometheus text of an engine's (or the router's) /metrics; with
// `labelPart` (e.g. 'backend="http://127.0.0.1:8001"'), only the series whose labels contain it.
export async function metricSum(url, name, labelPart = '') {
  const text = await (await fetch(`${url}/metrics`)).text();
  let sum = 0;
  for (const line of text.split('\n')) {
    if ((line.startsWith(name + '{') || line.startsWith(name + ' ')) && line.includes(labelPart)) {
      sum += Number(line.split(' ').pop());
    }
  }
  return sum;
}
