import { beforeEach, describe, expect, it } from 'vitest';
import { readF32, Recorder, releaseTensor, tensorSpec, uploadTensor, type Tensor } from '../../src/engine/gpu/index.ts';
import {
  createLoraWorkspace,
  dropThreshold,
  initLoraA,
  initLoraB,
  loraBackward,
  loraBackwardParts,
  loraForward,
  loraForwardParts,
  loraScale,
  LORA_CLASS,
  LORA_FAMILY,
  LORA_VARIANT_NAMES,
  releaseLoraWorkspace,
  type LoraAdapter,
  type LoraDropout,
  type LoraVariant,
} from '../../src/engine/ops/lora.ts';
import { matmul } from '../../src/engine/ops/matmul.ts';
import { releaseNf4, uploadNf4, type Nf4Weight } from '../../src/engine/ops/nf4.ts';
import { expectClose, relError } from '../cpu/compare.ts';
import { dropoutMaskRef, loraBackwardRef, loraForwardRef, type LoraRefInput } from '../cpu/lora.ts';
import { randn } from '../cpu/random.ts';
import { loadFixture } from '../reference/fixtures.ts';
import { runtime, testGpu } from './context.ts';

interface Problem {
  N: number;
  fin: number;
  fout: number;
  r: number;
  scale: number;
  w: Float32Array | Nf4Weight | null;
  a: Float32Array;
  b: Float32Array;
  x: Float32Array;
  dy: Float32Array;
  dropout?: LoraDropout;
  /** Run the backward this many times with accumulate (dA/dB sum up). */
  backwardRuns?: number;
}

/** Base matmul + LoRA forward, base dX + LoRA backward on the GPU; returns host copies. */
async function runGpu(pr: Problem) {
  const gpu = await testGpu();
  const { N, fin, fout, r } = pr;
  const up = (
    d: Float32Array,
    shape: number[],
    label: string,
    cat: 'activations' | 'adapters' | 'gradients' | 'weights' = 'activations',
  ) => uploadTensor(gpu, d, tensorSpec('f32', shape, cat, label));
  const adapter: LoraAdapter = {
    a: up(pr.a, [r, fin], 'A', 'adapters'),
    b: up(pr.b, [fout, r], 'B', 'adapters'),
    r,
    inFeatures: fin,
    outFeatures: fout,
    scale: pr.scale,
  };
  const x = up(pr.x, [N, fin], 'x');
  const dy = up(pr.dy, [N, fout], 'dY');
  const y = up(new Float32Array(N * fout), [N, fout], 'y');
  const dx = up(new Float32Array(N * fin), [N, fin], 'dX', 'gradients');
  const dA = up(new Float32Array(r * fin), [r, fin], 'dA', 'gradients');
  const dB = up(new Float32Array(fout * r), [fout, r], 'dB', 'gradients');
  const w: Tensor | Nf4Weight | null = pr.w instanceof Float32Array ? up(pr.w, [fout, fin], 'W', 'weights') : pr.w;
  const ws = createLoraWorkspace(gpu, N, adapter);
  const rec = new Recorder(gpu, 'lora-test');
  if (w) await matmul(rec, { a: x, b: w, c: y, M: N, N: fout, K: fin, transB: true });
  else rec.clear(y);
  await loraForward(rec, { x, y, adapter, N, dropout: pr.dropout, ws });
  if (w) await matmul(rec, { a: dy, b: w, c: dx, M: N, N: fin, K: fout });
  else rec.clear(dx);
  for (let i = 0; i < (pr.backwardRuns ?? 1); i++) {
    await loraBackward(rec, { x, dY: dy, dX: dx, dA, dB, accumulate: i > 0, adapter, N, dropout: pr.dropout, ws });
  }
  await rec.submit();
  const out = {
    y: await readF32(gpu, y),
    dX: await readF32(gpu, dx),
    dA: await readF32(gpu, dA),
    dB: await readF32(gpu, dB),
  };
  for (const t of [adapter.a, adapter.b, x, dy, y, dx, dA, dB]) releaseTensor(gpu, t);
  if (pr.w instanceof Float32Array) releaseTensor(gpu, w as Tensor);
  releaseLoraWorkspace(gpu, ws);
  return out;
}

