import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { INCLUDE_DIR, type ShaderSources } from './gpu/shader-library.ts';

/** The same shaders/*.wgsl and shaders/include/*.wgsl files, read from disk for Node without Vite (CLI, bench). */
export function nodeShaders(dir = join(dirname(fileURLToPath(import.meta.url)), '../../shaders')): ShaderSources {
  const out: Record<string, string> = {};
  for (const sub of ['', INCLUDE_DIR]) {
    for (const f of readdirSync(join(dir, sub))) {
      if (f.endsWith('.wgsl')) out[(sub ? `${sub}/` : '') + f.slice(0, -5)] = readFileSync(join(dir, sub, f), 'utf8');
    }
  }
  return out;
}
