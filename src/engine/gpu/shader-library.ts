import { GpuError } from './errors.ts';

/**
 * WGSL sources by path under shaders/ without extension: kernels by file name ("matmul" for
 * shaders/matmul.wgsl), include files with their folder ("include/packed16" for
 * shaders/include/packed16.wgsl). The browser build fills it through Vite (`?raw`), Node reads
 * the same files from disk: see src/engine/shaders.vite.ts and src/engine/shaders.node.ts.
 */
export type ShaderSources = Readonly<Record<string, string>>;

/** Compile-time constants for a kernel; numbers keep their WGSL spelling via `wgslValue`. */
export type ShaderConstants = Readonly<Record<string, number | boolean | string>>;

const INCLUDE = /^[ \t]*#include\s+"([\w{}-]+)"[ \t]*$/gm;
/** `#include "name"` reads shaders/include/name.wgsl. */
export const INCLUDE_DIR = 'include';
const PLACEHOLDER = /\{\{(\w+)\}\}/g;

/**
 * Expands `#include "name"` lines (shaders/include/name.wgsl, each file once; the name may be a
 * `{{NAME}}` placeholder, so one kernel can pull in, say, the weight decoder its constants
 * select) and `{{NAME}}` placeholders.
 * Unknown includes, missing constants and unused constants are errors: a typo in a
 * constant name must not silently compile a different kernel.
 */
export function resolveShader(sources: ShaderSources, name: string, constants: ShaderConstants = {}): string {
  const seen = new Set<string>();
  const used = new Set<string>();
  const substitute = (text: string): string =>
    text.replace(PLACEHOLDER, (_, key: string) => {
      if (!(key in constants)) throw new GpuError('compile', name, `constant {{${key}}} has no value`);
      used.add(key);
      return wgslValue(constants[key]);
    });
  const expand = (file: string, key: string, from: string): string => {
    const src = sources[key];
    if (src === undefined) throw new GpuError('compile', name, `shader "${file}" not found (included from ${from})`);
    if (seen.has(key)) return '';
    seen.add(key);
    return src.replace(INCLUDE, (_, inc: string) => {
      const included = substitute(inc);
      return expand(included, `${INCLUDE_DIR}/${included}`, file);
    });
  };
  const text = substitute(expand(name, name, 'the pipeline cache'));
  const unused = Object.keys(constants).filter((k) => !used.has(k));
  if (unused.length) throw new GpuError('compile', name, `constants never used by the shader: ${unused.join(', ')}`);
  return text;
}

export function wgslValue(v: number | boolean | string): string {
  if (typeof v === 'boolean') return v ? 'true' : 'false';
  if (typeof v === 'string') return v;
  if (Number.isInteger(v)) return `${v}`;
  return `${v}`;
}

export function constantsKey(name: string, constants: ShaderConstants = {}): string {
  const keys = Object.keys(constants).sort();
  return `${name}|${keys.map((k) => `${k}=${constants[k]}`).join(',')}`;
}
