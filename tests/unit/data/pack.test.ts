import { describe, expect, test } from 'vitest';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import {
  IGNORE_INDEX,
  collateBatch,
  greedyKnapsack,
  packExamples,
  parseDataset,
  prepareDataset,
  splitTrainVal,
  takeMaxSamples,
  textStats,
  tokenStats,
  histogram,
  niceStep,
  type EncodedExample,
} from '../../../src/data/index.ts';
import { DATASETS_DIR, lenmlTokenizer } from './helpers.ts';

function ex(row: number, n: number, trainedFrom = 0): EncodedExample {
  const inputIds = Int32Array.from({ length: n }, (_, i) => 1000 * (row + 1) + i);
  const labels = inputIds.map((v, i) => (i < trainedFrom ? IGNORE_INDEX : v));
  return { row, inputIds, labels, fullLength: n, truncated: false };
}

describe('packing', () => {
  test('greedy knapsack as LLaMA-Factory: longest item that still fits, ascending order', () => {
    // sorted [2, 3, 5, 7, 8]; cap 10: take 8 then 2 → [8,2]; then 7 then 3 → [7,3]; then [5]
    expect(greedyKnapsack([5, 8, 2, 7, 3], 10).map((g) => g.map((i) => [5, 8, 2, 7, 3][i]))).toEqual([
      [8, 2],
      [7, 3],
      [5],
    ]);
    expect(greedyKnapsack([11, 4], 10)).toEqual([[1]]); // too long: not packed (callers truncate first)
  });

  test('packed sequences: boundaries, position ids, labels, padding', () => {
    const exs = [ex(0, 5, 2), ex(1, 8, 3), ex(2, 2), ex(3, 7), ex(4, 3)];
    const packed = packExamples(exs, 10, 0);
    expect(packed).toHaveLength(3);
    const p0 = packed[0];
    expect(p0.rows).toEqual([1, 2]);
    expect(Array.from(p0.seqStarts)).toEqual([0, 8, 10]);
    expect(Array.from(p0.positionIds)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 0, 1]);
    expect(Array.from(p0.inputIds.subarray(0, 8))).toEqual(Array.from(exs[1].inputIds));
    expect(Array.from(p0.labels.subarray(0, 3))).toEqual([-100, -100, -100]);
    const p2 = packed[2];
    expect(p2.rows).toEqual([0]);
    expect(Array.from(p2.seqStarts)).toEqual([0, 5]);
    expect(Array.from(p2.inputIds.subarray(5))).toEqual([0, 0, 0, 0, 0]);
    expect(Array.from(p2.labels.subarray(5))).toEqual(Array(5).fill(-100));
    expect(Array.from(p2.positionIds.subarray(5))).toEqual(Array(5).fill(0));
    // every example is packed exactly once, and every token of it is kept
    expect(packed.flatMap((p) => p.rows).sort()).toEqual([0, 1, 2, 3, 4]);
    const tokens = packed.reduce((a, p) => a + p.seqStarts[p.seqStarts.length - 1], 0);
    expect(tokens).toBe(5 + 8 + 2 + 7 + 3);
    expect(() => packExamples([ex(0, 11)], 10, 0)).toThrow(/truncate first/);
  });
});

describe('padded batches', () => {
  test('right padding to the longest row (rounded up), labels -100, lengths', () => {
    const b = collateBatch([ex(0, 3, 1), ex(1, 5)], 7, 4);
    expect(b.seqLen).toBe(8);
    expect(Array.from(b.lengths)).toEqual([3, 5]);
    expect(Array.from(b.inputIds.subarray(0, 8))).toEqual([1000, 1001, 1002, 7, 7, 7, 7, 7]);
    expect(Array.from(b.labels.subarray(0, 8))).toEqual([-100, 1001, 1002, -100, -100, -100, -100, -100]);
    expect(Array.from(b.positionIds.subarray(8, 16))).toEqual([0, 1, 2, 3, 4, 0, 0, 0]);
    expect(b.rows).toEqual([0, 1]);
  });
});

