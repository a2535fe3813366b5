// Global gradient norm + clip coefficient, torch.nn.utils.clip_grad_norm_ semantics
// (REFERENCE.md: total = ‖(‖g_i‖₂)‖₂, coef = min(1, max_norm/(total + 1e-6))); see
// shaders/grad_norm.wgsl. The result stays on the GPU in a small stats buffer that the AdamW
// kernel reads, so clipping costs no extra pass over the gradients and no readback.
import { GpuError } from '../gpu/errors.ts';
import { Params, type Recorder } from '../gpu/recorder.ts';
import { describe, numelOf, type Tensor } from '../gpu/tensor.ts';
import { checkDistinct, checkDType, checkFits, checkPositiveInt, foldGrid } from './k1_shared.ts';

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
  if (!a.ranges.length) throw new GpuError('validation', w, 'no gradient ranges');
  if (!Number.isFinite(a.maxNorm)) throw new GpuError('validation', w, `maxNorm must be finite, got ${a.maxNorm}`);
  checkDType(w, 'partials', a.partials, 'f32');
  checkDType(w, 'stats', a.stats, 'f32');
  checkFits(w, 'partials', a.partials, gradNormPartials(counts));
  checkFits(w, 'stats', a.stats, statsIndex + GRAD_STATS.size);
  checkDistinct(w, [['partials', a.partials], ['stats', a.stats]]);
  const p1 = await rec.gpu.pipelines.get('grad_norm', {}, 'partials');
  let at = 0;
  for (const [i, r] of a.ranges.entries()) {
    const offset = r.offset ?? 0;
    const rw = `${w} range ${i} ${describe(r.grads)}[${offset}, +${counts[i]})`;
    checkDType(rw, 'grads', r.grads, 'f32');
    checkPositiveInt(rw, 'count', counts[i], 0);
    checkFits(rw, 'grads', r.grads, offset + counts[i]);
    if (r.grads.buf.buffer === a.partials.buf.buffer || r.grads.buf.buffer === a.stats.buf.buffer) throw new GpuError('validation', rw, 'grads must not share the partials or stats buffer');
    const groups = groupsFor(counts[i]);
    const params = new Params(8).u32(offset).u32(counts[i]).u32(at).u32(0).f32(a.maxNorm).u32(statsIndex).u32(0).u32(0);
    rec.dispatch({ pipeline: p1, what: rw }, params.buffer, [r.grads, a.partials], [groups]);
    at += groups;
  }
  const p2 = await rec.gpu.pipelines.get('grad_norm', {}, 'finalize');
  const params = new Params(8).u32(0).u32(0).u32(0).u32(at).f32(a.maxNorm).u32(statsIndex).u32(0).u32(0);
  rec.dispatch({ pipeline: p2, what: `${w} (finalize ${at} partials)` }, params.buffer, [a.partials, a.stats], [1]);
}

/** Records g *= stats[statsIndex + 1] (the clip coefficient) in place. */
export async function gradClip(rec: Recorder, a: GradClipArgs): Promise<void> {
  const offset = a.offset ?? 0;
  const count = rangeCount(a);
  const statsIndex = a.statsIndex ?? 0;
  const w = `grad_norm.clip ${describe(a.grads)}[${offset}, +${count})`;
  checkDType(w, 'grads', a.grads, 'f32');
  checkDType(w, 'stats', a.stats, 'f32');
  checkPositiveInt(w, 'count', count, 0);
  checkFits(w, 'grads', a.grads, offset + count);
  checkFits(w, 'stats', a.stats, statsIndex + GRAD_STATS.size);
  checkDistinct(w, [['grads', a.grads], ['stats', a.stats]]);
  const pipeline = await rec.gpu.pipelines.get('grad_norm', {}, 'clip');
  const params = new Params(8).u32(offset).u32(count).u32(0).u32(0).f32(0).u32(statsIndex).u32(0).u32(0);
  rec.dispatch({ pipeline, what: w }, params.buffer, [a.grads, a.stats], foldGrid(rec, Math.ceil(count / WG)));
}
