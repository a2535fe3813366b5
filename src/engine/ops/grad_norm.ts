// Global gradient norm + clip coefficient, torch.nn.utils.clip_grad_norm_ semantics
// (torch/nn/utils/clip_grad.py: total = ‖(‖g_i‖₂)‖₂, coef = min(1, max_norm/(total + 1e-6))); see
// shaders/grad_norm.wgsl. The result stays on the GPU in a small stats buffer that the AdamW
// kernel reads, so clipping costs no extra pass over the gradients and no readback.
import { Params, type Recorder } from '../gpu/recorder.ts';
import { describe, numelOf, type Tensor } from '../gpu/tensor.ts';
import { check, checkInteger, checkOperands, foldGrid, launch, type Operand } from './kernel.ts';
import { reduceConstants } from './reduce.ts';

const WG = 256;
const MAX_PARTIALS_PER_RANGE = 1024;
const ELEMENTS_PER_THREAD = 8;

/** f32 slots of a gradient-stats block (4 floats at statsIndex). */
export const GRAD_STATS = { norm: 0, clipCoef: 1, sumSquares: 2, nonFinite: 3, size: 4 } as const;

/** A range of a flat f32 gradient arena (defaults: the whole tensor). */
export interface GradRange {
  grads: Tensor;
  offset?: number;
  count?: number;
}

export interface GradNormArgs {
  ranges: GradRange[];
  /** Scratch of at least gradNormPartials(counts) f32. */
  partials: Tensor;
  /** Receives {norm, clipCoef, Σg², nonFinite (1 when Σg² is inf/NaN; then clipCoef = 0)} at statsIndex. */
  stats: Tensor;
  statsIndex?: number;
  /** max_grad_norm; ≤ 0 disables clipping (clipCoef = 1), as the HF Trainer with max_grad_norm 0. */
  maxNorm: number;
}

export interface GradClipArgs extends GradRange {
  stats: Tensor;
  statsIndex?: number;
}

function rangeCount(r: GradRange): number {
  return r.count ?? numelOf(r.grads.shape) - (r.offset ?? 0);
}

function groupsFor(count: number): number {
  return Math.max(1, Math.min(MAX_PARTIALS_PER_RANGE, Math.ceil(count / (WG * ELEMENTS_PER_THREAD))));
}

/** f32 elements of partials scratch gradNorm needs for ranges of these sizes. */
export function gradNormPartials(counts: number[]): number {
  return counts.reduce((a, c) => a + groupsFor(c), 0);
}

/** Records stats[statsIndex..+4] = {‖g‖₂, clipCoef, Σg², nonFinite} over all ranges. */
export async function gradNorm(rec: Recorder, a: GradNormArgs): Promise<void> {
  const counts = a.ranges.map(rangeCount);
  const total = counts.reduce((x, y) => x + y, 0);
  const statsIndex = a.statsIndex ?? 0;
  const w = `grad_norm ${a.ranges.length} ranges (${total} elements) → stats${describe(a.stats)}[${statsIndex}]`;
  check(w, a.ranges.length > 0, 'no gradient ranges');
  check(w, Number.isFinite(a.maxNorm), `maxNorm must be finite, got ${a.maxNorm}`);
  const partials: Operand = {
    name: 'partials',
    tensor: a.partials,
    dtype: 'f32',
    min: gradNormPartials(counts),
    write: true,
  };
  const stats: Operand = {
    name: 'stats',
    tensor: a.stats,
    dtype: 'f32',
    min: statsIndex + GRAD_STATS.size,
    write: true,
  };
  checkOperands(w, [partials, stats]);
  let at = 0;
  for (const [i, r] of a.ranges.entries()) {
    const offset = r.offset ?? 0;
    const rw = `${w} range ${i} ${describe(r.grads)}[${offset}, +${counts[i]})`;
    checkInteger(rw, 'count', counts[i], 0);
    checkOperands(rw, [{ name: 'grads', tensor: r.grads, dtype: 'f32', min: offset + counts[i] }, partials, stats]);
    const groups = groupsFor(counts[i]);
    const params = new Params(8).u32(offset).u32(counts[i]).u32(at).u32(0).f32(a.maxNorm).u32(statsIndex).u32(0).u32(0);
    await launch(rec, {
      shader: 'grad_norm',
      constants: reduceConstants(rec.gpu),
      entry: 'partials',
      what: rw,
      params,
      bindings: [r.grads, a.partials],
      grid: [groups],
    });
    at += groups;
  }
  const params = new Params(8).u32(0).u32(0).u32(0).u32(at).f32(a.maxNorm).u32(statsIndex).u32(0).u32(0);
  await launch(rec, {
    shader: 'grad_norm',
    constants: reduceConstants(rec.gpu),
    entry: 'finalize',
    what: `${w} (finalize ${at} partials)`,
    params,
    bindings: [a.partials, a.stats],
    grid: [1],
  });
}

/** Records g *= stats[statsIndex + 1] (the clip coefficient) in place. */
export async function gradClip(rec: Recorder, a: GradClipArgs): Promise<void> {
  const offset = a.offset ?? 0;
  const count = rangeCount(a);
  const statsIndex = a.statsIndex ?? 0;
  const w = `grad_norm.clip ${describe(a.grads)}[${offset}, +${count})`;
  checkInteger(w, 'count', count, 0);
  checkOperands(w, [
    { name: 'grads', tensor: a.grads, dtype: 'f32', min: offset + count, write: true },
    { name: 'stats', tensor: a.stats, dtype: 'f32', min: statsIndex + GRAD_STATS.size },
  ]);
  const params = new Params(8).u32(offset).u32(count).u32(0).u32(0).f32(0).u32(statsIndex).u32(0).u32(0);
  await launch(rec, {
    shader: 'grad_norm',
    constants: reduceConstants(rec.gpu),
    entry: 'clip',
    what: w,
    params,
    bindings: [a.grads, a.stats],
    grid: foldGrid(rec, Math.ceil(count / WG)),
  });
}
