// Property-based: random and mangled JSON into the parsers. No exception other than a reported row
// error escapes, and every row is either valid or in the report.
import { describe, expect, test } from 'vitest';
import fc from 'fast-check';
import { parseDataset, type ValidationReport } from '../../../src/data/index.ts';

function accounted(r: ValidationReport) {
  const bad = new Set(r.invalid.map((i) => i.row));
  expect(r.valid + bad.size).toBe(r.rows);
  for (const i of r.invalid) {
    expect(typeof i.field).toBe('string');
    expect(i.reason.length).toBeGreaterThan(0);
  }
}

const message = fc.record(
  {
    from: fc.oneof(fc.constantFrom('human', 'gpt', 'system', 'observation', 'function_call', 'bot'), fc.anything()),
    value: fc.oneof(fc.string(), fc.constant(''), fc.anything()),
  },
  { requiredKeys: [] },
);
const openaiMessage = fc.record(
  {
    role: fc.oneof(fc.constantFrom('user', 'assistant', 'system', 'tool', 'developer'), fc.anything()),
    content: fc.oneof(
      fc.string(),
      fc.array(fc.record({ type: fc.constantFrom('text', 'image_url'), text: fc.string() })),
      fc.anything(),
    ),
    tool_calls: fc.option(fc.array(fc.anything()), { nil: undefined }),
  },
  { requiredKeys: [] },
);
const row = fc.oneof(
  fc.record(
    {
      instruction: fc.anything(),
      input: fc.anything(),
      output: fc.anything(),
      history: fc.anything(),
      system: fc.anything(),
      tools: fc.anything(),
    },
    { requiredKeys: [] },
  ),
  fc.record({ instruction: fc.string(), input: fc.string(), output: fc.string() }),
  fc.record(
    {
      conversations: fc.oneof(fc.array(message, { maxLength: 6 }), fc.anything()),
      tools: fc.option(fc.string(), { nil: undefined }),
    },
    { requiredKeys: ['conversations'] },
  ),
  fc.record({ messages: fc.array(openaiMessage, { maxLength: 6 }) }),
  fc.record({ text: fc.anything() }),
  fc.anything(),
);

/** Random edits of a valid serialisation: deletions, insertions of structural characters, truncation. */
function mangle(text: string, edits: [number, number, string][]): string {
  let t = text;
  for (const [pos, del, ins] of edits) {
    const p = t.length ? pos % (t.length + 1) : 0;
    t = t.slice(0, p) + ins + t.slice(p + (del % 4));
  }
  return t;
}
const edit = fc.tuple(
  fc.nat(),
  fc.nat(),
  fc.constantFrom('', '"', '{', '}', '[', ']', ',', '\n', '\\', ':', 'é', '\u2028', 'null'),
);

describe('parsers never throw on bad input and account for every row', () => {
  test('JSON arrays of random rows', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(row, { maxLength: 12 }), async (rows) => {
        const { report } = await parseDataset(JSON.stringify(rows), { fileName: 'x.json' });
        expect(report.rows).toBe(rows.length);
        accounted(report);
      }),
      { numRuns: 150 },
    );
  });

  test('mangled JSON arrays and JSON lines', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(row, { minLength: 1, maxLength: 8 }),
        fc.array(edit, { maxLength: 6 }),
        fc.boolean(),
        async (rows, edits, lines) => {
          const text = lines ? rows.map((r) => JSON.stringify(r) ?? 'null').join('\n') : JSON.stringify(rows, null, 1);
          const { report } = await parseDataset(mangle(text, edits), { fileName: lines ? 'x.jsonl' : 'x.json' });
          accounted(report);
        },
      ),
      { numRuns: 200 },
    );
  });

  test('random bytes under every reader', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.uint8Array({ maxLength: 300 }),
        fc.constantFrom('x.json', 'x.jsonl', 'x.csv', 'x.txt', 'noext'),
        async (bytes, name) => {
          const { report } = await parseDataset(bytes, { fileName: name });
          accounted(report);
        },
      ),
      { numRuns: 200 },
    );
  });

  test('random CSV', async () => {
    const cell = fc.oneof(fc.string(), fc.constantFrom('"', '""', ',', '\n', '\r\n', '[["a","b"]]'));
    await fc.assert(
      fc.asyncProperty(fc.array(fc.array(cell, { maxLength: 5 }), { maxLength: 6 }), async (cells) => {
        const csv = ['instruction,input,output', ...cells.map((r) => r.join(','))].join('\n');
        const { report } = await parseDataset(csv, { fileName: 'x.csv' });
        accounted(report);
      }),
      { numRuns: 150 },
    );
  });
});

describe('masking holds for random conversations', async () => {
  const { chatTemplateFor, encodeExample, IGNORE_INDEX } = await import('../../../src/data/index.ts');
  const { lenmlTokenizer, template } = await import('./helpers.ts');
  const text = fc
    .string({ minLength: 1, maxLength: 40 })
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
  const conversation = fc.record({
    system: fc.option(text, { nil: undefined }),
    turns: fc.array(fc.tuple(text, text), { minLength: 1, maxLength: 3 }),
  });
  test.each([
    ['qwen3', 'Qwen-Qwen2.5-7B-Instruct'],
    ['llama3', 'meta-llama-Llama-3.1-8B-Instruct'],
    ['qwen3', null],
  ] as const)('%s / %s: ids = whole text, answers trained, prompts not', async (tk, tpl) => {
    const tok = await lenmlTokenizer(tk);
    const ct = tpl ? chatTemplateFor(tok, { template: template(tpl) }) : chatTemplateFor(tok, { template: null });
    fc.assert(
      fc.property(conversation, ({ system, turns }) => {
        const conv = {
          system,
          messages: turns.flatMap(([q, a]) => [
            { role: 'user' as const, content: q },
            { role: 'assistant' as const, content: a },
          ]),
        };
        const e = encodeExample({ kind: 'chat', row: 0, conversation: conv }, tok, ct, { cutoffLen: 100000 });
        expect(Array.from(e.inputIds)).toEqual(tok.encode(e.text));
        // trained positions are exactly the assistant spans: their decoded text holds every answer in order
        // (compared without whitespace: Llama 3's decode cleans up spaces, e.g. "! ?" comes back "!?")
        const squeeze = (s: string) => s.replace(/\s+/g, '');
        const trained = squeeze(tok.decode(Array.from(e.labels).filter((l) => l !== IGNORE_INDEX)));
        let at = 0;
        for (const [, answer] of turns) {
          const a = squeeze(answer);
          const i = trained.indexOf(a, at);
          expect(i, `answer ${JSON.stringify(a)} in ${JSON.stringify(trained)}`).toBeGreaterThanOrEqual(0);
          at = i + a.length;
        }
        const untrained = squeeze(tok.decode(Array.from(e.inputIds).filter((_, i) => e.labels[i] === IGNORE_INDEX)));
        for (const [q] of turns) expect(untrained).toContain(squeeze(q));
      }),
      { numRuns: 60 },
    );
  });
});
