import { describe, expect, it } from 'vitest';
import { ropeBackward, ropeForward } from '../../src/engine/ops/rope.ts';
import { expectClose, relError } from '../cpu/compare.ts';
import { dotLoss, expectGradMatchesFd, toF64 } from '../cpu/gradcheck.ts';
import { randn } from '../cpu/random.ts';
import { defaultInvFreq, ropeRef } from '../cpu/rope.ts';
import { loadFixture } from '../reference/fixtures.ts';
import { runtime } from './context.ts';
import { scopePerTest } from './kernel-util.ts';

const open = scopePerTest();

interface Case {
  tokens: number;
  qHeads: number;
  kvHeads: number;
  headDim: number;
  base?: number;
  maxPos?: number;
  /** Extra elements per Q row (a view into a wider buffer) and a leading offset. */
  qPad?: number;
  tol?: number;
  /** Partial rotary: the first rotaryDim dims of each head rotate, the rest pass through. */
  rotaryDim?: number;
  /** cos/sin multiplier (LongRoPE's attention factor). */
  scaling?: number;
}

async function runCase(c: Case) {
  const s = await open();
  const { tokens, qHeads, kvHeads, headDim } = c;
  const qw = qHeads * headDim + (c.qPad ?? 0);
  const qOffset = c.qPad ? 3 : 0;
  const qHost = randn(qOffset + tokens * qw, tokens + headDim);
  const kHost = randn(tokens * kvHeads * headDim, tokens * 3 + headDim);
  const maxPos = c.maxPos ?? tokens;
  const pos = Int32Array.from({ length: tokens }, (_, n) => (n * 7919 + (n === tokens - 1 ? maxPos - 1 : 0)) % maxPos);
  const R = c.rotaryDim ?? headDim;
  const scaling = c.scaling ?? 1;
  const inv = defaultInvFreq(c.base ?? 10000, R);
  const q = s.f32(qHost, [qHost.length], 'q');
  const k = s.f32(kHost, [tokens, kvHeads * headDim], 'k');
  const positionIds = s.i32(pos, [tokens], 'pos');
  const invFreq = s.f32(inv, [R / 2], 'invFreq');
  const shape = {
    positionIds,
    invFreq,
    tokens,
    qHeads,
    kvHeads,
    headDim,
    qRowStride: qw,
    qOffset,
    ...(c.rotaryDim === undefined ? {} : { rotaryDim: R }),
    attentionScaling: scaling,
  };
  await s.run('rope-fwd', (rec) => ropeForward(rec, { q, k, ...shape }));
  const qGot = await s.read(q);
  const kGot = await s.read(k);
  // Unpack the Q view into dense [tokens, qHeads·D] for the reference.
  const dense = (a: ArrayLike<number>) => {
    const out = new Float64Array(tokens * qHeads * headDim);
    for (let n = 0; n < tokens; n++)
      for (let j = 0; j < qHeads * headDim; j++) out[n * qHeads * headDim + j] = a[qOffset + n * qw + j];
    return out;
  };
  const tol = { rtol: c.tol ?? 1e-5, atol: c.tol ?? 1e-5 };
  expectClose(
    dense(qGot),
    ropeRef(dense(qHost), pos, inv, tokens, qHeads, headDim, 1, scaling, R),
    tol,
    `q ${JSON.stringify(c)}`,
  );
  expectClose(kGot, ropeRef(kHost, pos, inv, tokens, kvHeads, headDim, 1, scaling, R), tol, 'k');
  // Partial rotary: the pass-through dimensions are bit-identical.
  for (let n = 0; n < tokens; n++)
    for (let h = 0; h < kvHeads; h++)
      for (let j = R; j < headDim; j++) {
        const at = (n * kvHeads + h) * headDim + j;
        expect(kGot[at]).toBe(kHost[at]);
      }
  // Padding between the Q rows must be untouched.
  for (let n = 0; n < tokens && c.qPad; n++) {
    for (let j = qHeads * headDim; j < qw; j++) expect(qGot[qOffset + n * qw + j]).toBe(qHost[qOffset + n * qw + j]);
  }
  // Backward on the rotated values restores the inputs (the rotation is orthogonal; with a
  // scaling s both directions multiply by s, so the round trip gives s²·x).
  await s.run('rope-bwd', (rec) => ropeBackward(rec, { dq: q, dk: k, ...shape }));
  const s2 = (a: ArrayLike<number>, rot: (i: number) => boolean) =>
    Float64Array.from(a as ArrayLike<number>, (v, i) => (rot(i) ? v * scaling * scaling : v));
  const kRot = (i: number) => i % headDim < R;
  const qRot = (i: number) =>
    i >= qOffset && (i - qOffset) % qw < qHeads * headDim && ((i - qOffset) % qw) % headDim < R;
  expectClose(await s.read(q), s2(qHost, qRot), { rtol: 1e-5, atol: 2e-5 }, 'q round trip');
  expectClose(await s.read(k), s2(kHost, kRot), { rtol: 1e-5, atol: 2e-5 }, 'k round trip');
}