describe('max_samples, val_size, statistics', () => {
  test('max_samples keeps the first rows', () => {
    expect(takeMaxSamples([1, 2, 3, 4], 2)).toEqual([1, 2]);
    expect(takeMaxSamples([1, 2], 5)).toEqual([1, 2]);
  });
  test('val_size split: deterministic per seed, disjoint, sizes by fraction or count', () => {
    const items = Array.from({ length: 100 }, (_, i) => i);
    const a = splitTrainVal(items, 0.1, 7);
    expect(a.val).toHaveLength(10);
    expect(a.train).toHaveLength(90);
    expect(new Set([...a.train, ...a.val]).size).toBe(100);
    expect(splitTrainVal(items, 0.1, 7)).toEqual(a);
    expect(splitTrainVal(items, 0.1, 8).val).not.toEqual(a.val);
    expect(splitTrainVal(items, 25, 1).val).toHaveLength(25);
    expect(splitTrainVal(items, 0, 1).val).toEqual([]);
  });
  test('token statistics: histogram, truncation %, trained tokens', () => {
    const exs = [ex(0, 4, 2), ex(1, 6, 1), { ...ex(2, 8, 4), fullLength: 20, truncated: true }];
    const s = tokenStats(exs, 8, 4);
    expect(s.examples).toBe(3);
    expect(s.truncated).toBe(1);
    expect(s.truncatedPct).toBeCloseTo(100 / 3);
    expect(s.totalTokens).toBe(18);
    expect(s.trainedTokens).toBe(2 + 5 + 4);
    expect(s.maxTokens).toBe(20);
    expect(s.histogram.counts.reduce((a, b) => a + b, 0)).toBe(3);
    expect(histogram([0, 1, 9, 10], 2, 10)).toEqual({ edges: [0, 5, 10], counts: [2, 2] });
    expect(s.histogram.edges.at(-1)).toBe(20); // spans the lengths seen (20 > cutoff 8), nice width 5
    expect(s.histogram.edges).toEqual([0, 5, 10, 15, 20]);
  });
  test('histogram: short rows under a long cutoff spread over the bars, widths are 1/2/5·10ᵏ', () => {
    const lengths = Array.from({ length: 200 }, (_, i) => 30 + (i % 91)); // 30..120 tokens
    const exs = lengths.map((n, i) => ({ ...ex(i, n, 1), fullLength: n }));
    const h = tokenStats(exs, 2048).histogram;
    expect(h.edges.at(-1)).toBeGreaterThanOrEqual(120);
    expect(h.edges.at(-1)).toBeLessThan(200);
    expect(h.counts.filter((c) => c > 0).length).toBeGreaterThanOrEqual(8); // up to cutoff 2048 they would share one bar
    expect(h.counts.reduce((a, b) => a + b, 0)).toBe(200);
    expect([0.3, 1, 1.5, 3, 7, 12, 20, 21, 99, 101, 4999].map(niceStep)).toEqual([
      1, 1, 2, 5, 10, 20, 20, 50, 100, 200, 5000,
    ]);
  });
});

describe('prepareDataset end to end', () => {
  test('alpaca demo with the Qwen3 tokenizer: every row encoded, packing keeps every token', async () => {
    const { report, examples } = await parseDataset(readFileSync(resolve(DATASETS_DIR, 'alpaca_en_zh_demo.json')), {
      fileName: 'alpaca_en_zh_demo.json',
    });
    const tok = await lenmlTokenizer('qwen3');
    const p = prepareDataset(examples, tok, { cutoffLen: 256, valSize: 0.1, seed: 1, packing: true });
    expect(p.invalid).toEqual([]);
    expect(p.train.length + p.val.length).toBe(report.valid);
    expect(p.stats.trainedTokens).toBeGreaterThan(0);
    expect(p.stats.examples).toBe(report.valid);
    const packedTokens = p.packed!.reduce((a, s) => a + s.seqStarts[s.seqStarts.length - 1], 0);
    expect(packedTokens).toBe(p.train.reduce((a, e) => a + e.inputIds.length, 0));
    expect(p.packed!.every((s) => s.inputIds.length === 256)).toBe(true);
    const text = textStats(examples, report.duplicateGroups);
    expect(text.chat).toBe(report.valid);
  });

  test('rows a template cannot encode are reported, not dropped', async () => {
    const tok = await lenmlTokenizer('qwen3');
    const bad = {
      kind: 'chat' as const,
      row: 7,
      line: 9,
      conversation: {
        messages: [
          { role: 'user' as const, content: 'q' },
          { role: 'assistant' as const, content: 'a' },
        ],
      },
    };
    const p = prepareDataset([bad], tok, { cutoffLen: 64 }, undefined);
    expect(p.invalid).toEqual([]);
    const raising = prepareDataset(
      [bad],
      tok,
      { cutoffLen: 64 },
      (await import('../../../src/data/index.ts')).chatTemplateFor(tok, {
        template: "{{ raise_exception('no system prompt') }}",
      }),
    );
    expect(raising.invalid).toEqual([
      {
        row: 7,
        line: 9,
        field: '<template>',
        reason: expect.stringMatching(/no system prompt/),
        code: 'template-error',
        params: { message: expect.stringMatching(/no system prompt/) },
      },
    ]);
    expect(raising.train).toEqual([]);
    const tiny = prepareDataset([bad], tok, { cutoffLen: 1 });
    expect(tiny.invalid[0].reason).toMatch(/no trained token left after cutoff_len 1/);
  });

  test('duplicates are found at parse time', async () => {
    const rows = [
      { instruction: 'a', output: 'b' },
      { instruction: 'c', output: 'd' },
      { instruction: 'a', output: 'b' },
    ];
    const { report } = await parseDataset(JSON.stringify(rows), { fileName: 'd.json' });
    expect(report.duplicateGroups).toEqual([[0, 2]]);
    expect(report.warnings.join()).toMatch(/1 row\(s\) repeat an earlier row/);
  });
});
