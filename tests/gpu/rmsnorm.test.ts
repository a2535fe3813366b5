import { beforeEach, describe, expect, it } from 'vitest';
import { REDUCE_VARIANT_NAMES } from '../../src/engine/ops/reduce.ts';
import type { DType } from '../../src/engine/gpu/index.ts';
import { rmsnormBackward, rmsnormForward, rmsnormWeightGradPartials } from '../../src/engine/ops/rmsnorm.ts';
import { expectClose, relError } from '../cpu/compare.ts';
import { dotLoss, expectGradMatchesFd, toF64 } from '../cpu/gradcheck.ts';
import { randn } from '../cpu/random.ts';
import { rmsnormBackwardRef, rmsnormRef } from '../cpu/rmsnorm.ts';
import { loadFixture } from '../reference/fixtures.ts';
import { runtime } from './context.ts';
import { scopePerTest, useReduceVariant } from './kernel-util.ts';

const open = scopePerTest();

interface Case {
  rows: number;
  width: number;
  wType: DType;
  accumulate?: boolean;
  /** Gemma's (1 + w): weights centred on 0. */
  offset?: number;
}

async function runCase(c: Case) {
  const s = await open();
  const { rows, width } = c;
  const eps = 1e-6;
  const xHost = randn(rows * width, rows * 31 + width, 1.3);
  const dyHost = randn(rows * width, rows + 7 * width);
  const offset = c.offset ?? 0;
  const { t: w, seen: wSeen } = s.weight(
    randn(width, width + 3, 0.5).map((v) => v + 1 - offset),
    c.wType,
    [width],
    'w',
  );
  const dxInit = randn(rows * width, 5);
  const dwInit = randn(width, 6);
  const x = s.f32(xHost, [rows, width], 'x');
  const dy = s.f32(dyHost, [rows, width], 'dy');
  const yInit = randn(rows * width, 8);
  // accumulate: y += as well (Gemma's normed sublayer output onto the residual).
  const y = c.accumulate ? s.f32(yInit, [rows * width], 'y') : s.nan(rows * width, 'y');
  const rstd = s.nan(rows, 'rstd');
  const dx = c.accumulate ? s.f32(dxInit, [rows * width], 'dx') : s.nan(rows * width, 'dx');
  const dw = c.accumulate ? s.f32(dwInit, [width], 'dw') : s.nan(width, 'dw');
  const partials = s.nan(rmsnormWeightGradPartials(rows, width), 'partials');
  await s.run('rmsnorm-test', async (rec) => {
    await rmsnormForward(rec, { x, weight: w, y, rstd, rows, width, eps, offset: c.offset, accumulate: c.accumulate });
    await rmsnormBackward(rec, {
      x,
      weight: w,
      rstd,
      dy,
      dx,
      dWeight: dw,
      partials,
      rows,
      width,
      accumulateDx: c.accumulate,
      accumulateDWeight: c.accumulate,
      offset: c.offset,
    });
  });
  const ref = rmsnormRef(xHost, wSeen, rows, width, eps, offset);
  const back = rmsnormBackwardRef(xHost, wSeen, dyHost, rows, width, eps, offset);
  const tol = { rtol: 1e-5, atol: 1e-5 };
  const wantY = c.accumulate ? ref.y.map((v, i) => v + yInit[i]) : ref.y;
  expectClose(await s.read(y), wantY, tol, `y ${JSON.stringify(c)}`);
  expectClose(await s.read(rstd), ref.rstd, tol, 'rstd');
  const wantDx = c.accumulate ? back.dx.map((v, i) => v + dxInit[i]) : back.dx;
  const wantDw = c.accumulate ? back.dw.map((v, i) => v + dwInit[i]) : back.dw;
  expectClose(await s.read(dx), wantDx, { rtol: 1e-4, atol: 1e-5 }, 'dx');
  expectClose(await s.read(dw), wantDw, { rtol: 1e-4, atol: 1e-4 * Math.sqrt(rows) }, 'dWeight');
}

