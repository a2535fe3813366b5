import { describe, expect, it } from 'vitest';
import { Recorder, readF32, releaseTensor, tensorSpec, uploadTensor, type DType } from '../../src/engine/gpu/index.ts';
import { matmul, MATMUL_VARIANT_NAMES, type MatmulVariant } from '../../src/engine/ops/matmul.ts';
import { fromBf16, fromF16, toBf16, toF16 } from '../../src/engine/numeric/half.ts';
import { expectClose, relError } from '../cpu/compare.ts';
import { matmulRef } from '../cpu/matmul.ts';
import { randn } from '../cpu/random.ts';
import { loadFixture } from '../reference/fixtures.ts';
import { runtime, testGpu } from './context.ts';

interface Case {
  M: number;
  N: number;
  K: number;
  batch?: number;
  transA?: boolean;
  transB?: boolean;
  bType?: DType;
  beta?: number;
}

async function runCase(c: Case, variant: MatmulVariant) {
  const gpu = await testGpu();
  const batch = c.batch ?? 1;
  const aHost = randn(batch * c.M * c.K, c.M * 7 + c.K);
  let bHost = randn(batch * c.K * c.N, c.N * 13 + c.K);
  const cInit = randn(batch * c.M * c.N, 99);
  const bType = c.bType ?? 'f32';
  let bUpload: Float32Array | Uint16Array = bHost;
  if (bType === 'bf16') {
    bUpload = toBf16(bHost);
    bHost = fromBf16(bUpload);
  } else if (bType === 'f16') {
    bUpload = toF16(bHost);
    bHost = fromF16(bUpload);
  }
  const a = uploadTensor(gpu, aHost, tensorSpec('f32', [batch * c.M * c.K], 'activations', 'A'));
  const b = uploadTensor(gpu, bUpload, tensorSpec(bType, [batch * c.K * c.N], 'weights', 'B'));
  const out = uploadTensor(gpu, cInit, tensorSpec('f32', [batch * c.M * c.N], 'activations', 'C'));
  const rec = new Recorder(gpu, 'matmul-test');
  await matmul(rec, {
    a,
    b,
    c: out,
    M: c.M,
    N: c.N,
    K: c.K,
    batch,
    transA: c.transA,
    transB: c.transB,
    alpha: 0.5,
    beta: c.beta ?? 0,
    variant,
  });
  await rec.submit();
  const got = await readF32(gpu, out);
  for (const t of [a, b, out]) releaseTensor(gpu, t);
  const want = matmulRef(aHost, bHost, c.M, c.N, c.K, { ...c, alpha: 0.5, beta: c.beta ?? 0, c: cInit });
  expectClose(got, want, { rtol: 1e-4, atol: 1e-4 * Math.sqrt(c.K) }, `matmul ${variant} ${JSON.stringify(c)}`);
  return got;
}

