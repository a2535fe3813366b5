// RMSNorm forward/backward; see shaders/rmsnorm.wgsl. Matches transformers' LlamaRMSNorm /
// Qwen2RMSNorm (modeling_llama.py, modeling_qwen2.py): f32 math, y = w·x/√(mean(x²)+eps).
// Qwen3's q_norm / k_norm are the same op with rows = tokens·heads and width = head_dim.
import { GpuError } from '../gpu/errors.ts';
import { Params, type Recorder } from '../gpu/recorder.ts';
import { describe, type Tensor } from '../gpu/tensor.ts';
import { checkDistinct, checkDType, checkFits, checkPositiveInt, foldGrid, weightKind } from './k1_shared.ts';

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
}

function what(kernel: string, a: { x: Tensor; weight: Tensor; rows: number; width: number }): string {
  return `rmsnorm.${kernel} x${describe(a.x)} w${describe(a.weight)} rows=${a.rows} width=${a.width}`;
}

function checkCommon(w: string, a: { x: Tensor; weight: Tensor; rows: number; width: number }): number {
  checkPositiveInt(w, 'rows', a.rows, 0);
  checkPositiveInt(w, 'width', a.width);
  checkDType(w, 'x', a.x, 'f32');
  checkFits(w, 'x', a.x, a.rows * a.width);
  checkFits(w, 'weight', a.weight, a.width);
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

function params(rows: number, width: number, eps: number, accumulate: boolean): Params {
  const rps = slabRows(rows);
  return new Params(8).u32(rows).u32(width).f32(eps).u32(accumulate ? 1 : 0).u32(rps).u32(Math.ceil(rows / rps)).u32(0).u32(0);
}

/** Records y = w·x·rstd and saves rstd. */
export async function rmsnormForward(rec: Recorder, a: RmsnormForwardArgs): Promise<void> {
  const w = what('forward', a) + ` → y${describe(a.y)}`;
  const kind = checkCommon(w, a);
  checkDType(w, 'y', a.y, 'f32');
  checkDType(w, 'rstd', a.rstd, 'f32');
  checkFits(w, 'y', a.y, a.rows * a.width);
  checkFits(w, 'rstd', a.rstd, a.rows);
  checkDistinct(w, [['x', a.x], ['y', a.y], ['rstd', a.rstd]]);
  if (!(a.eps >= 0)) throw new GpuError('validation', w, `eps must be ≥ 0, got ${a.eps}`);
  const pipeline = await rec.gpu.pipelines.get('rmsnorm', { W_KIND: `${kind}u`, WG: `${workgroupSize(a.width)}u` }, 'forward');
  rec.dispatch({ pipeline, what: w }, params(a.rows, a.width, a.eps, false).buffer, [a.x, a.weight, a.y, a.rstd], foldGrid(rec, a.rows));
}

/** Records dx (optional, = or +=) and dWeight (optional, = or +=, two passes without atomics). */
export async function rmsnormBackward(rec: Recorder, a: RmsnormBackwardArgs): Promise<void> {
  const w = what('backward', a);
  const kind = checkCommon(w, a);
  checkDType(w, 'dy', a.dy, 'f32');
  checkDType(w, 'rstd', a.rstd, 'f32');
  checkFits(w, 'dy', a.dy, a.rows * a.width);
  checkFits(w, 'rstd', a.rstd, a.rows);
  if (!a.dx && !a.dWeight) throw new GpuError('validation', w, 'nothing to compute: pass dx and/or dWeight');
  if (a.dx) {
    const wx = `${w} → dx${describe(a.dx)}`;
    checkDType(wx, 'dx', a.dx, 'f32');
    checkFits(wx, 'dx', a.dx, a.rows * a.width);
    checkDistinct(wx, [['dx', a.dx], ['x', a.x], ['dy', a.dy], ['rstd', a.rstd], ['weight', a.weight]]);
    const pipeline = await rec.gpu.pipelines.get('rmsnorm', { W_KIND: `${kind}u`, WG: `${workgroupSize(a.width)}u` }, 'backwardInput');
    rec.dispatch({ pipeline, what: wx }, params(a.rows, a.width, 0, !!a.accumulateDx).buffer, [a.x, a.weight, a.dy, a.rstd, a.dx], foldGrid(rec, a.rows));
  }
  if (a.dWeight) {
    const ww = `${w} → dWeight${describe(a.dWeight)}`;
    checkDType(ww, 'dWeight', a.dWeight, 'f32');
    checkFits(ww, 'dWeight', a.dWeight, a.width);
    if (!a.partials) throw new GpuError('validation', ww, `needs a partials scratch of ${rmsnormWeightGradPartials(a.rows, a.width)} f32`);
    checkDType(ww, 'partials', a.partials, 'f32');
    checkFits(ww, 'partials', a.partials, rmsnormWeightGradPartials(a.rows, a.width));
    checkDistinct(ww, [['partials', a.partials], ['dWeight', a.dWeight], ['x', a.x], ['dy', a.dy], ['rstd', a.rstd]]);
    const pr = params(a.rows, a.width, 0, !!a.accumulateDWeight);
    const WG = workgroupSize(a.width);
    const slabs = Math.ceil(a.rows / slabRows(a.rows));
    if (a.rows === 0) {
      // No rows: the gradient of an empty sum is zero.
      if (!a.accumulateDWeight) rec.clear(a.dWeight);
      return;
    }
    const p1 = await rec.gpu.pipelines.get('rmsnorm', { W_KIND: `${kind}u`, WG: `${WG}u` }, 'weightPartials');
    rec.dispatch({ pipeline: p1, what: `${ww} (partials ${slabs} slabs)` }, pr.buffer, [a.x, a.dy, a.rstd, a.partials], [Math.ceil(a.width / WG), slabs]);
    const p2 = await rec.gpu.pipelines.get('rmsnorm', { W_KIND: `${kind}u`, WG: `${WG}u` }, 'weightReduce');
    rec.dispatch({ pipeline: p2, what: `${ww} (reduce)` }, pr.buffer, [a.partials, a.dWeight], [Math.ceil(a.width / WG)]);
  }
}

/** Bytes one forward must move (x read twice is not counted: caches). */
export function rmsnormForwardBytes(rows: number, width: number, weightBytes = 4): number {
  return 4 * 2 * rows * width + weightBytes * width + 4 * rows;
}
