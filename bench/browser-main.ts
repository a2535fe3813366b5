import { acquireGpu } from '../src/engine/gpu/index.ts';
import { viteShaders } from '../src/engine/shaders.vite.ts';
import { runCases } from './runner.ts';
import type { BenchCase } from './types.ts';

const modules = import.meta.glob('./cases/*.ts', { eager: true }) as Record<string, { cases: BenchCase[] }>;
const params = new URLSearchParams(location.search);
const log = document.getElementById('log')!;
const w = window as unknown as { __bench?: unknown; __benchError?: string };
try {
  const gpu = await acquireGpu({ shaders: viteShaders });
  const cases = Object.keys(modules)
    .sort()
    .flatMap((k) => modules[k].cases);
  const results = await runCases(gpu, cases, {
    runs: Number(params.get('runs') ?? 5),
    filter: params.get('filter') ?? undefined,
    full: params.has('full'),
    log: (l) => (log.textContent += `\n${l}`),
  });
  w.__bench = { adapter: gpu.adapter, results };
} catch (e) {
  w.__benchError = String((e as Error).stack ?? e);
}
