// Helpers shared by the end-to-end tests: free ports, readiness waits, and the real binary's
// `sim` and `serve` as child processes (killed when the test file ends).
import { spawn } from 'node:child_process';
import net from 'node:net';

export const binary = process.env.KVROUTE_BINARY ?? 'build/kvroute';
export const MODEL = 'meta-llama/Llama-3.1-8B-Instruct';
const procs = [];

export function freePort() {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); });
  });
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export async function waitReady(url, deadlineMs = 10000, gone = () => false) {
  const end = Date.now() + deadlineMs;
  while (Date.now() < end && !gone()) {
    try { const r = await fetch(url); if (r.status === 200) return; } catch {}
    await sleep(50);
  }
  throw new Error(`not ready: ${url}`);
}

export function run(args) {
  const p = spawn(binary, args, { stdio: 'inherit' });
  p.exited = false;
  p.on('exit', () => { p.exited = true; });
  procs.push(p);
  return p;
}

export function stopAll() { for (const p of procs) if (!p.exited) p.kill('SIGKILL'); }

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
export async function startRouter(backends, extra = []) {
  const port = await freePort();
  const args = ['serve', '--address', '127.0.0.1', '--port', String(port), '--log-level', 'warn', ...extra];
  for (const b of backends) args.push('--backend', b);
  const proc = run(args);
  await waitReady(`http://127.0.0.1:${port}/ready`, 10000, () => proc.exited);
  const end = Date.now() + 10000;
  while (Date.now() < end) {
    const r = await (await fetch(`http://127.0.0.1:${port}/v1/models`)).json();
    if (r.data.length > 0) break;
    await sleep(50);
  }
  return { port, proc, url: `http://127.0.0.1:${port}` };
}

// Sums one counter over the Prometheus text of an engine's /metrics.
export async function metricSum(url, name) {
  const text = await (await fetch(`${url}/metrics`)).text();
  let sum = 0;
  for (const line of text.split('\n')) {
    if (line.startsWith(name + '{') || line.startsWith(name + ' ')) sum += Number(line.split(' ').pop());
  }
  return sum;
}
