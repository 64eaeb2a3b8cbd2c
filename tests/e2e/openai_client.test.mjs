// End to end with the official OpenAI client (npm `openai` 6.x): kvroute serve in front of two
// simulated engines. Run by CTest: node --test tests/e2e/openai_client.test.mjs (KVROUTE_BINARY set).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { MODEL, startRouter, startSim, stopAll } from './lib.mjs';

const require = createRequire(import.meta.url);
const OpenAI = require('../../tools/npm/node_modules/openai').default;
let client;

before(async () => {
  const sim = await startSim(2);
  const router = await startRouter([`http://127.0.0.1:${sim.port}`, `http://127.0.0.1:${sim.port + 1}`],
                                   ['--policy', 'kvroute']);
  client = new OpenAI({ apiKey: 'none', baseURL: `${router.url}/v1`, maxRetries: 0 });
});

after(stopAll);

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
