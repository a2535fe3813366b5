// The dispatch profiler (src/engine/gpu/profiler.ts): every dispatch recorded while it runs is
// timed under its kernel's name (layers merged), results are unchanged by the one-pass-per-dispatch
// recording, and an adapter without timestamp queries says so instead of reporting nothing.
import { describe, expect, it } from 'vitest';
import { kernelName } from '../../src/engine/gpu/profiler.ts';
import { matmul } from '../../src/engine/ops/matmul.ts';
import { matmulRef } from '../cpu/matmul.ts';
import { expectClose } from '../cpu/compare.ts';
import { randn } from '../cpu/random.ts';
import { runtime, testGpu } from './context.ts';
import { Scope } from './kernel-util.ts';

describe(`dispatch profiler (${runtime})`, () => {
  it('merges layers into one kernel name', () => {
    expect(kernelName('matmul model.layers.7.mlp.up_proj.weight[4×8:bf16] M=3')).toBe(
      'matmul model.layers.N.mlp.up_proj.weight[4×8:bf16] M=3',
    );
    expect(kernelName('rmsnorm x[3×8:f32] rows=3')).toBe('rmsnorm x[3×8:f32] rows=3');
  });

  it('times every dispatch by kernel while the results stay those of an unprofiled run', async () => {
    const s = new Scope(await testGpu());
    try {
      if (!s.gpu.hasFeature('timestamp-query')) {
        expect(() => s.gpu.startProfiling()).toThrow(/timestamp queries/);
        return;
      }
      const [M, N, K] = [5, 7, 9];
      const aHost = randn(M * K, 1);
      const bHost = randn(K * N, 2);
      const a = s.f32(aHost, [M, K], 'a');
      const b = s.f32(bHost, [K, N], 'b');
      const c1 = s.nan(M * N, 'c1');
      const c2 = s.nan(M * N, 'c2');
      const profiler = s.gpu.startProfiling();
      try {
        await s.run('profiled', async (rec) => {
          await matmul(rec, { a, b, c: c1, M, N, K });
          await matmul(rec, { a, b, c: c1, M, N, K, beta: 1 });
          await matmul(rec, { a, b, c: c2, M, N, K });
        });
      } finally {
        s.gpu.profiler = null;
      }
      const times = await profiler.report();
      expect(times.reduce((n, t) => n + t.count, 0)).toBe(3);
      const c1Kernel = times.find((t) => t.kernel.includes('c1['));
      expect(c1Kernel?.count).toBe(2);
      for (const t of times) expect(t.ms).toBeGreaterThanOrEqual(0);
      const want = matmulRef(aHost, bHost, M, N, K);
      expectClose(await s.read(c2), want, { rtol: 1e-5, atol: 1e-5 }, 'profiled product');
      expectClose(
        await s.read(c1),
        want.map((v) => 2 * v),
        { rtol: 1e-5, atol: 1e-5 },
        'profiled accumulation',
      );
    } finally {
      s.release();
    }
  });
});
