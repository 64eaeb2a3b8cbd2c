// Under a low open-file limit (systemd's 1024 is common; 256 here), idle keep-alive connections must
// not lock clients out: the router fits maxConnections under the limit, says so at start-up, and
// closes idle connections to make room for new clients. A soft limit below the hard one is raised.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { MODEL, startSim, startRouter, stopAll, sleep } from './lib.mjs';

after(stopAll);

// Opens a connection, sends GET /health with keep-alive, waits for the response and keeps the
// socket open (an idle keep-alive client). Resolves with the socket, or null when refused/closed.
function idleClient(port) {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    let got = '';
    const timer = setTimeout(() => { s.destroy(); resolve(null); }, 5000);
    s.on('connect', () => s.write('GET /health HTTP/1.1\r\nHost: x\r\n\r\n'));
    s.on('data', (d) => {
      got += d;
      if (got.includes('\r\n\r\n')) { clearTimeout(timer); resolve(s); }
    });
    s.on('error', () => { clearTimeout(timer); resolve(null); });
    s.on('close', () => { clearTimeout(timer); resolve(null); });
  });
}

test('a hard limit of 256 descriptors: idle connections make room, clients keep being served', async () => {
  const sim = await startSim(1);
  const router = await startRouter([`http://127.0.0.1:${sim.port}`], ['--log-level', 'info'],
                                   { capture: true, ulimit: '-n 256' });
  assert.match(router.proc.log, /open-file limit 256 allows \d+ client connections/);
  const allowed = Number(router.proc.log.match(/open-file limit 256 allows (\d+) client connections/)[1]);
  assert.ok(allowed > 16 && allowed < 128, `allowed ${allowed}`);

  // Twice as many idle keep-alive clients as descriptors allow, opened in bounded batches.
  const sockets = [];
  for (let i = 0; i < 2 * allowed; i += 16) {
    const batch = await Promise.all(Array.from({ length: 16 }, () => idleClient(router.port)));
    for (const s of batch) if (s) sockets.push(s);
  }
  await sleep(100);
  const open = sockets.filter((s) => !s.destroyed && s.readyState === 'open').length;
  assert.ok(open <= allowed, `${open} idle connections held open, limit ${allowed}`);

  // A new client is served at once, with a real completion through to the engine.
  for (let i = 0; i < 5; i++) {
    const r = await fetch(`${router.url}/v1/completions`, {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: MODEL, prompt: `hello ${i}`, max_tokens: 2 }),
    });
    assert.equal(r.status, 200);
    await r.json();
  }
  for (const s of sockets) s.destroy();
  assert.equal(router.proc.exited, false);
});

test('a soft limit below the hard one is raised at start-up', async () => {
  const sim = await startSim(1);
  const router = await startRouter([`http://127.0.0.1:${sim.port}`], ['--log-level', 'info'],
                                   { capture: true, ulimit: '-S -n 256' });
  assert.match(router.proc.log, /open-file limit raised from 256 to \d+/);
});
