// The one place the op wrappers describe their operands, check them and size their launch grid:
// a wrapper is "operands + params + launch". Error messages name the op (`what`), the operand and
// its describe() label, e.g. "x needs 16 elements but xs[3×4:f32] holds 12".
import { GpuError } from '../gpu/errors.ts';
import { Params, type Bindable, type Recorder } from '../gpu/recorder.ts';
import type { ShaderConstants } from '../gpu/shader-library.ts';
import { describe, numelOf, tensorBytes, type DType, type Tensor } from '../gpu/tensor.ts';

/** One tensor a kernel binds. An absent optional operand (undefined / null) is skipped. */
export interface Operand {
  name: string;
  tensor: Tensor | null | undefined;
  /** Accepted dtypes. */
  dtype: DType | readonly DType[];
  /** Elements the kernel touches (offset + extent); default 0. */
  min?: number;
  /** Written by the kernel: it must not share a GPU buffer with any other operand. */
  write?: boolean;
}

/**
 * How a failed operand check reads: `split` says what is wrong ("x xs[3:f32] must be f32",
 * "x needs 16 elements but xs[3:f32] holds 3"); `requirement` states both demands at once
 * ("x xs[3:f32] must be f32 with ≥ 16 elements"), the wording of the LoRA, merge and NF4 ops.
 */
export type Wording = 'split' | 'requirement';

/** Weight storage kinds understood by shaders/include/packed16.wgsl `decodeWeight`. */
export const WEIGHT_DTYPES = ['f32', 'bf16', 'f16'] as const satisfies readonly DType[];

export function check(what: string, ok: boolean, message: string): asserts ok {
  if (!ok) throw new GpuError('validation', what, message);
}

function listed(dtypes: readonly string[]): string {
  return dtypes.length < 2 ? dtypes.join('') : `${dtypes.slice(0, -1).join(', ')} or ${dtypes[dtypes.length - 1]}`;
}

/** Throws unless `t` has one of the `dtypes`. */
export function checkDType(what: string, name: string, t: Tensor, ...dtypes: DType[]): void {
  check(what, dtypes.includes(t.dtype), `${name} ${describe(t)} must be ${listed(dtypes)}`);
}

/** Throws unless `v` is an integer ≥ `min`. */
export function checkInteger(what: string, name: string, v: number, min = 1): void {
  check(what, Number.isInteger(v) && v >= min, `${name} must be an integer ≥ ${min}, got ${v}`);
}

/** The decodeWeight kind (0 f32, 1 bf16, 2 f16) of a weight operand; throws for other dtypes. */
export function weightKind(what: string, name: string, t: Tensor): number {
  checkDType(what, name, t, ...WEIGHT_DTYPES);
  return (WEIGHT_DTYPES as readonly DType[]).indexOf(t.dtype);
}

function checkOperand(what: string, op: Operand & { tensor: Tensor }, wording: Wording): void {
  const { name, tensor: t } = op;
  const dtypes: readonly DType[] = typeof op.dtype === 'string' ? [op.dtype] : op.dtype;
  const need = op.min ?? 0;
  const have = numelOf(t.shape);
  if (wording === 'requirement') {
    check(
      what,
      dtypes.includes(t.dtype) && have >= need,
      `${name} ${describe(t)} must be ${listed(dtypes)} with ≥ ${need} elements`,
    );
    return;
  }
  check(what, dtypes.includes(t.dtype), `${name} ${describe(t)} must be ${listed(dtypes)}`);
  check(what, have >= need, `${name} needs ${need} elements but ${describe(t)} holds ${have}`);
}

/** Two operands in one buffer overlap unless both are views of disjoint ranges (a whole buffer overlaps everything). */
function overlap(a: Tensor, b: Tensor): boolean {
  if (a.offset === undefined || b.offset === undefined) return true;
  return a.offset < b.offset + tensorBytes(b) && b.offset < a.offset + tensorBytes(a);
}

/** Checks dtype and size of every present operand, then that no written one shares a buffer. */
export function checkOperands(what: string, operands: readonly Operand[], wording: Wording = 'split'): void {
  const present = operands.filter((op): op is Operand & { tensor: Tensor } => !!op.tensor);
  for (const op of present) checkOperand(what, op, wording);
  for (const [i, a] of present.entries()) {
    for (const b of present.slice(i + 1)) {
      const shared = a.tensor.buf.buffer === b.tensor.buf.buffer && overlap(a.tensor, b.tensor);
      check(
        what,
        !shared || !(a.write || b.write),
        `${b.name} and ${a.name} share one buffer (${describe(b.tensor)}); this kernel needs them distinct`,
      );
    }
  }
}

/**
 * `groups` workgroups folded into an x×y grid under the per-dimension limit (balanced: x is as
 * small as the limit allows). Shaders recover the linear index as `wg.y * nwg.x + wg.x` and skip
 * indices ≥ the real count; a kernel that uses y for something else passes the fold as x and z.
 */
export function foldGrid(rec: Recorder, groups: number): [number, number] {
  const max = rec.gpu.limits.maxComputeWorkgroupsPerDimension;
  if (groups <= max) return [groups, 1];
  const y = Math.ceil(groups / max);
  return [Math.ceil(groups / y), y];
}

/** The folded grid of a 1-D launch of `threads` threads in workgroups of `perGroup` (at least one group). */
export function threadGrid(rec: Recorder, threads: number, perGroup: number): [number, number] {
  return foldGrid(rec, Math.max(1, Math.ceil(threads / perGroup)));
}

/** One dispatch: a pipeline of shaders/`shader`.wgsl (entry point, constants), its uniform params, bindings and grid. */
export interface Launch {
  shader: string;
  entry?: string;
  constants?: ShaderConstants;
  what: string;
  params: Params | ArrayBuffer;
  bindings: Bindable[];
  grid: readonly [number, number?, number?];
}

/** Records one dispatch (bindings 1.. in order; binding 0 is the params uniform). */
export async function launch(rec: Recorder, k: Launch): Promise<void> {
  const pipeline = await rec.gpu.pipelines.get(k.shader, k.constants, k.entry);
  const params = k.params instanceof Params ? k.params.buffer : k.params;
  rec.dispatch({ pipeline, what: k.what }, params, k.bindings, k.grid);
}
