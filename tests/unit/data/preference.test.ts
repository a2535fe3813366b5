// Preference (ranking) rows: parsing of alpaca / sharegpt / OpenAI pairs and dataset_info.json
// "ranking": true, the row errors, the pairwise encoding against a Python rendering of
// LLaMA-Factory's rule (tests/reference/pairwise_pref.py), and the pair micro-batch layout.
import { describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { parseDataset } from '../../../src/data/parse.ts';
import { chatTemplateFor, prepareDataset } from '../../../src/data/pipeline.ts';
import { encodePair, pairwiseSequences } from '../../../src/data/preference.ts';
import { IGNORE_INDEX, type Example } from '../../../src/data/types.ts';
import { DataLoader } from '../../../src/engine/train/data.ts';
import { lenmlTokenizer } from './helpers.ts';

interface PyCase {
  prompt: number[];
  chosen: number[];
  rejected: number[];
  cutoff_len: number;
}
interface PyResult {
  chosen_input_ids: number[];
  chosen_labels: number[];
  rejected_input_ids: number[];
  rejected_labels: number[];
}

function python(cases: PyCase[]): PyResult[] {
  const out = execFileSync('/usr/bin/python3', ['tests/reference/pairwise_pref.py'], {
    input: JSON.stringify({ cases }),
    encoding: 'utf8',
  });
  return (JSON.parse(out) as { results: PyResult[] }).results;
}

const ids = (n: number, base: number) => Array.from({ length: n }, (_, i) => base + i);

async function parse(rows: unknown[], name = 'prefs.json') {
  return parseDataset(JSON.stringify(rows), { fileName: name });
}

const pairs = (ex: Example[]) => ex.filter((e) => e.kind === 'pair');

describe('preference rows', () => {
  it('alpaca: instruction/input + chosen/rejected strings', async () => {
    const { report, examples } = await parse([
      { instruction: 'Greet.', input: 'politely', chosen: 'Hello!', rejected: 'what', system: 'Be kind.' },
      { instruction: 'Add', input: '2+2', chosen: '4', rejected: '5', history: [['hi', 'hello']] },
    ]);
    expect(report.format).toBe('ranking');
    expect(report.unsupported).toBeUndefined();
    expect(report.valid).toBe(2);
    const [a, b] = pairs(examples);
    expect(a).toMatchObject({
      conversation: { system: 'Be kind.', messages: [{ role: 'user', content: 'Greet.\npolitely' }] },
      chosen: { role: 'assistant', content: 'Hello!' },
      rejected: { role: 'assistant', content: 'what' },
    });
    expect(b.kind === 'pair' && b.conversation.messages.map((m) => m.role)).toEqual(['user', 'assistant', 'user']);
  });

  it('sharegpt: conversations ending with a human turn + chosen/rejected gpt messages', async () => {
    const { report, examples } = await parse([
      {
        conversations: [
          { from: 'human', value: 'Hi' },
          { from: 'gpt', value: 'Hello' },
          { from: 'human', value: 'Name a colour' },
        ],
        chosen: { from: 'gpt', value: 'Blue.' },
        rejected: { from: 'gpt', value: 'No.' },
      },
    ]);
    expect(report.format).toBe('ranking');
    expect(report.valid).toBe(1);
    expect(pairs(examples)[0]).toMatchObject({
      conversation: { messages: [{ content: 'Hi' }, { content: 'Hello' }, { content: 'Name a colour' }] },
      chosen: { role: 'assistant', content: 'Blue.' },
      rejected: { role: 'assistant', content: 'No.' },
    });
  });

  it('OpenAI: messages ending with a user turn + chosen/rejected assistant messages', async () => {
    const { report, examples } = await parse([
      {
        messages: [
          { role: 'system', content: 'Short answers.' },
          { role: 'user', content: '2+2?' },
        ],
        chosen: { role: 'assistant', content: '4' },
        rejected: { role: 'assistant', content: '22' },
      },
    ]);
    expect(report.valid).toBe(1);
    expect(pairs(examples)[0]).toMatchObject({
      conversation: { system: 'Short answers.', messages: [{ role: 'user', content: '2+2?' }] },
      chosen: { content: '4' },
      rejected: { content: '22' },
    });
  });

  it('dataset_info.json "ranking": true with renamed columns', async () => {
    const rows = [
      { dialog: [{ from: 'human', value: 'Q' }], good: { from: 'gpt', value: 'A' }, bad: { from: 'gpt', value: 'B' } },
    ];
    const { report, examples } = await parseDataset(JSON.stringify(rows), {
      fileName: 'p.json',
      datasetInfo: {
        file_name: 'p.json',
        formatting: 'sharegpt',
        ranking: true,
        columns: { messages: 'dialog', chosen: 'good', rejected: 'bad' },
      },
    });
    expect(report.detectedBecauseCode).toEqual({ code: 'detect-info-ranking' });
    expect(report.valid).toBe(1);
    expect(pairs(examples)[0]).toMatchObject({ chosen: { content: 'A' }, rejected: { content: 'B' } });
  });

  it('bad rows are named: missing or empty answer, identical pair, prompt ending with an answer, wrong role', async () => {
    const { report } = await parse([
      { instruction: 'a', chosen: 'x' },
      { instruction: 'b', chosen: '  ', rejected: 'y' },
      { instruction: 'c', chosen: 'same', rejected: 'same' },
      { instruction: '', input: '', chosen: 'p', rejected: 'q' },
      { instruction: 'ok', chosen: 'p', rejected: 'q' },
    ]);
    expect(report.valid).toBe(1);
    expect(report.invalid.map((i) => [i.row, i.field, i.code])).toEqual([
      [0, 'rejected', 'pair-missing-answer'],
      [1, 'chosen', 'pair-empty-answer'],
      [2, 'rejected', 'pair-identical'],
      [3, 'instruction', 'empty-instruction'],
    ]);
    expect(report.invalid[0].reason).toBe("missing 'rejected': a preference row needs a chosen and a rejected answer");
    const sg = await parse([
      {
        conversations: [
          { from: 'human', value: 'Q' },
          { from: 'gpt', value: 'A' },
        ],
        chosen: { from: 'gpt', value: 'B' },
        rejected: { from: 'gpt', value: 'C' },
      },
      {
        conversations: [{ from: 'human', value: 'Q' }],
        chosen: { from: 'human', value: 'B' },
        rejected: { from: 'gpt', value: 'C' },
      },
      { conversations: [{ from: 'human', value: 'Q' }], chosen: { from: 'gpt', value: 'B' }, rejected: null },
    ]);
    expect(sg.report.invalid.map((i) => [i.row, i.field, i.code])).toEqual([
      [0, 'conversations[1]', 'pair-prompt-ends-with-answer'],
      [1, 'chosen', 'non-alternating'],
      [2, 'rejected', 'pair-missing-answer'],
    ]);
  });

  it('stage dpo encodes pairs; other stages name pair rows, and stage dpo names chat rows', async () => {
    const tok = await lenmlTokenizer('qwen3');
    const { examples } = await parse([
      { instruction: 'Greet.', chosen: 'Hello, nice to meet you!', rejected: 'what' },
      { instruction: 'Sum 2 and 2.', chosen: '4', rejected: 'five' },
    ]);
    const dpo = prepareDataset(examples, tok, { cutoffLen: 64, stage: 'dpo' });
    expect(dpo.invalid).toEqual([]);
    expect(dpo.train).toHaveLength(2);
    for (const e of dpo.train) {
      const r = e.rejected!;
      const prompt = e.labels.findIndex((l) => l !== IGNORE_INDEX);
      expect(prompt).toBeGreaterThan(0);
      // Shared prompt tokens, masked in both.
      expect([...r.inputIds.slice(0, prompt)]).toEqual([...e.inputIds.slice(0, prompt)]);
      expect([...r.labels.slice(0, prompt)].every((l) => l === IGNORE_INDEX)).toBe(true);
      expect(r.labels[prompt]).not.toBe(IGNORE_INDEX);
      expect(tok.decode([...e.labels.slice(prompt)])).toMatch(/<\|im_end\|>/);
    }
    expect(tok.decode([...dpo.train.find((e) => e.row === 0)!.labels.filter((l) => l !== IGNORE_INDEX)])).toMatch(
      /Hello, nice to meet you!<\|im_end\|>\n?$/,
    );
    const sft = prepareDataset(examples, tok, { cutoffLen: 64 });
    expect(sft.invalid.map((i) => i.code)).toEqual(['pair-needs-dpo', 'pair-needs-dpo']);
    const chat = await parse([{ instruction: 'q', output: 'a' }]);
    expect(prepareDataset(chat.examples, tok, { cutoffLen: 64, stage: 'dpo' }).invalid[0].code).toBe('dpo-needs-pair');
  });
});

describe("pairwise truncation equals LLaMA-Factory's rule", () => {
  it('on token ids: every case of infer_seqlen (short answers, short prompt, both cut)', () => {
    const cases: PyCase[] = [];
    for (const [p, c, r] of [
      [5, 3, 4],
      [40, 3, 9],
      [3, 40, 12],
      [30, 30, 2],
      [60, 10, 70],
      [0, 5, 5],
      [17, 1, 23],
    ])
      for (const cutoff of [1, 8, 16, 31, 64, 200])
        cases.push({ prompt: ids(p, 1000), chosen: ids(c, 2000), rejected: ids(r, 3000), cutoff_len: cutoff });
    const want = python(cases);
    cases.forEach((k, i) => {
      const got = pairwiseSequences(k.prompt, k.chosen, k.rejected, k.cutoff_len);
      expect(
        {
          chosen_input_ids: got.chosenIds,
          chosen_labels: got.chosenLabels,
          rejected_input_ids: got.rejectedIds,
          rejected_labels: got.rejectedLabels,
        },
        JSON.stringify(k),
      ).toEqual(want[i]);
    });
  });

  it('through the chat template (Qwen3 and Llama 3): encodePair equals the rule on encode_oneturn ids', async () => {
    for (const name of ['qwen3', 'llama3'] as const) {
      const tok = await lenmlTokenizer(name);
      const tpl = chatTemplateFor(tok);
      const pair = {
        conversation: {
          system: 'You answer briefly.',
          messages: [
            { role: 'user' as const, content: 'Hi there' },
            { role: 'assistant' as const, content: 'Hello!' },
            { role: 'user' as const, content: 'What is the capital of France? Answer in one sentence please.' },
          ],
        },
        chosen: { role: 'assistant' as const, content: 'The capital of France is Paris.' },
        rejected: { role: 'assistant' as const, content: 'I do not know, maybe Lyon or Marseille or somewhere else.' },
      };
      const full = encodePair(0, pair, tok, tpl, 4096);
      const prompt = full.labels.findIndex((l) => l !== IGNORE_INDEX);
      const promptIds = [...full.inputIds.slice(0, prompt)];
      const chosen = [...full.inputIds.slice(prompt)];
      const rejected = [...full.rejected!.inputIds.slice(prompt)];
      expect(tok.decode(chosen)).toContain('The capital of France is Paris.');
      for (const cutoff of [12, 24, 40, 64]) {
        const [want] = python([{ prompt: promptIds, chosen, rejected, cutoff_len: cutoff }]);
        const got = encodePair(0, pair, tok, tpl, cutoff);
        expect([...got.inputIds], `${name} cutoff ${cutoff}`).toEqual(want.chosen_input_ids);
        expect([...got.labels]).toEqual(want.chosen_labels);
        expect([...got.rejected!.inputIds]).toEqual(want.rejected_input_ids);
        expect([...got.rejected!.labels]).toEqual(want.rejected_labels);
        expect(got.truncated).toBe(want.rejected_input_ids.length < promptIds.length + rejected.length);
      }
    }
  });
});

describe('pair micro-batches', () => {
  it('hold every chosen sequence, then every rejected one (TRL concatenated_forward)', () => {
    const ex = (row: number, n: number, m: number) => ({
      row,
      inputIds: Int32Array.from(ids(n, 10 * row)),
      labels: Int32Array.from(ids(n, 10 * row)).map((v, i) => (i < 2 ? IGNORE_INDEX : v)),
      fullLength: n,
      truncated: false,
      rejected: {
        inputIds: Int32Array.from(ids(m, 10 * row + 500)),
        labels: Int32Array.from(ids(m, 10 * row + 500)),
        fullLength: m,
      },
    });
    const loader = new DataLoader([ex(0, 3, 5), ex(1, 4, 2)], {
      batchSize: 2,
      gradientAccumulationSteps: 1,
      seed: 0,
      padId: 0,
      shuffle: false,
      padToMultipleOf: 1,
    });
    const [mb] = loader.nextWindow();
    expect(mb.pairs).toBe(2);
    expect(mb.batch).toBe(4);
    expect(mb.seqLen).toBe(5);
    expect([...mb.lengths!]).toEqual([3, 4, 5, 2]);
    expect([...mb.inputIds.slice(0, 5)]).toEqual([0, 1, 2, 0, 0]);
    expect([...mb.inputIds.slice(10, 15)]).toEqual([500, 501, 502, 503, 504]);
    expect([...mb.inputIds.slice(15, 17)]).toEqual([510, 511]);
  });
});
