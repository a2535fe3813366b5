import { describe, expect, it } from 'vitest';
import {
  readF32,
  readTensor,
  Recorder,
  releaseTensor,
  tensorSpec,
  uploadTensor,
  type DType,
} from '../../src/engine/gpu/index.ts';
import { matmul, MATMUL_VARIANT_NAMES } from '../../src/engine/ops/matmul.ts';
import {
  dequantizeNf4,
  dynamicMap8,
  NF4_CODE,
  nf4FromBnb,
  quantizeNf4,
  releaseNf4,
  uploadNf4,
  type RawTensor,
} from '../../src/engine/ops/nf4.ts';
import { toBf16 } from '../../src/engine/numeric/half.ts';
import { expectClose, relError } from '../cpu/compare.ts';
import { matmulRef } from '../cpu/matmul.ts';
import { dequantizeNf4Ref, doubleQuantRef, NF4_VALUES, quantizeNf4Ref, unpackNf4 } from '../cpu/nf4.ts';
import { randn } from '../cpu/random.ts';
import { loadFixture, type Fixture, type FixtureTensor } from '../reference/fixtures.ts';
import { runtime, testGpu } from './context.ts';

function bitsOf(a: Float32Array): Uint32Array {
  return new Uint32Array(a.buffer, a.byteOffset, a.length);
}

/** Exact equality, reporting the first differing index. */
function expectSameBits(got: ArrayLike<number>, want: ArrayLike<number>, what: string): void {
  expect(got.length, `${what} length`).toBe(want.length);
  for (let i = 0; i < want.length; i++) {
    if (got[i] !== want[i] && !(Number.isNaN(got[i]) && Number.isNaN(want[i]))) {
      expect.fail(`${what}: first difference at [${i}]: got ${got[i]}, want ${want[i]}`);
    }
  }
}

function hostValues(t: FixtureTensor): { upload: Float32Array | Uint16Array; dtype: DType } {
  return {
    upload: t.data as Float32Array | Uint16Array,
    dtype: t.dtype === 'bf16' ? 'bf16' : t.dtype === 'f16' ? 'f16' : 'f32',
  };
}

async function quantizeOnGpu(fx: Fixture) {
  const gpu = await testGpu();
  const { shape, blocksize, double_quant: dq } = fx.meta;
  const { upload, dtype } = hostValues(fx.t.w);
  const src = uploadTensor(gpu, upload, tensorSpec(dtype, shape, 'weights', 'w'));
  const rec = new Recorder(gpu, 'nf4-quantize');
  const { weight, scratch } = await quantizeNf4(rec, { src, blocksize, doubleQuant: dq, label: 'w' });
  await rec.submit();
  scratch.forEach((t) => releaseTensor(gpu, t));
  releaseTensor(gpu, src);
  return weight;
}

