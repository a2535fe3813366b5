// LoRA adapters with PEFT semantics (peft src/peft/tuners/lora/layer.py, config.py):
//   y = base(x) + s·(dropout(x)·Aᵀ)·Bᵀ,  A [r, in], B [out, r],  s = α/r (or α/√r with rsLoRA).
// The wide products (y += s·t·Bᵀ, dX += g·A) use the matmul op; the products with an r-sized side
// use the barrier-free skinny kernels of shaders/lora.wgsl, which also apply the dropout mask
// while loading x (forward, dA) or on the result (dX). The mask is a hash of (seed, step, module,
// element), regenerated in the backward: nothing of size N·in is stored or written for dropout.
// Not fused with the base matmul: the adapter costs its own 2 dispatches forward and 4 backward.
import type { Gpu } from '../gpu/device.ts';
import { Params, type Recorder } from '../gpu/recorder.ts';
import { describe, type Tensor } from '../gpu/tensor.ts';
import { createTensor, releaseTensor, tensorSpec } from '../gpu/transfer.ts';
import { checkOperands, launch, threadGrid } from './kernel.ts';
import { matmul } from './matmul.ts';

export interface LoraAdapter {
  /** f32 [r, in], trainable. */
  a: Tensor;
  /** f32 [out, r], trainable. */
  b: Tensor;
  r: number;
  inFeatures: number;
  outFeatures: number;
  /** s = α/r, or α/√r with rsLoRA (see loraScale). */
  scale: number;
}

/** PEFT's scaling: lora_alpha / r, or lora_alpha / sqrt(r) with use_rslora. */
export function loraScale(alpha: number, r: number, rsLora = false): number {
  if (!(r > 0) || !Number.isInteger(r)) throw new Error(`LoRA rank must be a positive integer, got ${r}`);
  return rsLora ? alpha / Math.sqrt(r) : alpha / r;
}

/** Dropout on the adapter input. `step` must differ per micro-batch, `moduleId` per adapted module. */
export interface LoraDropout {
  p: number;
  seed: number;
  step: number;
  moduleId: number;
}

// Host twin of shaders/include/hash.wgsl (lowbias32 mixer), for initialisation and CPU checks.
export function mix32(v: number): number {
  let x = v >>> 0;
  x ^= x >>> 16;
  x = Math.imul(x, 0x7feb352d) >>> 0;
  x ^= x >>> 15;
  x = Math.imul(x, 0x846ca68b) >>> 0;
  x ^= x >>> 16;
  return x >>> 0;
}

export function hash4(seed: number, step: number, stream: number, index: number): number {
  return mix32((index ^ mix32((stream ^ mix32((step ^ mix32((seed + 0x9e3779b9) >>> 0)) >>> 0)) >>> 0)) >>> 0);
}

/** Elements whose hash is below this are dropped: P(drop) = threshold / 2³² ≈ p. */
export function dropThreshold(p: number): number {
  if (!(p >= 0 && p < 1)) throw new Error(`LoRA dropout must be in [0, 1), got ${p}`);
  return Math.min(0xffffffff, Math.round(p * 2 ** 32));
}

/** 1/(1−p) in f32, the inverted-dropout factor applied to kept elements. */
export function dropScale(p: number): number {
  return Math.fround(1 / (1 - p));
}

/**
 * A's initial values as PEFT's reset_lora_parameters: kaiming_uniform_(a=√5) ⇒ U(−1/√in, 1/√in),
 * from a seeded counter-based generator (stream = moduleId) so every module gets its own draw.
 */
export function initLoraA(r: number, inFeatures: number, seed: number, moduleId = 0): Float32Array {
  const bound = 1 / Math.sqrt(inFeatures);
  const out = new Float32Array(r * inFeatures);
  for (let i = 0; i < out.length; i++) {
    // 24 random bits → u in [0, 1), then U(−bound, bound).
    const u = (hash4(seed, 0xa11ce, moduleId, i) >>> 8) / 2 ** 24;
    out[i] = (2 * u - 1) * bound;
  }
  return out;
}

/** B starts at zero, so the adapted model equals the base model at step 0. */
export function initLoraB(outFeatures: number, r: number): Float32Array {
  return new Float32Array(outFeatures * r);
}

/** Scratch for one adapted module's forward/backward; `t` must live from the forward to the backward. */
export interface LoraWorkspace {
  /** [N, r]: dropout(x)·Aᵀ saved by the forward. */
  t: Tensor;
  /** [N, r]: s·dY·B in the backward. */
  g: Tensor;
}

export function createLoraWorkspace(gpu: Gpu, N: number, adapter: LoraAdapter, label = 'lora'): LoraWorkspace {
  return {
    t: createTensor(gpu, tensorSpec('f32', [N, adapter.r], 'activations', `${label}.t`)),
    g: createTensor(gpu, tensorSpec('f32', [N, adapter.r], 'scratch', `${label}.g`)),
  };
}

