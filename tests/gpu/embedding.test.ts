import { describe, expect, it } from 'vitest';
import type { DType } from '../../src/engine/gpu/index.ts';
import { embeddingBackward, embeddingCsr, embeddingForward } from '../../src/engine/ops/embedding.ts';
import { expectClose, relError } from '../cpu/compare.ts';
import { embeddingBackwardRef, embeddingRef, neftuneNoise } from '../cpu/embedding.ts';
import { dotLoss, expectGradMatchesFd, toF64 } from '../cpu/gradcheck.ts';
import { randn, rng } from '../cpu/random.ts';
import { loadFixture } from '../reference/fixtures.ts';
import { runtime } from './context.ts';
import { scopePerTest } from './kernel-util.ts';

const open = scopePerTest();

function randomIds(tokens: number, vocab: number, seed: number): Int32Array {
  const r = rng(seed);
  // Skewed so ids repeat (as real text does).
  return Int32Array.from({ length: tokens }, () => Math.floor(vocab * r() ** 2));
}

async function runCase(
  tokens: number,
  vocab: number,
  hidden: number,
  wType: DType,
  accumulate: boolean,
  scale?: number,
) {
  const s = await open();
  const ids = randomIds(tokens, vocab, tokens + vocab);
  const { t: weight, seen } = s.weight(randn(vocab * hidden, hidden), wType, [vocab, hidden], 'W');
  const dOutHost = randn(tokens * hidden, 3);
  const dwInit = randn(vocab * hidden, 4);
  const idsT = s.i32(ids, [tokens], 'ids');
  const out = s.nan(tokens * hidden, 'out');
  const csr = embeddingCsr(ids, vocab);
  const dW = s.f32(accumulate ? dwInit : new Float32Array(vocab * hidden), [vocab, hidden], 'dW', 'gradients');
  await s.run('embedding', async (rec) => {
    await embeddingForward(rec, { ids: idsT, weight, out, tokens, vocab, hidden, scale });
    await embeddingBackward(rec, {
      scale,
      dOut: s.f32(dOutHost, [tokens, hidden], 'dOut'),
      uniqueIds: s.i32(csr.uniqueIds, [csr.uniqueIds.length], 'uniq'),
      offsets: s.i32(csr.offsets, [csr.offsets.length], 'offsets'),
      positions: s.i32(csr.positions, [tokens], 'positions'),
      uniqueCount: csr.uniqueIds.length,
      dWeight: dW,
      accumulate,
      tokens,
      vocab,
      hidden,
    });
  });
  // A scale rounds once in f32 (one product per element).
  const outTol = scale === undefined ? { rtol: 0, atol: 0 } : { rtol: 1e-7, atol: 0 };
  expectClose(await s.read(out), embeddingRef(ids, seen, hidden, scale), outTol, 'out');
  const want = embeddingBackwardRef(ids, dOutHost, vocab, hidden, scale);
  if (accumulate) want.forEach((v, i) => (want[i] = v + dwInit[i]));
  expectClose(await s.read(dW), want, { rtol: 1e-5, atol: 1e-5 }, 'dW');
}

