import { acquireGpu, parseForcedKernels, WEBGPU_DEFAULT_LIMITS, type Gpu } from '../../src/engine/gpu/index.ts';
import { viteShaders } from '../../src/engine/shaders.vite.ts';

/** "node" (Dawn) or "browser" (Chromium): test names carry it so a failure says where. */
export const runtime: 'node' | 'browser' = typeof window === 'undefined' ? 'node' : 'browser';

let shared: Promise<Gpu> | null = null;

/** TABTUNE_KERNELS=matmul=register8x8 runs the whole suite on one variant (Node only). */
const forcedKernels = parseForcedKernels(
  typeof process === 'undefined' ? undefined : (process.env as Record<string, string | undefined>).TABTUNE_KERNELS,
);

/** One device per test file, in whichever runtime the project runs. */
export function testGpu(): Promise<Gpu> {
  const entry = (globalThis as { __tabtuneGpuEntry?: GPU }).__tabtuneGpuEntry ?? navigator.gpu;
  shared ??= acquireGpu({ gpu: entry, shaders: viteShaders, forcedKernels });
  return shared;
}

let minimal: Promise<Gpu> | null = null;

/** A device asking only for WebGPU's default limits (8 storage buffers per stage, 128 MiB bindings,
 *  16 KiB workgroup memory): the smallest adapter a user can have. */
export function minimalTestGpu(): Promise<Gpu> {
  const entry = (globalThis as { __tabtuneGpuEntry?: GPU }).__tabtuneGpuEntry ?? navigator.gpu;
  minimal ??= acquireGpu({ gpu: entry, shaders: viteShaders, limitCaps: WEBGPU_DEFAULT_LIMITS, forcedKernels });
  return minimal;
}

export function closeTestGpu(): void {
  void shared?.then((g) => g.destroy());
  shared = null;
}
