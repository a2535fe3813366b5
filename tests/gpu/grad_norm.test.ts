import { beforeEach, describe, expect, it } from 'vitest';
import { REDUCE_VARIANT_NAMES } from '../../src/engine/ops/reduce.ts';
import { GRAD_STATS, gradClip, gradNorm, gradNormPartials } from '../../src/engine/ops/grad_norm.ts';
import { expectClose, relError } from '../cpu/compare.ts';
import { gradNormRef } from '../cpu/grad_norm.ts';
import { randn } from '../cpu/random.ts';
import { loadFixture } from '../reference/fixtures.ts';
import { runtime } from './context.ts';
import { Scope, scopePerTest, useReduceVariant } from './kernel-util.ts';

const open = scopePerTest();

// Stated tolerance: relative error of the norm vs an f64 CPU sum ≤ 2e-6 (Kahan per thread + tree).
const NORM_RTOL = 2e-6;

async function normOf(s: Scope, arrays: Float32Array[], maxNorm: number, clip = false) {
  const tensors = arrays.map((a, i) => s.f32(a, [a.length], `g${i}`, 'gradients'));
  const partials = s.nan(gradNormPartials(arrays.map((a) => a.length)), 'partials');
  const stats = s.f32([7, 7, 7, 7, 7, 7], [6], 'stats');
  await s.run('grad-norm', async (rec) => {
    await gradNorm(rec, { ranges: tensors.map((grads) => ({ grads })), partials, stats, statsIndex: 1, maxNorm });
    if (clip) for (const grads of tensors) await gradClip(rec, { grads, stats, statsIndex: 1 });
  });
  const st = await s.read(stats);
  expect(st[0]).toBe(7); // untouched around the block
  expect(st[5]).toBe(7);
  return { stats: st.subarray(1, 5), grads: clip ? await Promise.all(tensors.map((t) => s.read(t))) : [] };
}

describe.each(REDUCE_VARIANT_NAMES)(`grad_norm (${runtime}, %s reductions)`, (variant) => {
  beforeEach(async (ctx) => {
    if (!(await useReduceVariant(variant))) ctx.skip();
  });

  it('10⁶ elements match an f64 CPU sum', async () => {
    const s = await open();
    const g = randn(1_000_000, 1, 0.01);
    const want = gradNormRef([g], 1);
    const { stats } = await normOf(s, [g], 1);
    expect(Math.abs(stats[GRAD_STATS.norm] - want.norm) / want.norm).toBeLessThan(NORM_RTOL);
    expect(Math.abs(stats[GRAD_STATS.sumSquares] - want.sumSq) / want.sumSq).toBeLessThan(2 * NORM_RTOL);
    expect(Math.abs(stats[GRAD_STATS.clipCoef] - want.clipCoef) / want.clipCoef).toBeLessThan(NORM_RTOL);
    expect(stats[GRAD_STATS.nonFinite]).toBe(0);
  });

  it('several ranges (sizes 1, 255, 2049, 300001 with offsets) and clipping', async () => {
    const s = await open();
    const arrays = [randn(1, 2), randn(255, 3), randn(2049, 4, 3), randn(300_001, 5, 0.5)];
    // One range is a window into a bigger arena.
    const arena = new Float32Array(10 + arrays[2].length + 7).fill(1e3);
    arena.set(arrays[2], 10);
    const ts = arrays.map((a, i) =>
      s.f32(i === 2 ? arena : a, [i === 2 ? arena.length : a.length], `g${i}`, 'gradients'),
    );
    const partials = s.nan(gradNormPartials(arrays.map((a) => a.length)), 'partials');
    const stats = s.nan(4, 'stats');
    const maxNorm = 5;
    await s.run('grad-norm-ranges', async (rec) => {
      await gradNorm(rec, {
        ranges: ts.map((grads, i) => (i === 2 ? { grads, offset: 10, count: arrays[2].length } : { grads })),
        partials,
        stats,
        maxNorm,
      });
      await gradClip(rec, { grads: ts[3], stats });
      await gradClip(rec, { grads: ts[2], offset: 10, count: arrays[2].length, stats });
    });
    const want = gradNormRef(arrays, maxNorm);
    const st = await s.read(stats);
    expect(Math.abs(st[0] - want.norm) / want.norm).toBeLessThan(NORM_RTOL);
    expect(Math.abs(st[1] - want.clipCoef) / want.clipCoef).toBeLessThan(NORM_RTOL);
    expect(want.clipCoef).toBeLessThan(0.02);
    expectClose(
      await s.read(ts[3]),
      arrays[3].map((v) => v * st[1]),
      { rtol: 1e-6, atol: 0 },
      'clipped',
    );
    const a2 = await s.read(ts[2]);
    expect(a2[9]).toBe(1e3);
    expect(a2[10 + arrays[2].length]).toBe(1e3);
    expectClose(
      a2.subarray(10, 10 + arrays[2].length),
      arrays[2].map((v) => v * st[1]),
      { rtol: 1e-6, atol: 0 },
      'clipped window',
    );
  });

  it('maxNorm ≤ 0 disables clipping; small norms keep coefficient 1', async () => {
    const s = await open();
    const g = randn(1000, 9, 10);
    expect((await normOf(s, [g], 0)).stats[GRAD_STATS.clipCoef]).toBe(1);
    expect((await normOf(s, [g], 1e6)).stats[GRAD_STATS.clipCoef]).toBe(1);
  });

  it('flags non-finite gradients (clipCoef 0, nonFinite 1)', async () => {
    const s = await open();
    const g = randn(5000, 9);
    g[4321] = Infinity;
    const { stats } = await normOf(s, [g], 1);
    expect(stats[GRAD_STATS.nonFinite]).toBe(1);
    expect(stats[GRAD_STATS.clipCoef]).toBe(0);
    g[4321] = NaN;
    expect((await normOf(s, [g], 1)).stats[GRAD_STATS.nonFinite]).toBe(1);
  });

  it('matches torch.nn.utils.clip_grad_norm_ over several tensors', async () => {
    const s = await open();
    const fx = await loadFixture('grad_norm');
    const counts = fx.meta.counts as number[];
    const before = fx.f32('before');
    const arrays: Float32Array[] = [];
    let at = 0;
    for (const c of counts) {
      arrays.push(before.slice(at, at + c));
      at += c;
    }
    const { stats, grads } = await normOf(s, arrays, fx.meta.maxNorm, true);
    expect(relError([stats[0]], fx.f32('norm'))).toBeLessThan(1e-6);
    const after = new Float32Array(at);
    let o = 0;
    for (const g of grads) {
      after.set(g, o);
      o += g.length;
    }
    expect(relError(after, fx.f32('after'))).toBeLessThan(1e-6);
  });

  it('names the kernel and shapes on bad input', async () => {
    const s = await open();
    const g = s.f32(new Float32Array(10), [10], 'gr');
    await expect(
      s.run('bad', (rec) =>
        gradNorm(rec, {
          ranges: [{ grads: g, offset: 5, count: 6 }],
          partials: s.nan(4, 'p'),
          stats: s.nan(4, 'st'),
          maxNorm: 1,
        }),
      ),
    ).rejects.toThrow(/grad_norm.*gr\[10:f32\].*grads needs 11 elements/);
    await expect(
      s.run('bad', (rec) =>
        gradNorm(rec, { ranges: [{ grads: g }], partials: s.nan(4, 'p'), stats: s.nan(3, 'st'), maxNorm: 1 }),
      ),
    ).rejects.toThrow(/stats needs 4 elements/);
  });
});
