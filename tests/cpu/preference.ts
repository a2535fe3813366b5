// CPU references for the preference kernels, from the definitions, in f64:
// shaders/preference.wgsl (per-sequence Σ log p over labelled rows, and their count) and the
// per-row scale of shaders/cross_entropy.wgsl (dlogits_r = (softmax_r − onehot_r)·w_r).
import { crossEntropyRef } from './cross_entropy.ts';

export function sequenceLogpsRef(
  rowLoss: ArrayLike<number>,
  labels: ArrayLike<number>,
  sequences: number,
  seqLen: number,
  ignoreIndex = -100,
): Float64Array {
  const out = new Float64Array(2 * sequences);
  for (let b = 0; b < sequences; b++) {
    for (let t = 0; t < seqLen; t++) {
      const n = b * seqLen + t;
      if (labels[n] === ignoreIndex) continue;
      out[2 * b] -= rowLoss[n];
      out[2 * b + 1] += 1;
    }
  }
  return out;
}

/** Cross-entropy with one scale per row: the gradient of Σ_r w_r · NLL_r. */
export function crossEntropyPerRowRef(
  logits: ArrayLike<number>,
  labels: ArrayLike<number>,
  rows: number,
  vocab: number,
  weights: ArrayLike<number>,
) {
  const one = crossEntropyRef(logits, labels, rows, vocab, 1);
  const grad = new Float64Array(rows * vocab);
  let total = 0;
  for (let r = 0; r < rows; r++) {
    for (let v = 0; v < vocab; v++) grad[r * vocab + v] = one.grad[r * vocab + v] * weights[r];
    total += one.rowLoss[r] * weights[r];
  }
  return { rowLoss: one.rowLoss, grad, total };
}
