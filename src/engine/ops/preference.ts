// Per-sequence label log-probs for preference losses (DPO/IPO/ORPO/SimPO); see
// shaders/preference.wgsl. TRL's get_batch_logps sums log_softmax(logits)[label] over the
// non-ignored labels of each sequence; here the per-token term is −rowLoss of the cross-entropy
// kernel (shaders/cross_entropy.wgsl), computed chunk by chunk without keeping the logits.
import { Params, type Recorder } from '../gpu/recorder.ts';
import { describe, type Tensor } from '../gpu/tensor.ts';
import { IGNORE_INDEX } from './cross_entropy.ts';
import { checkInteger, checkOperands, foldGrid, launch } from './kernel.ts';
import { reduceConstants } from './reduce.ts';

export interface SequenceLogpsArgs {
  /** NLL per token row f32 [sequences·seqLen] (read only where the label is not ignored). */
  rowLoss: Tensor;
  /** Shifted labels i32 [sequences·seqLen] (label of row n is token n+1; ignoreIndex = no loss). */
  labels: Tensor;
  /** out[outOffset + 2b] = Σ log p of sequence b, out[outOffset + 2b + 1] = its label count. */
  out: Tensor;
  outOffset?: number;
  sequences: number;
  seqLen: number;
  ignoreIndex?: number;
}

export async function sequenceLogps(rec: Recorder, a: SequenceLogpsArgs): Promise<void> {
  const { sequences, seqLen } = a;
  const outOffset = a.outOffset ?? 0;
  const w = `preference.sequenceLogps rowLoss${describe(a.rowLoss)} labels${describe(a.labels)} sequences=${sequences} seqLen=${seqLen}`;
  checkInteger(w, 'sequences', sequences);
  checkInteger(w, 'seqLen', seqLen);
  checkInteger(w, 'outOffset', outOffset, 0);
  const n = sequences * seqLen;
  checkOperands(w, [
    { name: 'rowLoss', tensor: a.rowLoss, dtype: 'f32', min: n },
    { name: 'labels', tensor: a.labels, dtype: 'i32', min: n },
    { name: 'out', tensor: a.out, dtype: 'f32', min: outOffset + 2 * sequences, write: true },
  ]);
  const params = new Params(4)
    .u32(sequences)
    .u32(seqLen)
    .i32(a.ignoreIndex ?? IGNORE_INDEX)
    .u32(outOffset);
  await launch(rec, {
    shader: 'preference',
    constants: reduceConstants(rec.gpu),
    entry: 'sequenceLogps',
    what: w,
    params,
    bindings: [a.rowLoss, a.labels, a.out],
    grid: foldGrid(rec, sequences),
  });
}
