// Merging a LoRA adapter into its base weight for export (PEFT: W += scale·(B @ A), torch
// semantics `(W.float() + s·B@A).to(dtype)`), in row chunks so a huge weight (lm_head, an MLP
// matrix of a 7B model) never needs a full f32 copy. See shaders/merge.wgsl.
import { Params, type Recorder } from '../gpu/recorder.ts';
import type { ShaderConstants } from '../gpu/shader-library.ts';
import { describe, numelOf, type Tensor } from '../gpu/tensor.ts';
import { check, checkOperands, launch, threadGrid, WEIGHT_DTYPES, weightKind } from './kernel.ts';
import type { LoraAdapter } from './lora.ts';
import { matmul } from './matmul.ts';
import { isNf4, nf4DecoderConstants, nf4Describe, nf4ExtraBindings, nf4Numel, type Nf4Weight } from './nf4.ts';

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
  const dense = nf4 ? null : (base as Tensor);
  const what = `merge ${nf4 ? nf4Describe(nf4) : describe(base as Tensor)} + ${ad.scale}·B·A rows ${rowStart}..${rowStart + rows} → ${describe(out)}`;
  const baseNumel = nf4 ? nf4Numel(nf4) : numelOf(dense!.shape);
  check(
    what,
    baseNumel === ad.outFeatures * ad.inFeatures,
    `base holds ${baseNumel} elements, adapter is ${ad.outFeatures}×${ad.inFeatures}`,
  );
  const inChunk =
    Number.isInteger(rowStart) &&
    Number.isInteger(rows) &&
    rowStart >= 0 &&
    rows >= 1 &&
    rowStart + rows <= ad.outFeatures;
  check(what, inChunk, `row chunk ${rowStart}+${rows} outside 0..${ad.outFeatures}`);
  const count = rows * ad.inFeatures;
  checkOperands(
    what,
    [
      { name: 'base', tensor: dense, dtype: WEIGHT_DTYPES },
      { name: 'output', tensor: out, dtype: WEIGHT_DTYPES, min: count, write: true },
      { name: 'delta scratch', tensor: delta, dtype: 'f32', min: count, write: true },
    ],
    'requirement',
  );

  await matmul(rec, {
    a: ad.b,
    b: ad.a,
    c: delta,
    M: rows,
    N: ad.inFeatures,
    K: ad.r,
    aOffset: rowStart * ad.r,
    alpha: ad.scale,
  });
  const outKind = weightKind(what, 'output', out);
  const decoder: ShaderConstants = dense
    ? { W_DECODE: 'weight_dense', W_KIND: `${weightKind(what, 'base', dense)}u` }
    : { W_DECODE: 'weight_nf4', ...nf4DecoderConstants(nf4!) };
  const params = new Params(4)
    .u32(count)
    .u32(rowStart * ad.inFeatures)
    .u32(0)
    .u32(0);
  const words = outKind === 0 ? count : Math.ceil(count / 2);
  const bindings = nf4 ? [delta, nf4.packed, out, ...nf4ExtraBindings(nf4)] : [delta, dense!, out];
  await launch(rec, {
    shader: 'merge',
    constants: { OUT_KIND: `${outKind}u`, ...decoder },
    what,
    params,
    bindings,
    grid: threadGrid(rec, words, 64),
  });
}
