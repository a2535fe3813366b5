import { acquireGpu, type Gpu } from '../../src/engine/gpu/index.ts';
import { viteShaders } from '../../src/engine/shaders.vite.ts';

/** "node" (Dawn) or "browser" (Chromium): test names carry it so a failure says where. */
export const runtime: 'node' | 'browser' = typeof window === 'undefined' ? 'node' : 'browser';

let shared: Promise<Gpu> | null = null;

/** One device per test file, in whichever runtime the project runs. */
export function testGpu(): Promise<Gpu> {
  const entry = (globalThis as { __tabtuneGpuEntry?: GPU }).__tabtuneGpuEntry ?? navigator.gpu;
  shared ??= acquireGpu({ gpu: entry, shaders: viteShaders });
  return shared;
}

export function closeTestGpu(): void {
  void shared?.then((g) => g.destroy());
  shared = null;
}
