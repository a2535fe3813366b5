// A 100k-row JSONL parsed streaming, with progress, from a ReadableStream (as a Blob in a Worker).
import { expect, test } from 'vitest';
import { parseDataset, type Progress } from '../../../src/data/index.ts';

export function bigJsonl(rows: number): string {
  const out: string[] = [];
  for (let i = 0; i < rows; i++) {
    if (i % 10_000 === 9_999) out.push(`{"instruction": "row ${i}", "output": `); // a broken row
    else if (i % 3 === 0) out.push(JSON.stringify({ conversations: [{ from: 'human', value: `Question ${i}: what is ${i} + 1?` }, { from: 'gpt', value: `${i + 1}` }] }));
    else out.push(JSON.stringify({ conversations: [{ from: 'human', value: `Say ${i} in words.` }, { from: 'gpt', value: `Number ${i}, 数字 ${i}.` }] }));
  }
  return out.join('\n') + '\n';
}

test('100k-row JSONL: streaming with progress, every row accounted for', async () => {
  const text = bigJsonl(100_000);
  const blob = new Blob([text]);
  const progress: Progress[] = [];
  const t0 = performance.now();
  const { report, examples } = await parseDataset(blob.stream(), { fileName: 'big.jsonl', onProgress: (p) => progress.push(p) });
  const ms = performance.now() - t0;
  expect(report.rows).toBe(100_000);
  expect(report.format).toBe('sharegpt');
  expect(report.invalid.map((i) => i.line)).toEqual([10_000, 20_000, 30_000, 40_000, 50_000, 60_000, 70_000, 80_000, 90_000, 100_000]);
  expect(report.valid).toBe(99_990);
  expect(examples).toHaveLength(99_990);
  expect(progress.length).toBeGreaterThan(3);
  expect(progress[progress.length - 1].bytesDone).toBe(blob.size);
  expect(progress[progress.length - 1].rows).toBe(100_000);
  for (let i = 1; i < progress.length; i++) expect(progress[i].bytesDone).toBeGreaterThanOrEqual(progress[i - 1].bytesDone);
  console.log(`100k rows, ${(blob.size / 1e6).toFixed(1)} MB parsed in ${ms.toFixed(0)} ms`);
});
