import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { Recorder, readF32, releaseTensor, tensorSpec, uploadTensor, type Tensor } from '../../src/engine/gpu/index.ts';
import {
  attentionBackward,
  attentionForward,
  attentionForwardSplits,
  attentionScratchBytes,
  attentionTiling,
  attentionTilingBytes,
  createAttentionScratch,
  releaseAttentionCaches,
  releaseAttentionScratch,
  setAttentionStorageBudgetForTests,
  type AttentionShape,
} from '../../src/engine/ops/attention.ts';
import {
  attentionBackwardRef,
  attentionFiniteDifference,
  attentionForwardRef,
  type AttentionRefShape,
} from '../cpu/attention.ts';
import { expectClose, relError } from '../cpu/compare.ts';
import { randn } from '../cpu/random.ts';
import { loadFixture } from '../reference/fixtures.ts';
import { runtime, testGpu } from './context.ts';

interface Case {
  N: number;
  Nk?: number;
  Hq: number;
  Hkv: number;
  D: number;
  offset?: number;
  segments?: number[];
  /** Multiplies Q so softmax rows are peaked (exercises the online max rescaling). */
  qScale?: number;
  backward?: boolean;
  /** Tile as on a device with only this much workgroup memory. */
  storage?: number;
  implicitScratch?: boolean;
  window?: number;
  softcap?: number;
}

interface GpuRun {
  out: Float32Array;
  lse: Float32Array;
  dq?: Float32Array;
  dk?: Float32Array;
  dv?: Float32Array;
}

interface HostInputs {
  q: Float32Array;
  k: Float32Array;
  v: Float32Array;
  dOut?: Float32Array;
  seg?: Int32Array;
  /** Let the ops make their own scratch (no scratch passed to the backward). */
  implicitScratch?: boolean;
  /** Forward without an LSE output (inference). */
  noLse?: boolean;
}

async function runGpu(shape: AttentionShape, host: HostInputs): Promise<GpuRun> {
  const gpu = await testGpu();
  const { queries: N, keys: Nk, qHeads: Hq, kvHeads: Hkv, headDim: D } = shape;
  const made: Tensor[] = [];
  const up = (data: Float32Array | Int32Array, dims: number[], label: string) => {
    const t = uploadTensor(
      gpu,
      data,
      tensorSpec(data instanceof Int32Array ? 'i32' : 'f32', dims, 'activations', label),
    );
    made.push(t);
    return t;
  };
  const q = up(host.q, [N, Hq * D], 'q');
  const k = up(host.k, [Nk, Hkv * D], 'k');
  const v = up(host.v, [Nk, Hkv * D], 'v');
  // Outputs start as NaN so anything the kernels fail to write shows up.
  const out = up(new Float32Array(N * Hq * D).fill(NaN), [N, Hq * D], 'out');
  const lse = up(new Float32Array(Hq * N).fill(NaN), [Hq, N], 'lse');
  const segmentIds = host.seg ? up(host.seg, [Nk], 'seg') : undefined;
  const full = { ...shape, segmentIds };
  const rec = new Recorder(gpu, 'attention-test');
  await attentionForward(rec, { ...full, q, k, v, out, lse: host.noLse ? undefined : lse });
  const res: GpuRun = { out: new Float32Array(0), lse: new Float32Array(0) };
  let grads: Tensor[] = [];
  if (host.dOut) {
    const dOut = up(host.dOut, [N, Hq * D], 'dOut');
    grads = [
      up(new Float32Array(N * Hq * D).fill(NaN), [N, Hq * D], 'dq'),
      up(new Float32Array(Nk * Hkv * D).fill(NaN), [Nk, Hkv * D], 'dk'),
      up(new Float32Array(Nk * Hkv * D).fill(NaN), [Nk, Hkv * D], 'dv'),
    ];
    const scratch = host.implicitScratch ? undefined : createAttentionScratch(gpu, shape);
    await attentionBackward(rec, {
      ...full,
      q,
      k,
      v,
      out,
      lse,
      dOut,
      dq: grads[0],
      dk: grads[1],
      dv: grads[2],
      scratch,
    });
    await rec.submit();
    if (scratch) releaseAttentionScratch(gpu, scratch);
  } else {
    await rec.submit();
  }
  res.out = await readF32(gpu, out);
  res.lse = await readF32(gpu, lse);
  if (grads.length) {
    res.dq = await readF32(gpu, grads[0]);
    res.dk = await readF32(gpu, grads[1]);
    res.dv = await readF32(gpu, grads[2]);
  }
  for (const t of made) releaseTensor(gpu, t);
  return res;
}