describe(`embedding (${runtime})`, () => {
  it('tokens=1 vocab=1 hidden=1 f32', () => runCase(1, 1, 1, 'f32', false));
  it('tokens=17 vocab=30 hidden=64 bf16', () => runCase(17, 30, 64, 'bf16', false));
  it('tokens=130 vocab=300 hidden=80 f16 accumulate', () => runCase(130, 300, 80, 'f16', true));
  it('tokens=40 vocab=7 hidden=257 f32 (many repeats)', () => runCase(40, 7, 257, 'f32', false));
  // Gemma: √hidden in the weight's dtype (bf16(√640) = 25.25), forward and backward.
  it('tokens=33 vocab=50 hidden=64 bf16, scaled by 25.25', () => runCase(33, 50, 64, 'bf16', true, 25.25));

  it('CSR builder groups positions by id in token order and rejects bad ids', () => {
    const csr = embeddingCsr([5, 2, 5, 9, 2, 5], 10);
    expect([...csr.uniqueIds]).toEqual([2, 5, 9]);
    expect([...csr.offsets]).toEqual([0, 2, 5, 6]);
    expect([...csr.positions]).toEqual([1, 4, 0, 2, 5, 3]);
    expect(() => embeddingCsr([1, 10], 10)).toThrow(/token 1 has id 10, outside the vocabulary \[0, 10\)/);
    expect(() => embeddingCsr([-1], 10)).toThrow(/token 0 has id -1/);
  });

  it('CPU backward matches central finite differences (f64)', () => {
    const ids = [2, 0, 2, 1];
    const hidden = 3;
    const w = toF64(randn(4 * hidden, 1));
    const probe = toF64(randn(ids.length * hidden, 2));
    const dW = embeddingBackwardRef(ids, probe, 4, hidden);
    expectGradMatchesFd((ww) => dotLoss(embeddingRef(ids, ww, hidden), probe), w, dW, 'dW');
  });

  it('NEFTune: bounded uniform noise of the HF magnitude, reproducible per (seed, stream)', async () => {
    const s = await open();
    const fx = await loadFixture('embedding');
    const { vocab, hidden } = fx.meta;
    const tokens = 300;
    const ids = randomIds(tokens, vocab, 9);
    const weight = s.raw16(fx.t.w.data as Uint16Array, 'bf16', [vocab, hidden], 'W');
    const idsT = s.i32(ids, [tokens], 'ids');
    const outs = [
      s.nan(tokens * hidden, 'o1'),
      s.nan(tokens * hidden, 'o2'),
      s.nan(tokens * hidden, 'o3'),
      s.nan(tokens * hidden, 'clean'),
    ];
    const neftune = { alpha: fx.meta.neftuneAlpha, seqLen: fx.meta.neftuneSeqLen, seed: 1234 };
    await s.run('neftune', async (rec) => {
      await embeddingForward(rec, {
        ids: idsT,
        weight,
        out: outs[0],
        tokens,
        vocab,
        hidden,
        neftune: { ...neftune, stream: 7 },
      });
      await embeddingForward(rec, {
        ids: idsT,
        weight,
        out: outs[1],
        tokens,
        vocab,
        hidden,
        neftune: { ...neftune, stream: 7 },
      });
      await embeddingForward(rec, {
        ids: idsT,
        weight,
        out: outs[2],
        tokens,
        vocab,
        hidden,
        neftune: { ...neftune, stream: 8 },
      });
      await embeddingForward(rec, { ids: idsT, weight, out: outs[3], tokens, vocab, hidden });
    });
    const [a, b, c, clean] = await Promise.all(outs.map((o) => s.read(o)));
    expect([...a]).toEqual([...b]);
    const mag = fx.meta.neftuneMag as number;
    let sum = 0;
    let sq = 0;
    let max = 0;
    let same = 0;
    for (let i = 0; i < a.length; i++) {
      const noise = a[i] - clean[i];
      // The documented hash, up to rounding (a GPU may fuse the multiply-add).
      const want = clean[i] + mag * neftuneNoise(1234, 7, i);
      if (Math.abs(a[i] - want) > 2.5e-7 * Math.max(1, Math.abs(want))) expect(a[i], `element ${i}`).toBe(want);
      sum += noise;
      sq += noise * noise;
      max = Math.max(max, Math.abs(noise));
      if (a[i] === c[i]) same++;
    }
    const n = a.length;
    expect(max).toBeLessThanOrEqual(mag * (1 + 1e-5));
    expect(max).toBeGreaterThan(mag * 0.99);
    expect(Math.abs(sum / n)).toBeLessThan((4 * mag) / Math.sqrt(3 * n)); // 4σ of the mean
    expect(sq / n / ((mag * mag) / 3)).toBeGreaterThan(0.97);
    expect(sq / n / ((mag * mag) / 3)).toBeLessThan(1.03);
    expect(same).toBeLessThan(n / 100); // another stream gives other noise
  });

  it("NEFTune with a scale: Gemma 3's noise after the scaled lookup, Gemma 2's scaled with it", async () => {
    const s = await open();
    const vocab = 20;
    const hidden = 16;
    const tokens = 12;
    const host = randn(vocab * hidden, 4);
    const ids = randomIds(tokens, vocab, 3);
    const weight = s.f32(host, [vocab, hidden], 'W', 'weights');
    const idsT = s.i32(ids, [tokens], 'ids');
    const neftune = { alpha: 5, seqLen: 6, seed: 77, stream: 2 };
    const after = s.nan(tokens * hidden, 'after');
    const before = s.nan(tokens * hidden, 'before');
    const scale = 34;
    await s.run('neftune-scale', async (rec) => {
      await embeddingForward(rec, { ids: idsT, weight, out: after, tokens, vocab, hidden, neftune, scale });
      const args = { ids: idsT, weight, out: before, tokens, vocab, hidden, neftune, scale, noiseBeforeScale: true };
      await embeddingForward(rec, args);
    });
    const [a, b] = [await s.read(after), await s.read(before)];
    const mag = 5 / Math.sqrt(6 * hidden);
    for (let i = 0; i < a.length; i++) {
      const w = host[ids[Math.floor(i / hidden)] * hidden + (i % hidden)];
      const noise = mag * neftuneNoise(77, 2, i);
      expect(Math.abs(a[i] - (w * scale + noise)), `after, element ${i}`).toBeLessThan(
        1e-5 * Math.abs(w * scale) + 1e-6,
      );
      expect(Math.abs(b[i] - (w + noise) * scale), `before, element ${i}`).toBeLessThan(
        1e-5 * Math.abs(w * scale) + 1e-5,
      );
    }
  });

  it('matches PyTorch F.embedding autograd (bf16 table, repeated ids)', async () => {
    const s = await open();
    const fx = await loadFixture('embedding');
    const { vocab, hidden, tokens } = fx.meta;
    const ids = fx.t.ids.data as Int32Array;
    const csr = embeddingCsr(ids, vocab);
    const out = s.nan(tokens * hidden, 'out');
    const dW = s.f32(new Float32Array(vocab * hidden), [vocab, hidden], 'dW', 'gradients');
    await s.run('embedding-fixture', async (rec) => {
      await embeddingForward(rec, {
        ids: s.i32(ids, [tokens], 'ids'),
        weight: s.raw16(fx.t.w.data as Uint16Array, 'bf16', [vocab, hidden], 'W'),
        out,
        tokens,
        vocab,
        hidden,
      });
      await embeddingBackward(rec, {
        dOut: s.f32(fx.f32('dOut'), [tokens, hidden], 'dOut'),
        uniqueIds: s.i32(csr.uniqueIds, [csr.uniqueIds.length], 'u'),
        offsets: s.i32(csr.offsets, [csr.offsets.length], 'o'),
        positions: s.i32(csr.positions, [tokens], 'p'),
        uniqueCount: csr.uniqueIds.length,
        dWeight: dW,
        tokens,
        vocab,
        hidden,
      });
    });
    expect(relError(await s.read(out), fx.f32('out'))).toBe(0);
    expect(relError(await s.read(dW), fx.f32('dW'))).toBeLessThan(1e-6);
  });

  it('out-of-range ids give NaN rows; bad shapes name the kernel', async () => {
    const s = await open();
    const weight = s.f32(new Float32Array(6).fill(1), [3, 2], 'W');
    const out = s.nan(6, 'out');
    await s.run('oob', (rec) =>
      embeddingForward(rec, { ids: s.i32([0, 3, -1], [3], 'ids'), weight, out, tokens: 3, vocab: 3, hidden: 2 }),
    );
    const got = await s.read(out);
    expect([got[0], got[1]]).toEqual([1, 1]);
    expect(got.slice(2).every(Number.isNaN)).toBe(true);
    await expect(
      s.run('bad', (rec) =>
        embeddingForward(rec, { ids: s.i32([0], [1], 'ids'), weight, out, tokens: 1, vocab: 4, hidden: 2 }),
      ),
    ).rejects.toThrow(/embedding\.forward.*weight needs 8 elements.*W\[3×2:f32\]/);
  });
});
