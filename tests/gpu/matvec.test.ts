// shaders/matvec.wgsl against the CPU reference written from the definition: dense f32/bf16/f16
// and NF4 (plain and double-quantized block scales) weights, odd N and K (rows of the flattened
// weight start off the 8-element octets), K = 1, up to 8 rows, offsets / row stride (a row-split
// head part), alpha/beta, every form (variant) on every case, and the 151,936-wide head with small K.
import { describe, expect, it } from 'vitest';
import { Recorder, type DType } from '../../src/engine/gpu/index.ts';
import { matvec, MATVEC_CLASS, MATVEC_VARIANT_NAMES, type MatvecVariant } from '../../src/engine/ops/matvec.ts';
import { tuneMatvec } from '../../src/engine/ops/tuner.ts';
import { dynamicMap8, releaseNf4, uploadNf4, type Nf4Host, type Nf4Weight } from '../../src/engine/ops/nf4.ts';
import { expectClose } from '../cpu/compare.ts';
import { matvecRef } from '../cpu/matvec.ts';
import { dequantizeNf4Ref, doubleQuantRef, quantizeNf4Ref } from '../cpu/nf4.ts';
import { randn } from '../cpu/random.ts';
import { runtime, testGpu } from './context.ts';
import { Scope } from './kernel-util.ts';

type Format = DType | 'nf4' | 'nf4+dq';

interface Case {
  rows: number;
  N: number;
  K: number;
  w: Format;
  blocksize?: number;
  alpha?: number;
  beta?: number;
  xOffset?: number;
  yOffset?: number;
  yRowStride?: number;
  variant?: MatvecVariant;
}

/** An NF4 weight quantized on the CPU (bitsandbytes rules) and the f32 values it decodes to. */
function nf4Weight(s: Scope, values: Float32Array, shape: number[], blocksize: number, dq: boolean) {
  const ref = quantizeNf4Ref(values, blocksize);
  const host: Nf4Host = { shape, blocksize, dtype: 'float32', packed: ref.packed, absmax: ref.absmax };
  let absmax = ref.absmax;
  if (dq) {
    const code = dynamicMap8();
    const d = doubleQuantRef(ref.absmax, code);
    host.absmax = d.codes;
    host.nested = { blocksize: 256, offset: d.offset, code, absmax: d.nestedAbsmax };
    absmax = d.decoded;
  }
  const w = uploadNf4(s.gpu, host, 'W');
  return { w, seen: dequantizeNf4Ref(ref.codes, absmax, blocksize) };
}

async function runCase(c: Case): Promise<void> {
  const s = new Scope(await testGpu());
  let nf4: Nf4Weight | null = null;
  try {
    const values = randn(c.N * c.K, c.N * 3 + c.K, 0.3);
    let w: Parameters<typeof matvec>[1]['w'];
    let seen: Float32Array;
    if (c.w === 'nf4' || c.w === 'nf4+dq') {
      ({ w: nf4, seen } = nf4Weight(s, values, [c.N, c.K], c.blocksize ?? 64, c.w === 'nf4+dq'));
      w = nf4;
    } else {
      ({ t: w, seen } = s.weight(values, c.w, [c.N, c.K], 'W'));
    }
    const xOffset = c.xOffset ?? 0;
    const yOffset = c.yOffset ?? 0;
    const stride = c.yRowStride ?? c.N;
    const xHost = randn(xOffset + c.rows * c.K, c.K + 5);
    const yHost = randn(yOffset + (c.rows - 1) * stride + c.N + 3, 17);
    const x = s.f32(xHost, [xHost.length], 'x');
    const y = s.f32(yHost, [yHost.length], 'y');
    await s.run('matvec-test', (rec) =>
      matvec(rec, {
        x,
        w,
        y,
        rows: c.rows,
        N: c.N,
        K: c.K,
        alpha: c.alpha,
        beta: c.beta,
        xOffset,
        yOffset,
        yRowStride: stride,
        variant: c.variant ?? 'split4',
      }),
    );
    const want = matvecRef(xHost, seen, yHost, c.rows, c.N, c.K, { ...c, xOffset, yOffset, yRowStride: stride });
    // f32 accumulation in another order than the f64 reference: error grows like √K.
    expectClose(await s.read(y), want, { rtol: 1e-5, atol: 2e-6 * Math.sqrt(c.K) }, `matvec ${JSON.stringify(c)}`);
  } finally {
    if (nf4) releaseNf4(s.gpu, nf4);
    s.release();
  }
}

