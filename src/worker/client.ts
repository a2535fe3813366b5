import * as Comlink from 'comlink';
import type { TabtuneWorker } from './api.ts';

export type WorkerApi = Comlink.Remote<TabtuneWorker>;

/** Starts the dedicated Worker that owns the GPU; the UI talks to it only through this. */
export function startWorker(): { api: WorkerApi; worker: Worker } {
  const worker = new Worker(new URL('./worker.ts', import.meta.url), { type: 'module', name: 'tabtune-engine' });
  return { api: Comlink.wrap<TabtuneWorker>(worker), worker };
}

export { Comlink };
