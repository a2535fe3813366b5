// LoRA adapters with PEFT semantics (peft src/peft/tuners/lora/layer.py, config.py):
//   y = base(x) + s·(dropout(x)·Aᵀ)·Bᵀ,  A [r, in], B [out, r],  s = α/r (or α/√r with rsLoRA).
// Built from the matmul op plus shaders/lora.wgsl for the dropout mask, which is a hash of
// (seed, step, module, element) so the backward regenerates it instead of storing it.
// Not fused with the base matmul: the adapter adds two skinny matmuls (N = r) and, with dropout,
// one elementwise pass over x in each direction.
import type { Gpu } from '../gpu/device.ts';
import { GpuError } from '../gpu/errors.ts';
import { Params, type Recorder } from '../gpu/recorder.ts';
import { describe, numelOf, type Tensor } from '../gpu/tensor.ts';
import { createTensor, releaseTensor, tensorSpec } from '../gpu/transfer.ts';
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

// Host twin of shaders/k2_hash.wgsl (lowbias32 mixer), for initialisation and CPU checks.
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
  /** [N, in]: dropout(x) (forward, and regenerated in the backward); only with dropout. */
  xd?: Tensor;
  /** [N, in]: g·A before the dropout mask; only with dropout. */
  gA?: Tensor;
}

export function createLoraWorkspace(gpu: Gpu, N: number, adapter: LoraAdapter, withDropout: boolean, label = 'lora'): LoraWorkspace {
  const { r, inFeatures } = adapter;
  const ws: LoraWorkspace = {
    t: createTensor(gpu, tensorSpec('f32', [N, r], 'activations', `${label}.t`)),
    g: createTensor(gpu, tensorSpec('f32', [N, r], 'scratch', `${label}.g`)),
  };
  if (withDropout) {
    ws.xd = createTensor(gpu, tensorSpec('f32', [N, inFeatures], 'scratch', `${label}.xd`));
    ws.gA = createTensor(gpu, tensorSpec('f32', [N, inFeatures], 'scratch', `${label}.gA`));
  }
  return ws;
}

export function releaseLoraWorkspace(gpu: Gpu, ws: LoraWorkspace): void {
  for (const t of [ws.t, ws.g, ws.xd, ws.gA]) if (t) releaseTensor(gpu, t);
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

function checkAdapter(what: string, ad: LoraAdapter, N: number, x: Tensor, outLike: Tensor): void {
  const need = (t: Tensor, n: number, name: string) => {
    if (t.dtype !== 'f32' || numelOf(t.shape) < n) throw new GpuError('validation', what, `${name} ${describe(t)} must be f32 with ≥ ${n} elements`);
  };
  need(ad.a, ad.r * ad.inFeatures, 'A');
  need(ad.b, ad.outFeatures * ad.r, 'B');
  need(x, N * ad.inFeatures, 'x');
  need(outLike, N * ad.outFeatures, 'y/dY');
}

function dropoutActive(d: LoraDropout | undefined): d is LoraDropout {
  return !!d && d.p > 0;
}

async function recordDropout(rec: Recorder, entry: 'dropout' | 'dropout_add', src: Tensor, dst: Tensor, numel: number, d: LoraDropout, what: string) {
  const pipeline = await rec.gpu.pipelines.get('lora', {}, entry);
  const params = new Params(8).u32(numel).u32(d.seed).u32(d.step).u32(d.moduleId).u32(dropThreshold(d.p)).f32(dropScale(d.p)).u32(0).u32(0);
  const groups = Math.max(1, Math.ceil(numel / 256));
  const gx = Math.min(groups, rec.gpu.limits.maxComputeWorkgroupsPerDimension);
  rec.dispatch({ pipeline, what }, params.buffer, [src, dst], [gx, Math.ceil(groups / gx)]);
}

/** Records y += s·(dropout(x)·Aᵀ)·Bᵀ and saves t = dropout(x)·Aᵀ in ws.t for the backward. */
export async function loraForward(rec: Recorder, args: LoraForwardArgs): Promise<void> {
  const { x, y, adapter: ad, N, ws } = args;
  const what = `lora.forward ${describe(x)} r=${ad.r} ${ad.inFeatures}→${ad.outFeatures} N=${N}`;
  checkAdapter(what, ad, N, x, y);
  let xin = x;
  if (dropoutActive(args.dropout)) {
    if (!ws.xd) throw new GpuError('validation', what, 'dropout needs a workspace created with withDropout');
    await recordDropout(rec, 'dropout', x, ws.xd, N * ad.inFeatures, args.dropout, `${what} dropout`);
    xin = ws.xd;
  }
  await matmul(rec, { a: xin, b: ad.a, c: ws.t, M: N, N: ad.r, K: ad.inFeatures, transB: true });
  await matmul(rec, { a: ws.t, b: ad.b, c: y, M: N, N: ad.outFeatures, K: ad.r, transB: true, alpha: ad.scale, beta: 1 });
}

export interface LoraBackwardArgs {
  /** The forward's input [N, in] (dropout is regenerated from it). */
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
  const { x, dY, dX, dA, dB, adapter: ad, N, ws } = args;
  const what = `lora.backward ${describe(dY)} r=${ad.r} ${ad.inFeatures}→${ad.outFeatures} N=${N}`;
  checkAdapter(what, ad, N, x, dY);
  const beta = args.accumulate ? 1 : 0;
  const drop = dropoutActive(args.dropout) ? args.dropout : null;
  let xin = x;
  if (drop) {
    if (!ws.xd || !ws.gA) throw new GpuError('validation', what, 'dropout needs a workspace created with withDropout');
    await recordDropout(rec, 'dropout', x, ws.xd, N * ad.inFeatures, drop, `${what} dropout (regenerated)`);
    xin = ws.xd;
  }
  await matmul(rec, { a: dY, b: ws.t, c: dB, M: ad.outFeatures, N: ad.r, K: N, transA: true, alpha: ad.scale, beta });
  await matmul(rec, { a: dY, b: ad.b, c: ws.g, M: N, N: ad.r, K: ad.outFeatures, alpha: ad.scale });
  await matmul(rec, { a: ws.g, b: xin, c: dA, M: ad.r, N: ad.inFeatures, K: N, transA: true, beta });
  if (!dX) return;
  if (!drop) {
    await matmul(rec, { a: ws.g, b: ad.a, c: dX, M: N, N: ad.inFeatures, K: ad.r, beta: 1 });
    return;
  }
  await matmul(rec, { a: ws.g, b: ad.a, c: ws.gA!, M: N, N: ad.inFeatures, K: ad.r });
  await recordDropout(rec, 'dropout_add', ws.gA!, dX, N * ad.inFeatures, drop, `${what} dX`);
}

/** FLOPs of the adapter's forward and backward (matmuls only), for benchmarks. */
export function loraFlops(N: number, inF: number, outF: number, r: number): { forward: number; backward: number } {
  return { forward: 2 * N * r * (inF + outF), backward: 2 * N * r * (2 * outF + 2 * inF) };
}