function caseShape(c: Case): AttentionShape {
  const Nk = c.Nk ?? c.N + (c.offset ?? 0);
  return {
    queries: c.N,
    keys: Nk,
    qHeads: c.Hq,
    kvHeads: c.Hkv,
    headDim: c.D,
    queryOffset: c.offset,
    window: c.window,
    softcap: c.softcap,
  };
}

async function runCase(c: Case) {
  const shape = caseShape(c);
  const { queries: N, keys: Nk, qHeads: Hq, kvHeads: Hkv, headDim: D } = shape;
  const seed = N * 31 + Nk * 7 + Hq * 3 + D;
  const q = randn(N * Hq * D, seed, c.qScale ?? 1);
  const k = randn(Nk * Hkv * D, seed + 1);
  const v = randn(Nk * Hkv * D, seed + 2);
  const dOut = c.backward === false ? undefined : randn(N * Hq * D, seed + 3);
  const seg = c.segments ? Int32Array.from(c.segments) : undefined;
  if (seg) expect(seg.length).toBe(Nk);
  if (c.storage) setAttentionStorageBudgetForTests(c.storage);
  const got = await runGpu(shape, { q, k, v, dOut, seg, implicitScratch: c.implicitScratch });
  const ref: AttentionRefShape = { ...shape, segmentIds: seg };
  const want = attentionForwardRef(ref, q, k, v);
  const tol = { rtol: 2e-4, atol: 2e-5 };
  expectClose(got.out, want.out, tol, `O ${JSON.stringify(c)}`);
  expectClose(got.lse, want.lse, tol, `LSE ${JSON.stringify(c)}`);
  if (dOut) {
    const g = attentionBackwardRef(ref, q, k, v, dOut);
    // Gradients sum over up to Nk·group terms; scale the absolute floor with the largest value.
    const gtol = (x: Float64Array) => ({ rtol: 5e-4, atol: 2e-5 * Math.max(1, ...Array.from(x, Math.abs)) });
    expectClose(got.dq!, g.dq, gtol(g.dq), `dQ ${JSON.stringify(c)}`);
    expectClose(got.dk!, g.dk, gtol(g.dk), `dK ${JSON.stringify(c)}`);
    expectClose(got.dv!, g.dv, gtol(g.dv), `dV ${JSON.stringify(c)}`);
  }
}

function segmentsOf(...runs: [id: number, length: number][]): number[] {
  return runs.flatMap(([id, n]) => Array<number>(n).fill(id));
}

