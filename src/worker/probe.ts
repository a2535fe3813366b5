import { GpuError } from '../engine/gpu/errors.ts';
import { acquireGpu, type AdapterReport, type Gpu } from '../engine/gpu/device.ts';
import { Recorder } from '../engine/gpu/recorder.ts';
import { readF32, releaseTensor, tensorSpec, uploadTensor } from '../engine/gpu/transfer.ts';
import { matmul } from '../engine/ops/matmul.ts';
import type { ShaderSources } from '../engine/gpu/shader-library.ts';

export type ProbeResult =
  | { ok: true; adapter: AdapterReport; selfTest: { kernel: string; ms: number; maxError: number }; software: boolean }
  | { ok: false; kind: string; message: string };

/** Finds the GPU from inside the Worker and proves a real kernel runs on it. */
export async function probeGpu(
  shaders: ShaderSources,
  onLost: (info: { reason: string; message: string }) => void,
): Promise<{ result: ProbeResult; gpu: Gpu | null }> {
  let gpu: Gpu;
  try {
    gpu = await acquireGpu({ shaders, onLost });
  } catch (e) {
    const kind = e instanceof GpuError ? e.kind : 'internal';
    return { result: { ok: false, kind, message: (e as Error).message }, gpu: null };
  }
  try {
    const selfTest = await matmulSelfTest(gpu);
    const software =
      /swiftshader|llvmpipe|lavapipe|warp|basic render/i.test(
        `${gpu.adapter.architecture} ${gpu.adapter.description} ${gpu.adapter.vendor}`,
      ) || gpu.adapter.isFallbackAdapter;
    return { result: { ok: true, adapter: gpu.adapter, selfTest, software }, gpu };
  } catch (e) {
    gpu.destroy();
    return {
      result: { ok: false, kind: e instanceof GpuError ? e.kind : 'internal', message: (e as Error).message },
      gpu: null,
    };
  }
}

async function matmulSelfTest(gpu: Gpu) {
  const n = 64;
  const a = new Float32Array(n * n).map((_, i) => ((i % 7) - 3) / 4);
  const b = new Float32Array(n * n).map((_, i) => ((i % 5) - 2) / 3);
  const ta = uploadTensor(gpu, a, tensorSpec('f32', [n, n], 'scratch', 'selftest.a'));
  const tb = uploadTensor(gpu, b, tensorSpec('f32', [n, n], 'scratch', 'selftest.b'));
  const tc = uploadTensor(gpu, new Float32Array(n * n), tensorSpec('f32', [n, n], 'scratch', 'selftest.c'));
  const t0 = performance.now();
  const rec = new Recorder(gpu, 'self-test');
  await matmul(rec, { a: ta, b: tb, c: tc, M: n, N: n, K: n });
  await rec.submit();
  const got = await readF32(gpu, tc);
  const ms = performance.now() - t0;
  let maxError = 0;
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let k = 0; k < n; k++) s += a[i * n + k] * b[k * n + j];
      maxError = Math.max(maxError, Math.abs(s - got[i * n + j]));
    }
  }
  for (const t of [ta, tb, tc]) releaseTensor(gpu, t);
  if (maxError > 1e-3)
    throw new GpuError('internal', 'self-test matmul 64³', `GPU result differs from the CPU by ${maxError}`);
  return { kernel: 'matmul 64³', ms: Math.round(ms * 10) / 10, maxError };
}
