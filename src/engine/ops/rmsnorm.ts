// RMSNorm forward/backward; see shaders/rmsnorm.wgsl. Matches transformers' LlamaRMSNorm /
// Qwen2RMSNorm (modeling_llama.py, modeling_qwen2.py): f32 math, y = w·x/√(mean(x²)+eps).
// Qwen3's q_norm / k_norm are the same op with rows = tokens·heads and width = head_dim.
// Gemma's norm (Gemma3RMSNorm / Gemma2RMSNorm, modeling_gemma3.py) scales by (1 + w): the same op
// with `offset: 1`, so the stored weight stays the checkpoint's and its gradient is unchanged.
import { Params, type Recorder } from '../gpu/recorder.ts';
import type { ShaderConstants } from '../gpu/shader-library.ts';
import { describe, type Tensor } from '../gpu/tensor.ts';
import { check, checkInteger, checkOperands, foldGrid, launch, WEIGHT_DTYPES, weightKind } from './kernel.ts';
import { reduceConstants } from './reduce.ts';

/** Threads per row: ~8 elements each, a power of two in [32, 256]. */
function workgroupSize(width: number): number {
  return Math.min(256, Math.max(32, 2 ** Math.ceil(Math.log2(Math.ceil(width / 8)))));
}

export interface RmsnormForwardArgs {
  /** Input [rows, width], f32. */
  x: Tensor;
  /** Scale [width]: f32, bf16 or f16. */
  weight: Tensor;
  /** Output [rows, width], f32. Must not alias x. */
  y: Tensor;
  /** Saved 1/√(mean(x²)+eps) per row [rows], f32: the backward needs it. */
  rstd: Tensor;
  rows: number;
  width: number;
  /** rms_norm_eps from the model config. */
  eps: number;
  /** Added to the weight before scaling: 1 for Gemma's (1 + w), default 0. */
  offset?: number;
  /** y += instead of y = (Gemma: the normed attention / MLP output onto the residual stream). */
  accumulate?: boolean;
}

export interface RmsnormBackwardArgs {
  /** The forward's input [rows, width] and its saved rstd [rows]. */
  x: Tensor;
  rstd: Tensor;
  weight: Tensor;
  /** Upstream gradient dL/dy [rows, width], f32. */
  dy: Tensor;
  /** dL/dx [rows, width], f32; omit to skip. Pre-norm residual streams pass accumulateDx. */
  dx?: Tensor;
  accumulateDx?: boolean;
  /** dL/dweight [width], f32; only when the norm weight trains. Needs `partials`. */
  dWeight?: Tensor;
  accumulateDWeight?: boolean;
  /** Scratch of at least rmsnormWeightGradPartials(rows, width) f32 elements. */
  partials?: Tensor;
  rows: number;
  width: number;
  /** The forward's weight offset (Gemma: 1). */
  offset?: number;
}

type Common = { x: Tensor; weight: Tensor; rows: number; width: number };

function what(kernel: string, a: Common): string {
  return `rmsnorm.${kernel} x${describe(a.x)} w${describe(a.weight)} rows=${a.rows} width=${a.width}`;
}

/** Checks the shape and the operands every kernel reads; returns the weight's decode kind. */
function checkCommon(w: string, a: Common): number {
  checkInteger(w, 'rows', a.rows, 0);
  checkInteger(w, 'width', a.width);
  checkOperands(w, [
    { name: 'x', tensor: a.x, dtype: 'f32', min: a.rows * a.width },
    { name: 'weight', tensor: a.weight, dtype: WEIGHT_DTYPES, min: a.width },
  ]);
  return weightKind(w, 'weight', a.weight);
}

/** Rows per slab of the weight-gradient partial sums: ≥ 16 rows, at most 512 slabs. */
function slabRows(rows: number): number {
  return Math.max(16, Math.ceil(rows / 512));
}

/** f32 elements the weight-gradient scratch needs. */
export function rmsnormWeightGradPartials(rows: number, width: number): number {
  return Math.max(1, Math.ceil(rows / slabRows(rows))) * width;
}

function params(rows: number, width: number, eps: number, accumulate: boolean, offset = 0): Params {
  const rps = slabRows(rows);
  return new Params(8)
    .u32(rows)
    .u32(width)
    .f32(eps)
    .u32(accumulate ? 1 : 0)
    .u32(rps)
    .u32(Math.ceil(rows / rps))
    .f32(offset)
    .u32(0);
}

function constants(rec: Recorder, kind: number, width: number): ShaderConstants {
  return { W_KIND: `${kind}u`, WG: `${workgroupSize(width)}u`, ...reduceConstants(rec.gpu) };
}

