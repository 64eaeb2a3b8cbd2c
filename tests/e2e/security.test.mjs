// Security end to end with the official OpenAI client (npm `openai` 6.x): `kvroute serve` with TLS
// for clients (a certificate made here with openssl), API keys from a file, and the admin listener
// on a port of its own. The client runs in a child Node process that trusts the certificate through
// NODE_EXTRA_CA_CERTS, as users point their clients at a private CA.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { MODEL, freePort, run, startSim, stopAll, waitReady } from './lib.mjs';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kvroute-security-'));
const openaiDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../tools/npm/node_modules/openai');
let router;
let adminPort;
const GOOD = 'sk-e2e-0123456789abcdef';

before(async () => {
  const crt = path.join(dir, 'tls.crt');
  const key = path.join(dir, 'tls.key');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
                           '-keyout', key, '-out', crt, '-days', '1', '-subj', '/CN=kvroute',
                           '-addext', 'subjectAltName=IP:127.0.0.1'], { stdio: 'ignore' });
  fs.writeFileSync(path.join(dir, 'keys'), `${GOOD} team-e2e\n`);
  fs.writeFileSync(path.join(dir, 'admin-token'), 'admin-e2e-token\n');
  const sim = await startSim(1);
  const port = await freePort();
  adminPort = await freePort();
  const proc = run(['serve', '--address', '127.0.0.1', '--port', String(port), '--log-level', 'info',
                    '--backend', `http://127.0.0.1:${sim.port}`, '--tls-cert', crt, '--tls-key', key,
                    '--api-keys-file', path.join(dir, 'keys'), '--admin-address', '127.0.0.1',
                    '--admin-port', String(adminPort), '--admin-token-file', path.join(dir, 'admin-token')],
                   { capture: true });
  await waitReady(`http://127.0.0.1:${adminPort}/ready`, 10000, () => proc.exited);
  router = { port, crt, proc };
});

after(() => { stopAll(); fs.rmSync(dir, { recursive: true, force: true }); });

// Runs `body` (an async function's text, given OpenAI and baseURL) in a Node process that trusts the
// router's certificate; returns what it printed as JSON.
function client(body) {
  const script = `
    const { default: OpenAI } = await import(${JSON.stringify(path.join(openaiDir, 'index.mjs'))});
    const baseURL = 'https://127.0.0.1:${router.port}/v1';
    const out = await (async () => { ${body} })();
    console.log(JSON.stringify(out));`;
  const text = execFileSync(process.execPath, ['--input-type=module', '-e', script],
                            { env: { ...process.env, NODE_EXTRA_CA_CERTS: router.crt }, timeout: 60000 });
  return JSON.parse(text.toString());
}

test('the official client completes over TLS with a valid key', () => {
  const r = client(`
    const c = new OpenAI({ apiKey: ${JSON.stringify(GOOD)}, baseURL, maxRetries: 0 });
    const models = await c.models.list();
    const done = await c.chat.completions.create({ model: '${MODEL}', max_tokens: 3,
      messages: [{ role: 'user', content: 'hello over TLS' }] });
    return { models: models.data.map((m) => m.id), object: done.object, tokens: done.usage.completion_tokens };`);
  assert.deepEqual(r.models, [MODEL]);
  assert.equal(r.object, 'chat.completion');
  assert.equal(r.tokens, 3);
});

test('a wrong or missing key is the SDK AuthenticationError, 401', () => {
  const r = client(`
    const out = [];
    for (const apiKey of ['sk-e2e-wrong', '']) {
      const c = new OpenAI({ apiKey: apiKey || 'x', baseURL, maxRetries: 0,
                             defaultHeaders: apiKey ? {} : { Authorization: null } });
      try { await c.completions.create({ model: '${MODEL}', prompt: 'x', max_tokens: 1 }); out.push('passed'); }
      catch (e) { out.push({ cls: e.constructor.name, status: e.status, code: e.code, type: e.type }); }
    }
    return out;`);
  for (const e of r) {
    assert.equal(e.cls, 'AuthenticationError');
    assert.equal(e.status, 401);
    assert.equal(e.code, 'invalid_api_key');
    assert.equal(e.type, 'invalid_request_error');
  }
});

test('metrics live on the admin listener behind its token, not on the API port', async () => {
  const api = client(`
    const r = await fetch('https://127.0.0.1:${router.port}/metrics');
    return r.status;`);
  assert.equal(api, 404);
  assert.equal((await fetch(`http://127.0.0.1:${adminPort}/metrics`)).status, 401);
  const m = await fetch(`http://127.0.0.1:${adminPort}/metrics`,
                        { headers: { Authorization: 'Bearer admin-e2e-token' } });
  assert.equal(m.status, 200);
  const text = await m.text();
  assert.match(text, /kvroute_auth_refusals_total\{listener="api",reason="invalid"\} 1/);
  assert.match(text, /kvroute_auth_refusals_total\{listener="api",reason="missing"\} 1/);
  assert.ok(!text.includes('sk-e2e'), 'keys never appear in metrics');
});

test('the log names the tenant and the refusal, never the key', () => {
  const log = router.proc.log;
  assert.match(log, /POST \/v1\/chat\/completions 200 .*tenant=team-e2e/);
  assert.match(log, /401 reason=api-key-invalid/);
  assert.ok(!log.includes('sk-e2e'), 'keys never appear in the log');
});
