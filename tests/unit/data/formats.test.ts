// Every input format: alpaca (JSON, CSV, history, system), sharegpt, OpenAI messages, plain text
// (.txt and {"text"}), dataset_info.json columns/tags overrides, auto-detection with its reason.
import { describe, expect, test } from 'vitest';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { parseDataset, parseDatasetInfo, type Conversation } from '../../../src/data/index.ts';
import { DATA_FIXTURES } from './helpers.ts';

const dir = resolve(DATA_FIXTURES, 'custom_columns');
const info = parseDatasetInfo(readFileSync(resolve(dir, 'dataset_info.json'), 'utf8'));
const convs = (ex: Awaited<ReturnType<typeof parseDataset>>['examples']) =>
  ex.map((e) => (e.kind === 'text' ? e.text : e.conversation));

describe('auto-detection', () => {
  test.each([
    [[{ instruction: 'q', input: 'i', output: 'a' }], 'alpaca', /keys 'instruction'\/'input' and 'output' in 100 %/],
    [
      [
        {
          conversations: [
            { from: 'human', value: 'q' },
            { from: 'gpt', value: 'a' },
          ],
        },
      ],
      'sharegpt',
      /key 'conversations' with from\/value in 100 % of rows/,
    ],
    [
      [
        {
          messages: [
            { role: 'user', content: 'q' },
            { role: 'assistant', content: 'a' },
          ],
        },
      ],
      'openai',
      /key 'messages' with role\/content in 100 %/,
    ],
    [
      [
        {
          messages: [
            { from: 'human', value: 'q' },
            { from: 'gpt', value: 'a' },
          ],
        },
      ],
      'sharegpt',
      /key 'messages' with from\/value/,
    ],
    [[{ text: 'some text' }], 'text', /key 'text' in 100 %/],
    [[{ prompt: 'q', chosen: 'a', rejected: 'b' }], 'ranking', /'chosen' and 'rejected'/],
  ])('%j → %s', async (rows, format, because) => {
    const { report } = await parseDataset(JSON.stringify(rows), { fileName: 'x.json' });
    expect(report.format).toBe(format);
    expect(report.detectedBecause).toMatch(because);
  });

  test('the majority wins and the share is reported', async () => {
    const rows = [...Array(3)].map(() => ({
      conversations: [
        { from: 'human', value: 'q' },
        { from: 'gpt', value: 'a' },
      ],
    }));
    const { report } = await parseDataset(JSON.stringify([...rows, { instruction: 'x', output: 'y' }]), {
      fileName: 'x.json',
    });
    expect(report.format).toBe('sharegpt');
    expect(report.detectedBecause).toMatch(/in 75 % of rows \(first 4 rows\)/);
    expect(report.invalid).toEqual([
      {
        row: 3,
        line: 1,
        byteOffset: expect.any(Number),
        field: 'conversations',
        reason: expect.stringMatching(/missing 'conversations'/),
        code: 'missing-column',
        params: { column: 'conversations', keys: "'instruction', 'output'" },
      },
    ]);
  });
});

