import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ShaderSources } from './gpu/shader-library.ts';

/** The same shaders/*.wgsl files, read from disk for Node without Vite (CLI, bench). */
export function nodeShaders(dir = join(dirname(fileURLToPath(import.meta.url)), '../../shaders')): ShaderSources {
  const out: Record<string, string> = {};
  for (const f of readdirSync(dir)) if (f.endsWith('.wgsl')) out[f.slice(0, -5)] = readFileSync(join(dir, f), 'utf8');
  return out;
}
