// The sample datasets in datasets/ parse cleanly; every deliberately broken file in datasets/broken/
// is reported row by row, with the field and the reason, and no row is lost.
import { describe, expect, test } from 'vitest';
import { existsSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import {
  parseDataset,
  parseDatasetInfo,
  type DatasetInfoEntry,
  type ValidationReport,
} from '../../../src/data/index.ts';
import { DATASETS_DIR } from './helpers.ts';

async function report(rel: string, entry?: DatasetInfoEntry) {
  const file = resolve(DATASETS_DIR, rel);
  return parseDataset(readFileSync(file), { fileName: rel, datasetInfo: entry });
}

/** No row disappears: valid + distinct invalid rows = rows read. */
function accounted(r: ValidationReport) {
  const bad = new Set(r.invalid.map((i) => i.row));
  expect(r.valid + bad.size).toBe(r.rows);
}

type Expect = [row: number, field: string, reason: RegExp];
function expectIssues(r: ValidationReport, want: Expect[]) {
  const got = r.invalid.map((i) => [i.row, i.field, i.reason] as const);
  expect(got).toHaveLength(want.length);
  want.forEach(([row, field, reason], k) => {
    expect(got[k][0]).toBe(row);
    expect(got[k][1]).toBe(field);
    expect(got[k][2]).toMatch(reason);
  });
  accounted(r);
}

describe('sample datasets', () => {
  const info = parseDatasetInfo(readFileSync(resolve(DATASETS_DIR, 'dataset_info.json'), 'utf8'));
  test('dataset_info.json describes every sample dataset', () => {
    expect(info.errors).toEqual([]);
    expect(Object.keys(info.entries).sort()).toEqual([
      'alpaca_en_zh_demo',
      'identity_en_zh',
      'preference_en_zh_demo',
      'sharegpt_multiturn_demo',
    ]);
  });

  test('preference_en_zh_demo: every row a valid preference pair (ranking: true)', async () => {
    const { report: r, examples } = await report('preference_en_zh_demo.json', info.entries.preference_en_zh_demo);
    expect(r.format).toBe('ranking');
    expect(r.invalid).toEqual([]);
    expect(r.valid).toBe(60);
    expect(examples.every((e) => e.kind === 'pair')).toBe(true);
  });

  test('alpaca_en_zh_demo: all rows valid, en + zh, with system and history rows', async () => {
    const { report: r, examples } = await report('alpaca_en_zh_demo.json', info.entries.alpaca_en_zh_demo);
    expect(r.format).toBe('alpaca');
    expect(r.invalid).toEqual([]);
    expect(r.rows).toBeGreaterThanOrEqual(60);
    expect(r.duplicateGroups).toEqual([]);
    const convs = examples.map((e) => (e.kind === 'chat' ? e.conversation : null)!);
    expect(convs.filter((c) => /[\u4e00-\u9fff]/.test(c.messages[0].content)).length).toBeGreaterThan(20);
    expect(convs.some((c) => c.system)).toBe(true);
    expect(convs.some((c) => c.messages.length > 2)).toBe(true);
    // alpaca: user turn = instruction + "\n" + input when input is non-empty
    const withInput = JSON.parse(readFileSync(resolve(DATASETS_DIR, 'alpaca_en_zh_demo.json'), 'utf8')).findIndex(
      (x: { input: string }) => x.input,
    );
    const raw = JSON.parse(readFileSync(resolve(DATASETS_DIR, 'alpaca_en_zh_demo.json'), 'utf8'))[withInput];
    expect(convs[withInput].messages.at(-2)!.content).toBe(`${raw.instruction}\n${raw.input}`);
  });

  test('sharegpt_multiturn_demo: all rows valid, system prompts and tool turns present', async () => {
    const { report: r, examples } = await report('sharegpt_multiturn_demo.json', info.entries.sharegpt_multiturn_demo);
    expect(r.format).toBe('sharegpt');
    expect(r.invalid).toEqual([]);
    const convs = examples.map((e) => (e.kind === 'chat' ? e.conversation : null)!);
    expect(convs.some((c) => c.system)).toBe(true);
    expect(
      convs.some(
        (c) =>
          c.tools &&
          c.messages.some((m) => m.role === 'function_call') &&
          c.messages.some((m) => m.role === 'observation'),
      ),
    ).toBe(true);
    expect(convs.some((c) => c.messages.length >= 6)).toBe(true);
  });

  test.runIf(existsSync(resolve(DATASETS_DIR, 'identity_en_zh.json')))('identity_en_zh parses as alpaca', async () => {
    const { report: r } = await report('identity_en_zh.json', info.entries.identity_en_zh);
    expect(r.format).toBe('alpaca');
    expect(r.invalid).toEqual([]);
  });
});

describe('broken files: every invalid row is reported', () => {
  test('bad JSON lines: line number and byte offset of each bad line', async () => {
    const { report: r } = await report('broken/bad_json_lines.jsonl');
    expectIssues(r, [
      [1, '<json>', /bad JSON/],
      [3, '<json>', /bad JSON/],
    ]);
    const text = readFileSync(resolve(DATASETS_DIR, 'broken/bad_json_lines.jsonl'), 'utf8');
    const lines = text.split('\n');
    expect(r.invalid.map((i) => i.line)).toEqual([2, 4]);
    const line4Start = Buffer.byteLength(lines.slice(0, 3).join('\n') + '\n');
    expect(r.invalid[1].byteOffset).toBe(line4Start + lines[3].indexOf("'input'"));
    expect(r.valid).toBe(3);
  });

  test('alpaca field errors', async () => {
    const { report: r } = await report('broken/alpaca_field_errors.json');
    expect(r.format).toBe('alpaca');
    expectIssues(r, [
      [1, 'output', /missing output/],
      [2, 'output', /empty output/],
      [3, 'instruction', /empty turn: instruction and input are both empty/],
      [4, 'instruction', /wrong type: expected a string, got object/],
      [5, 'history[1]', /\[question, answer\] pair/],
      [6, 'output', /a preference row puts its answers in 'chosen' and 'rejected'/],
      [7, '<row>', /expected an object, got string/],
      [8, 'tools', /bad JSON in tools/],
    ]);
    expect(r.valid).toBe(2);
  });

  test('sharegpt turn errors', async () => {
    const { report: r } = await report('broken/sharegpt_turn_errors.json');
    expect(r.format).toBe('sharegpt');
    expect(r.detectedBecause).toMatch(/key 'conversations' with from\/value in \d+ % of rows/);
    expectIssues(r, [
      [1, 'conversations[1]', /non-alternating roles: turn 1 is 'human'/],
      [2, 'conversations[1].from', /unknown tag 'bot'/],
      [3, 'conversations[1].value', /empty turn/],
      [4, 'conversations[2]', /ends with a 'human' turn/],
      [5, 'conversations[1]', /only the first message may be a system prompt/],
      [6, 'conversations[1].value', /function_call content is not JSON/],
      [7, 'conversations[0].value', /wrong type: expected a string, got number/],
      [8, 'conversations', /wrong type: expected a list of messages, got string/],
      [9, 'conversations', /missing 'conversations' \(the row has 'messages'\)/],
    ]);
    expect(r.valid).toBe(2);
  });

  test('truncated JSON array', async () => {
    const { report: r } = await report('broken/truncated_array.json');
    expectIssues(r, [[2, '<json>', /unterminated string/]]);
    expect(r.warnings.join()).toMatch(/truncated file/);
  });

  test('ranking data (chosen/rejected) is read as preference pairs for stage dpo', async () => {
    const { report: r } = await report('broken/ranking_pairs.json');
    expect(r.format).toBe('ranking');
    expect(r.unsupported).toBeUndefined();
    expect(r.valid).toBe(2);
    expectIssues(r, [
      [2, 'rejected', /identical/],
      [3, 'rejected', /missing 'rejected'/],
    ]);
    accounted(r);
  });

  test('OpenAI message errors; tool calls are accepted', async () => {
    const { report: r, examples } = await report('broken/openai_message_errors.jsonl');
    expect(r.format).toBe('openai');
    expectIssues(r, [
      [1, 'messages[0].content[1]', /unsupported content part 'image_url'/],
      [2, 'messages[0].content', /missing 'content'/],
      [3, 'messages[1].role', /unknown tag 'robot'/],
    ]);
    const tool = examples.find((e) => e.row === 4)!;
    expect(tool.kind === 'chat' && tool.conversation.messages.map((m) => m.role)).toEqual([
      'user',
      'function_call',
      'observation',
      'assistant',
    ]);
    expect(tool.kind === 'chat' && JSON.parse(tool.conversation.messages[1].content)).toEqual({
      name: 'get_weather',
      arguments: { city: 'Rome' },
    });
  });

  test('CSV column count errors', async () => {
    const { report: r } = await report('broken/csv_column_errors.csv');
    expectIssues(r, [
      [1, '<csv>', /wrong number of columns: 4/],
      [2, '<csv>', /wrong number of columns: 1/],
    ]);
    expect(r.invalid.map((i) => i.line)).toEqual([3, 4]);
  });

  test('unknown format names the keys it found', async () => {
    const { report: r } = await report('broken/unknown_format.json');
    expect(r.format).toBe('unknown');
    expect(r.detectedBecause).toMatch(/found keys 'question', 'answer'/);
    expect(r.unsupported).toBeDefined();
    accounted(r);
  });
});
