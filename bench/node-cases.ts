import { readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { BenchCase } from './types.ts';

/** Every bench/cases/*.ts, loaded from disk (Node); the browser uses import.meta.glob. */
export async function loadNodeCases(): Promise<BenchCase[]> {
  const dir = join(dirname(fileURLToPath(import.meta.url)), 'cases');
  const out: BenchCase[] = [];
  for (const f of readdirSync(dir)
    .filter((f) => f.endsWith('.ts'))
    .sort()) {
    const mod = (await import(pathToFileURL(join(dir, f)).href)) as { cases: BenchCase[] };
    out.push(...mod.cases);
  }
  return out;
}