describe('format semantics (LLaMA-Factory converters)', () => {
  test('alpaca: instruction + "\\n" + input, history pairs, system', async () => {
    const rows = [
      {
        instruction: 'Translate.',
        input: 'Bonjour',
        output: 'Hello',
        system: 'Be exact.',
        history: [
          ['Hi', 'Hey'],
          ['How are you?', 'Fine.'],
        ],
      },
      { instruction: 'Only instruction.', input: '', output: 'ok' },
      { instruction: '', input: 'Only input.', output: 'ok' },
    ];
    const { examples } = await parseDataset(JSON.stringify(rows), { fileName: 'a.json' });
    expect(convs(examples)).toEqual([
      {
        system: 'Be exact.',
        messages: [
          { role: 'user', content: 'Hi' },
          { role: 'assistant', content: 'Hey' },
          { role: 'user', content: 'How are you?' },
          { role: 'assistant', content: 'Fine.' },
          { role: 'user', content: 'Translate.\nBonjour' },
          { role: 'assistant', content: 'Hello' },
        ],
      },
      {
        messages: [
          { role: 'user', content: 'Only instruction.' },
          { role: 'assistant', content: 'ok' },
        ],
      },
      {
        messages: [
          { role: 'user', content: 'Only input.' },
          { role: 'assistant', content: 'ok' },
        ],
      },
    ]);
  });

  test('sharegpt: system tag first, tool turns, tools column', async () => {
    const row = {
      conversations: [
        { from: 'system', value: 'S' },
        { from: 'human', value: 'q' },
        { from: 'function_call', value: '{"name": "f", "arguments": {}}' },
        { from: 'observation', value: 'r' },
        { from: 'gpt', value: 'a' },
      ],
      tools: '[{"name": "f", "parameters": {}}]',
    };
    const { examples, report } = await parseDataset(JSON.stringify([row]), { fileName: 's.json' });
    expect(report.invalid).toEqual([]);
    const c = convs(examples)[0] as Conversation;
    expect(c.system).toBe('S');
    expect(c.messages.map((m) => m.role)).toEqual(['user', 'function_call', 'observation', 'assistant']);
    expect(JSON.parse(c.tools!)).toEqual([{ name: 'f', parameters: {} }]);
  });

  test('OpenAI: system/developer first, text content parts joined', async () => {
    const row = {
      messages: [
        { role: 'developer', content: 'D' },
        {
          role: 'user',
          content: [
            { type: 'text', text: 'a' },
            { type: 'text', text: 'b' },
          ],
        },
        { role: 'assistant', content: 'c' },
      ],
    };
    const { examples } = await parseDataset(JSON.stringify(row) + '\n', { fileName: 'o.jsonl' });
    expect(convs(examples)).toEqual([
      {
        system: 'D',
        messages: [
          { role: 'user', content: 'ab' },
          { role: 'assistant', content: 'c' },
        ],
      },
    ]);
  });

  test('plain text: .txt and {"text"}', async () => {
    const t = await parseDataset('line one\nline two\n', { fileName: 'corpus.txt' });
    expect(t.report.format).toBe('text');
    expect(convs(t.examples)).toEqual(['line one', 'line two']);
    const j = await parseDataset('{"text": "a"}\n{"text": ""}\n', { fileName: 'c.jsonl' });
    expect(convs(j.examples)).toEqual(['a']);
    expect(j.report.invalid).toEqual([
      { row: 1, line: 2, byteOffset: 14, field: 'text', reason: 'empty text', code: 'empty-text' },
    ]);
  });
});

