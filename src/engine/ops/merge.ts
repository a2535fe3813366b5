// Merging a LoRA adapter into its base weight for export (PEFT: W += scale·(B @ A), torch
// semantics `(W.float() + s·B@A).to(dtype)`), in row chunks so a huge weight (lm_head, an MLP
// matrix of a 7B model) never needs a full f32 copy. See shaders/merge.wgsl.
import { GpuError } from '../gpu/errors.ts';
import { Params, type Recorder } from '../gpu/recorder.ts';
import type { ShaderConstants } from '../gpu/shader-library.ts';
import { describe, numelOf, type DType, type Tensor } from '../gpu/tensor.ts';
import type { LoraAdapter } from './lora.ts';
import { matmul } from './matmul.ts';
import { isNf4, nf4DecoderConstants, nf4Describe, nf4ExtraBindings, type Nf4Weight } from './nf4.ts';

const KIND: Partial<Record<DType, number>> = { f32: 0, bf16: 1, f16: 2 };

export interface MergeArgs {
  /** Base weight [out, in]: f32, bf16, f16 or NF4 (dequantized on the fly). */
  base: Tensor | Nf4Weight;
  adapter: LoraAdapter;
  /** First output row of this chunk and its number of rows. */
  rowStart: number;
  rows: number;
  /** Chunk output [rows, in] (chunk-local), f32, bf16 or f16. */
  out: Tensor;
  /** f32 scratch with ≥ rows·in elements; receives s·B[rows]·A. */
  delta: Tensor;
}

/** Rows per chunk so the f32 delta scratch stays under `maxBytes` (default 64 MiB). */
export function mergeRowsPerChunk(inFeatures: number, maxBytes = 64 * 2 ** 20): number {
  return Math.max(1, Math.floor(maxBytes / (4 * inFeatures)));
}

/** Records out = round_dtype(W[rowStart : rowStart+rows] + s·B[rowStart : rowStart+rows]·A). */
export async function mergeLora(rec: Recorder, args: MergeArgs): Promise<void> {
  const { base, adapter: ad, rowStart, rows, out, delta } = args;
  const nf4 = isNf4(base) ? base : null;
  const what = `merge ${nf4 ? nf4Describe(nf4) : describe(base as Tensor)} + ${ad.scale}·B·A rows ${rowStart}..${rowStart + rows} → ${describe(out)}`;
  const outKind = KIND[out.dtype];
  const baseShape = nf4 ? nf4.shape : (base as Tensor).shape;
  const wKind = nf4 ? 0 : KIND[(base as Tensor).dtype];
  if (outKind === undefined || wKind === undefined) throw new GpuError('validation', what, 'base and output must be f32, bf16, f16 (base may be NF4)');
  if (numelOf(baseShape) !== ad.outFeatures * ad.inFeatures) throw new GpuError('validation', what, `base holds ${numelOf(baseShape)} elements, adapter is ${ad.outFeatures}×${ad.inFeatures}`);
  if (!Number.isInteger(rowStart) || !Number.isInteger(rows) || rowStart < 0 || rows < 1 || rowStart + rows > ad.outFeatures) {
    throw new GpuError('validation', what, `row chunk ${rowStart}+${rows} outside 0..${ad.outFeatures}`);
  }
  const count = rows * ad.inFeatures;
  if (numelOf(out.shape) < count) throw new GpuError('validation', what, `output holds ${numelOf(out.shape)} elements, chunk needs ${count}`);
  if (delta.dtype !== 'f32' || numelOf(delta.shape) < count) throw new GpuError('validation', what, `delta scratch must be f32 with ≥ ${count} elements`);

  await matmul(rec, { a: ad.b, b: ad.a, c: delta, M: rows, N: ad.inFeatures, K: ad.r, aOffset: rowStart * ad.r, alpha: ad.scale });
  const decoder: ShaderConstants = nf4 ? { W_DECODE: 'weight_nf4', ...nf4DecoderConstants(nf4) } : { W_DECODE: 'weight_dense', W_KIND: `${wKind}u` };
  const pipeline = await rec.gpu.pipelines.get('merge', { OUT_KIND: `${outKind}u`, ...decoder });
  const params = new Params(4).u32(count).u32(rowStart * ad.inFeatures).u32(0).u32(0);
  const words = outKind === 0 ? count : Math.ceil(count / 2);
  const groups = Math.ceil(words / 64);
  const gx = Math.min(groups, rec.gpu.limits.maxComputeWorkgroupsPerDimension);
  const buffers = nf4 ? [delta, nf4.packed, out, ...nf4ExtraBindings(nf4)] : [delta, base as Tensor, out];
  rec.dispatch({ pipeline, what }, params.buffer, buffers, [gx, Math.ceil(groups / gx)]);
}

