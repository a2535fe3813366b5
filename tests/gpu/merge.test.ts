import { describe, expect, it } from 'vitest';
import {
  createTensor,
  readTensor,
  Recorder,
  releaseTensor,
  tensorSpec,
  uploadTensor,
  type DType,
  type Tensor,
} from '../../src/engine/gpu/index.ts';
import type { LoraAdapter } from '../../src/engine/ops/lora.ts';
import { mergeLora, mergeRowsPerChunk } from '../../src/engine/ops/merge.ts';
import { releaseNf4, uploadNf4, type Nf4Weight } from '../../src/engine/ops/nf4.ts';
import { fromBf16, fromF16 } from '../../src/engine/numeric/half.ts';
import { expectClose } from '../cpu/compare.ts';
import { mergeRef } from '../cpu/merge.ts';
import { randn } from '../cpu/random.ts';
import { loadFixture, type Fixture } from '../reference/fixtures.ts';
import { runtime, testGpu } from './context.ts';

async function baseWeight(fx: Fixture): Promise<Tensor | Nf4Weight> {
  const gpu = await testGpu();
  const m = fx.meta;
  if (m.base === 'nf4') {
    return uploadNf4(
      gpu,
      {
        shape: [m.out, m.in],
        blocksize: 64,
        dtype: 'float32',
        packed: fx.t.packed.data as Uint8Array,
        absmax: fx.t.absmax_codes.data as Uint8Array,
        nested: { blocksize: 256, offset: m.offset, code: fx.f32('code8'), absmax: fx.f32('nested_absmax') },
      },
      'W',
    );
  }
  return uploadTensor(
    gpu,
    fx.t.w.data as Float32Array | Uint16Array,
    tensorSpec(m.base as DType, [m.out, m.in], 'weights', 'W'),
  );
}

/** Merges in chunks of `chunkRows` rows and concatenates the chunk outputs (raw f32 or 16-bit words). */
async function mergeChunked(
  base: Tensor | Nf4Weight,
  adapter: LoraAdapter,
  outType: DType,
  chunkRows: number,
): Promise<Float32Array | Uint16Array> {
  const gpu = await testGpu();
  const total = adapter.outFeatures * adapter.inFeatures;
  const result = outType === 'f32' ? new Float32Array(total) : new Uint16Array(total);
  const delta = uploadTensor(
    gpu,
    new Float32Array(chunkRows * adapter.inFeatures),
    tensorSpec('f32', [chunkRows, adapter.inFeatures], 'scratch', 'delta'),
  );
  for (let row = 0; row < adapter.outFeatures; row += chunkRows) {
    const rows = Math.min(chunkRows, adapter.outFeatures - row);
    const out = createTensor(gpu, tensorSpec(outType, [rows, adapter.inFeatures], 'scratch', 'merged'));
    const rec = new Recorder(gpu, 'merge');
    await mergeLora(rec, { base, adapter, rowStart: row, rows, out, delta });
    await rec.submit();
    result.set((await readTensor(gpu, out)) as Float32Array | Uint16Array, row * adapter.inFeatures);
    releaseTensor(gpu, out);
  }
  releaseTensor(gpu, delta);
  return result;
}

/** Equal 16-bit patterns except where the fixture marks a near-tie (there ≤ 1 ulp). */
function expect16(got: Uint16Array, want: Uint16Array, tie: Uint8Array, what: string): number {
  let ties = 0;
  for (let i = 0; i < want.length; i++) {
    if (got[i] === want[i]) continue;
    const ulps = Math.abs((got[i] & 0x7fff) - (want[i] & 0x7fff));
    if (!tie[i] || ulps > 1 || (got[i] & 0x8000) !== (want[i] & 0x8000))
      expect.fail(
        `${what}: [${i}] got 0x${got[i].toString(16)}, want 0x${want[i].toString(16)} (near tie: ${!!tie[i]})`,
      );
    ties++;
  }
  return ties;
}

