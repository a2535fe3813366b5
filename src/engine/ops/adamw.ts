// torch.optim.AdamW over all trainable parameters in one dispatch; see shaders/adamw.wgsl.
//
// Arena layout (designed with the engine): params, grads, exp_avg, exp_avg_sq are four flat
// f32 tensors of the same size; tensor k occupies [offset_k, offset_k + count_k) in each.
// Segments name a parameter group: groups carry lr and weight decay, like torch param
// groups — e.g. 0 = weights with decay, 1 = biases / norm weights without decay (as the HF
// Trainer's get_decay_parameter_names), 2 = LoRA+ B matrices at lr·ratio.
// adamwBlocks() turns segments into the block table the kernel walks (upload it once);
// adamwStep() records one optimizer step (step t ≥ 1, counted after the increment).
import { Params, type Recorder } from '../gpu/recorder.ts';
import { describe, numelOf, type Tensor } from '../gpu/tensor.ts';
import { GRAD_STATS } from './grad_norm.ts';
import { check, checkInteger, checkOperands, foldGrid, launch } from './kernel.ts';

export const ADAMW_BLOCK = 1024;
export const ADAMW_MAX_GROUPS = 16;

export interface AdamwSegment {
  offset: number;
  count: number;
  /** Index into AdamwStepArgs.groups. */
  group: number;
}

export interface AdamwGroup {
  lr: number;
  weightDecay: number;
}

export interface AdamwStepArgs {
  params: Tensor;
  grads: Tensor;
  /** exp_avg and exp_avg_sq, zero before the first step. */
  m: Tensor;
  v: Tensor;
  /** adamwBlocks(...) uploaded as u32 [blockCount·4]. */
  blocks: Tensor;
  blockCount: number;
  groups: AdamwGroup[];
  /** The step number t after increment (1 on the first step). */
  step: number;
  beta1?: number;
  beta2?: number;
  eps?: number;
  /** Gradient stats written by gradNorm: grads are scaled by its clipCoef. */
  gradStats?: { tensor: Tensor; index?: number };
  /** With gradStats: leave params and moments untouched when the gradients held inf/NaN (default true). */
  skipNonFinite?: boolean;
  /** Zero the gradients after reading them (saves a clear before the next accumulation). */
  zeroGrads?: boolean;
}

/** The block table: every segment cut into ≤ ADAMW_BLOCK pieces, as u32 quads (start, end, group, 0). */
export function adamwBlocks(segments: AdamwSegment[], arenaSize: number): Uint32Array {
  const sorted = [...segments].sort((a, b) => a.offset - b.offset);
  let end = 0;
  for (const s of sorted) {
    if (!Number.isInteger(s.offset) || !Number.isInteger(s.count) || s.offset < 0 || s.count < 0)
      throw new Error(`adamwBlocks: bad segment ${JSON.stringify(s)}`);
    if (s.offset < end)
      throw new Error(`adamwBlocks: segment at ${s.offset} overlaps the previous one (ends at ${end})`);
    if (s.offset + s.count > arenaSize)
      throw new Error(`adamwBlocks: segment [${s.offset}, ${s.offset + s.count}) exceeds the arena of ${arenaSize}`);
    if (!Number.isInteger(s.group) || s.group < 0 || s.group >= ADAMW_MAX_GROUPS)
      throw new Error(`adamwBlocks: group ${s.group} outside [0, ${ADAMW_MAX_GROUPS})`);
    end = s.offset + s.count;
  }
  const out: number[] = [];
  for (const s of sorted) {
    for (let at = s.offset; at < s.offset + s.count; at += ADAMW_BLOCK)
      out.push(at, Math.min(at + ADAMW_BLOCK, s.offset + s.count), s.group, 0);
  }
  return Uint32Array.from(out);
}

function checkHyper(w: string, a: AdamwStepArgs, beta1: number, beta2: number, eps: number): void {
  checkInteger(w, 'blockCount', a.blockCount, 0);
  checkInteger(w, 'step', a.step, 1);
  check(
    w,
    a.groups.length >= 1 && a.groups.length <= ADAMW_MAX_GROUPS,
    `needs 1..${ADAMW_MAX_GROUPS} parameter groups, got ${a.groups.length}`,
  );
  check(
    w,
    beta1 >= 0 && beta1 < 1 && beta2 >= 0 && beta2 < 1 && eps >= 0,
    `bad betas/eps (${beta1}, ${beta2}, ${eps})`,
  );
  for (const [i, g] of a.groups.entries()) {
    check(
      w,
      Number.isFinite(g.lr) && g.lr >= 0 && Number.isFinite(g.weightDecay) && g.weightDecay >= 0,
      `group ${i} has bad lr/weightDecay ${JSON.stringify(g)}`,
    );
  }
}

/** Records one AdamW step over every block. */
export async function adamwStep(rec: Recorder, a: AdamwStepArgs): Promise<void> {
  const beta1 = a.beta1 ?? 0.9;
  const beta2 = a.beta2 ?? 0.999;
  const eps = a.eps ?? 1e-8;
  const n = numelOf(a.params.shape);
  const w = `adamw params${describe(a.params)} blocks=${a.blockCount} groups=${a.groups.length} step=${a.step}`;
  const stats = a.gradStats;
  const statsIndex = stats?.index ?? 0;
  checkHyper(w, a, beta1, beta2, eps);
  checkOperands(w, [
    { name: 'params', tensor: a.params, dtype: 'f32', min: n, write: true },
    { name: 'grads', tensor: a.grads, dtype: 'f32', min: n, write: true },
    { name: 'm', tensor: a.m, dtype: 'f32', min: n, write: true },
    { name: 'v', tensor: a.v, dtype: 'f32', min: n, write: true },
    { name: 'blocks', tensor: a.blocks, dtype: 'u32', min: 4 * a.blockCount },
    { name: 'gradStats', tensor: stats?.tensor, dtype: 'f32', min: statsIndex + GRAD_STATS.size },
  ]);

  // Scalars as torch computes them in Python (f64), then rounded to f32 once.
  const bc1 = 1 - beta1 ** a.step;
  const bc2Sqrt = Math.sqrt(1 - beta2 ** a.step);
  const params = new Params(12 + 4 * ADAMW_MAX_GROUPS)
    .u32(a.blockCount)
    .u32(stats ? 1 : 0)
    .u32(statsIndex)
    .u32(a.zeroGrads ? 1 : 0)
    .f32(beta1)
    .f32(beta2)
    .f32(1 - beta1)
    .f32(1 - beta2)
    .f32(eps)
    .f32(bc2Sqrt)
    .u32(a.skipNonFinite === false ? 0 : 1)
    .u32(0);
  for (let i = 0; i < ADAMW_MAX_GROUPS; i++) {
    const g = a.groups[i] ?? { lr: 0, weightDecay: 0 };
    params
      .f32(1 - g.lr * g.weightDecay)
      .f32(g.lr / bc1)
      .f32(0)
      .f32(0);
  }
  // Without stats the block table is bound again in the stats slot (read-only, never read).
  const bindings = [a.params, a.grads, a.m, a.v, a.blocks, stats?.tensor ?? a.blocks];
  await launch(rec, { shader: 'adamw', what: w, params, bindings, grid: foldGrid(rec, a.blockCount) });
}

/** Bytes one step moves over `n` elements: params, m, v read+written, grads read (+ written when zeroed). */
export function adamwBytes(n: number, zeroGrads = false): number {
  return 4 * n * (6 + 1 + (zeroGrads ? 1 : 0));
}
