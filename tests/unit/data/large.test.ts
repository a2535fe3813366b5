// A 100k-row JSONL parsed streaming, with progress, from a ReadableStream (as a Blob in a Worker).
import { expect, test } from 'vitest';
import { parseDataset, type Progress } from '../../../src/data/index.ts';
import { BROKEN_LINES, bigJsonl } from './big.ts';

test('100k-row JSONL: streaming with progress, every row accounted for', async () => {
  const text = bigJsonl(100_000);
  const blob = new Blob([text]);
  const progress: Progress[] = [];
  const t0 = performance.now();
  const { report, examples } = await parseDataset(blob.stream(), {
    fileName: 'big.jsonl',
    onProgress: (p) => progress.push(p),
  });
  const ms = performance.now() - t0;
  expect(report.rows).toBe(100_000);
  expect(report.format).toBe('sharegpt');
  expect(report.invalid.map((i) => i.line)).toEqual(BROKEN_LINES);
  expect(report.valid).toBe(99_990);
  expect(examples).toHaveLength(99_990);
  expect(progress.length).toBeGreaterThan(3);
  expect(progress[progress.length - 1].bytesDone).toBe(blob.size);
  expect(progress[progress.length - 1].rows).toBe(100_000);
  for (let i = 1; i < progress.length; i++)
    expect(progress[i].bytesDone).toBeGreaterThanOrEqual(progress[i - 1].bytesDone);
  console.log(`100k rows, ${(blob.size / 1e6).toFixed(1)} MB parsed in ${ms.toFixed(0)} ms`);
});