/**
 * dropout(x) as the GPU applies it, read through the backward: with N = 1, r = 1, out = 1, B = [1],
 * dY = [1] and s = 1, g = 1 and dA[0, i] = dropout(x)[0, i] exactly.
 */
async function droppedOnGpu(x: Float32Array, dropout: LoraDropout): Promise<Float32Array> {
  const got = await runGpu({
    N: 1,
    fin: x.length,
    fout: 1,
    r: 1,
    scale: 1,
    w: null,
    a: new Float32Array(x.length),
    b: new Float32Array([1]),
    x,
    dy: new Float32Array([1]),
    dropout,
  });
  return got.dA;
}

function refInput(pr: Problem, wHost: ArrayLike<number> | null): LoraRefInput {
  return {
    N: pr.N,
    fin: pr.fin,
    fout: pr.fout,
    r: pr.r,
    scale: pr.scale,
    w: wHost,
    a: pr.a,
    b: pr.b,
    x: pr.x,
    mask: dropoutMaskRef(pr.N * pr.fin, pr.dropout),
  };
}

// Every test below runs on each form of the skinny products (bit-identical by construction).
for (const variant of LORA_VARIANT_NAMES) describe(`lora (${runtime}, ${variant})`, () => loraSuite(variant));

describe(`lora forms (${runtime})`, () => {
  it('skinny and skinny4x4 give bit-identical outputs and gradients (odd shapes, dropout)', async () => {
    const gpu = await testGpu();
    const pr = oddProblem();
    const bits = (x: Float32Array) => Array.from(new Uint32Array(x.buffer, x.byteOffset, x.length));
    const runs = [];
    for (const v of LORA_VARIANT_NAMES) {
      gpu.kernels.set(LORA_FAMILY, LORA_CLASS, v);
      runs.push(await runGpu(pr));
    }
    for (const k of ['y', 'dX', 'dA', 'dB'] as const) expect(bits(runs[1][k]), k).toEqual(bits(runs[0][k]));
  });
});

function oddProblem(): Problem {
  return {
    N: 13,
    fin: 70,
    fout: 19,
    r: 16,
    scale: loraScale(32, 16),
    w: null,
    a: initLoraA(16, 70, 5, 3),
    b: randn(19 * 16, 2, 0.1),
    x: randn(13 * 70, 3),
    dy: randn(13 * 19, 4),
    dropout: { p: 0.3, seed: 1234, step: 7, moduleId: 3 },
  };
}

