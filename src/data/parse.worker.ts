// A dedicated Worker that parses a dataset file off the main thread and posts progress, so a 200 MB
// file never freezes the page. Messages in: ParseRequest; out: ParseMessage (same `id`).
//   const w = new Worker(new URL('./parse.worker.ts', import.meta.url), { type: 'module' });
import { parseDataset } from './parse.ts';
import type { DatasetInfoEntry, Example, Progress, ValidationReport } from './types.ts';

export interface ParseRequest {
  id: number;
  file: Blob;
  fileName: string;
  datasetInfo?: DatasetInfoEntry;
}

export type ParseMessage =
  | { id: number; type: 'progress'; progress: Progress }
  | { id: number; type: 'done'; report: ValidationReport; examples: Example[]; ms: number }
  | { id: number; type: 'error'; message: string };

const scope = self as unknown as {
  postMessage(m: ParseMessage): void;
  onmessage: ((e: MessageEvent<ParseRequest>) => void) | null;
};

scope.onmessage = async (e) => {
  const { id, file, fileName, datasetInfo } = e.data;
  const t0 = performance.now();
  try {
    const { report, examples } = await parseDataset(file, {
      fileName,
      datasetInfo,
      onProgress: (progress) => scope.postMessage({ id, type: 'progress', progress }),
    });
    scope.postMessage({ id, type: 'done', report, examples, ms: performance.now() - t0 });
  } catch (err) {
    scope.postMessage({ id, type: 'error', message: (err as Error).message });
  }
};
