// The preference kernels against their CPU references (tests/cpu/preference.ts) at odd shapes:
// per-sequence label log-prob sums (shaders/preference.wgsl) and the per-row loss scale of the
// cross-entropy kernel, whose gradient is checked by finite differences of Σ_r w_r·NLL_r too.
import { beforeEach, describe, expect, it } from 'vitest';
import { REDUCE_VARIANT_NAMES } from '../../src/engine/ops/reduce.ts';
import { crossEntropy } from '../../src/engine/ops/cross_entropy.ts';
import { sequenceLogps } from '../../src/engine/ops/preference.ts';
import { expectClose } from '../cpu/compare.ts';
import { crossEntropyPerRowRef, sequenceLogpsRef } from '../cpu/preference.ts';
import { randn, rng } from '../cpu/random.ts';
import { runtime } from './context.ts';
import { scopePerTest, useReduceVariant } from './kernel-util.ts';

const open = scopePerTest();

/** Labels with masked prompts and padding; about one row in three ignored. */
function labelsFor(n: number, vocab: number, seed: number): Int32Array {
  const r = rng(seed);
  return Int32Array.from({ length: n }, () => (r() < 0.35 ? -100 : Math.floor(r() * vocab)));
}

describe.each(REDUCE_VARIANT_NAMES)(`preference kernels (${runtime}, %s reductions)`, (variant) => {
  beforeEach(async (ctx) => {
    if (!(await useReduceVariant(variant))) ctx.skip();
  });

  for (const [B, T] of [
    [1, 1],
    [2, 7],
    [6, 37],
    [3, 300],
  ] as const) {
    it(`sequenceLogps B=${B} T=${T} (ignored rows hold NaN and are skipped)`, async () => {
      const s = await open();
      const n = B * T;
      const labels = labelsFor(n, 50, n);
      const loss = Float32Array.from(randn(n, n + 1, 3), (x, i) => (labels[i] === -100 ? NaN : Math.abs(x)));
      const out = s.nan(2 * B + 3, 'out');
      await s.run('logps', (rec) =>
        sequenceLogps(rec, {
          rowLoss: s.f32(loss, [n], 'rowLoss'),
          labels: s.i32(labels, [n], 'labels'),
          out,
          outOffset: 3,
          sequences: B,
          seqLen: T,
        }),
      );
      const got = (await s.read(out)).slice(3);
      expectClose(got, sequenceLogpsRef(loss, labels, B, T), { rtol: 1e-5, atol: 1e-5 }, 'sequence logps');
    });
  }

  for (const [rows, vocab, offset] of [
    [1, 3, 0],
    [9, 301, 4],
    [33, 1000, 17],
  ] as const) {
    it(`cross-entropy with a per-row scale rows=${rows} vocab=${vocab} labelOffset=${offset}`, async () => {
      const s = await open();
      const logitsHost = randn(rows * vocab, rows * vocab + 5, 2);
      const labels = labelsFor(offset + rows, vocab, rows);
      const weights = Float32Array.from(randn(offset + rows, 11, 1));
      const logits = s.f32(logitsHost, [rows, vocab], 'logits');
      const rowLoss = s.nan(offset + rows, 'rowLoss');
      const accum = s.f32([0.25], [1], 'accum');
      await s.run('ce', (rec) =>
        crossEntropy(rec, {
          logits,
          labels: s.i32(labels, [offset + rows], 'labels'),
          labelOffset: offset,
          rowLoss,
          lossOffset: offset,
          lossScale: { buffer: s.f32(weights, [offset + rows], 'weights'), perRow: true },
          lossAccum: { tensor: accum, index: 0, accumulate: true },
          rows,
          vocab,
        }),
      );
      const ref = crossEntropyPerRowRef(logitsHost, labels.subarray(offset), rows, vocab, weights.subarray(offset));
      expectClose((await s.read(rowLoss)).slice(offset), ref.rowLoss, { rtol: 1e-5, atol: 1e-5 }, 'rowLoss');
      expectClose(await s.read(logits), ref.grad, { rtol: 1e-4, atol: 1e-6 }, 'dLogits');
      const acc = (await s.read(accum))[0];
      expect(Math.abs(acc - (0.25 + ref.total))).toBeLessThan(1e-5 * (1 + Math.abs(ref.total)));
      // Finite differences of Σ_r w_r·NLL_r at one labelled row (the reference is the math).
      const r0 = labels.subarray(offset).findIndex((l) => l !== -100);
      if (r0 >= 0) {
        const f = (x: ArrayLike<number>) =>
          crossEntropyPerRowRef(x, labels.subarray(offset), rows, vocab, weights.subarray(offset)).total;
        const v = (r0 * vocab + 1) % (rows * vocab);
        const h = 1e-3;
        const up = Float64Array.from(logitsHost);
        const dn = Float64Array.from(logitsHost);
        up[v] += h;
        dn[v] -= h;
        const fd = (f(up) - f(dn)) / (2 * h);
        expect(Math.abs(fd - ref.grad[v])).toBeLessThan(1e-4 * (1 + Math.abs(fd)));
      }
    });
  }
});