describe('dataset_info.json', () => {
  test('entries and entry errors', () => {
    expect(Object.keys(info.entries)).toEqual(['support_chats', 'qa_pairs', 'web_text', 'prefs']);
    expect(info.errors.map((e) => e.name)).toEqual(['from_hub', 'bad_columns']);
    expect(info.errors[0].reason).toMatch(/only local "file_name"/);
    expect(() => parseDatasetInfo('{', 'dataset_info.json')).toThrow(/dataset_info.json: bad JSON/);
  });

  test('custom columns and tags (sharegpt)', async () => {
    const { report, examples } = await parseDataset(readFileSync(resolve(dir, 'support_chats.jsonl')), {
      fileName: 'support_chats.jsonl',
      datasetInfo: info.entries.support_chats,
    });
    expect(report.format).toBe('sharegpt');
    expect(report.detectedBecause).toMatch(/dataset_info.json: "formatting": "sharegpt" with custom columns and tags/);
    const [a, b] = convs(examples) as Conversation[];
    expect(a.system).toBe('You are a helpful support agent.');
    expect(a.messages).toHaveLength(4);
    expect(b.system).toBe('Be brief.');
    expect(b.messages.map((m) => m.role)).toEqual(['user', 'function_call', 'observation', 'assistant']);
    expect(b.tools).toBeDefined();
    expect(report.invalid).toEqual([
      expect.objectContaining({
        row: 2,
        line: 3,
        field: 'dialog[1].speaker',
        reason: expect.stringMatching(
          /unknown tag 'human' \(expected one of customer, agent, lookup_result, lookup, setup\)/,
        ),
      }),
    ]);
  });

  test('custom columns (alpaca from CSV, history as JSON text)', async () => {
    const { report, examples } = await parseDataset(readFileSync(resolve(dir, 'qa_pairs.csv')), {
      fileName: 'qa_pairs.csv',
      datasetInfo: info.entries.qa_pairs,
    });
    expect(report.invalid).toEqual([]);
    expect(convs(examples)).toEqual([
      {
        messages: [
          { role: 'user', content: 'What is the boiling point of water?\nAt sea level.' },
          { role: 'assistant', content: '100 °C.' },
        ],
      },
      {
        messages: [
          { role: 'user', content: 'Hi' },
          { role: 'assistant', content: 'Hello!' },
          { role: 'user', content: 'Summarize it.\nCats sleep a lot, up to 16 hours a day.' },
          { role: 'assistant', content: 'Cats sleep up to 16 hours daily.' },
        ],
      },
    ]);
  });

  test('pre-training text through columns.prompt; a ranking entry without chosen/rejected columns names them', async () => {
    const t = await parseDataset(readFileSync(resolve(dir, 'web_text.jsonl')), {
      fileName: 'web_text.jsonl',
      datasetInfo: info.entries.web_text,
    });
    expect(t.report.format).toBe('text');
    expect(t.examples).toHaveLength(2);
    expect(t.report.invalid).toEqual([expect.objectContaining({ row: 2, field: 'content', reason: 'empty text' })]);
    const r = await parseDataset(readFileSync(resolve(dir, 'qa_pairs.csv')), {
      fileName: 'qa_pairs.csv',
      datasetInfo: info.entries.prefs,
    });
    expect(r.report.format).toBe('ranking');
    expect(r.report.unsupported).toBeUndefined();
    expect(r.report.valid).toBe(0);
    expect(r.report.invalid[0]).toEqual(
      expect.objectContaining({ row: 0, field: 'chosen', code: 'pair-missing-answer', params: { column: 'chosen' } }),
    );
  });

  test('keys not named in columns are ignored with a warning, as LLaMA-Factory ignores them', async () => {
    const rows = [{ instruction: 'q', input: '', output: 'a', history: [['x', 'y']] }];
    const { report, examples } = await parseDataset(JSON.stringify(rows), {
      fileName: 'a.json',
      datasetInfo: { file_name: 'a.json' },
    });
    expect((convs(examples)[0] as Conversation).messages).toHaveLength(2);
    expect(report.warnings.join()).toMatch(/'history' key that dataset_info.json "columns" does not name/);
  });
});

describe('a dropped folder with dataset_info.json', () => {
  test('parses every entry whose file is present and names the rest', async () => {
    const { parseDatasetCollection } = await import('../../../src/data/index.ts');
    const files = ['dataset_info.json', 'support_chats.jsonl', 'qa_pairs.csv'].map((f) => ({
      name: `custom_columns/${f}`,
      source: readFileSync(resolve(dir, f)),
    }));
    const r = await parseDatasetCollection(files);
    expect(r.datasets.map((d) => [d.name, d.parsed.report.format])).toEqual([
      ['support_chats', 'sharegpt'],
      ['qa_pairs', 'alpaca'],
      ['prefs', 'ranking'],
    ]);
    expect(r.errors.map((e) => e.name)).toEqual(['from_hub', 'bad_columns', 'web_text']);
    expect(r.errors[2].reason).toMatch(/not among the given files/);
    const loose = await parseDatasetCollection([
      { name: 'a.jsonl', source: '{"text": "x"}\n' },
      { name: 'notes.md', source: '#' },
    ]);
    expect(loose.datasets.map((d) => d.parsed.report.format)).toEqual(['text']);
  });
});
