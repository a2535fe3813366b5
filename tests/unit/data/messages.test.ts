// Data-validation messages carry a stable code and parameters next to their English text, so the
// studio can show them in the user's language while the CLI keeps printing the English.
import { describe, expect, test } from 'vitest';
import { readdirSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import {
  DATA_MESSAGES,
  DATA_MESSAGE_CODES,
  englishText,
  jsonErrorMessage,
  parseDataset,
  parseDatasetCollection,
  parseDatasetInfo,
  slotsOf,
  type DataMessage,
  type ValidationReport,
} from '../../../src/data/index.ts';
import { dataMessage, dataMessageTables, renderDataMessage } from '../../../src/ui/data-messages.ts';
import { i18n } from '../../../src/ui/i18n.svelte.ts';
import { dataMessagesEn } from '../../../src/ui/locales/data-messages.en.ts';
import { dataMessagesZh } from '../../../src/ui/locales/data-messages.zh.ts';
import { DATASETS_DIR, ROOT } from './helpers.ts';

const BROKEN = resolve(DATASETS_DIR, 'broken');
const brokenFiles = readdirSync(BROKEN).sort();

async function brokenReport(name: string): Promise<ValidationReport> {
  return (await parseDataset(readFileSync(resolve(BROKEN, name)), { fileName: name })).report;
}

/** Every message of a report with its English text. */
function messagesOf(r: ValidationReport): [DataMessage, string][] {
  expect(r.warningCodes).toHaveLength(r.warnings.length);
  const out: [DataMessage, string][] = [[r.detectedBecauseCode, r.detectedBecause]];
  r.warnings.forEach((w, i) => out.push([r.warningCodes[i], w]));
  if (r.unsupported !== undefined) {
    expect(r.unsupportedCode).toBeDefined();
    out.push([r.unsupportedCode!, r.unsupported]);
  }
  for (const i of r.invalid) out.push([i, i.reason]);
  return out;
}

const render = (locale: 'en' | 'zh', m: DataMessage, english: string) =>
  renderDataMessage(locale, m.code, m.params, english, m.cause);

// Three or more English words in a row, outside quotes: a sentence the translation left in English.
// Quoted spans are data (keys, tags, JSON snippets) and stay as written, as do comma-separated lists
// of tag names.
function englishSentence(s: string): string | null {
  const unquoted = s.replace(/'[^']*'|"[^"]*"|`[^`]*`/g, ' ');
  return /\b[A-Za-z]{2,}(?: +[A-Za-z]{2,}){2,}\b/.exec(unquoted)?.[0] ?? null;
}

describe('message tables', () => {
  test('en and zh have exactly the pipeline codes as keys, with the same slots', () => {
    const codes = [...DATA_MESSAGE_CODES].sort();
    expect(Object.keys(dataMessagesEn).sort()).toEqual(codes);
    expect(Object.keys(dataMessagesZh).sort()).toEqual(codes);
    for (const code of codes) {
      expect(slotsOf(dataMessagesZh[code]), code).toEqual(slotsOf(dataMessagesEn[code]));
      expect(dataMessagesEn[code], code).toBe(DATA_MESSAGES[code]);
    }
  });

  test('every zh message is Chinese and carries no English sentence of its own', () => {
    for (const code of DATA_MESSAGE_CODES) {
      const zh = dataMessagesZh[code];
      expect(zh, code).not.toBe(dataMessagesEn[code]);
      expect(zh, code).toMatch(/[\u4e00-\u9fff]/);
      expect(englishSentence(zh.replace(/\{\w+\}/g, 'X')), code).toBeNull();
    }
  });

  test('every code in the catalog is emitted somewhere in src/data', () => {
    const dir = resolve(ROOT, 'src/data');
    const src = readdirSync(dir)
      .filter((f) => f.endsWith('.ts') && f !== 'messages.ts')
      .map((f) => readFileSync(resolve(dir, f), 'utf8'))
      .join('\n');
    const messages = readFileSync(resolve(dir, 'messages.ts'), 'utf8');
    // JSON.parse codes are chosen in messages.ts itself (jsonErrorMessage), where they appear twice.
    const unused = DATA_MESSAGE_CODES.filter((c) => !src.includes(`'${c}'`) && messages.split(`'${c}'`).length < 3);
    expect(unused).toEqual([]);
  });
});

describe('broken rows carry codes and parameters', () => {
  test('sharegpt_turn_errors.json', async () => {
    const r = await brokenReport('sharegpt_turn_errors.json');
    expect(r.invalid[0]).toMatchObject({
      field: 'conversations[1]',
      code: 'non-alternating',
      params: { turn: 1, tag: 'human', expected: 'gpt/function_call' },
      reason: "non-alternating roles: turn 1 is 'human' but a gpt/function_call turn was expected",
    });
    expect(r.invalid.find((i) => i.code === 'unknown-tag')?.params).toEqual({
      tag: 'bot',
      known: 'human, gpt, observation, function_call, system',
    });
    expect(r.invalid.find((i) => i.code === 'wrong-type-string')?.params).toEqual({ got: 'number' });
    expect(r.invalid.find((i) => i.code === 'missing-column')?.params).toEqual({
      column: 'conversations',
      keys: "'messages'",
    });
    expect(r.detectedBecauseCode).toEqual({ code: 'detect-sharegpt', params: { pct: 82, n: 11 } });
  });

  test('csv, JSON lines, truncated array, ranking and unknown files', async () => {
    const csv = await brokenReport('csv_column_errors.csv');
    expect(csv.invalid.map((i) => [i.code, i.params])).toEqual([
      ['csv-column-count', { got: 4, expected: 3 }],
      ['csv-column-count', { got: 1, expected: 3 }],
    ]);
    const lines = await brokenReport('bad_json_lines.jsonl');
    expect(lines.invalid.map((i) => i.code)).toEqual(['json-expected-comma-brace', 'json-expected-quoted-name']);
    const truncated = await brokenReport('truncated_array.json');
    expect(truncated.warningCodes).toEqual([{ code: 'warn-truncated-array' }]);
    expect(truncated.invalid.map((i) => i.code)).toEqual(['row-unterminated-string']);
    const ranking = await brokenReport('ranking_pairs.json');
    expect(ranking.detectedBecauseCode).toEqual({ code: 'detect-ranking', params: { pct: 100, n: 4 } });
    expect(ranking.unsupportedCode).toBeUndefined();
    expect(ranking.invalid.map((i) => i.code)).toEqual(['pair-identical', 'pair-missing-answer']);
    const unknown = await brokenReport('unknown_format.json');
    expect(unknown.unsupportedCode).toEqual({ code: 'detect-unknown-keys', params: { keys: "'question', 'answer'" } });
  });

  test('a bad tools column names the JSON error as its cause', async () => {
    const r = await brokenReport('alpaca_field_errors.json');
    const tools = r.invalid.find((i) => i.code === 'tools-bad-json')!;
    expect(tools.cause).toEqual({ code: 'json-expected-comma-brace' });
    expect(render('zh', tools, tools.reason)).toBe("JSON 格式错误：属性值后应为 ',' 或 '}'（位于 tools 列）");
  });

  test('dataset_info.json errors have codes', async () => {
    const info = parseDatasetInfo(
      JSON.stringify({ a: 1, b: { hf_hub_url: 'x/y' }, c: { file_name: 'c.json', formatting: 'chatml' } }),
    );
    expect(info.errors.map((e) => [e.name, e.code, e.params])).toEqual([
      ['a', 'info-not-object', undefined],
      ['b', 'info-hub-dataset', undefined],
      ['c', 'info-unknown-formatting', { formatting: 'chatml' }],
    ]);
    const col = await parseDatasetCollection([
      { name: 'dataset_info.json', source: new TextEncoder().encode('{"d": {"file_name": "gone.json"}}') },
    ]);
    expect(col.errors).toEqual([
      {
        name: 'd',
        reason: 'file "gone.json" is not among the given files',
        code: 'info-file-missing',
        params: { file: 'gone.json' },
      },
    ]);
  });
});

describe('JSON.parse errors', () => {
  test.each([
    ['{"a":}', 'json-unexpected-token'],
    ['{"a":1', 'json-expected-comma-brace'],
    ['{"a":"b', 'json-unterminated-string'],
    ['{"a":1} 2', 'json-trailing-data'],
    ['{"a":-}', 'json-minus-no-number'],
  ])('%s → %s', (text, code) => {
    let msg = '';
    try {
      JSON.parse(text);
    } catch (e) {
      msg = (e as Error).message.replace(/ in JSON at position \d+( \(line \d+ column \d+\))?/, '');
    }
    const m = jsonErrorMessage(msg);
    expect(m.code).toBe(code);
    expect(englishText(m)).toBe(`bad JSON: ${msg}`);
  });

  test("another engine's message keeps its text under 'bad-json'", () => {
    const firefox = 'JSON.parse: unexpected character at line 1 column 6 of the JSON data';
    expect(jsonErrorMessage(firefox)).toEqual({ code: 'bad-json', params: { detail: firefox } });
  });
});

describe('rendering the broken datasets', () => {
  test.each(brokenFiles)('%s: English is the report text byte for byte', async (name) => {
    for (const [m, english] of messagesOf(await brokenReport(name))) {
      expect(englishText(m)).toBe(english);
      expect(render('en', m, english)).toBe(english);
    }
  });

  test.each(brokenFiles)('%s: Chinese leaves no English sentence', async (name) => {
    const r = await brokenReport(name);
    expect(r.invalid.length + r.warnings.length + (r.unsupported ? 1 : 0)).toBeGreaterThan(0);
    for (const [m, english] of messagesOf(r)) {
      const zh = render('zh', m, english);
      expect(zh, english).toMatch(/[\u4e00-\u9fff]/);
      expect(englishSentence(zh), zh).toBeNull();
    }
  });

  test('dataMessage follows the studio language and falls back to the English text', () => {
    const before = i18n.locale;
    try {
      i18n.locale = 'zh';
      expect(dataMessage('csv-column-count', { got: 4, expected: 3 }, 'x')).toBe('列数不对：有 4 列（表头为 3 列）');
      expect(dataMessage(undefined, undefined, 'from an older build')).toBe('from an older build');
      expect(dataMessage('no-such-code', undefined, 'unknown code')).toBe('unknown code');
      expect(dataMessage('toString', undefined, 'not a code')).toBe('not a code');
      i18n.locale = 'en';
      expect(dataMessage('csv-column-count', { got: 4, expected: 3 }, 'x')).toBe(
        'wrong number of columns: 4 (the header has 3)',
      );
    } finally {
      i18n.locale = before;
    }
    expect(Object.keys(dataMessageTables).sort()).toEqual(['en', 'zh']);
  });
});
