// End to end with the official OpenAI client (npm `openai` 6.x): kvroute serve in front of two
// simulated engines. Run by CTest: node --test tests/e2e/openai_client.test.mjs (KVROUTE_BINARY set).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import net from 'node:net';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const OpenAI = require('../../tools/npm/node_modules/openai').default;
const binary = process.env.KVROUTE_BINARY ?? 'build/kvroute';
const MODEL = 'meta-llama/Llama-3.1-8B-Instruct';
const procs = [];
let client;

function freePort() {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); });
  });
}

async function waitReady(url, deadlineMs = 10000, gone = () => false) {
  const end = Date.now() + deadlineMs;
  while (Date.now() < end && !gone()) {
    try { const r = await fetch(url); if (r.status === 200) return; } catch {}
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`not ready: ${url}`);
}

// Engines take ports sim and sim+1; sim+1 was never reserved and another test may hold it: then
// the sim exits, and the set-up tries again with fresh ports.
async function startSim() {
  for (let attempt = 0; attempt < 5; attempt++) {
    const sim = await freePort();
    const p = spawn(binary, ['sim', '--engines', '2', '--port', String(sim), '--model', MODEL, '--preset', 'none',
                             '--log-level', 'warn'], { stdio: 'inherit' });
    let exited = false;
    p.on('exit', () => { exited = true; });
    try {
      await waitReady(`http://127.0.0.1:${sim}/health`, 5000, () => exited);
      await waitReady(`http://127.0.0.1:${sim + 1}/health`, 5000, () => exited);
      procs.push(p);
      return sim;
    } catch {
      p.kill('SIGTERM');
    }
  }
  throw new Error('could not start the simulated engines');
}

before(async () => {
  const sim = await startSim();
  const router = await freePort();
  procs.push(spawn(binary, ['serve', '--address', '127.0.0.1', '--port', String(router), '--backend',
                            `http://127.0.0.1:${sim}`, '--backend', `http://127.0.0.1:${sim + 1}`, '--policy',
                            'kvroute', '--log-level', 'warn'], { stdio: 'inherit' }));
  await waitReady(`http://127.0.0.1:${router}/ready`);
  // Wait until the router learned the models.
  const end = Date.now() + 10000;
  while (Date.now() < end) {
    const r = await (await fetch(`http://127.0.0.1:${router}/v1/models`)).json();
    if (r.data.length > 0) break;
    await new Promise((res) => setTimeout(res, 50));
  }
  client = new OpenAI({ apiKey: 'none', baseURL: `http://127.0.0.1:${router}/v1`, maxRetries: 0 });
});

after(() => { for (const p of procs) p.kill('SIGTERM'); });

test('models lists the engines model', async () => {
  const models = await client.models.list();
  assert.deepEqual(models.data.map((m) => m.id), [MODEL]);
});

test('non-streaming completion with usage and cached tokens on repeat', async () => {
  const prompt = Array.from({ length: 40 }, (_, i) => `w${i}`).join(' ');
  const a = await client.completions.create({ model: MODEL, prompt, max_tokens: 4 });
  assert.equal(a.object, 'text_completion');
  assert.equal(a.choices[0].finish_reason, 'length');
  assert.equal(a.usage.completion_tokens, 4);
  const b = await client.completions.create({ model: MODEL, prompt, max_tokens: 4 });
  // Routed to the same engine by prefix, which now holds the prompt's full blocks.
  assert.equal(b.usage.prompt_tokens_details.cached_tokens, 32);
});

test('streaming chat delivers deltas, finish reason and usage', async () => {
  const stream = await client.chat.completions.create({
    model: MODEL, max_tokens: 5, stream: true, stream_options: { include_usage: true },
    messages: [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Hello there' }],
  });
  let text = ''; let finish = null; let usage = null; let chunks = 0;
  for await (const chunk of stream) {
    chunks++;
    if (chunk.choices.length > 0) {
      text += chunk.choices[0].delta.content ?? '';
      finish = chunk.choices[0].finish_reason ?? finish;
    }
    if (chunk.usage) usage = chunk.usage;
  }
  assert.ok(chunks >= 6, `chunks ${chunks}`);
  assert.ok(text.length > 0);
  assert.equal(finish, 'length');
  assert.equal(usage.completion_tokens, 5);
});

test('client errors surface as the SDK error classes', async () => {
  await assert.rejects(client.chat.completions.create({ model: 'no-such-model', messages: [{ role: 'user', content: 'x' }] }),
    (e) => e instanceof OpenAI.NotFoundError && e.status === 404);
  await assert.rejects(client.chat.completions.create({ model: MODEL, messages: 'not a list' }),
    (e) => e instanceof OpenAI.BadRequestError && e.status === 400 && /messages/.test(e.message));
});
