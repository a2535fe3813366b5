// Causal-LM cross entropy: fused log-softmax + NLL + dLogits over the vocabulary, f32; see
// shaders/cross_entropy.wgsl. Semantics of transformers' ForCausalLMLoss
// (src/transformers/loss/loss_utils.py) with gradient accumulation as the Trainer does it:
// token losses are summed and divided by the number of non-ignored labels in the whole
// accumulation window (REFERENCE.md), so `lossScale` = 1/that count.
//
// Chunking contract (so a 152k vocabulary never needs every row's logits at once):
//   the engine computes logits for a chunk of R token rows [r0, r0+R) into a scratch
//   [R, vocab] f32 (hidden_chunk · lm_headᵀ), calls crossEntropy on it with
//   labelOffset = r0 (labels i32[N] for the whole micro-batch, already SHIFTED by the engine:
//   label of row n is token n+1, −100 at sequence ends / prompt tokens / padding), and
//   then uses the in-place dLogits of that chunk for the lm_head backward matmuls (dHidden
//   rows r0.., dW_lm_head +=) before moving on to the next chunk. Every chunk adds its
//   scaled loss into the same lossAccum slot (accumulate), so no readback is needed.
import { GpuError } from '../gpu/errors.ts';
import { Params, type Recorder } from '../gpu/recorder.ts';
import { describe, type Tensor } from '../gpu/tensor.ts';
import { checkDistinct, checkDType, checkFits, checkPositiveInt, foldGrid } from './k1_shared.ts';

export const IGNORE_INDEX = -100;

/** A scale read from a GPU buffer at `index` (written by the engine without readback) … or a plain number. */
export type LossScale = number | { buffer: Tensor; index?: number };

export interface CrossEntropyArgs {
  /** Logits [rows, vocab] f32; with writeGrad it is overwritten by dL/dlogits = (softmax − onehot)·scale. */
  logits: Tensor;
  /** Shifted labels i32; row r uses labels[labelOffset + r]. ignoreIndex rows give loss 0 and zero gradient. */
  labels: Tensor;
  labelOffset?: number;
  /** Unscaled NLL per row f32, written at rowLoss[lossOffset + r] (0 for ignored rows, NaN for labels outside [0, vocab)). */
  rowLoss: Tensor;
  lossOffset?: number;
  /** Multiplies the gradient and the summed loss: 1/(non-ignored labels in the accumulation window). */
  lossScale: LossScale;
  /** When given, lossAccum[index] (+)= scale · Σ rowLoss of these rows (one extra small dispatch). */
  lossAccum?: { tensor: Tensor; index?: number; accumulate?: boolean };
  rows: number;
  vocab: number;
  /** Default true; false computes the loss only (evaluation) and leaves logits untouched. */
  writeGrad?: boolean;
  ignoreIndex?: number;
}

/** Records the loss rows, dLogits in place (unless writeGrad is false) and the optional scaled sum. */
export async function crossEntropy(rec: Recorder, a: CrossEntropyArgs): Promise<void> {
  const { rows, vocab } = a;
  const writeGrad = a.writeGrad ?? true;
  const labelOffset = a.labelOffset ?? 0;
  const lossOffset = a.lossOffset ?? 0;
  const w = `cross_entropy logits${describe(a.logits)} labels${describe(a.labels)}@${labelOffset} rows=${rows} vocab=${vocab}${writeGrad ? ' +dLogits' : ''}`;
  checkPositiveInt(w, 'rows', rows, 0);
  checkPositiveInt(w, 'vocab', vocab);
  checkDType(w, 'logits', a.logits, 'f32');
  checkDType(w, 'labels', a.labels, 'i32');
  checkDType(w, 'rowLoss', a.rowLoss, 'f32');
  checkFits(w, 'logits', a.logits, rows * vocab);
  checkFits(w, 'labels', a.labels, labelOffset + rows);
  checkFits(w, 'rowLoss', a.rowLoss, lossOffset + rows);
  checkDistinct(w, [['logits', a.logits], ['rowLoss', a.rowLoss], ['labels', a.labels], ['lossAccum', a.lossAccum?.tensor]]);
  const fromBuffer = typeof a.lossScale !== 'number';
  let scaleT = a.labels; // bound but unread when the scale is a number
  let scaleIndex = 0;
  let scaleValue = 0;
  if (typeof a.lossScale === 'number') {
    if (!Number.isFinite(a.lossScale)) throw new GpuError('validation', w, `lossScale must be finite, got ${a.lossScale}`);
    scaleValue = a.lossScale;
  } else {
    scaleT = a.lossScale.buffer;
    scaleIndex = a.lossScale.index ?? 0;
    checkDType(w, 'lossScale buffer', scaleT, 'f32');
    checkFits(w, 'lossScale buffer', scaleT, scaleIndex + 1);
    if (scaleT.buf.buffer === a.logits.buf.buffer || scaleT.buf.buffer === a.rowLoss.buf.buffer) {
      throw new GpuError('validation', w, 'the lossScale buffer must not be the logits or rowLoss buffer');
    }
  }
  const ignoreIndex = a.ignoreIndex ?? IGNORE_INDEX;
  const acc = a.lossAccum;
  const accIndex = acc?.index ?? 0;
  if (acc) {
    checkDType(w, 'lossAccum', acc.tensor, 'f32');
    checkFits(w, 'lossAccum', acc.tensor, accIndex + 1);
    if (acc.tensor.buf.buffer === scaleT.buf.buffer) throw new GpuError('validation', w, 'lossAccum and the lossScale buffer must be distinct buffers');
  }
  const params = new Params(12)
    .u32(rows).u32(vocab).u32(scaleIndex).u32(writeGrad ? 1 : 0)
    .i32(ignoreIndex).u32(acc?.accumulate ? 1 : 0).u32(accIndex).u32(fromBuffer ? 1 : 0)
    .f32(scaleValue).u32(labelOffset).u32(lossOffset).u32(0);
  const pipeline = await rec.gpu.pipelines.get('cross_entropy', {}, 'main');
  rec.dispatch({ pipeline, what: w }, params.buffer, [a.logits, a.labels, scaleT, a.rowLoss], foldGrid(rec, rows));
  if (acc) {
    const sum = await rec.gpu.pipelines.get('cross_entropy', {}, 'sumLoss');
    rec.dispatch({ pipeline: sum, what: `${w} (sum → lossAccum${describe(acc.tensor)}[${accIndex}])` }, params.buffer, [a.rowLoss, scaleT, acc.tensor], [1]);
  }
}

/** Bytes one call moves: logits read twice and written once with writeGrad. */
export function crossEntropyBytes(rows: number, vocab: number, writeGrad = true): number {
  return 4 * rows * vocab * (writeGrad ? 3 : 1) + 8 * rows;
}
