// Node runtime for the GPU tests: Dawn from the npm `webgpu` package on SwiftShader.
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll } from 'vitest';
import { closeTestGpu } from './context.ts';

if (!process.env.XDG_RUNTIME_DIR) process.env.XDG_RUNTIME_DIR = mkdtempSync(join(tmpdir(), 'xdg-'));
const webgpu = await import('webgpu');
Object.assign(globalThis, webgpu.globals);
(globalThis as { __tabtuneGpuEntry?: GPU }).__tabtuneGpuEntry = webgpu.create([]);

afterAll(() => {
  closeTestGpu();
  // Dawn keeps the process alive while its GPU object lives.
  delete (globalThis as { __tabtuneGpuEntry?: GPU }).__tabtuneGpuEntry;
});
