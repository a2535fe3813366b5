// Validation and grid helpers shared by the norm / rope / swiglu / embedding / loss / optimizer ops.
import { GpuError } from '../gpu/errors.ts';
import type { Recorder } from '../gpu/recorder.ts';
import { describe, numelOf, type DType, type Tensor } from '../gpu/tensor.ts';

/** Weight storage kinds understood by shaders/packed16.wgsl `decodeWeight`. */
const WEIGHT_KIND: Partial<Record<DType, number>> = { f32: 0, bf16: 1, f16: 2 };

export function weightKind(what: string, name: string, t: Tensor): number {
  const kind = WEIGHT_KIND[t.dtype];
  if (kind === undefined) throw new GpuError('validation', what, `${name} ${describe(t)} must be f32, bf16 or f16`);
  return kind;
}

export function checkDType(what: string, name: string, t: Tensor, ...allowed: DType[]): void {
  if (!allowed.includes(t.dtype)) throw new GpuError('validation', what, `${name} ${describe(t)} must be ${allowed.join(' or ')}`);
}

/** Throws unless `t` holds at least `elements` elements. */
export function checkFits(what: string, name: string, t: Tensor, elements: number): void {
  const have = numelOf(t.shape);
  if (elements > have) throw new GpuError('validation', what, `${name} needs ${elements} elements but ${describe(t)} holds ${have}`);
}

export function checkPositiveInt(what: string, name: string, v: number, min = 1): void {
  if (!Number.isInteger(v) || v < min) throw new GpuError('validation', what, `${name} must be an integer ≥ ${min}, got ${v}`);
}

export function checkDistinct(what: string, pairs: [string, Tensor | undefined][]): void {
  const seen = new Map<GPUBuffer, string>();
  for (const [name, t] of pairs) {
    if (!t) continue;
    const other = seen.get(t.buf.buffer);
    if (other) throw new GpuError('validation', what, `${name} and ${other} share one buffer (${describe(t)}); this kernel needs them distinct`);
    seen.set(t.buf.buffer, name);
  }
}

/**
 * `groups` workgroups folded into an x×y grid under the per-dimension limit; shaders
 * recover the linear index as `wg.y * nwg.x + wg.x` and skip indices ≥ the real count.
 */
export function foldGrid(rec: Recorder, groups: number): [number, number] {
  const max = rec.gpu.limits.maxComputeWorkgroupsPerDimension;
  if (groups <= max) return [groups, 1];
  const y = Math.ceil(groups / max);
  return [Math.ceil(groups / y), y];
}
