import { beforeEach, describe, expect, it } from 'vitest';
import { REDUCE_VARIANT_NAMES } from '../../src/engine/ops/reduce.ts';
import { crossEntropy } from '../../src/engine/ops/cross_entropy.ts';
import { expectClose, relError } from '../cpu/compare.ts';
import { crossEntropyRef, hashedLogits } from '../cpu/cross_entropy.ts';
import { softcapRef } from '../cpu/softcap.ts';
import { expectGradMatchesFd, toF64 } from '../cpu/gradcheck.ts';
import { randn, rng } from '../cpu/random.ts';
import { loadFixture } from '../reference/fixtures.ts';
import { runtime } from './context.ts';
import { scopePerTest, useReduceVariant } from './kernel-util.ts';

const open = scopePerTest();

function randomLabels(rows: number, vocab: number, seed: number): Int32Array {
  const r = rng(seed);
  return Int32Array.from({ length: rows }, (_, i) => (i % 4 === 1 ? -100 : Math.floor(r() * vocab)));
}

async function runCase(rows: number, vocab: number, scaleInBuffer: boolean, softcap?: number) {
  const s = await open();
  const raw = randn(rows * vocab, rows + vocab, 3);
  // With a soft-cap the kernel receives capped logits (ops/softcap.ts) and returns dL/d(raw).
  const logitsHost = softcap ? Float32Array.from(softcapRef(raw, softcap)) : raw;
  const labelsHost = randomLabels(rows, vocab, vocab);
  const count = labelsHost.filter((l) => l !== -100).length;
  const scale = 1 / Math.max(1, count);
  const logits = s.f32(logitsHost, [rows, vocab], 'logits');
  const rowLoss = s.nan(rows, 'rowLoss');
  const accum = s.f32([0.5, 0], [2], 'lossAccum');
  const lossScale = scaleInBuffer ? { buffer: s.f32([9, scale], [2], 'scale'), index: 1 } : scale;
  await s.run('ce', (rec) =>
    crossEntropy(rec, {
      logits,
      labels: s.i32(labelsHost, [rows], 'labels'),
      rowLoss,
      lossScale,
      lossAccum: { tensor: accum, index: 0, accumulate: true },
      rows,
      vocab,
      softcap,
    }),
  );
  const ref = crossEntropyRef(logitsHost, labelsHost, rows, vocab, Math.fround(scale), -100, softcap);
  expectClose(await s.read(rowLoss), ref.rowLoss, { rtol: 1e-5, atol: 1e-5 }, 'rowLoss');
  expectClose(await s.read(logits), ref.grad, { rtol: 1e-4, atol: 1e-7 }, 'dLogits');
  const acc = await s.read(accum);
  expect(Math.abs(acc[0] - (0.5 + ref.total))).toBeLessThan(1e-5 * (0.5 + ref.total));
  expect(acc[1]).toBe(0);
}