describe.each(REDUCE_VARIANT_NAMES)(`rmsnorm (${runtime}, %s reductions)`, (variant) => {
  beforeEach(async (ctx) => {
    if (!(await useReduceVariant(variant))) ctx.skip();
  });

  const cases: Case[] = [
    { rows: 1, width: 1, wType: 'f32' },
    { rows: 17, width: 64, wType: 'f32' },
    { rows: 3, width: 896, wType: 'bf16', accumulate: true },
    { rows: 130, width: 80, wType: 'f16' },
    { rows: 33, width: 257, wType: 'bf16' },
    // Qwen3 k_norm: 9 tokens × 2 KV heads, head_dim 128.
    { rows: 18, width: 128, wType: 'f32', accumulate: true },
    // Gemma's (1 + w): a bf16 weight centred on 0, and a q_norm over head_dim 256.
    { rows: 5, width: 640, wType: 'bf16', offset: 1 },
    { rows: 12, width: 256, wType: 'f32', offset: 1, accumulate: true },
  ];
  for (const c of cases)
    it(`rows=${c.rows} width=${c.width} ${c.wType}${c.accumulate ? ' accumulate' : ''}${c.offset ? ' (1 + w)' : ''}`, () =>
      runCase(c));

  it('CPU backward matches central finite differences (f64)', () => {
    const rows = 3;
    const width = 7;
    const eps = 1e-5;
    const x = toF64(randn(rows * width, 1));
    const w = toF64(randn(width, 2));
    const probe = toF64(randn(rows * width, 3));
    const { dx, dw } = rmsnormBackwardRef(x, w, probe, rows, width, eps);
    expectGradMatchesFd((xx) => dotLoss(rmsnormRef(xx, w, rows, width, eps).y, probe), x, dx, 'dx');
    expectGradMatchesFd((ww) => dotLoss(rmsnormRef(x, ww, rows, width, eps).y, probe), w, dw, 'dw');
    // Gemma's (1 + w): the input gradient sees the offset, the weight gradient does not.
    const g = rmsnormBackwardRef(x, w, probe, rows, width, eps, 1);
    expectGradMatchesFd((xx) => dotLoss(rmsnormRef(xx, w, rows, width, eps, 1).y, probe), x, g.dx, 'dx (1 + w)');
    expectGradMatchesFd((ww) => dotLoss(rmsnormRef(x, ww, rows, width, eps, 1).y, probe), w, g.dw, 'dw (1 + w)');
  });

  for (const name of ['rmsnorm_f32', 'rmsnorm_bf16', 'rmsnorm_qnorm_f16']) {
    it(`matches PyTorch autograd: ${name}`, async () => {
      const s = await open();
      const fx = await loadFixture(name);
      const { rows, width, eps } = fx.meta;
      const wt = fx.t.w;
      const w =
        wt.dtype === 'f32'
          ? s.f32(wt.data, [width], 'w', 'weights')
          : s.raw16(wt.data as Uint16Array, wt.dtype as 'bf16' | 'f16', [width], 'w');
      const x = s.f32(fx.f32('x'), [rows, width], 'x');
      const dy = s.f32(fx.f32('dy'), [rows, width], 'dy');
      const y = s.nan(rows * width, 'y');
      const rstd = s.nan(rows, 'rstd');
      const dx = s.nan(rows * width, 'dx');
      const dw = s.nan(width, 'dw');
      const partials = s.nan(rmsnormWeightGradPartials(rows, width), 'partials');
      await s.run(name, async (rec) => {
        await rmsnormForward(rec, { x, weight: w, y, rstd, rows, width, eps });
        await rmsnormBackward(rec, { x, weight: w, rstd, dy, dx, dWeight: dw, partials, rows, width });
      });
      expect(relError(await s.read(y), fx.f32('y'))).toBeLessThan(1e-5);
      expect(relError(await s.read(rstd), fx.f32('rstd'))).toBeLessThan(1e-5);
      expect(relError(await s.read(dx), fx.f32('dx'))).toBeLessThan(1e-4);
      expect(relError(await s.read(dw), fx.f32('dw'))).toBeLessThan(1e-4);
    });
  }

  it('names the kernel and shapes on bad input', async () => {
    const s = await open();
    const x = s.f32(new Float32Array(12), [3, 4], 'xs');
    const w = s.f32(new Float32Array(4), [4], 'ws');
    await expect(
      s.run('bad', (rec) => rmsnormForward(rec, { x, weight: w, y: x, rstd: w, rows: 3, width: 4, eps: 1e-6 })),
    ).rejects.toThrow(/rmsnorm\.forward.*share one buffer/);
    await expect(
      s.run('bad', (rec) =>
        rmsnormForward(rec, { x, weight: w, y: s.nan(20, 'y'), rstd: s.nan(3, 'r'), rows: 4, width: 4, eps: 1e-6 }),
      ),
    ).rejects.toThrow(/x needs 16 elements.*xs\[3×4:f32\]/);
    await expect(
      s.run('bad', (rec) =>
        rmsnormBackward(rec, {
          x,
          weight: w,
          rstd: s.nan(3, 'r'),
          dy: s.nan(12, 'dy'),
          dWeight: s.nan(4, 'dw'),
          rows: 3,
          width: 4,
        }),
      ),
    ).rejects.toThrow(/partials scratch/);
  });
});