export function releaseLoraWorkspace(gpu: Gpu, ws: LoraWorkspace): void {
  releaseTensor(gpu, ws.t);
  releaseTensor(gpu, ws.g);
}

export interface LoraForwardArgs {
  /** [N, in] f32 input of the adapted linear layer. */
  x: Tensor;
  /** [N, out] f32 holding base(x); the adapter's output is added in place. */
  y: Tensor;
  adapter: LoraAdapter;
  N: number;
  dropout?: LoraDropout;
  ws: LoraWorkspace;
}

function checkAdapter(
  what: string,
  ad: LoraAdapter,
  N: number,
  x: Tensor,
  outLike: Tensor,
  ws: LoraWorkspace,
  outFeatures = ad.outFeatures,
): void {
  checkOperands(
    what,
    [
      { name: 'A', tensor: ad.a, dtype: 'f32', min: ad.r * ad.inFeatures },
      { name: 'B', tensor: ad.b, dtype: 'f32', min: ad.outFeatures * ad.r },
      { name: 'x', tensor: x, dtype: 'f32', min: N * ad.inFeatures },
      { name: 'y/dY', tensor: outLike, dtype: 'f32', min: N * outFeatures },
      { name: 'workspace t', tensor: ws.t, dtype: 'f32', min: N * ad.r },
      { name: 'workspace g', tensor: ws.g, dtype: 'f32', min: N * ad.r },
    ],
    'requirement',
  );
}

/**
 * The verified forms of the skinny product (shaders/lora.wgsl), the same sums to the bit; which is
 * faster depends on the adapter, so tuneLora (ops/tuner.ts) measures them once:
 *   skinny     one thread per output: the most threads in flight, for GPUs;
 *   skinny4x4  a 4×4 block of outputs per thread: a quarter of the loads per FMA, for adapters
 *              where every load costs (CPU-emulated ones).
 */
export const LORA_VARIANTS = {
  skinny: { block: 1, workgroup: 256 },
  skinny4x4: { block: 4, workgroup: 64 },
} as const;
export type LoraVariant = keyof typeof LORA_VARIANTS;
export const LORA_VARIANT_NAMES = Object.keys(LORA_VARIANTS) as LoraVariant[];
export const LORA_FAMILY = 'lora';
/** One class: the products differ in shape far less than the adapters do. */
export const LORA_CLASS = 'skinny';

export interface Skinny {
  a: Tensor;
  b: Tensor;
  c: Tensor;
  M: number;
  N: number;
  K: number;
  /** A(m,k) = a[m·aRow + k·aCol], B(j,k) = b[j·bRow + k·bCol]. */
  aRow: number;
  aCol: number;
  bRow: number;
  bCol: number;
  alpha?: number;
  beta?: number;
  /** 0 none, 1 mask A's loads, 2 mask B's loads, 3 mask the result (see shaders/lora.wgsl). */
  drop?: 0 | 1 | 2 | 3;
  dropout?: LoraDropout | null;
  /** Pins a form (the tuner); otherwise the adapter's measured choice. */
  variant?: LoraVariant;
}

/** C = alpha·A·Bᵀ + beta·C with an r-sized side; see shaders/lora.wgsl. */
export async function skinny(rec: Recorder, s: Skinny, what: string): Promise<void> {
  const drop = s.dropout ? (s.drop ?? 0) : 0;
  const d = s.dropout ?? { p: 0, seed: 0, step: 0, moduleId: 0 };
  const params = new Params(16)
    .u32(s.M)
    .u32(s.N)
    .u32(s.K)
    .u32(0)
    .u32(s.aRow)
    .u32(s.aCol)
    .u32(s.bRow)
    .u32(s.bCol)
    .f32(s.alpha ?? 1)
    .f32(s.beta ?? 0)
    .u32(d.seed)
    .u32(d.step)
    .u32(d.moduleId)
    .u32(dropThreshold(d.p))
    .f32(dropScale(d.p))
    .u32(0);
  const variant = s.variant ?? rec.gpu.kernels.pick(LORA_FAMILY, LORA_CLASS, LORA_VARIANT_NAMES, 'skinny');
  const { block, workgroup } = LORA_VARIANTS[variant];
  await launch(rec, {
    shader: 'lora',
    entry: variant,
    constants: { DROP: `${drop}u` },
    what,
    params,
    bindings: [s.a, s.b, s.c],
    grid: threadGrid(rec, Math.ceil(s.M / block) * Math.ceil(s.N / block), workgroup),
  });
}

function activeDropout(d: LoraDropout | undefined): LoraDropout | null {
  return d && d.p > 0 ? d : null;
}

