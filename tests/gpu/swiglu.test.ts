import { describe, expect, it } from 'vitest';
import { swigluBackward, swigluForward, type GateActivation } from '../../src/engine/ops/swiglu.ts';
import { expectClose, relError } from '../cpu/compare.ts';
import { dotLoss, expectGradMatchesFd, toF64 } from '../cpu/gradcheck.ts';
import { randn } from '../cpu/random.ts';
import { swigluBackwardRef, swigluRef } from '../cpu/swiglu.ts';
import { loadFixture } from '../reference/fixtures.ts';
import { runtime } from './context.ts';
import { scopePerTest } from './kernel-util.ts';

const open = scopePerTest();

async function runCase(rows: number, width: number, fused: boolean, activation: GateActivation = 'silu') {
  const s = await open();
  const n = rows * width;
  const g = randn(n, rows + width, 2.5);
  const u = randn(n, rows * 5 + width);
  const dyHost = randn(n, 77 + n);
  const y = s.nan(n, 'y');
  const dy = s.f32(dyHost, [rows, width], 'dy');
  let dGateGot: Float32Array;
  let dUpGot: Float32Array;
  if (fused) {
    const gu = new Float32Array(2 * n);
    for (let r = 0; r < rows; r++) {
      gu.set(g.subarray(r * width, (r + 1) * width), 2 * r * width);
      gu.set(u.subarray(r * width, (r + 1) * width), (2 * r + 1) * width);
    }
    const gateUp = s.f32(gu, [rows, 2 * width], 'gateUp');
    const dGateUp = s.nan(2 * n, 'dGateUp');
    await s.run('swiglu-fused', async (rec) => {
      await swigluForward(rec, { gateUp, y, rows, width, activation });
      await swigluBackward(rec, { gateUp, dy, dGateUp, rows, width, activation });
    });
    const d = await s.read(dGateUp);
    dGateGot = new Float32Array(n);
    dUpGot = new Float32Array(n);
    for (let r = 0; r < rows; r++) {
      dGateGot.set(d.subarray(2 * r * width, (2 * r + 1) * width), r * width);
      dUpGot.set(d.subarray((2 * r + 1) * width, (2 * r + 2) * width), r * width);
    }
  } else {
    const gate = s.f32(g, [rows, width], 'gate');
    const up = s.f32(u, [rows, width], 'up');
    const dGate = s.nan(n, 'dGate');
    const dUp = s.nan(n, 'dUp');
    await s.run('swiglu', async (rec) => {
      await swigluForward(rec, { gate, up, y, rows, width, activation });
      await swigluBackward(rec, { gate, up, dy, dGate, dUp, rows, width, activation });
    });
    dGateGot = await s.read(dGate);
    dUpGot = await s.read(dUp);
  }
  const tol = { rtol: 1e-5, atol: 1e-6 };
  expectClose(await s.read(y), swigluRef(g, u, activation), tol, 'y');
  const back = swigluBackwardRef(g, u, dyHost, activation);
  expectClose(dGateGot, back.dGate, tol, 'dGate');
  expectClose(dUpGot, back.dUp, tol, 'dUp');
}

describe(`swiglu (${runtime})`, () => {
  for (const [rows, width, fused] of [
    [1, 1, false],
    [17, 64, false],
    [3, 4864, false],
    [130, 33, false],
    [5, 37, true],
    [2, 4864, true],
  ] as const) {
    it(`rows=${rows} width=${width}${fused ? ' fused' : ''}`, () => runCase(rows, width, fused));
  }
  // Gemma's GeGLU (gelu_pytorch_tanh), separate and fused.
  it('gelu_tanh rows=17 width=64', () => runCase(17, 64, false, 'gelu_tanh'));
  it('gelu_tanh rows=5 width=37 fused', () => runCase(5, 37, true, 'gelu_tanh'));

  it('CPU backward matches central finite differences (f64)', () => {
    const g = toF64(randn(40, 1, 3));
    const u = toF64(randn(40, 2));
    const probe = toF64(randn(40, 3));
    const { dGate, dUp } = swigluBackwardRef(g, u, probe);
    expectGradMatchesFd((gg) => dotLoss(swigluRef(gg, u), probe), g, dGate, 'dGate');
    expectGradMatchesFd((uu) => dotLoss(swigluRef(g, uu), probe), u, dUp, 'dUp');
    const ge = swigluBackwardRef(g, u, probe, 'gelu_tanh');
    expectGradMatchesFd((gg) => dotLoss(swigluRef(gg, u, 'gelu_tanh'), probe), g, ge.dGate, 'dGate (gelu_tanh)');
    expectGradMatchesFd((uu) => dotLoss(swigluRef(g, uu, 'gelu_tanh'), probe), u, ge.dUp, 'dUp (gelu_tanh)');
  });

  for (const [name, activation] of [
    ['swiglu', 'silu'],
    ['geglu', 'gelu_tanh'],
  ] as const)
    it(`matches PyTorch autograd (${name}, incl. saturated gates ±90)`, async () => {
      const s = await open();
      const fx = await loadFixture(name);
      const { rows, width } = fx.meta;
      const gate = s.f32(fx.f32('gate'), [rows, width], 'gate');
      const up = s.f32(fx.f32('up'), [rows, width], 'up');
      const dy = s.f32(fx.f32('dy'), [rows, width], 'dy');
      const y = s.nan(rows * width, 'y');
      const dGate = s.nan(rows * width, 'dGate');
      const dUp = s.nan(rows * width, 'dUp');
      await s.run('swiglu-fixture', async (rec) => {
        await swigluForward(rec, { gate, up, y, rows, width, activation });
        await swigluBackward(rec, { gate, up, dy, dGate, dUp, rows, width, activation });
      });
      for (const [t, name] of [
        [y, 'y'],
        [dGate, 'dGate'],
        [dUp, 'dUp'],
      ] as const) {
        const got = await s.read(t);
        expect(got.every(Number.isFinite), `${name} finite`).toBe(true);
        expect(relError(got, fx.f32(name)), name).toBeLessThan(1e-5);
      }
    });

  it('names the kernel and shapes on bad input', async () => {
    const s = await open();
    const a = s.f32(new Float32Array(6), [2, 3], 'gs');
    await expect(
      s.run('bad', (rec) => swigluForward(rec, { gate: a, up: s.nan(6, 'u'), y: s.nan(6, 'y'), rows: 3, width: 3 })),
    ).rejects.toThrow(/swiglu\.forward.*gate needs 9 elements.*gs\[2×3:f32\]/);
    await expect(
      s.run('bad', (rec) => swigluForward(rec, { gateUp: a, up: a, y: s.nan(3, 'y'), rows: 1, width: 3 })),
    ).rejects.toThrow(/either gateUp or gate\+up/);
    await expect(
      s.run('bad', (rec) =>
        swigluBackward(rec, {
          gateUp: a,
          dy: s.nan(3, 'dy'),
          dGate: s.nan(3, 'x'),
          dUp: s.nan(3, 'z'),
          rows: 1,
          width: 3,
        }),
      ),
    ).rejects.toThrow(/fused dGateUp/);
  });
});