describe(`rope (${runtime})`, () => {
  const cases: Case[] = [
    { tokens: 1, qHeads: 1, kvHeads: 1, headDim: 2 },
    { tokens: 17, qHeads: 14, kvHeads: 2, headDim: 64, base: 1e6 },
    { tokens: 130, qHeads: 2, kvHeads: 1, headDim: 80 },
    { tokens: 9, qHeads: 3, kvHeads: 1, headDim: 64, qPad: 5 },
    // Large angles: position·invFreq up to ~4·10⁵ rad must still give sin/cos to ~1e-6.
    { tokens: 33, qHeads: 1, kvHeads: 1, headDim: 64, maxPos: 400_000, tol: 3e-6 },
    // Partial rotary (Phi-4-mini: 96 of 128) with LongRoPE's attention factor, and an odd number
    // of rotated pairs (3 of a head of 8) on a strided Q view.
    { tokens: 11, qHeads: 3, kvHeads: 1, headDim: 128, rotaryDim: 96, scaling: 1.1902380714238083 },
    { tokens: 7, qHeads: 2, kvHeads: 2, headDim: 8, rotaryDim: 6, qPad: 4, scaling: 1.25 },
  ];
  for (const c of cases)
    it(`N=${c.tokens} H=${c.qHeads}/${c.kvHeads} D=${c.headDim} ${JSON.stringify(c)}`, () => runCase(c));

  it('partial rotary backward (rotary dim 6 of 10, scaled) equals the transpose (CPU, f64 finite differences)', () => {
    const tokens = 3;
    const heads = 2;
    const d = 10;
    const R = 6;
    const pos = [0, 5, 77];
    const inv = defaultInvFreq(10000, R);
    const x = toF64(randn(tokens * heads * d, 3));
    const probe = toF64(randn(tokens * heads * d, 4));
    const grad = ropeRef(probe, pos, inv, tokens, heads, d, -1, 1.3, R);
    expectGradMatchesFd(
      (xx) => dotLoss(ropeRef(xx, pos, inv, tokens, heads, d, 1, 1.3, R), probe),
      x,
      grad,
      'dx partial',
    );
  });

  it('backward equals the transposed rotation (CPU, f64 finite differences)', () => {
    const tokens = 3;
    const heads = 2;
    const d = 6;
    const pos = [0, 5, 77];
    const inv = defaultInvFreq(10000, d);
    const x = toF64(randn(tokens * heads * d, 1));
    const probe = toF64(randn(tokens * heads * d, 2));
    const grad = ropeRef(probe, pos, inv, tokens, heads, d, -1);
    expectGradMatchesFd((xx) => dotLoss(ropeRef(xx, pos, inv, tokens, heads, d), probe), x, grad, 'dx');
  });

  for (const name of ['rope_qwen2', 'rope_llama3', 'rope_d80']) {
    it(`matches PyTorch autograd: ${name}`, async () => {
      const s = await open();
      const fx = await loadFixture(name);
      const { tokens, qHeads, kvHeads, headDim } = fx.meta;
      const shape = {
        positionIds: s.i32(fx.t.positionIds.data, [tokens], 'pos'),
        invFreq: s.f32(fx.f32('invFreq'), [headDim / 2], 'invFreq'),
        tokens,
        qHeads,
        kvHeads,
        headDim,
      };
      const q = s.f32(fx.f32('q'), [tokens, qHeads * headDim], 'q');
      const k = s.f32(fx.f32('k'), [tokens, kvHeads * headDim], 'k');
      const dq = s.f32(fx.f32('dqOut'), [tokens, qHeads * headDim], 'dq');
      const dk = s.f32(fx.f32('dkOut'), [tokens, kvHeads * headDim], 'dk');
      await s.run(name, async (rec) => {
        await ropeForward(rec, { q, k, ...shape });
        await ropeBackward(rec, { dq, dk, ...shape });
      });
      expect(relError(await s.read(q), fx.f32('qOut'))).toBeLessThan(1e-5);
      expect(relError(await s.read(k), fx.f32('kOut'))).toBeLessThan(1e-5);
      expect(relError(await s.read(dq), fx.f32('dq'))).toBeLessThan(1e-5);
      expect(relError(await s.read(dk), fx.f32('dk'))).toBeLessThan(1e-5);
    });
  }

  it('names the kernel and shapes on bad input', async () => {
    const s = await open();
    const q = s.f32(new Float32Array(12), [2, 6], 'qs');
    const pos = s.i32([0, 1], [2], 'pos');
    const inv = s.f32([1, 0.1, 0.01], [3], 'inv');
    await expect(
      s.run('bad', (rec) =>
        ropeForward(rec, { q, k: q, positionIds: pos, invFreq: inv, tokens: 2, qHeads: 1, kvHeads: 1, headDim: 6 }),
      ),
    ).rejects.toThrow(/rope\.forward.*share one buffer/);
    await expect(
      s.run('bad', (rec) =>
        ropeForward(rec, {
          q,
          k: s.nan(12, 'k'),
          positionIds: pos,
          invFreq: inv,
          tokens: 2,
          qHeads: 1,
          kvHeads: 1,
          headDim: 5,
        }),
      ),
    ).rejects.toThrow(/headDim must be even/);
    await expect(
      s.run('bad', (rec) =>
        ropeForward(rec, {
          q,
          k: s.nan(12, 'k'),
          positionIds: pos,
          invFreq: inv,
          tokens: 2,
          qHeads: 2,
          kvHeads: 1,
          headDim: 6,
        }),
      ),
    ).rejects.toThrow(/q needs 24 elements.*qs\[2×6:f32\]/);
    const k6 = s.nan(12, 'k6');
    const partial = (rotaryDim: number) =>
      s.run('bad', (rec) =>
        ropeForward(rec, {
          q,
          k: k6,
          positionIds: pos,
          invFreq: inv,
          tokens: 2,
          qHeads: 1,
          kvHeads: 1,
          headDim: 6,
          rotaryDim,
        }),
      );
    await expect(partial(3)).rejects.toThrow(/rotary=3.*rotaryDim must be even, got 3/);
    await expect(partial(8)).rejects.toThrow(/rotaryDim 8 exceeds headDim 6/);
  });
});