/**
 * Records y += s·(dropout(x)·Aᵀ)·Bᵀ and saves t = dropout(x)·Aᵀ in ws.t for the backward.
 * The dropout mask is applied while x is loaded (no dropped copy of x is written).
 */
export async function loraForward(rec: Recorder, args: LoraForwardArgs): Promise<void> {
  const { x, y, adapter: ad, N, ws } = args;
  const { r, inFeatures: fin, outFeatures: fout } = ad;
  const what = `lora.forward ${describe(x)} r=${r} ${fin}→${fout} N=${N}`;
  checkAdapter(what, ad, N, x, y, ws);
  const dropout = activeDropout(args.dropout);
  // t[n,k] = Σ_i drop(x)[n,i]·A[k,i]
  await skinny(
    rec,
    { a: x, b: ad.a, c: ws.t, M: N, N: r, K: fin, aRow: fin, aCol: 1, bRow: fin, bCol: 1, drop: 1, dropout },
    `${what} t=x·Aᵀ`,
  );
  await matmul(rec, { a: ws.t, b: ad.b, c: y, M: N, N: fout, K: r, transB: true, alpha: ad.scale, beta: 1 });
}

export interface LoraBackwardArgs {
  /** The forward's input [N, in] (the dropout mask is regenerated from the counters). */
  x: Tensor;
  /** [N, out] upstream gradient. */
  dY: Tensor;
  /** [N, in] input gradient of the base path; the adapter's share is added to it. Omit to skip. */
  dX?: Tensor;
  /** f32 [r, in] and [out, r] gradients. */
  dA: Tensor;
  dB: Tensor;
  /** Add into dA/dB (gradient accumulation) instead of overwriting. */
  accumulate?: boolean;
  adapter: LoraAdapter;
  N: number;
  dropout?: LoraDropout;
  /** The workspace the forward used (ws.t holds dropout(x)·Aᵀ). */
  ws: LoraWorkspace;
}

/**
 * Records the adapter backward:
 *   dB (+)= s·dYᵀ·t,  g = s·dY·B,  dA (+)= gᵀ·dropout(x),  dX += dropout_backward(g·A).
 */
export async function loraBackward(rec: Recorder, args: LoraBackwardArgs): Promise<void> {
  const { x, dY, dB, adapter: ad, N, ws } = args;
  const { r, inFeatures: fin, outFeatures: fout } = ad;
  const what = `lora.backward ${describe(dY)} r=${r} ${fin}→${fout} N=${N}`;
  checkAdapter(what, ad, N, x, dY, ws);
  const beta = args.accumulate ? 1 : 0;
  const dropout = activeDropout(args.dropout);
  // dB[o,k] = s·Σ_n dY[n,o]·t[n,k]
  await skinny(
    rec,
    { a: dY, b: ws.t, c: dB, M: fout, N: r, K: N, aRow: 1, aCol: fout, bRow: 1, bCol: r, alpha: ad.scale, beta },
    `${what} dB`,
  );
  // g[n,k] = s·Σ_o dY[n,o]·B[o,k]
  await skinny(
    rec,
    { a: dY, b: ad.b, c: ws.g, M: N, N: r, K: fout, aRow: fout, aCol: 1, bRow: 1, bCol: r, alpha: ad.scale },
    `${what} g`,
  );
  await inputGrads(rec, args, ad, beta, dropout, what);
}

/**
 * From g = s·dY·B in ws.g: dA[k,i] (+)= Σ_n g[n,k]·drop(x)[n,i] and dX[n,i] += mask[n,i]·Σ_k g[n,k]·A[k,i]
 * (the part of the backward that a split dY does not change).
 */
async function inputGrads(
  rec: Recorder,
  args: Pick<LoraBackwardArgs, 'x' | 'dX' | 'dA' | 'N' | 'ws'>,
  ad: LoraAdapter,
  beta: number,
  dropout: LoraDropout | null,
  what: string,
): Promise<void> {
  const { x, dX, dA, N, ws } = args;
  const { r, inFeatures: fin } = ad;
  await skinny(
    rec,
    { a: ws.g, b: x, c: dA, M: r, N: fin, K: N, aRow: 1, aCol: r, bRow: 1, bCol: fin, beta, drop: 2, dropout },
    `${what} dA`,
  );
  if (!dX) return;
  if (!dropout) {
    await matmul(rec, { a: ws.g, b: ad.a, c: dX, M: N, N: fin, K: r, beta: 1 });
    return;
  }
  await skinny(
    rec,
    { a: ws.g, b: ad.a, c: dX, M: N, N: fin, K: r, aRow: r, aCol: 1, bRow: 1, bCol: fin, beta: 1, drop: 3, dropout },
    `${what} dX`,
  );
}

