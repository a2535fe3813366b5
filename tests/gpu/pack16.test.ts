import { afterEach, describe, expect, it } from 'vitest';
import { createTensor, readTensor, tensorSpec } from '../../src/engine/gpu/index.ts';
import { f32ToBf16Bits } from '../../src/engine/numeric/half.ts';
import { packBf16, unpackBf16 } from '../../src/engine/ops/pack16.ts';
import { bf16OfF32Bits, packBf16Ref, unpackBf16Ref } from '../cpu/pack16.ts';
import { randn } from '../cpu/random.ts';
import { runtime, testGpu } from './context.ts';
import { Scope } from './kernel-util.ts';

let scope: Scope | null = null;
afterEach(() => {
  scope?.release();
  scope = null;
});

/** Values that exercise every rounding path: ties both ways, carries into the exponent, overflow to inf, subnormals, NaN, ±0. */
function edgeValues(): Float32Array {
  const bits = [
    0x3f808000, // tie, even below → stays
    0x3f818000, // tie, odd below → rounds up
    0x3f80ffff, // just below a carry
    0x3fffffff, // carry into the exponent
    0x7f7fffff, // largest finite → inf
    0xff7fffff, // most negative finite → −inf
    0x7f800000, // inf
    0xff800000, // −inf
    0x7fc00001, // quiet NaN with payload
    0x7f800001, // signalling NaN → quiet
    0x00000001, // smallest subnormal
    0x80018000, // negative subnormal tie
    0x00000000,
    0x80000000,
  ];
  const u = Uint32Array.from(bits);
  return new Float32Array(u.buffer);
}

async function roundTrip(values: Float32Array) {
  const s = (scope = new Scope(await testGpu()));
  const n = values.length;
  const src = s.f32(values, [n], 'x');
  const packed = s.keep(createTensor(s.gpu, tensorSpec('bf16', [n], 'activations', 'x16')));
  const back = s.nan(n, 'x32');
  await s.run('pack16', async (rec) => {
    await packBf16(rec, { src, dst: packed, n });
    await unpackBf16(rec, { src: packed, dst: back, n });
  });
  const halves = (await readTensor(s.gpu, packed)) as Uint16Array;
  const words = new Uint32Array(Math.ceil(n / 2));
  for (let i = 0; i < n; i++) words[i >> 1] |= i & 1 ? halves[i] << 16 : halves[i];
  return { words, back: await s.read(back) };
}

function bitsOf(a: Float32Array): Uint32Array {
  return new Uint32Array(a.buffer, a.byteOffset, a.length);
}

describe(`pack16 bf16 (${runtime})`, () => {
  it('the CPU reference agrees with the host converter (torch round-to-nearest-even) on edge cases and random values', () => {
    const v = new Float32Array([...edgeValues(), ...randn(4000, 3, 40)]);
    for (const b of bitsOf(v)) {
      const ref = bf16OfF32Bits(b);
      const f = new Float32Array(new Uint32Array([b]).buffer)[0];
      const host = f32ToBf16Bits(f);
      if (Number.isNaN(f)) expect((ref & 0x7fc0) === 0x7fc0 && (host & 0x7fc0) === 0x7fc0).toBe(true);
      else expect(ref, `0x${b.toString(16)}`).toBe(host);
    }
  });

  for (const n of [1, 3, 14, 257, 1001]) {
    it(`n=${n}: packed words bit-exact with the reference, unpack exact`, async () => {
      const edges = edgeValues();
      const v = new Float32Array(n);
      const r = randn(n, n, 7);
      for (let i = 0; i < n; i++) v[i] = i < edges.length && n > 3 ? edges[i] : r[i] * (i % 5 === 0 ? 1e4 : 1);
      const got = await roundTrip(v);
      const want = packBf16Ref(v);
      for (let w = 0; w < want.length; w++) {
        // NaN payloads: any quiet NaN is acceptable, compare the rest bit for bit.
        const same = got.words[w] === want[w];
        if (!same) {
          const lo = [got.words[w] & 0xffff, want[w] & 0xffff];
          const hi = [got.words[w] >>> 16, want[w] >>> 16];
          const nanOk = (p: number[]) => p[0] === p[1] || ((p[0] & 0x7fc0) === 0x7fc0 && (p[1] & 0x7fc0) === 0x7fc0);
          expect(nanOk(lo) && nanOk(hi), `word ${w}: 0x${got.words[w].toString(16)} vs 0x${want[w].toString(16)}`).toBe(
            true,
          );
        }
      }
      const back = unpackBf16Ref(got.words, n);
      const a = bitsOf(got.back);
      const b = bitsOf(back);
      for (let i = 0; i < n; i++) expect(a[i], `element ${i}`).toBe(b[i]);
      // rounding error of normal finite values ≤ one bf16 ulp relative (2⁻⁸)
      for (let i = 0; i < n; i++)
        if (Number.isFinite(got.back[i]) && Number.isFinite(v[i]) && Math.abs(v[i]) >= 2 ** -126)
          expect(Math.abs(got.back[i] - v[i]) / Math.abs(v[i])).toBeLessThanOrEqual(2 ** -8);
    });
  }

  it('names the kernel and operand on bad input', async () => {
    const s = (scope = new Scope(await testGpu()));
    const x = s.f32(new Float32Array(5), [5], 'xs');
    const small = s.keep(createTensor(s.gpu, tensorSpec('bf16', [4], 'activations', 'x16')));
    await expect(s.run('bad', (rec) => packBf16(rec, { src: x, dst: small, n: 5 }))).rejects.toThrow(
      /pack16\.pack.*dst needs 5 elements/,
    );
    await expect(s.run('bad', (rec) => unpackBf16(rec, { src: x, dst: s.nan(5, 'y'), n: 5 }))).rejects.toThrow(
      /src xs\[5:f32\] must be bf16/,
    );
  });
});
