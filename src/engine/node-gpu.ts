import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { acquireGpu, type Gpu } from './gpu/index.ts';
import type { ShaderSources } from './gpu/shader-library.ts';

const SWIFTSHADER_ICD = '/usr/lib/chromium/vk_swiftshader_icd.json';

/**
 * A GPU in Node through Dawn (the npm `webgpu` package). On a machine without a GPU the
 * Debian chromium package's SwiftShader Vulkan driver is the only adapter Dawn accepts.
 */
export async function nodeGpu(shaders: ShaderSources, opts: { forceSwiftShader?: boolean } = {}): Promise<{ gpu: Gpu; close: () => void }> {
  if (opts.forceSwiftShader && !process.env.VK_ICD_FILENAMES) process.env.VK_ICD_FILENAMES = SWIFTSHADER_ICD;
  if (!process.env.XDG_RUNTIME_DIR) process.env.XDG_RUNTIME_DIR = mkdtempSync(join(tmpdir(), 'xdg-'));
  const webgpu = await import('webgpu');
  Object.assign(globalThis, webgpu.globals);
  let entry: GPU | null = webgpu.create([]);
  let g: Gpu;
  try {
    g = await acquireGpu({ gpu: entry, shaders });
  } catch (e) {
    if (process.env.VK_ICD_FILENAMES || opts.forceSwiftShader === false) throw e;
    // No real GPU driver: retry on SwiftShader.
    process.env.VK_ICD_FILENAMES = SWIFTSHADER_ICD;
    entry = webgpu.create([]);
    g = await acquireGpu({ gpu: entry, shaders });
  }
  return {
    gpu: g,
    close: () => {
      g.destroy();
      entry = null; // Dawn keeps the process alive while the GPU object lives.
    },
  };
}