describe.each(REDUCE_VARIANT_NAMES)(`cross_entropy (${runtime}, %s reductions)`, (variant) => {
  beforeEach(async (ctx) => {
    if (!(await useReduceVariant(variant))) ctx.skip();
  });

  it('rows=1 vocab=1', () => runCase(1, 1, false));
  it('rows=17 vocab=1000 (scale from a GPU buffer)', () => runCase(17, 1000, true));
  it('rows=5 vocab=4099 (not a multiple of 256)', () => runCase(5, 4099, false));
  it('rows=130 vocab=37', () => runCase(130, 37, true));
  // Gemma 2's final_logit_softcapping: a cap of 2 bends logits of spread 3.
  it('rows=9 vocab=300, soft-capped at 2', () => runCase(9, 300, false, 2));

  it('CPU gradient matches central finite differences of scale·Σ loss (f64)', () => {
    const rows = 3;
    const vocab = 5;
    const labels = [2, -100, 4];
    const x = toF64(randn(rows * vocab, 1, 2));
    const { grad } = crossEntropyRef(x, labels, rows, vocab, 0.5);
    expectGradMatchesFd((xx) => crossEntropyRef(xx, labels, rows, vocab, 0.5).total, x, grad, 'dLogits');
    // Through a soft-cap: the gradient of CE(cap·tanh(x / cap)) with respect to the raw x.
    const capped = crossEntropyRef(softcapRef(x, 1.5), labels, rows, vocab, 0.5, -100, 1.5).grad;
    expectGradMatchesFd(
      (xx) => crossEntropyRef(softcapRef(xx, 1.5), labels, rows, vocab, 0.5).total,
      x,
      capped,
      'dLogits through the soft-cap',
    );
  });

  it('row chunks with labelOffset add up to the whole-batch loss (the chunking contract)', async () => {
    const s = await open();
    const rows = 10;
    const vocab = 300;
    const logitsHost = randn(rows * vocab, 3, 2);
    const labelsHost = randomLabels(rows, vocab, 4);
    const count = labelsHost.filter((l) => l !== -100).length;
    const labels = s.i32(labelsHost, [rows], 'labels');
    const rowLoss = s.nan(rows, 'rowLoss');
    const accum = s.nan(1, 'accum');
    const scale = { buffer: s.f32([1 / count], [1], 'scale') };
    const chunks = [
      [0, 4],
      [4, 3],
      [7, 3],
    ];
    const grads: Float32Array[] = [];
    for (const [r0, n] of chunks) {
      const chunk = s.f32(logitsHost.subarray(r0 * vocab, (r0 + n) * vocab), [n, vocab], `chunk${r0}`);
      await s.run('ce-chunk', (rec) =>
        crossEntropy(rec, {
          logits: chunk,
          labels,
          labelOffset: r0,
          rowLoss,
          lossOffset: r0,
          lossScale: scale,
          lossAccum: { tensor: accum, accumulate: r0 > 0 },
          rows: n,
          vocab,
        }),
      );
      grads.push(await s.read(chunk));
    }
    const ref = crossEntropyRef(logitsHost, labelsHost, rows, vocab, Math.fround(1 / count));
    expectClose(await s.read(rowLoss), ref.rowLoss, { rtol: 1e-5, atol: 1e-5 }, 'rowLoss');
    const all = new Float32Array(rows * vocab);
    chunks.forEach(([r0], i) => all.set(grads[i], r0 * vocab));
    expectClose(all, ref.grad, { rtol: 1e-4, atol: 1e-7 }, 'dLogits');
    expect(Math.abs((await s.read(accum))[0] - ref.total)).toBeLessThan(1e-5 * ref.total);
  });

  it('evaluation mode leaves logits untouched; bad labels give NaN loss', async () => {
    const s = await open();
    const host = randn(3 * 8, 5);
    const logits = s.f32(host, [3, 8], 'logits');
    const rowLoss = s.nan(3, 'rowLoss');
    await s.run('ce-eval', (rec) =>
      crossEntropy(rec, {
        logits,
        labels: s.i32([1, 8, -5], [3], 'labels'),
        rowLoss,
        lossScale: 1,
        rows: 3,
        vocab: 8,
        writeGrad: false,
      }),
    );
    expect([...(await s.read(logits))]).toEqual([...host]);
    const loss = await s.read(rowLoss);
    expect(Math.abs(loss[0] - crossEntropyRef(host, [1, -100, -100], 3, 8, 1).rowLoss[0])).toBeLessThan(1e-5);
    expect(Number.isNaN(loss[1]) && Number.isNaN(loss[2])).toBe(true);
  });

  it('matches PyTorch F.cross_entropy (sum / count) with ignored rows', async () => {
    const s = await open();
    const fx = await loadFixture('cross_entropy_small');
    const { rows, vocab, count } = fx.meta;
    const logits = s.f32(fx.f32('logits'), [rows, vocab], 'logits');
    const rowLoss = s.nan(rows, 'rowLoss');
    const accum = s.nan(1, 'accum');
    await s.run('ce-fixture', (rec) =>
      crossEntropy(rec, {
        logits,
        labels: s.i32(fx.t.labels.data, [rows], 'labels'),
        rowLoss,
        lossScale: { buffer: s.f32([1 / count], [1], 'scale') },
        lossAccum: { tensor: accum },
        rows,
        vocab,
      }),
    );
    expect(relError(await s.read(rowLoss), fx.f32('rowLoss'))).toBeLessThan(1e-5);
    expect(relError(await s.read(accum), fx.f32('loss'))).toBeLessThan(1e-5);
    expect(relError(await s.read(logits), fx.f32('grad'))).toBeLessThan(1e-5);
  });

  it('matches PyTorch at the Qwen2 vocabulary (V = 151936)', async () => {
    const s = await open();
    const fx = await loadFixture('cross_entropy_qwen_vocab');
    const { rows, vocab, count, salt, spread } = fx.meta;
    const logits = s.f32(hashedLogits(rows * vocab, salt, spread), [rows, vocab], 'logits');
    const rowLoss = s.nan(rows, 'rowLoss');
    const accum = s.nan(1, 'accum');
    await s.run('ce-qwen', (rec) =>
      crossEntropy(rec, {
        logits,
        labels: s.i32(fx.t.labels.data, [rows], 'labels'),
        rowLoss,
        lossScale: 1 / count,
        lossAccum: { tensor: accum },
        rows,
        vocab,
      }),
    );
    expect(relError(await s.read(rowLoss), fx.f32('rowLoss'))).toBeLessThan(1e-5);
    expect(relError(await s.read(accum), fx.f32('loss'))).toBeLessThan(1e-5);
    const grad = await s.read(logits);
    const idx = fx.t.sampleIndex.data as Int32Array;
    expect(
      relError(
        Array.from(idx, (i) => grad[i]),
        fx.f32('sampleGrad'),
      ),
    ).toBeLessThan(1e-5);
    // Every gradient row of a labelled token sums to zero (softmax − onehot).
    for (const r of [0, 2]) {
      let sum = 0;
      for (let v = 0; v < vocab; v++) sum += grad[r * vocab + v];
      expect(Math.abs(sum)).toBeLessThan(1e-5);
    }
    expect(grad.subarray(vocab, 2 * vocab).every((g) => g === 0)).toBe(true);
  });

  it('names the kernel and shapes on bad input', async () => {
    const s = await open();
    const logits = s.f32(new Float32Array(12), [3, 4], 'lg');
    await expect(
      s.run('bad', (rec) =>
        crossEntropy(rec, {
          logits,
          labels: s.i32([0, 1], [2], 'lb'),
          rowLoss: s.nan(3, 'rl'),
          lossScale: 1,
          rows: 3,
          vocab: 4,
        }),
      ),
    ).rejects.toThrow(/cross_entropy.*labels needs 3 elements.*lb\[2:i32\]/);
    await expect(
      s.run('bad', (rec) =>
        crossEntropy(rec, {
          logits,
          labels: s.i32([0, 1, 2], [3], 'lb'),
          rowLoss: logits,
          lossScale: 1,
          rows: 3,
          vocab: 4,
        }),
      ),
    ).rejects.toThrow(/share one buffer/);
  });
});