/** Records y (= or +=) (w + offset)·x·rstd and saves rstd. */
export async function rmsnormForward(rec: Recorder, a: RmsnormForwardArgs): Promise<void> {
  const w = what('forward', a) + ` → y${describe(a.y)}`;
  const kind = checkCommon(w, a);
  checkOperands(w, [
    { name: 'x', tensor: a.x, dtype: 'f32' },
    { name: 'y', tensor: a.y, dtype: 'f32', min: a.rows * a.width, write: true },
    { name: 'rstd', tensor: a.rstd, dtype: 'f32', min: a.rows, write: true },
  ]);
  check(w, a.eps >= 0, `eps must be ≥ 0, got ${a.eps}`);
  check(w, Number.isFinite(a.offset ?? 0), `offset must be finite, got ${a.offset}`);
  await launch(rec, {
    shader: 'rmsnorm',
    entry: 'forward',
    constants: constants(rec, kind, a.width),
    what: w,
    params: params(a.rows, a.width, a.eps, !!a.accumulate, a.offset),
    bindings: [a.x, a.weight, a.y, a.rstd],
    grid: foldGrid(rec, a.rows),
  });
}

/** Records dx (optional, = or +=) and dWeight (optional, = or +=, two passes without atomics). */
export async function rmsnormBackward(rec: Recorder, a: RmsnormBackwardArgs): Promise<void> {
  const w = what('backward', a);
  const kind = checkCommon(w, a);
  checkOperands(w, [
    { name: 'dy', tensor: a.dy, dtype: 'f32', min: a.rows * a.width },
    { name: 'rstd', tensor: a.rstd, dtype: 'f32', min: a.rows },
  ]);
  check(w, !!(a.dx || a.dWeight), 'nothing to compute: pass dx and/or dWeight');
  if (a.dx) await inputGrad(rec, a, a.dx, `${w} → dx${describe(a.dx)}`, kind);
  if (a.dWeight) await weightGrad(rec, a, a.dWeight, `${w} → dWeight${describe(a.dWeight)}`, kind);
}

async function inputGrad(rec: Recorder, a: RmsnormBackwardArgs, dx: Tensor, w: string, kind: number): Promise<void> {
  checkOperands(w, [
    { name: 'dx', tensor: dx, dtype: 'f32', min: a.rows * a.width, write: true },
    { name: 'x', tensor: a.x, dtype: 'f32' },
    { name: 'dy', tensor: a.dy, dtype: 'f32' },
    { name: 'rstd', tensor: a.rstd, dtype: 'f32' },
    { name: 'weight', tensor: a.weight, dtype: WEIGHT_DTYPES },
  ]);
  await launch(rec, {
    shader: 'rmsnorm',
    entry: 'backwardInput',
    constants: constants(rec, kind, a.width),
    what: w,
    params: params(a.rows, a.width, 0, !!a.accumulateDx, a.offset),
    bindings: [a.x, a.weight, a.dy, a.rstd, dx],
    grid: foldGrid(rec, a.rows),
  });
}

async function weightGrad(
  rec: Recorder,
  a: RmsnormBackwardArgs,
  dWeight: Tensor,
  w: string,
  kind: number,
): Promise<void> {
  const partialsNeed = rmsnormWeightGradPartials(a.rows, a.width);
  check(w, !!a.partials, `needs a partials scratch of ${partialsNeed} f32`);
  checkOperands(w, [
    { name: 'dWeight', tensor: dWeight, dtype: 'f32', min: a.width, write: true },
    { name: 'partials', tensor: a.partials, dtype: 'f32', min: partialsNeed, write: true },
    { name: 'x', tensor: a.x, dtype: 'f32' },
    { name: 'dy', tensor: a.dy, dtype: 'f32' },
    { name: 'rstd', tensor: a.rstd, dtype: 'f32' },
  ]);
  if (a.rows === 0) {
    // No rows: the gradient of an empty sum is zero.
    if (!a.accumulateDWeight) rec.clear(dWeight);
    return;
  }
  const pr = params(a.rows, a.width, 0, !!a.accumulateDWeight);
  const c = constants(rec, kind, a.width);
  const columns = Math.ceil(a.width / workgroupSize(a.width));
  const slabs = Math.ceil(a.rows / slabRows(a.rows));
  await launch(rec, {
    shader: 'rmsnorm',
    entry: 'weightPartials',
    constants: c,
    what: `${w} (partials ${slabs} slabs)`,
    params: pr,
    bindings: [a.x, a.dy, a.rstd, a.partials],
    grid: [columns, slabs],
  });
  await launch(rec, {
    shader: 'rmsnorm',
    entry: 'weightReduce',
    constants: c,
    what: `${w} (reduce)`,
    params: pr,
    bindings: [a.partials, dWeight],
    grid: [columns],
  });
}

/** Bytes one forward must move (x read twice is not counted: caches). */
export function rmsnormForwardBytes(rows: number, width: number, weightBytes = 4): number {
  return 4 * 2 * rows * width + weightBytes * width + 4 * rows;
}