/**
 * One slice of a fused module's output (Phi-3's qkv_proj → q, k, v; gate_up_proj → gate, up):
 * output rows [row0, row0 + rows) of the adapter, held in their own [N, rows] tensor.
 */
export interface LoraOutputPart {
  /** [N, rows] f32: y (forward, added to in place) or dY (backward). */
  t: Tensor;
  row0: number;
  rows: number;
}

function checkParts(what: string, ad: LoraAdapter, N: number, parts: readonly LoraOutputPart[]): void {
  let next = 0;
  for (const [i, p] of parts.entries()) {
    if (p.row0 !== next || p.rows < 1)
      throw new Error(
        `${what}: output part ${i} covers rows [${p.row0}, ${p.row0 + p.rows}), expected to start at ${next}`,
      );
    checkOperands(what, [{ name: `part ${i}`, tensor: p.t, dtype: 'f32', min: N * p.rows }], 'requirement');
    next += p.rows;
  }
  if (next !== ad.outFeatures)
    throw new Error(`${what}: the output parts cover ${next} rows of the adapter's ${ad.outFeatures}`);
}

/**
 * loraForward for a module whose output is split over several tensors (a fused projection):
 * t = dropout(x)·Aᵀ once, then part p gets y_p += s·t·B[row0:row0+rows]ᵀ — B's rows read in place
 * (an offset into B), so the fused output is never assembled. The same LoRA as on the fused
 * nn.Linear (PEFT wraps qkv_proj as one layer).
 */
export async function loraForwardParts(
  rec: Recorder,
  args: Omit<LoraForwardArgs, 'y'> & { parts: readonly LoraOutputPart[] },
): Promise<void> {
  const { x, adapter: ad, N, ws, parts } = args;
  const { r, inFeatures: fin, outFeatures: fout } = ad;
  const what = `lora.forward(parts) ${describe(x)} r=${r} ${fin}→${fout} N=${N}`;
  checkAdapter(what, ad, N, x, parts[0].t, ws, parts[0].rows);
  checkParts(what, ad, N, parts);
  const dropout = activeDropout(args.dropout);
  await skinny(
    rec,
    { a: x, b: ad.a, c: ws.t, M: N, N: r, K: fin, aRow: fin, aCol: 1, bRow: fin, bCol: 1, drop: 1, dropout },
    `${what} t=x·Aᵀ`,
  );
  for (const p of parts)
    await matmul(rec, {
      a: ws.t,
      b: ad.b,
      bOffset: p.row0 * r,
      c: p.t,
      M: N,
      N: p.rows,
      K: r,
      transB: true,
      alpha: ad.scale,
      beta: 1,
    });
}

/**
 * loraBackward with the upstream gradient split over parts (see loraForwardParts): dY is the
 * concatenation of the parts along features, so dB's rows of part p are s·dY_pᵀ·t and
 * g = s·Σ_p dY_p·B_p (the backward of the split is this concatenation, done by accumulation).
 */
export async function loraBackwardParts(
  rec: Recorder,
  args: Omit<LoraBackwardArgs, 'dY'> & { parts: readonly LoraOutputPart[] },
): Promise<void> {
  const { x, dB, adapter: ad, N, ws, parts } = args;
  const { r, inFeatures: fin, outFeatures: fout } = ad;
  const what = `lora.backward(parts) ${describe(x)} r=${r} ${fin}→${fout} N=${N}`;
  checkAdapter(what, ad, N, x, parts[0].t, ws, parts[0].rows);
  checkParts(what, ad, N, parts);
  const beta = args.accumulate ? 1 : 0;
  const dropout = activeDropout(args.dropout);
  for (const [i, p] of parts.entries()) {
    // dB[row0 + o, k] (+)= s·Σ_n dY_p[n,o]·t[n,k]
    await matmul(rec, {
      a: p.t,
      b: ws.t,
      c: dB,
      cOffset: p.row0 * r,
      M: p.rows,
      N: r,
      K: N,
      transA: true,
      alpha: ad.scale,
      beta,
    });
    // g[n,k] = s·Σ_p Σ_o dY_p[n,o]·B[row0 + o, k]
    await matmul(rec, {
      a: p.t,
      b: ad.b,
      bOffset: p.row0 * r,
      c: ws.g,
      M: N,
      N: r,
      K: p.rows,
      alpha: ad.scale,
      beta: i ? 1 : 0,
    });
  }
  await inputGrads(rec, args, ad, beta, dropout, what);
}

/** FLOPs of the adapter's forward and backward (matmuls only), for benchmarks. */
export function loraFlops(N: number, inF: number, outF: number, r: number): { forward: number; backward: number } {
  return { forward: 2 * N * r * (inF + outF), backward: 2 * N * r * (2 * outF + 2 * inF) };
}
