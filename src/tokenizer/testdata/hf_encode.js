// Oracle for the tokenizer tests: HuggingFace's own `tokenizers` (npm bindings of the Rust crate).
//
//   node hf_encode.js encode <node_modules dir> <tokenizer.json> <in.json> <out.json>
//     in.json: a JSON array of strings. out.json: {"with":[[ids]...], "without":[[ids]...], "decoded":[...]}
//     ("with"/"without": add_special_tokens true/false; "decoded": decode(without ids, skip_special=false)).
//   node hf_encode.js variant <in tokenizer.json> <out tokenizer.json> <kind>
//     Writes a variant of a tokenizer.json: kind = "template-bos" (TemplateProcessing adding the first
//     special token as BOS, as Llama 3.1 does), "prefix-space" (ByteLevel pre-tokenizers get add_prefix_space)
//     or "nfc-added-tokens" (added tokens whose content NFC changes or would match after NFC, normalized or not).
'use strict';
const fs = require('fs');
const path = require('path');

async function encode(modulesDir, tokPath, inPath, outPath) {
  const { Tokenizer } = require(path.resolve(modulesDir, 'tokenizers'));
  const tok = Tokenizer.fromFile(tokPath);
  const items = JSON.parse(fs.readFileSync(inPath, 'utf8'));
  const out = { with: [], without: [], decoded: [] };
  const batch = 256;
  for (let i = 0; i < items.length; i += batch) {
    const chunk = items.slice(i, i + batch);
    const a = await tok.encodeBatch(chunk, { addSpecialTokens: true });
    const b = await tok.encodeBatch(chunk, { addSpecialTokens: false });
    for (const e of a) out.with.push(e.getIds());
    const ids = b.map((e) => e.getIds());
    for (const x of ids) out.without.push(x);
    const dec = await tok.decodeBatch(ids, false);
    for (const d of dec) out.decoded.push(d);
  }
  fs.writeFileSync(outPath, JSON.stringify(out));
}

function variant(inPath, outPath, kind) {
  const j = JSON.parse(fs.readFileSync(inPath, 'utf8'));
  if (kind === 'template-bos') {
    const bos = j.added_tokens[0];
    j.post_processor = {
      type: 'Sequence',
      processors: [
        { type: 'ByteLevel', add_prefix_space: true, trim_offsets: false, use_regex: true },
        {
          type: 'TemplateProcessing',
          single: [{ SpecialToken: { id: bos.content, type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
          pair: [{ SpecialToken: { id: bos.content, type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } },
                 { SpecialToken: { id: bos.content, type_id: 1 } }, { Sequence: { id: 'B', type_id: 1 } }],
          special_tokens: { [bos.content]: { id: bos.content, ids: [bos.id], tokens: [bos.content] } },
        },
      ],
    };
  } else if (kind === 'prefix-space') {
    const fix = (p) => {
      if (!p) return;
      if (p.type === 'ByteLevel') p.add_prefix_space = true;
      if (p.type === 'Sequence') p.pretokenizers.forEach(fix);
    };
    fix(j.pre_tokenizer);
  } else if (kind === 'nfc-added-tokens') {
    let id = Math.max(...j.added_tokens.map((t) => t.id));
    const add = (content, normalized) =>
      j.added_tokens.push({ id: ++id, content, single_word: false, lstrip: false, rstrip: false, normalized,
                            special: false });
    add('e\u0301!', true);  // decomposed: matches after normalization as the precomposed form
    add('\u00f1?', true);   // precomposed: matches decomposed input once that is normalized
    add('u\u0308.', false); // not normalized: matches only these exact characters, on the raw text
  } else {
    throw new Error('unknown variant ' + kind);
  }
  fs.writeFileSync(outPath, JSON.stringify(j));
}

const [, , cmd, ...args] = process.argv;
if (cmd === 'encode') {
  encode(...args).catch((e) => {
    console.error(e);
    process.exit(1);
  });
} else if (cmd === 'variant') {
  variant(...args);
} else {
  console.error('usage: hf_encode.js encode|variant ...');
  process.exit(2);
}