describe(`matvec (${runtime})`, () => {
  const cases: Case[] = [
    { rows: 1, N: 1, K: 1, w: 'f32' },
    { rows: 1, N: 37, K: 1, w: 'bf16', beta: 1 },
    { rows: 3, N: 37, K: 50, w: 'f32', alpha: 0.5, beta: 1 },
    { rows: 1, N: 23, K: 131, w: 'bf16' },
    { rows: 8, N: 45, K: 77, w: 'f16', alpha: -2 },
    { rows: 2, N: 19, K: 1000, w: 'bf16', beta: 0.5 },
    { rows: 5, N: 29, K: 13, w: 'f32' },
    { rows: 1, N: 70, K: 333, w: 'f16' },
    // K a multiple of 8 (every row on whole octets) with N not one of 4.
    { rows: 3, N: 31, K: 64, w: 'bf16', beta: 1 },
    { rows: 8, N: 6, K: 24, w: 'f32', alpha: 0.5 },
    { rows: 2, N: 11, K: 21, w: 'f32', xOffset: 7, yOffset: 5, yRowStride: 40, beta: 1 },
    { rows: 1, N: 5, K: 64, w: 'nf4', blocksize: 64 },
    { rows: 4, N: 33, K: 130, w: 'nf4', blocksize: 32, beta: 1 },
    { rows: 7, N: 19, K: 201, w: 'nf4+dq', blocksize: 64, alpha: 0.25 },
    { rows: 1, N: 300, K: 3, w: 'nf4+dq', blocksize: 128 },
    { rows: 2, N: 13, K: 128, w: 'nf4+dq', blocksize: 64, beta: 1 },
    // The Qwen2.5 vocabulary as N (the output head): more workgroups than one grid dimension holds.
    { rows: 1, N: 151936, K: 3, w: 'bf16' },
    { rows: 2, N: 151936, K: 2, w: 'f32', beta: 1 },
    { rows: 1, N: 151936, K: 5, w: 'nf4', blocksize: 64 },
    { rows: 8, N: 151936, K: 9, w: 'bf16' },
  ];
  for (const c of cases) {
    for (const variant of c.variant ? [c.variant] : MATVEC_VARIANT_NAMES) {
      it(`${c.w} rows=${c.rows} N=${c.N} K=${c.K} [${variant}]`, () => runCase({ ...c, variant }));
    }
  }

  it('tuneMatvec times every split on this adapter and serves the fastest', async () => {
    const gpu = await testGpu();
    const t = await tuneMatvec(gpu);
    if (t === null) {
      // Measured earlier in this process (or forced): nothing is timed twice.
      expect(gpu.kernels.has('matvec', MATVEC_CLASS) || gpu.kernels.isForced('matvec')).toBe(true);
      return;
    }
    expect(Object.keys(t.ms).sort()).toEqual([...MATVEC_VARIANT_NAMES].sort());
    for (const v of MATVEC_VARIANT_NAMES) expect(t.ms[t.chosen]).toBeLessThanOrEqual(t.ms[v]);
    expect(gpu.kernels.pick('matvec', MATVEC_CLASS, MATVEC_VARIANT_NAMES, 'split4')).toBe(t.chosen);
    expect(await tuneMatvec(gpu)).toBeNull();
  });

  it('names the op, the operand and the limit when the arguments do not fit', async () => {
    const s = new Scope(await testGpu());
    try {
      const x = s.f32(new Float32Array(12), [12], 'xs');
      const w = s.f32(new Float32Array(12), [4, 3], 'ws');
      const y = s.f32(new Float32Array(40), [40], 'ys');
      const rec = new Recorder(s.gpu);
      await expect(matvec(rec, { x, w, y, rows: 9, N: 4, K: 1 })).rejects.toThrow(/matvec.*rows must be ≤ 8/);
      await expect(matvec(rec, { x, w, y, rows: 2, N: 4, K: 4 })).rejects.toThrow(/W needs 16 elements but ws/);
      await expect(matvec(rec, { x, w, y, rows: 1, N: 3, K: 4, xOffset: 10 })).rejects.toThrow(/x needs 14 elements/);
      await expect(matvec(rec, { x, w: x, y: x, rows: 1, N: 3, K: 4 })).rejects.toThrow(/share one buffer/);
      await rec.submit();
    } finally {
      s.release();
    }
  });
});