describe(`attention (${runtime})`, () => {
  afterEach(() => setAttentionStorageBudgetForTests(null));
  afterAll(async () => releaseAttentionCaches(await testGpu()));

  const cases: [string, Case][] = [
    ['seq 1, D 64', { N: 1, Hq: 1, Hkv: 1, D: 64 }],
    ['seq 17, GQA 14:2, D 64', { N: 17, Hq: 14, Hkv: 2, D: 64 }],
    ['seq 17, GQA 2:1, D 80', { N: 17, Hq: 2, Hkv: 1, D: 80 }],
    ['seq 130, MHA 2:2, D 64 (crosses key and query blocks)', { N: 130, Hq: 2, Hkv: 2, D: 64 }],
    ['seq 130, GQA 4:2, D 80, peaked softmax', { N: 130, Hq: 4, Hkv: 2, D: 80, qScale: 4 }],
    ['seq 130, GQA 14:2, D 64', { N: 130, Hq: 14, Hkv: 2, D: 64 }],
    ['seq 17, D 32', { N: 17, Hq: 2, Hkv: 2, D: 32 }],
    ['seq 17, GQA 4:1, D 128', { N: 17, Hq: 4, Hkv: 1, D: 128 }],
    ['seq 37, D 128 with 16 KiB tiles', { N: 37, Hq: 2, Hkv: 1, D: 128, storage: 16384 }],
    ['seq 70, D 64 with 16 KiB tiles', { N: 70, Hq: 2, Hkv: 2, D: 64, storage: 16384 }],
    ['seq 9, D 256 (4 lanes per row, 8 per key) with 16 KiB tiles', { N: 9, Hq: 2, Hkv: 1, D: 256, storage: 16384 }],
    [
      'packed segments + padding, GQA 4:2',
      { N: 40, Hq: 4, Hkv: 2, D: 64, segments: segmentsOf([0, 15], [1, 20], [-1, 5]) },
    ],
    [
      'batch of 3 rows × 13 (ids per row), GQA 14:2',
      { N: 39, Hq: 14, Hkv: 2, D: 64, segments: segmentsOf([0, 5], [1, 8], [2, 9], [-1, 4], [7, 13]) },
    ],
    ['decode: 1 query at offset 36, GQA 14:2', { N: 1, Hq: 14, Hkv: 2, D: 64, offset: 36 }],
    ['prefill chunk: 5 queries at offset 20, D 80', { N: 5, Hq: 4, Hkv: 2, D: 80, offset: 20 }],
    ['cache larger than needed: 3 queries at offset 4 of 50 keys', { N: 3, Nk: 50, Hq: 2, Hkv: 1, D: 64, offset: 4 }],
    [
      'segments with an offset: 4 queries at offset 6, new segment starting at key 3',
      { N: 4, Hq: 4, Hkv: 2, D: 64, offset: 6, segments: segmentsOf([0, 3], [1, 7]) },
    ],
    // Decode walks long caches in key splits merged by a combine pass.
    ['decode with 5 key splits: 1 query at offset 699, GQA 14:2', { N: 1, Hq: 14, Hkv: 2, D: 64, offset: 699 }],
    [
      'decode with key splits: segment starts late (early splits see nothing), padding query',
      { N: 2, Hq: 4, Hkv: 2, D: 80, offset: 598, segments: segmentsOf([0, 550], [1, 49], [-1, 1]) },
    ],
    // The second case outgrows the scratch the op made for the first one.
    ['op-made backward scratch, GQA 4:2', { N: 9, Hq: 4, Hkv: 2, D: 64, implicitScratch: true }],
    ['op-made backward scratch grows, GQA 4:2', { N: 33, Hq: 4, Hkv: 2, D: 64, implicitScratch: true }],
    // Sliding window and soft-capping at odd shapes (head_dim 24, GQA 3:1): windows shorter than a
    // key block, longer than one, and crossing tile edges; softcap 2 bends nearly every score.
    ['window 5, seq 37, GQA 3:1, D 24', { N: 37, Hq: 3, Hkv: 1, D: 24, window: 5 }],
    [
      'window 16, softcap 50, seq 37, GQA 3:1, D 24',
      { N: 37, Hq: 3, Hkv: 1, D: 24, window: 16, softcap: 50, qScale: 8 },
    ],
    ['window 1: each query sees only itself', { N: 37, Hq: 3, Hkv: 1, D: 24, window: 1 }],
    // dK/dV walks query blocks of 32 from a key block of 32: with window ≡ 2 (mod 32) the last
    // query that sees the block's last key is the first row of a query block.
    ['window 2, seq 70 (window edge on a query-block edge)', { N: 70, Hq: 3, Hkv: 1, D: 24, window: 2 }],
    ['window 34 + softcap 2, seq 70', { N: 70, Hq: 3, Hkv: 1, D: 24, window: 34, softcap: 2, qScale: 3 }],
    ['softcap 2 without a window, GQA 6:2, D 24', { N: 37, Hq: 6, Hkv: 2, D: 24, softcap: 2, qScale: 3 }],
    [
      'window 5 + softcap 2 + packed segments and padding, GQA 3:1, D 24',
      {
        N: 37,
        Hq: 3,
        Hkv: 1,
        D: 24,
        window: 5,
        softcap: 2,
        qScale: 3,
        segments: segmentsOf([0, 11], [1, 3], [2, 17], [-1, 6]),
      },
    ],
    [
      'window 40, seq 130, MHA 2:2, D 64 (skips whole key and query blocks)',
      { N: 130, Hq: 2, Hkv: 2, D: 64, window: 40 },
    ],
    [
      'window 33 + softcap, seq 130, GQA 6:2, D 24',
      { N: 130, Hq: 6, Hkv: 2, D: 24, window: 33, softcap: 5, qScale: 2 },
    ],
    ['window 7 with 16 KiB tiles, D 128', { N: 37, Hq: 2, Hkv: 1, D: 128, window: 7, storage: 16384 }],
    [
      'window 9 + softcap 3, D 256 (lanes per row and key) with 16 KiB tiles',
      { N: 19, Hq: 2, Hkv: 1, D: 256, window: 9, softcap: 3, qScale: 2, storage: 16384 },
    ],
    [
      'decode past the window: 1 query at offset 40, window 5, GQA 3:1',
      { N: 1, Hq: 3, Hkv: 1, D: 24, offset: 40, window: 5 },
    ],
    [
      'prefill chunk past the window: 5 queries at offset 20, window 8, softcap 2',
      { N: 5, Hq: 4, Hkv: 2, D: 80, offset: 20, window: 8, softcap: 2, qScale: 3 },
    ],
    [
      'decode with key splits over the window: 1 query at offset 699, window 300, GQA 14:2',
      { N: 1, Hq: 14, Hkv: 2, D: 64, offset: 699, window: 300, backward: false },
    ],
    [
      'decode with key splits, window 290 + softcap 2, GQA 3:1, D 24',
      { N: 2, Hq: 3, Hkv: 1, D: 24, offset: 598, window: 290, softcap: 2, qScale: 3, backward: false },
    ],
  ];
  for (const [name, c] of cases) it(name, () => runCase(c));

  const fixtures = [
    'attention_gqa',
    'attention_segments',
    'attention_offset',
    'attention_window',
    'attention_window_softcap',
    'attention_softcap',
    'attention_window_decode',
    'attention_window_split',
  ];
  for (const name of fixtures) {
    it(`matches PyTorch autograd: ${name}`, async () => {
      const fx = await loadFixture(name);
      const { N, Nk, Hq, Hkv, D, offset, window, softcap } = fx.meta as Record<string, number>;
      const shape: AttentionShape = {
        queries: N,
        keys: Nk,
        qHeads: Hq,
        kvHeads: Hkv,
        headDim: D,
        queryOffset: offset,
        window,
        softcap,
      };
      const seg = fx.t.seg ? (fx.t.seg.data as Int32Array) : undefined;
      const [q, k, v, dOut] = [fx.f32('q'), fx.f32('k'), fx.f32('v'), fx.f32('dOut')];
      const got = await runGpu(shape, { q, k, v, dOut, seg });
      // The CPU reference (written from the math, not from PyTorch) agrees with both.
      const ref: AttentionRefShape = { ...shape, segmentIds: seg };
      const cpu = { ...attentionForwardRef(ref, q, k, v), ...attentionBackwardRef(ref, q, k, v, dOut) };
      for (const [key, value] of [
        ['out', got.out],
        ['lse', got.lse],
        ['dq', got.dq!],
        ['dk', got.dk!],
        ['dv', got.dv!],
      ] as const) {
        const err = relError(value, fx.f32(key));
        expect(err, `${name} ${key} max rel error ${err.toExponential(2)}`).toBeLessThanOrEqual(1e-4);
        const errCpu = relError(value, cpu[key]);
        expect(errCpu, `${name} ${key} vs CPU max rel error ${errCpu.toExponential(2)}`).toBeLessThanOrEqual(1e-4);
        const cpuVsTorch = relError(cpu[key], fx.f32(key));
        expect(cpuVsTorch, `${name} ${key} CPU vs PyTorch ${cpuVsTorch.toExponential(2)}`).toBeLessThanOrEqual(1e-6);
      }
    });
  }

  it('windowed, soft-capped backward matches central differences of the f64 reference, and the GPU matches it', async () => {
    // The cap's derivative 1 − tanh² is what the kernels add to dS: check it against the loss itself.
    const shape: AttentionShape = { queries: 7, keys: 7, qHeads: 3, kvHeads: 1, headDim: 8, window: 3, softcap: 1.5 };
    const ref: AttentionRefShape = { ...shape, segmentIds: undefined };
    const q = randn(7 * 3 * 8, 511, 2);
    const k = randn(7 * 8, 512);
    const v = randn(7 * 8, 513);
    const dOut = randn(7 * 3 * 8, 514);
    const inputs = { q: Float64Array.from(q), k: Float64Array.from(k), v: Float64Array.from(v) };
    const analytic = attentionBackwardRef(ref, q, k, v, dOut);
    for (const which of ['q', 'k', 'v'] as const) {
      const fd = attentionFiniteDifference(ref, inputs, which, dOut);
      expectClose(analytic[`d${which}`], fd, { rtol: 1e-6, atol: 1e-8 }, `CPU d${which} vs central differences`);
    }
    const got = await runGpu(shape, { q, k, v, dOut });
    const tight = { rtol: 1e-5, atol: 1e-6 };
    expectClose(got.dq!, analytic.dq, tight, 'GPU dQ vs CPU');
    expectClose(got.dk!, analytic.dk, tight, 'GPU dK vs CPU');
    expectClose(got.dv!, analytic.dv, tight, 'GPU dV vs CPU');
    // The window is real: key 0 gets no gradient from queries 3.. (only queries 0..2 see it).
    const early = attentionBackwardRef({ ...ref, window: null }, q, k, v, dOut);
    expect(relError(analytic.dk, early.dk)).toBeGreaterThan(1e-2);
  });

  it('a window covering every key equals no window exactly, forward and backward', async () => {
    const base: AttentionShape = { queries: 37, keys: 37, qHeads: 3, kvHeads: 1, headDim: 24, softcap: 2 };
    const q = randn(37 * 3 * 24, 521, 3);
    const k = randn(37 * 24, 522);
    const v = randn(37 * 24, 523);
    const dOut = randn(37 * 3 * 24, 524);
    const seg = Int32Array.from(segmentsOf([0, 20], [1, 17]));
    const none = await runGpu(base, { q, k, v, dOut, seg });
    for (const window of [37, 38, 1000, 0]) {
      const got = await runGpu({ ...base, window }, { q, k, v, dOut, seg });
      for (const key of ['out', 'lse', 'dq', 'dk', 'dv'] as const) {
        expect(Array.from(got[key]!), `window ${window} ${key}`).toEqual(Array.from(none[key]!));
      }
    }
    // One key short of that, the first key drops out of the last query's window.
    const short = await runGpu({ ...base, window: 36 }, { q, k, v, dOut });
    const full = await runGpu(base, { q, k, v, dOut });
    expect(Array.from(short.out.subarray(0, 36 * 72))).toEqual(Array.from(full.out.subarray(0, 36 * 72)));
    expect(relError(short.out.subarray(36 * 72), full.out.subarray(36 * 72))).toBeGreaterThan(1e-6);
  });

  it('backward matches central differences of the f64 reference, and the GPU matches that backward', async () => {
    // Tiny shape with GQA, two packed sequences and a padding token.
    const seg = Int32Array.from([0, 0, 0, 1, 1, -1]);
    const shape: AttentionShape = { queries: 6, keys: 6, qHeads: 4, kvHeads: 2, headDim: 8 };
    const ref: AttentionRefShape = { ...shape, segmentIds: seg };
    const q = randn(6 * 4 * 8, 501);
    const k = randn(6 * 2 * 8, 502);
    const v = randn(6 * 2 * 8, 503);
    const dOut = randn(6 * 4 * 8, 504);
    const inputs = { q: Float64Array.from(q), k: Float64Array.from(k), v: Float64Array.from(v) };
    const analytic = attentionBackwardRef(ref, q, k, v, dOut);
    for (const which of ['q', 'k', 'v'] as const) {
      const fd = attentionFiniteDifference(ref, inputs, which, dOut);
      expectClose(analytic[`d${which}`], fd, { rtol: 1e-6, atol: 1e-8 }, `CPU d${which} vs central differences`);
    }
    const got = await runGpu(shape, { q, k, v, dOut, seg });
    const tight = { rtol: 1e-5, atol: 1e-6 };
    expectClose(got.dq!, analytic.dq, tight, 'GPU dQ vs CPU');
    expectClose(got.dk!, analytic.dk, tight, 'GPU dK vs CPU');
    expectClose(got.dv!, analytic.dv, tight, 'GPU dV vs CPU');
    // The padding query gets nothing and gives nothing.
    expect(Array.from(got.dq!.subarray(5 * 32, 6 * 32)).every((x) => x === 0)).toBe(true);
    expect(Array.from(got.out.subarray(5 * 32, 6 * 32)).every((x) => x === 0)).toBe(true);
    expect(Array.from(got.dk!.subarray(5 * 16, 6 * 16)).every((x) => x === 0)).toBe(true);
  });

  it('forward without an LSE output (inference) gives the same O', async () => {
    const shape: AttentionShape = { queries: 3, keys: 20, qHeads: 14, kvHeads: 2, headDim: 64, queryOffset: 17 };
    const q = randn(3 * 14 * 64, 71);
    const k = randn(20 * 2 * 64, 72);
    const v = randn(20 * 2 * 64, 73);
    const got = await runGpu(shape, { q, k, v, noLse: true });
    expectClose(
      got.out,
      attentionForwardRef({ ...shape, segmentIds: undefined }, q, k, v).out,
      { rtol: 2e-4, atol: 2e-5 },
      'O without LSE',
    );
    expect(got.lse.every((x) => Number.isNaN(x))).toBe(true);
    // The same with a cache long enough for key splits.
    const long: AttentionShape = { ...shape, keys: 400, queryOffset: 397 };
    const k2 = randn(400 * 2 * 64, 74);
    const v2 = randn(400 * 2 * 64, 75);
    const split = await runGpu(long, { q, k: k2, v: v2, noLse: true });
    expectClose(
      split.out,
      attentionForwardRef({ ...long, segmentIds: undefined }, q, k2, v2).out,
      { rtol: 2e-4, atol: 2e-5 },
      'split O without LSE',
    );
  });

  it('splits decode keys only when all rows fit one workgroup', () => {
    const decode = { queries: 1, keys: 2048, qHeads: 14, kvHeads: 2, headDim: 64, queryOffset: 2047 };
    const s = attentionForwardSplits(decode, 64, 32);
    expect(s.splits).toBeGreaterThan(8);
    expect(s.keySplit % 32).toBe(0);
    expect(s.splits * s.keySplit).toBeGreaterThanOrEqual(2048);
    expect(attentionForwardSplits({ ...decode, queries: 256, keys: 256, queryOffset: 0 }, 64, 32).splits).toBe(1);
    expect(attentionForwardSplits({ ...decode, keys: 100, queryOffset: 99 }, 64, 32).splits).toBe(1);
    // A window bounds the keys a decode walks: 2048 keys but a 100-key window needs no splits.
    expect(attentionForwardSplits({ ...decode, window: 100 }, 64, 32).splits).toBe(1);
    const w = attentionForwardSplits({ ...decode, window: 600 }, 64, 32);
    expect(w.splits).toBeGreaterThan(1);
    expect(w.splits * w.keySplit).toBeGreaterThanOrEqual(600);
    expect((w.splits - 1) * w.keySplit).toBeLessThan(600);
  });

  it('tiles fit 16 KiB of workgroup memory and 256 threads for head_dim up to 256', () => {
    for (const D of [32, 64, 80, 96, 128, 256]) {
      const t = attentionTiling(D, 16384);
      const bytes = attentionTilingBytes(D, t);
      for (const [kernel, b] of Object.entries(bytes)) expect(b, `${kernel} D=${D}`).toBeLessThanOrEqual(16384);
      expect(t.forward.rows * t.forward.lanes).toBeLessThanOrEqual(64);
      expect(t.dq.rows * t.dq.lanes).toBeLessThanOrEqual(64);
      expect(t.dkdv.keys * t.dkdv.lanes).toBeLessThanOrEqual(256);
      // Register vectors per thread: ≤ 64 floats (forward), ≤ 32 (dq, dkdv).
      expect(D / t.forward.lanes).toBeLessThanOrEqual(64);
      expect(D / t.dq.lanes).toBeLessThanOrEqual(32);
      expect(D / t.dkdv.lanes).toBeLessThanOrEqual(32);
    }
  });

  it('scratch grows linearly with sequence length', () => {
    const at = (n: number) => attentionScratchBytes({ queries: n, keys: n, qHeads: 14, kvHeads: 2, headDim: 64 });
    expect(at(4096)).toBe(16 * at(256));
  });

  it('names the kernel and shapes on bad input', async () => {
    const gpu = await testGpu();
    const small = uploadTensor(gpu, new Float32Array(64), tensorSpec('f32', [1, 64], 'activations', 'small'));
    const rec = new Recorder(gpu);
    const shape = { queries: 2, keys: 2, qHeads: 1, kvHeads: 1, headDim: 64 };
    await expect(attentionForward(rec, { ...shape, q: small, k: small, v: small, out: small })).rejects.toThrow(
      /attention\.forward.*q needs 128 elements/,
    );
    await expect(
      attentionForward(rec, { ...shape, qHeads: 3, kvHeads: 2, q: small, k: small, v: small, out: small }),
    ).rejects.toThrow(/multiple of kvHeads/);
    await expect(
      attentionForward(rec, { ...shape, headDim: 6, q: small, k: small, v: small, out: small }),
    ).rejects.toThrow(/multiple of 4/);
    await expect(
      attentionForward(rec, { ...shape, queryOffset: 1, q: small, k: small, v: small, out: small }),
    ).rejects.toThrow(/need keys ≥ 3/);
    await expect(
      attentionForward(rec, { ...shape, window: 2.5, q: small, k: small, v: small, out: small }),
    ).rejects.toThrow(/window must be an integer/);
    await expect(
      attentionForward(rec, { ...shape, softcap: -1, q: small, k: small, v: small, out: small }),
    ).rejects.toThrow(/softcap must be a finite number/);
    await rec.submit();
    releaseTensor(gpu, small);
  });
});
