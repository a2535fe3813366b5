// Node's memory of which kernel variants won on an adapter (src/engine/ops/tuner.ts): one JSON
// file keyed by adapter (TABTUNE_KERNEL_CACHE, default ~/.cache/tabtune/kernels.json).
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import type { KernelChoiceStore } from './gpu/kernel-choices.ts';

export function defaultKernelCachePath(env: NodeJS.ProcessEnv = process.env): string {
  return env.TABTUNE_KERNEL_CACHE || join(homedir(), '.cache', 'tabtune', 'kernels.json');
}

type CacheFile = Record<string, Record<string, string>>;

function read(file: string): CacheFile {
  try {
    const j = JSON.parse(readFileSync(file, 'utf8')) as unknown;
    return j && typeof j === 'object' && !Array.isArray(j) ? (j as CacheFile) : {};
  } catch {
    return {}; // missing or damaged: measure again rather than fail a run over a cache
  }
}

export function nodeKernelStore(file = defaultKernelCachePath()): KernelChoiceStore {
  return {
    load: async (adapterKey) => read(file)[adapterKey],
    save: async (adapterKey, choices) => {
      const all = { ...read(file), [adapterKey]: choices };
      mkdirSync(dirname(file), { recursive: true });
      const tmp = `${file}.${process.pid}.tmp`;
      writeFileSync(tmp, JSON.stringify(all, null, 1));
      renameSync(tmp, file); // never leave a half-written cache behind
    },
  };
}
