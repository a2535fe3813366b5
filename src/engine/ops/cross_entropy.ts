// Causal-LM cross entropy: fused log-softmax + NLL + dLogits over the vocabulary, f32; see
// shaders/cross_entropy.wgsl. Semantics of transformers' ForCausalLMLoss
// (src/transformers/loss/loss_utils.py) with gradient accumulation as the Trainer does it:
// token losses are summed and divided by the number of non-ignored labels in the whole
// accumulation window (transformers/trainer.py get_batch_samples → num_items_in_batch), so
// `lossScale` = 1/that count.
//
// Chunking contract (so a 152k vocabulary never needs every row's logits at once):
//   the engine computes logits for a chunk of R token rows [r0, r0+R) into a scratch
//   [R, vocab] f32 (hidden_chunk · lm_headᵀ), calls crossEntropy on it with
//   labelOffset = r0 (labels i32[N] for the whole micro-batch, already SHIFTED by the engine:
//   label of row n is token n+1, −100 at sequence ends / prompt tokens / padding), and
//   then uses the in-place dLogits of that chunk for the lm_head backward matmuls (dHidden
//   rows r0.., dW_lm_head +=) before moving on to the next chunk. Every chunk adds its
//   scaled loss into the same lossAccum slot (accumulate), so no readback is needed.
import { Params, type Recorder } from '../gpu/recorder.ts';
import { describe, type Tensor } from '../gpu/tensor.ts';
import { check, checkInteger, checkOperands, foldGrid, launch } from './kernel.ts';
import { reduceConstants } from './reduce.ts';

export const IGNORE_INDEX = -100;

/**
 * A scale read from a GPU buffer at `index` (written by the engine without readback), one scale
 * per row (`perRow`: row r of a call with labelOffset o reads buffer[index + o + r]; preference
 * losses), or a plain number.
 */
export type LossScale = number | { buffer: Tensor; index?: number; perRow?: boolean };

export interface CrossEntropyArgs {
  /** Logits [rows, vocab] f32; with writeGrad it is overwritten by dL/dlogits = (softmax − onehot)·scale. */
  logits: Tensor;
  /** Shifted labels i32; row r uses labels[labelOffset + r]. ignoreIndex rows give loss 0 and zero gradient. */
  labels: Tensor;
  labelOffset?: number;
  /** Unscaled NLL per row f32, written at rowLoss[lossOffset + r] (0 for ignored rows, NaN for labels outside [0, vocab)). */
  rowLoss: Tensor;
  lossOffset?: number;
  /** Multiplies the gradient and the summed loss: 1/(non-ignored labels in the accumulation window), or per-row weights. */
  lossScale: LossScale;
  /** When given, lossAccum[index] (+)= scale · Σ rowLoss of these rows (one extra small dispatch). */
  lossAccum?: { tensor: Tensor; index?: number; accumulate?: boolean };
  rows: number;
  vocab: number;
  /** Default true; false computes the loss only (evaluation) and leaves logits untouched. */
  writeGrad?: boolean;
  ignoreIndex?: number;
  /**
   * The logits are capped values c = softcap·tanh(x / softcap) (ops/softcap.ts; Gemma 2's
   * final_logit_softcapping): the gradient written is dL/dx = dL/dc·(1 − (c / softcap)²).
   */
  softcap?: number | null;
}

/** Where the kernel reads the loss scale: a buffer slot, or a number (then `labels` fills the unread binding). */
function scaleSource(w: string, a: CrossEntropyArgs): { tensor: Tensor; index: number; value: number } {
  if (typeof a.lossScale !== 'number') return { tensor: a.lossScale.buffer, index: a.lossScale.index ?? 0, value: 0 };
  check(w, Number.isFinite(a.lossScale), `lossScale must be finite, got ${a.lossScale}`);
  return { tensor: a.labels, index: 0, value: a.lossScale };
}

/** Records the loss rows, dLogits in place (unless writeGrad is false) and the optional scaled sum. */
export async function crossEntropy(rec: Recorder, a: CrossEntropyArgs): Promise<void> {
  const { rows, vocab } = a;
  const writeGrad = a.writeGrad ?? true;
  const labelOffset = a.labelOffset ?? 0;
  const lossOffset = a.lossOffset ?? 0;
  const w = `cross_entropy logits${describe(a.logits)} labels${describe(a.labels)}@${labelOffset} rows=${rows} vocab=${vocab}${writeGrad ? ' +dLogits' : ''}`;
  checkInteger(w, 'rows', rows, 0);
  checkInteger(w, 'vocab', vocab);
  const softcap = a.softcap ?? 0;
  check(w, Number.isFinite(softcap) && softcap >= 0, `softcap must be a finite number ≥ 0, got ${softcap}`);
  const fromBuffer = typeof a.lossScale !== 'number';
  const perRow = typeof a.lossScale !== 'number' && !!a.lossScale.perRow;
  const scale = scaleSource(w, a);
  const acc = a.lossAccum;
  const accIndex = acc?.index ?? 0;
  checkOperands(w, [
    { name: 'logits', tensor: a.logits, dtype: 'f32', min: rows * vocab, write: true },
    { name: 'labels', tensor: a.labels, dtype: 'i32', min: labelOffset + rows },
    { name: 'rowLoss', tensor: a.rowLoss, dtype: 'f32', min: lossOffset + rows, write: true },
    {
      name: 'lossScale buffer',
      tensor: fromBuffer ? scale.tensor : null,
      dtype: 'f32',
      min: scale.index + (perRow ? labelOffset + rows : 1),
    },
    { name: 'lossAccum', tensor: acc?.tensor, dtype: 'f32', min: accIndex + 1, write: true },
  ]);
  const params = new Params(12)
    .u32(rows)
    .u32(vocab)
    .u32(scale.index)
    .u32(writeGrad ? 1 : 0)
    .i32(a.ignoreIndex ?? IGNORE_INDEX)
    .u32(acc?.accumulate ? 1 : 0)
    .u32(accIndex)
    .u32(perRow ? 2 : fromBuffer ? 1 : 0)
    .f32(scale.value)
    .u32(labelOffset)
    .u32(lossOffset)
    .f32(softcap);
  await launch(rec, {
    shader: 'cross_entropy',
    constants: reduceConstants(rec.gpu),
    what: w,
    params,
    bindings: [a.logits, a.labels, scale.tensor, a.rowLoss],
    grid: foldGrid(rec, rows),
  });
  if (!acc) return;
  const sum = `${w} (sum → lossAccum${describe(acc.tensor)}[${accIndex}])`;
  await launch(rec, {
    shader: 'cross_entropy',
    constants: reduceConstants(rec.gpu),
    entry: 'sumLoss',
    what: sum,
    params,
    bindings: [a.rowLoss, scale.tensor, acc.tensor],
    grid: [1],
  });
}

/** Bytes one call moves: logits read twice and written once with writeGrad. */
export function crossEntropyBytes(rows: number, vocab: number, writeGrad = true): number {
  return 4 * rows * vocab * (writeGrad ? 3 : 1) + 8 * rows;
}