function loraSuite(variant: LoraVariant): void {
  beforeEach(async () => (await testGpu()).kernels.set(LORA_FAMILY, LORA_CLASS, variant));
  for (const name of ['lora_f32', 'lora_rslora', 'lora_nf4']) {
    it(`matches PyTorch autograd (PEFT formula): ${name}`, async () => {
      const gpu = await testGpu();
      const fx = await loadFixture(name);
      const m = fx.meta;
      expect(loraScale(m.alpha, m.r, m.rslora)).toBeCloseTo(m.scale, 12);
      let w: Float32Array | Nf4Weight = fx.f32('w');
      if (name === 'lora_nf4') {
        w = uploadNf4(
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
      const got = await runGpu({
        N: m.N,
        fin: m.in,
        fout: m.out,
        r: m.r,
        scale: loraScale(m.alpha, m.r, m.rslora),
        w,
        a: fx.f32('a'),
        b: fx.f32('b'),
        x: fx.f32('x'),
        dy: fx.f32('dy'),
      });
      for (const k of ['y', 'dX', 'dA', 'dB'] as const) {
        expect(relError(got[k], fx.f32(k)), `${name} ${k}`).toBeLessThan(1e-4);
      }
      if (!(w instanceof Float32Array)) releaseNf4(gpu, w);
    });
  }

  it('dropout > 0 equals the CPU reference with the same hash mask (odd shapes, no base)', async () => {
    const pr = oddProblem();
    const got = await runGpu(pr);
    const ref = refInput(pr, null);
    const want = loraForwardRef(ref);
    const grads = loraBackwardRef(ref, pr.dy);
    const tol = { rtol: 1e-4, atol: 1e-5 };
    expectClose(got.y, want.y, tol, 'y');
    expectClose(got.dA, grads.dA, tol, 'dA');
    expectClose(got.dB, grads.dB, tol, 'dB');
    expectClose(got.dX, grads.dX, tol, 'dX');
    // Kept elements are x·f32(1/(1−p)) exactly, dropped ones 0.
    const dropped = await droppedOnGpu(pr.x, pr.dropout!);
    for (let i = 0; i < pr.x.length; i++) {
      // (−0 and +0 are the same value here: the read-back path sums into +0.)
      expect(
        dropped[i] === Math.fround(pr.x[i] * ref.mask[i]),
        `x[${i}]: got ${dropped[i]}, want ${pr.x[i] * ref.mask[i]}`,
      ).toBe(true);
    }
  });

  it('output split over parts (a fused qkv_proj: q, k, v) equals the CPU reference on the concatenation, with dropout', async () => {
    const gpu = await testGpu();
    const N = 11;
    const fin = 40;
    const rows = [24, 8, 8]; // q | k | v
    const fout = 40;
    const r = 4;
    const pr: Problem = {
      N,
      fin,
      fout,
      r,
      scale: loraScale(8, r),
      w: null,
      a: initLoraA(r, fin, 3, 1),
      b: randn(fout * r, 6, 0.2),
      x: randn(N * fin, 7),
      dy: randn(N * fout, 8),
      dropout: { p: 0.2, seed: 99, step: 3, moduleId: 5 },
    };
    const ref = refInput(pr, null);
    const want = loraForwardRef(ref);
    const grads = loraBackwardRef(ref, pr.dy);
    const up = (d: Float32Array, shape: number[], label: string) =>
      uploadTensor(gpu, d, tensorSpec('f32', shape, 'activations', label));
    const adapter: LoraAdapter = {
      a: up(pr.a, [r, fin], 'A'),
      b: up(pr.b, [fout, r], 'B'),
      r,
      inFeatures: fin,
      outFeatures: fout,
      scale: pr.scale,
    };
    const x = up(pr.x, [N, fin], 'x');
    let row0 = 0;
    const parts = rows.map((n, i) => {
      const part = { row0, rows: n };
      row0 += n;
      // dY of the part: its columns of the concatenated dY.
      const dyPart = new Float32Array(N * n);
      for (let m = 0; m < N; m++) for (let o = 0; o < n; o++) dyPart[m * n + o] = pr.dy[m * fout + part.row0 + o];
      return {
        ...part,
        y: up(new Float32Array(N * n), [N, n], `y${i}`),
        dy: up(dyPart, [N, n], `dy${i}`),
      };
    });
    const dx = up(new Float32Array(N * fin), [N, fin], 'dX');
    const dA = up(new Float32Array(r * fin), [r, fin], 'dA');
    const dB = up(new Float32Array(fout * r), [fout, r], 'dB');
    const ws = createLoraWorkspace(gpu, N, adapter);
    const rec = new Recorder(gpu, 'lora-parts');
    await loraForwardParts(rec, {
      x,
      adapter,
      N,
      dropout: pr.dropout,
      ws,
      parts: parts.map((p) => ({ t: p.y, row0: p.row0, rows: p.rows })),
    });
    await loraBackwardParts(rec, {
      x,
      dX: dx,
      dA,
      dB,
      adapter,
      N,
      dropout: pr.dropout,
      ws,
      parts: parts.map((p) => ({ t: p.dy, row0: p.row0, rows: p.rows })),
    });
    await rec.submit();
    const y = new Float32Array(N * fout);
    for (const p of parts) {
      const got = await readF32(gpu, p.y);
      for (let m = 0; m < N; m++) for (let o = 0; o < p.rows; o++) y[m * fout + p.row0 + o] = got[m * p.rows + o];
    }
    const tol = { rtol: 1e-4, atol: 1e-5 };
    expectClose(y, want.y, tol, 'y (parts concatenated)');
    expectClose(await readF32(gpu, dA), grads.dA, tol, 'dA');
    expectClose(await readF32(gpu, dB), grads.dB, tol, 'dB');
    expectClose(await readF32(gpu, dx), grads.dX, tol, 'dX');
    // Parts that do not tile the adapter's output are refused, naming the op.
    const bad = new Recorder(gpu, 'lora-parts-bad');
    await expect(
      loraForwardParts(bad, { x, adapter, N, ws, parts: [{ t: parts[0].y, row0: 0, rows: 24 }] }),
    ).rejects.toThrow(/lora\.forward\(parts\).*output parts cover 24 rows of the adapter's 40/);
    for (const t of [adapter.a, adapter.b, x, dx, dA, dB, ...parts.flatMap((p) => [p.y, p.dy])]) releaseTensor(gpu, t);
    releaseLoraWorkspace(gpu, ws);
  });

  it('dropout drops a fraction ≈ p, and the mask depends on seed, step and module', async () => {
    const n = 16384;
    const ones = new Float32Array(n).fill(1);
    for (const p of [0.05, 0.5]) {
      const xd = await droppedOnGpu(ones, { p, seed: 99, step: 1, moduleId: 0 });
      const dropped = xd.filter((v) => v === 0).length / n;
      const sigma = Math.sqrt((p * (1 - p)) / n);
      expect(Math.abs(dropped - p), `p=${p}: dropped ${dropped}`).toBeLessThan(5 * sigma);
      // Every kept value is exactly the inverted-dropout factor (x = 1).
      expect(xd.every((v) => v === 0 || v === Math.fround(1 / (1 - p)))).toBe(true);
    }
    const masks = [
      { seed: 1, step: 1, moduleId: 1 },
      { seed: 2, step: 1, moduleId: 1 },
      { seed: 1, step: 2, moduleId: 1 },
      { seed: 1, step: 1, moduleId: 2 },
    ].map((d) => dropoutMaskRef(n, { p: 0.5, ...d }));
    for (let i = 1; i < masks.length; i++) {
      let same = 0;
      for (let j = 0; j < n; j++) same += masks[0][j] === masks[i][j] ? 1 : 0;
      expect(same / n).toBeGreaterThan(0.45);
      expect(same / n).toBeLessThan(0.55);
    }
  });

  it('backward accumulates into dA/dB across micro-batches and into the base dX', async () => {
    const pr: Problem = {
      N: 9,
      fin: 20,
      fout: 11,
      r: 4,
      scale: 2,
      w: randn(11 * 20, 6, 0.2),
      a: initLoraA(4, 20, 1),
      b: randn(44, 7, 0.1),
      x: randn(180, 8),
      dy: randn(99, 9),
    };
    const once = await runGpu(pr);
    const twice = await runGpu({ ...pr, backwardRuns: 2 });
    const tol = { rtol: 1e-5, atol: 1e-6 };
    expectClose(
      twice.dA,
      once.dA.map((v) => 2 * v),
      tol,
      'dA ×2',
    );
    expectClose(
      twice.dB,
      once.dB.map((v) => 2 * v),
      tol,
      'dB ×2',
    );
    const ref = loraBackwardRef(refInput(pr, pr.w as Float32Array), pr.dy);
    // dX got the adapter's share added twice on top of the base path.
    const lora = loraBackwardRef(refInput({ ...pr }, null), pr.dy).dX;
    expectClose(
      twice.dX,
      ref.dX.map((v, i) => v + lora[i]),
      { rtol: 1e-4, atol: 1e-5 },
      'dX base + 2·lora',
    );
  });

  it('CPU backward equals central finite differences (float64, with dropout)', () => {
    const pr: Problem = {
      N: 3,
      fin: 7,
      fout: 5,
      r: 2,
      scale: 1.5,
      w: randn(35, 10, 0.3),
      a: randn(14, 11, 0.3),
      b: randn(10, 12, 0.3),
      x: randn(21, 13),
      dy: randn(15, 14),
      dropout: { p: 0.25, seed: 3, step: 0, moduleId: 0 },
    };
    const input = refInput(pr, pr.w as Float32Array);
    const loss = (inp: LoraRefInput) => loraForwardRef(inp).y.reduce((s, v, i) => s + v * pr.dy[i], 0);
    const grads = loraBackwardRef(input, pr.dy);
    const h = 1e-6;
    for (const [key, gKey] of [
      ['a', 'dA'],
      ['b', 'dB'],
      ['x', 'dX'],
    ] as const) {
      const base = Float64Array.from(input[key]);
      for (let i = 0; i < base.length; i++) {
        const plus = Float64Array.from(base);
        const minus = Float64Array.from(base);
        plus[i] += h;
        minus[i] -= h;
        const fd = (loss({ ...input, [key]: plus }) - loss({ ...input, [key]: minus })) / (2 * h);
        expect(Math.abs(fd - grads[gKey][i]), `${gKey}[${i}]`).toBeLessThan(1e-6 * (1 + Math.abs(fd)));
      }
    }
  });

  it('initialises A like PEFT (kaiming_uniform a=√5 ⇒ U(±1/√in)), B zero, and scales α/r or α/√r', () => {
    const a = initLoraA(16, 896, 42, 0);
    const bound = 1 / Math.sqrt(896);
    let mean = 0;
    let sq = 0;
    for (const v of a) {
      expect(Math.abs(v)).toBeLessThanOrEqual(bound);
      mean += v;
      sq += v * v;
    }
    mean /= a.length;
    const variance = sq / a.length - mean * mean;
    expect(Math.abs(mean)).toBeLessThan((4 * bound) / Math.sqrt(3 * a.length));
    expect(variance / ((bound * bound) / 3)).toBeGreaterThan(0.97);
    expect(variance / ((bound * bound) / 3)).toBeLessThan(1.03);
    expect(initLoraA(16, 896, 42, 0)).toEqual(a);
    expect(initLoraA(16, 896, 42, 1)).not.toEqual(a);
    expect(initLoraA(16, 896, 43, 0)).not.toEqual(a);
    expect(initLoraB(896, 16).every((v) => v === 0)).toBe(true);
    expect(loraScale(16, 8)).toBe(2);
    expect(loraScale(16, 16, true)).toBe(4);
    expect(() => loraScale(16, 0)).toThrow(/rank/);
    expect(() => dropThreshold(1)).toThrow(/\[0, 1\)/);
    expect(dropThreshold(0)).toBe(0);
  });

  it('names the op and the tensor when shapes are wrong', async () => {
    const gpu = await testGpu();
    const t = (n: number, label: string) =>
      uploadTensor(gpu, new Float32Array(n), tensorSpec('f32', [n], 'activations', label));
    const adapter: LoraAdapter = {
      a: t(8 * 10, 'A'),
      b: t(6 * 8, 'B'),
      r: 8,
      inFeatures: 10,
      outFeatures: 6,
      scale: 2,
    };
    const x = t(30, 'x_short');
    const y = t(24, 'y');
    const ws = createLoraWorkspace(gpu, 4, adapter);
    const rec = new Recorder(gpu);
    await expect(loraForward(rec, { x, y, adapter, N: 4, ws })).rejects.toThrow(
      /lora\.forward .*x x_short\[30:f32\] must be f32 with ≥ 40 elements/,
    );
    const small = createLoraWorkspace(gpu, 2, adapter);
    await expect(loraForward(rec, { x: t(40, 'x'), y, adapter, N: 4, ws: small })).rejects.toThrow(
      /workspace t .* must be f32 with ≥ 32 elements/,
    );
    await rec.submit();
    releaseLoraWorkspace(gpu, small);
    releaseLoraWorkspace(gpu, ws);
  });
}