describe(`nf4 (${runtime})`, () => {
  it('builds bitsandbytes’ signed dynamic 8-bit map exactly', async () => {
    const fx = await loadFixture('nf4_dynamic_map');
    expectSameBits(bitsOf(dynamicMap8()), bitsOf(fx.f32('code8')), 'code8');
    expectSameBits(NF4_CODE, NF4_VALUES, 'NF4 code book');
  });

  for (const name of ['nf4_f32_b64', 'nf4_bf16_odd', 'nf4_f32_b256', 'nf4_f16_b32_dq', 'nf4_f32_dq_multi']) {
    it(`quantizes bit-exactly like bitsandbytes: ${name}`, async () => {
      const gpu = await testGpu();
      const fx = await loadFixture(name);
      const { shape, blocksize, double_quant: dq } = fx.meta;
      const n = shape[0] * shape[1];
      const weight = await quantizeOnGpu(fx);
      const packed = (await readTensor(gpu, weight.packed)) as Uint8Array;
      expectSameBits(packed, fx.t.packed.data, `${name} packed bytes`);

      // The CPU reference follows the same rules.
      const wF32 = fx.t.w.dtype === 'f32' ? fx.f32('w') : null;
      if (wF32) {
        const ref = quantizeNf4Ref(wF32, blocksize);
        expectSameBits(ref.packed, fx.t.packed.data, `${name} CPU packed`);
      }

      const nBlocks = Math.ceil(n / blocksize);
      if (!dq) {
        expectSameBits(bitsOf(await readF32(gpu, weight.absmax)), bitsOf(fx.f32('absmax')), `${name} absmax`);
      } else {
        expect(weight.nested).toBeDefined();
        const codes = (await readTensor(gpu, weight.absmax)) as Uint8Array;
        expectSameBits(codes, fx.t.absmax_codes.data, `${name} absmax codes`);
        const table = await readF32(gpu, weight.nested!.table);
        expectSameBits(bitsOf(table.slice(0, 256)), bitsOf(fx.f32('code8')), `${name} code8`);
        expect(table[256]).toBe(Math.fround(fx.meta.offset));
        expectSameBits(bitsOf(table.slice(257)), bitsOf(fx.f32('nested_absmax')), `${name} nested absmax`);
        const dqRef = doubleQuantRef(fx.f32('absmax'), dynamicMap8());
        expectSameBits(dqRef.codes, fx.t.absmax_codes.data, `${name} CPU absmax codes`);
      }

      // Dequantize: f32 code·absmax (with double quant, the decoded absmax) — exact.
      const out = uploadTensor(gpu, new Float32Array(n), tensorSpec('f32', [n], 'scratch', 'dequant'));
      const absOut = uploadTensor(gpu, new Float32Array(nBlocks), tensorSpec('f32', [nBlocks], 'scratch', 'absmax'));
      const rec = new Recorder(gpu, 'nf4-dequantize');
      await dequantizeNf4(rec, weight, out, absOut);
      await rec.submit();
      const wantAbsmax = dq ? fx.f32('absmax_dq') : fx.f32('absmax');
      expectSameBits(bitsOf(await readF32(gpu, absOut)), bitsOf(wantAbsmax), `${name} decoded absmax`);
      const deq = await readF32(gpu, out);
      const want = fx.t.dequant
        ? fx.f32('dequant')
        : dequantizeNf4Ref(unpackNf4(fx.t.packed.data as Uint8Array, n), wantAbsmax, blocksize);
      expectSameBits(bitsOf(deq), bitsOf(want), `${name} dequantized`);
      releaseTensor(gpu, out);
      releaseTensor(gpu, absOut);
      releaseNf4(gpu, weight);
    });
  }

  it('round-trips random weights with ≤ half a code step of error per element (odd sizes, every blocksize)', async () => {
    const gpu = await testGpu();
    for (const [rows, cols, blocksize] of [
      [1, 1, 64],
      [3, 7, 32],
      [17, 130, 128],
      [9, 1000, 4096],
    ] as const) {
      const n = rows * cols;
      const w = randn(n, rows * 31 + cols, 0.1);
      const src = uploadTensor(gpu, toBf16(w), tensorSpec('bf16', [rows, cols], 'weights', 'w'));
      const rec = new Recorder(gpu, 'nf4-roundtrip');
      const { weight, scratch } = await quantizeNf4(rec, { src, blocksize, doubleQuant: true });
      const out = uploadTensor(gpu, new Float32Array(n), tensorSpec('f32', [n], 'scratch', 'out'));
      const nb = Math.ceil(n / blocksize);
      const absOut = uploadTensor(gpu, new Float32Array(nb), tensorSpec('f32', [nb], 'scratch', 'absmax'));
      await dequantizeNf4(rec, weight, out, absOut);
      await rec.submit();
      const got = await readF32(gpu, out);
      const absmax = await readF32(gpu, absOut);
      const codes = unpackNf4((await readTensor(gpu, weight.packed)) as Uint8Array, n);
      const wq = new Float32Array(w.length);
      const bf = toBf16(w);
      for (let i = 0; i < n; i++) wq[i] = new Float32Array(new Uint32Array([bf[i] << 16]).buffer)[0];
      const ref = quantizeNf4Ref(wq, blocksize);
      expectSameBits(codes, ref.codes, `codes ${rows}×${cols}/${blocksize}`);
      for (let i = 0; i < n; i++) {
        // Max gap between neighbouring codes is 0.304 (−1 → −0.696); the decoded absmax is within 1 %.
        expect(Math.abs(got[i] - wq[i])).toBeLessThanOrEqual(
          0.153 * absmax[Math.floor(i / blocksize)] + 0.01 * Math.abs(wq[i]) + 1e-7,
        );
      }
      [src, out, absOut, ...scratch].forEach((t) => releaseTensor(gpu, t));
      releaseNf4(gpu, weight);
    }
  });

  it('loads a pre-quantized bitsandbytes checkpoint (nested and plain absmax)', async () => {
    const gpu = await testGpu();
    const fx = await loadFixture('nf4_checkpoint');
    const raw = rawTensors(fx);
    for (const m of fx.meta.modules as { name: string; shape: number[]; nested: boolean }[]) {
      const host = nf4FromBnb(raw, m.name, 'model.safetensors');
      expect(host.shape).toEqual(m.shape);
      expect(!!host.nested).toBe(m.nested);
      expect(host.dtype).toBe('bfloat16');
      const w = uploadNf4(gpu, host, m.name);
      const n = m.shape[0] * m.shape[1];
      const nb = Math.ceil(n / 64);
      const out = uploadTensor(gpu, new Float32Array(n), tensorSpec('f32', [n], 'scratch', 'out'));
      const absOut = uploadTensor(gpu, new Float32Array(nb), tensorSpec('f32', [nb], 'scratch', 'absmax'));
      const rec = new Recorder(gpu, 'nf4-load');
      await dequantizeNf4(rec, w, out, absOut);
      await rec.submit();
      expectSameBits(bitsOf(await readF32(gpu, out)), bitsOf(fx.f32(`expected.${m.name}`)), `${m.name} dequantized`);
      releaseTensor(gpu, out);
      releaseTensor(gpu, absOut);
      releaseNf4(gpu, w);
    }
  });

  it('rejects malformed checkpoints with the tensor name and the reason', async () => {
    const fx = await loadFixture('nf4_checkpoint');
    const raw = rawTensors(fx);
    const q = 'model.layers.0.self_attn.q_proj';
    const without = (k: string) => Object.fromEntries(Object.entries(raw).filter(([n]) => n !== k));
    expect(() => nf4FromBnb(without(`${q}.weight.nested_quant_map`), q, 'a.safetensors')).toThrow(
      /a\.safetensors: .*q_proj\.weight\.nested_quant_map: missing/,
    );
    expect(() => nf4FromBnb(raw, 'model.layers.9.mlp.up_proj', 'a.safetensors')).toThrow(
      /up_proj\.weight\.quant_state\.bitsandbytes__nf4: missing/,
    );
    const badMap = { ...raw, [`${q}.weight.quant_map`]: f32Raw(new Float32Array(16).fill(0.5)) };
    expect(() => nf4FromBnb(badMap, q)).toThrow(/quant_map: entry 0 is 0\.5, not the NF4 value -1/);
    const fp4 = {
      ...raw,
      [`${q}.weight.quant_state.bitsandbytes__fp4`]: raw[`${q}.weight.quant_state.bitsandbytes__nf4`],
    };
    expect(() => nf4FromBnb(fp4, q)).toThrow(/FP4/);
    const shortW = { ...raw, [`${q}.weight`]: { dtype: 'U8', shape: [10, 1], bytes: new Uint8Array(10) } };
    expect(() => nf4FromBnb(shortW, q)).toThrow(/q_proj\.weight: holds 10 elements .* expected 1280/);
    const badJson = {
      ...raw,
      [`${q}.weight.quant_state.bitsandbytes__nf4`]: {
        dtype: 'U8',
        shape: [3],
        bytes: new TextEncoder().encode('{x:'),
      },
    };
    expect(() => nf4FromBnb(badJson, q)).toThrow(/quant state is not JSON/);
  });

  it('fused NF4 matmul matches PyTorch on every variant: y = x·dequant(W)ᵀ and dX = dY·dequant(W) (double quant)', async () => {
    const gpu = await testGpu();
    const fx = await loadFixture('nf4_matmul');
    const { M, N, K } = fx.meta;
    const host = {
      shape: [N, K],
      blocksize: 64,
      dtype: 'float32',
      packed: fx.t.packed.data as Uint8Array,
      absmax: fx.t.absmax_codes.data as Uint8Array,
      nested: { blocksize: 256, offset: fx.meta.offset, code: fx.f32('code8'), absmax: fx.f32('nested_absmax') },
    };
    const fromFixture = uploadNf4(gpu, host, 'W');
    // The same weight quantized on the GPU must give the same result.
    const src = uploadTensor(gpu, fx.f32('w'), tensorSpec('f32', [N, K], 'weights', 'w'));
    const rec0 = new Recorder(gpu);
    const q = await quantizeNf4(rec0, { src, doubleQuant: true, label: 'Wq' });
    await rec0.submit();
    for (const [w, variant] of [fromFixture, q.weight].flatMap((w) =>
      MATMUL_VARIANT_NAMES.map((v) => [w, v] as const),
    )) {
      const x = uploadTensor(gpu, fx.f32('x'), tensorSpec('f32', [M, K], 'activations', 'x'));
      const dy = uploadTensor(gpu, fx.f32('dy'), tensorSpec('f32', [M, N], 'activations', 'dy'));
      const y = uploadTensor(gpu, new Float32Array(M * N), tensorSpec('f32', [M, N], 'activations', 'y'));
      const dx = uploadTensor(gpu, new Float32Array(M * K), tensorSpec('f32', [M, K], 'gradients', 'dx'));
      const rec = new Recorder(gpu);
      await matmul(rec, { a: x, b: w, c: y, M, N, K, transB: true, variant });
      await matmul(rec, { a: dy, b: w, c: dx, M, N: K, K: N, variant });
      await rec.submit();
      expect(relError(await readF32(gpu, y), fx.f32('y')), `y ${variant}`).toBeLessThan(1e-5);
      expect(relError(await readF32(gpu, dx), fx.f32('dx')), `dx ${variant}`).toBeLessThan(1e-5);
      [x, dy, y, dx].forEach((t) => releaseTensor(gpu, t));
    }
    [src, ...q.scratch].forEach((t) => releaseTensor(gpu, t));
    releaseNf4(gpu, fromFixture);
    releaseNf4(gpu, q.weight);
  });

  it('fused NF4 matmul at odd shapes, plain absmax, beta accumulation, both orientations: every variant, bit-identical', async () => {
    const gpu = await testGpu();
    const bits = (x: Float32Array) => new Uint32Array(x.buffer, x.byteOffset, x.length);
    for (const c of [
      { M: 1, N: 5, K: 64, blocksize: 64 },
      { M: 17, N: 33, K: 130, blocksize: 32 },
      { M: 70, N: 65, K: 96, blocksize: 128 },
      // N and K multiples of 8: octet8x8 reads whole octets in both orientations.
      { M: 19, N: 40, K: 96, blocksize: 32 },
      { M: 9, N: 13, K: 256, blocksize: 128 },
    ]) {
      const w = randn(c.N * c.K, c.N + c.K, 0.2);
      const src = uploadTensor(gpu, w, tensorSpec('f32', [c.N, c.K], 'weights', 'w'));
      const rec0 = new Recorder(gpu);
      const { weight } = await quantizeNf4(rec0, { src, blocksize: c.blocksize });
      await rec0.submit();
      const ref = quantizeNf4Ref(w, c.blocksize);
      const wq = dequantizeNf4Ref(ref.codes, ref.absmax, c.blocksize);
      const x = randn(c.M * c.K, 7);
      const dy = randn(c.M * c.N, 8);
      const yInit = randn(c.M * c.N, 9);
      const tx = uploadTensor(gpu, x, tensorSpec('f32', [c.M, c.K], 'activations', 'x'));
      const tdy = uploadTensor(gpu, dy, tensorSpec('f32', [c.M, c.N], 'activations', 'dy'));
      let first: { y: Float32Array; dx: Float32Array } | null = null;
      for (const variant of MATMUL_VARIANT_NAMES) {
        const ty = uploadTensor(gpu, yInit, tensorSpec('f32', [c.M, c.N], 'activations', 'y'));
        const tdx = uploadTensor(gpu, new Float32Array(c.M * c.K), tensorSpec('f32', [c.M, c.K], 'gradients', 'dx'));
        const rec = new Recorder(gpu);
        await matmul(rec, { a: tx, b: weight, c: ty, M: c.M, N: c.N, K: c.K, transB: true, beta: 1, variant });
        await matmul(rec, { a: tdy, b: weight, c: tdx, M: c.M, N: c.K, K: c.N, alpha: 0.5, variant });
        await rec.submit();
        const got = { y: await readF32(gpu, ty), dx: await readF32(gpu, tdx) };
        [ty, tdx].forEach((t) => releaseTensor(gpu, t));
        const tol = { rtol: 1e-4, atol: 1e-4 };
        const what = `${variant} ${JSON.stringify(c)}`;
        expectClose(got.y, matmulRef(x, wq, c.M, c.N, c.K, { transB: true, beta: 1, c: yInit }), tol, `y ${what}`);
        expectClose(got.dx, matmulRef(dy, wq, c.M, c.K, c.N, { alpha: 0.5 }), tol, `dx ${what}`);
        first ??= got;
        expect(
          bits(got.y).findIndex((v, j) => v !== bits(first!.y)[j]),
          `y bits ${what}`,
        ).toBe(-1);
        expect(
          bits(got.dx).findIndex((v, j) => v !== bits(first!.dx)[j]),
          `dx bits ${what}`,
        ).toBe(-1);
      }
      [src, tx, tdy].forEach((t) => releaseTensor(gpu, t));
      releaseNf4(gpu, weight);
    }
  });

  it('dX = dY·dequant(W) is the gradient of Σ dY·(x·dequant(W)ᵀ): central differences in float64', async () => {
    const gpu = await testGpu();
    const [M, N, K] = [3, 4, 64];
    const w = randn(N * K, 21, 0.3);
    const ref = quantizeNf4Ref(w, 32);
    const wq = dequantizeNf4Ref(ref.codes, ref.absmax, 32);
    const x = Float64Array.from(randn(M * K, 22));
    const dy = randn(M * N, 23);
    const loss = (xs: Float64Array) => {
      let s = 0;
      for (let m = 0; m < M; m++)
        for (let n = 0; n < N; n++) for (let k = 0; k < K; k++) s += dy[m * N + n] * xs[m * K + k] * wq[n * K + k];
      return s;
    };
    const src = uploadTensor(gpu, w, tensorSpec('f32', [N, K], 'weights', 'w'));
    const rec = new Recorder(gpu);
    const { weight } = await quantizeNf4(rec, { src, blocksize: 32 });
    const tdy = uploadTensor(gpu, dy, tensorSpec('f32', [M, N], 'activations', 'dy'));
    const tdx = uploadTensor(gpu, new Float32Array(M * K), tensorSpec('f32', [M, K], 'gradients', 'dx'));
    await matmul(rec, { a: tdy, b: weight, c: tdx, M, N: K, K: N });
    await rec.submit();
    const dx = await readF32(gpu, tdx);
    const h = 1e-4;
    for (let i = 0; i < M * K; i++) {
      const plus = Float64Array.from(x);
      const minus = Float64Array.from(x);
      plus[i] += h;
      minus[i] -= h;
      const fd = (loss(plus) - loss(minus)) / (2 * h);
      expect(Math.abs(dx[i] - fd), `dX[${i}]`).toBeLessThan(1e-5 * (1 + Math.abs(fd)));
    }
    [src, tdy, tdx].forEach((t) => releaseTensor(gpu, t));
    releaseNf4(gpu, weight);
  });

  it('names the NF4 weight when a matmul does not fit it', async () => {
    const gpu = await testGpu();
    const src = uploadTensor(gpu, new Float32Array(64), tensorSpec('f32', [4, 16], 'weights', 'small'));
    const rec = new Recorder(gpu);
    const { weight } = await quantizeNf4(rec, { src });
    const x = uploadTensor(gpu, new Float32Array(64), tensorSpec('f32', [4, 16], 'activations', 'x'));
    await expect(matmul(rec, { a: x, b: weight, c: x, M: 4, N: 8, K: 16, transB: true })).rejects.toThrow(
      /small\[4×16:nf4\/64\].*B needs 128 elements but holds 64/,
    );
    await rec.submit();
    [src, x].forEach((t) => releaseTensor(gpu, t));
    releaseNf4(gpu, weight);
    await expect(quantizeNf4(new Recorder(gpu), { src, blocksize: 48 })).rejects.toThrow(
      /blocksize must be a power of two in 32\.\.4096, got 48/,
    );
  });
});

function f32Raw(a: Float32Array): RawTensor {
  return { dtype: 'F32', shape: [a.length], bytes: new Uint8Array(a.buffer.slice(0)) };
}

function rawTensors(fx: Fixture): Record<string, RawTensor> {
  const out: Record<string, RawTensor> = {};
  for (const [k, t] of Object.entries(fx.t)) {
    const bytes = new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
    out[k] = {
      dtype: t.dtype === 'u8' ? 'U8' : t.dtype === 'f32' ? 'F32' : t.dtype.toUpperCase(),
      shape: t.shape,
      bytes,
    };
  }
  return out;
}