describe(`matmul (${runtime})`, () => {
  const cases: Case[] = [
    { M: 1, N: 1, K: 1 },
    { M: 37, N: 23, K: 50 },
    { M: 37, N: 23, K: 50, transB: true },
    { M: 37, N: 23, K: 50, transA: true },
    { M: 37, N: 23, K: 50, transA: true, transB: true, beta: 1 },
    { M: 128, N: 96, K: 257, transB: true },
    { M: 65, N: 130, K: 17, batch: 3 },
    { M: 37, N: 23, K: 50, transB: true, bType: 'bf16' },
    { M: 130, N: 129, K: 9, transA: true, transB: true },
    { M: 3, N: 200, K: 33, transB: true, beta: 1 },
    { M: 33, N: 47, K: 31, bType: 'f16' },
    { M: 21, N: 35, K: 19, transB: true, bType: 'f16', beta: 1 },
    // Octet-aligned B (octet8x8 reads whole octets): rows of 8·j columns, or K runs of 8·j.
    { M: 37, N: 24, K: 40 },
    { M: 37, N: 24, K: 40, bType: 'bf16', transA: true },
    { M: 19, N: 70, K: 48, transB: true, bType: 'bf16' },
    { M: 19, N: 70, K: 48, transB: true, bType: 'f16', beta: 1 },
    { M: 9, N: 16, K: 24, batch: 3, transB: true },
    { M: 9, N: 16, K: 23, batch: 2 },
    // Octet-aligned K in whole 64-element stretches, N not a multiple of 8.
    { M: 19, N: 21, K: 128, transB: true, bType: 'bf16' },
    { M: 10, N: 5, K: 64, batch: 2, transB: true, beta: 1 },
  ];
  // Every variant meets the same reference at the same odd shapes (partial tiles on every edge).
  for (const variant of MATMUL_VARIANT_NAMES) {
    for (const c of cases)
      it(`${variant} M=${c.M} N=${c.N} K=${c.K} ${JSON.stringify(c)}`, async () => void (await runCase(c, variant)));
  }

  // Every variant adds one fma per k in increasing k, so a run's numbers do not depend on which
  // one the tuner picked on this adapter.
  it('every variant gives bit-identical results', async () => {
    for (const c of cases) {
      const [first, ...rest] = await Promise.all(MATMUL_VARIANT_NAMES.map((v) => runCase(c, v)));
      const bits = (x: Float32Array) => new Uint32Array(x.buffer, x.byteOffset, x.length);
      for (const [i, got] of rest.entries()) {
        const differing = bits(got).findIndex((w, j) => w !== bits(first)[j]);
        expect(differing, `${MATMUL_VARIANT_NAMES[i + 1]} vs ${MATMUL_VARIANT_NAMES[0]} ${JSON.stringify(c)}`).toBe(-1);
      }
    }
  });

  it('matches PyTorch: linear y = x·Wᵀ with f32 and bf16 W', async () => {
    const gpu = await testGpu();
    const fx = await loadFixture('matmul_linear');
    const { M, N, K } = fx.meta;
    const x = uploadTensor(gpu, fx.f32('x'), tensorSpec('f32', [M, K], 'activations', 'x'));
    const w = uploadTensor(gpu, fx.f32('w'), tensorSpec('f32', [N, K], 'weights', 'w'));
    const wb = uploadTensor(gpu, fx.t.w_bf16.data, tensorSpec('bf16', [N, K], 'weights', 'w_bf16'));
    const y = uploadTensor(gpu, new Float32Array(M * N), tensorSpec('f32', [M, N], 'activations', 'y'));
    const yb = uploadTensor(gpu, new Float32Array(M * N), tensorSpec('f32', [M, N], 'activations', 'yb'));
    const rec = new Recorder(gpu);
    await matmul(rec, { a: x, b: w, c: y, M, N, K, transB: true });
    await matmul(rec, { a: x, b: wb, c: yb, M, N, K, transB: true });
    await rec.submit();
    expect(relError(await readF32(gpu, y), fx.f32('y'))).toBeLessThan(1e-5);
    expect(relError(await readF32(gpu, yb), fx.f32('y_bf16'))).toBeLessThan(1e-5);
  });

  it('matches PyTorch: batched Aᵀ·B', async () => {
    const gpu = await testGpu();
    const fx = await loadFixture('matmul_batched_ta');
    const { M, N, K, batch } = fx.meta;
    const a = uploadTensor(gpu, fx.f32('a'), tensorSpec('f32', [batch, K, M], 'activations', 'a'));
    const b = uploadTensor(gpu, fx.f32('b'), tensorSpec('f32', [batch, K, N], 'activations', 'b'));
    const c = uploadTensor(gpu, new Float32Array(batch * M * N), tensorSpec('f32', [batch, M, N], 'activations', 'c'));
    const rec = new Recorder(gpu);
    await matmul(rec, { a, b, c, M, N, K, batch, transA: true });
    await rec.submit();
    expect(relError(await readF32(gpu, c), fx.f32('c'))).toBeLessThan(1e-5);
  });

  it('names the kernel and shapes when the inputs do not fit', async () => {
    const gpu = await testGpu();
    const a = uploadTensor(gpu, new Float32Array(6), tensorSpec('f32', [2, 3], 'activations', 'small'));
    const rec = new Recorder(gpu);
    await expect(matmul(rec, { a, b: a, c: a, M: 4, N: 4, K: 3 })).rejects.toThrow(
      /matmul.*small\[2×3:f32\].*A needs 12 elements/,
    );
    await rec.submit();
  });
});