describe(`merge (${runtime})`, () => {
  for (const name of ['merge_f32', 'merge_bf16', 'merge_f16', 'merge_nf4']) {
    it(`matches torch (W.float() + s·B@A).to(dtype) bit for bit: ${name}`, async () => {
      const gpu = await testGpu();
      const fx = await loadFixture(name);
      const m = fx.meta;
      const base = await baseWeight(fx);
      const adapter: LoraAdapter = {
        a: uploadTensor(gpu, fx.f32('a'), tensorSpec('f32', [m.r, m.in], 'adapters', 'A')),
        b: uploadTensor(gpu, fx.f32('b'), tensorSpec('f32', [m.out, m.r], 'adapters', 'B')),
        r: m.r,
        inFeatures: m.in,
        outFeatures: m.out,
        scale: m.scale,
      };
      // Chunks of 5 rows: odd element counts per chunk exercise the half-filled last 16-bit word.
      for (const chunk of [5, m.out]) {
        const f32 = (await mergeChunked(base, adapter, 'f32', chunk)) as Float32Array;
        expectClose(f32, fx.f32('merged_f32'), { rtol: 1e-6, atol: 1e-8 }, `${name} f32 chunk ${chunk}`);
        const bf16 = (await mergeChunked(base, adapter, 'bf16', chunk)) as Uint16Array;
        expect16(
          bf16,
          fx.t.merged_bf16.data as Uint16Array,
          fx.t.tie_bf16.data as Uint8Array,
          `${name} bf16 chunk ${chunk}`,
        );
        const f16 = (await mergeChunked(base, adapter, 'f16', chunk)) as Uint16Array;
        expect16(
          f16,
          fx.t.merged_f16.data as Uint16Array,
          fx.t.tie_f16.data as Uint8Array,
          `${name} f16 chunk ${chunk}`,
        );
      }
      releaseTensor(gpu, adapter.a);
      releaseTensor(gpu, adapter.b);
      if ('kind' in base) releaseNf4(gpu, base);
      else releaseTensor(gpu, base);
    });
  }

  it('rounds to nearest even at exact 16-bit ties, handles overflow and subnormals like torch', async () => {
    const gpu = await testGpu();
    // W chosen so W + 0 (B = 0) lands exactly on ties, on the f16 subnormal range, past the f16 max.
    const w = new Float32Array([
      1 + 2 ** -8, // bf16 tie → 1 (even)
      1 + 3 * 2 ** -8, // bf16 tie → 1 + 2^-6 (even mantissa, rounds up)
      1 + 2 ** -11, // f16 tie → 1
      1 + 3 * 2 ** -11, // f16 tie → up
      70000, // f16 overflow → inf
      3e-6, // f16 subnormal
      -1.5e-8, // f16 underflow to −0
      65519.99, // rounds to f16 max
    ]);
    const n = w.length;
    const base = uploadTensor(gpu, w, tensorSpec('f32', [1, n], 'weights', 'W'));
    const adapter: LoraAdapter = {
      a: uploadTensor(gpu, new Float32Array(n), tensorSpec('f32', [1, n], 'adapters', 'A')),
      b: uploadTensor(gpu, new Float32Array(1), tensorSpec('f32', [1, 1], 'adapters', 'B')),
      r: 1,
      inFeatures: n,
      outFeatures: 1,
      scale: 1,
    };
    const bf16 = fromBf16((await mergeChunked(base, adapter, 'bf16', 1)) as Uint16Array);
    const f16 = fromF16((await mergeChunked(base, adapter, 'f16', 1)) as Uint16Array);
    const want = mergeRef(w, new Float32Array(1), new Float32Array(n), 1, n, 1, 1);
    expect(Array.from(bf16)).toEqual(Array.from(fromBf16(want.bf16)));
    expect(Array.from(f16)).toEqual(Array.from(fromF16(want.f16)));
    expect(bf16[0]).toBe(1);
    expect(f16[2]).toBe(1);
    expect(f16[3]).toBe(1 + 2 ** -9);
    expect(f16[4]).toBe(Infinity);
    expect(f16[7]).toBe(65504);
    [base, adapter.a, adapter.b].forEach((t) => releaseTensor(gpu, t));
  });

  it('merges a random adapter into a bf16 weight at odd sizes (CPU reference), rejects bad chunks', async () => {
    const gpu = await testGpu();
    const [out, inF, r] = [19, 33, 5];
    const wHost = randn(out * inF, 1, 0.1);
    const a = randn(r * inF, 2, 0.2);
    const b = randn(out * r, 3, 0.05);
    const base = uploadTensor(gpu, new Float32Array(wHost), tensorSpec('f32', [out, inF], 'weights', 'W'));
    const adapter: LoraAdapter = {
      a: uploadTensor(gpu, a, tensorSpec('f32', [r, inF], 'adapters', 'A')),
      b: uploadTensor(gpu, b, tensorSpec('f32', [out, r], 'adapters', 'B')),
      r,
      inFeatures: inF,
      outFeatures: out,
      scale: 1.25,
    };
    const got = (await mergeChunked(base, adapter, 'f32', 7)) as Float32Array;
    expectClose(got, mergeRef(wHost, b, a, out, inF, r, 1.25).f32, { rtol: 1e-6, atol: 1e-7 }, 'f32 merge');
    expect(mergeRowsPerChunk(4864, 64 * 2 ** 20)).toBe(3449);
    const delta = uploadTensor(gpu, new Float32Array(inF), tensorSpec('f32', [inF], 'scratch', 'delta'));
    const rec = new Recorder(gpu);
    await expect(mergeLora(rec, { base, adapter, rowStart: 18, rows: 2, out: delta, delta })).rejects.toThrow(
      /merge W\[19×33:f32\].*row chunk 18\+2 outside 0\.\.19/,
    );
    await rec.submit();
    [base, adapter.a, adapter.b, delta].forEach((t) => releaseTensor(gpu, t));
  });
});
