// The 100k-row JSONL parsed in a real dedicated Worker (Vite module worker), with progress messages.
import { expect, test } from 'vitest';
import type { ParseMessage } from '../../src/data/parse.worker.ts';
import { BROKEN_LINES, bigJsonl } from '../unit/data/big.ts';

test('100k-row JSONL in a dedicated Worker: progress, report, examples', async () => {
  const file = new File([bigJsonl(100_000)], 'big.jsonl');
  const worker = new Worker(new URL('../../src/data/parse.worker.ts', import.meta.url), { type: 'module' });
  const progress: number[] = [];
  try {
    const done = await new Promise<Extract<ParseMessage, { type: 'done' }>>((resolve, reject) => {
      worker.onerror = (e) => reject(new Error(e.message));
      worker.onmessage = (e: MessageEvent<ParseMessage>) => {
        const m = e.data;
        if (m.type === 'progress') progress.push(m.progress.bytesDone);
        else if (m.type === 'done') resolve(m);
        else reject(new Error(m.message));
      };
      worker.postMessage({ id: 1, file, fileName: file.name });
    });
    expect(done.id).toBe(1);
    expect(done.report.rows).toBe(100_000);
    expect(done.report.format).toBe('sharegpt');
    expect(done.report.valid).toBe(99_990);
    expect(done.report.invalid.map((i) => i.line)).toEqual(BROKEN_LINES);
    expect(done.examples).toHaveLength(99_990);
    expect(progress.length).toBeGreaterThan(3);
    expect(progress[progress.length - 1]).toBe(file.size);
  } finally {
    worker.terminate();
  }
});
