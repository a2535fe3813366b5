// The products a step of this model issues through ops/matmul (decoder.ts: linearForward,
// linearBackward, lmHeadForward, lmHeadBackward; ops/lora.ts), so the kernel tuner can measure
// their shape classes before the first step instead of discovering them during it.
import { isNf4, type Nf4Weight } from '../ops/nf4.ts';
import type { MatmulShape } from '../ops/matmul.ts';
import type { Tensor } from '../gpu/tensor.ts';
import { fusedParts, linearModules, linearShape } from './config.ts';
import { LOGITS_CHUNK_BYTES } from './decoder.ts';
import { isRowSplit, type Model } from './model.ts';

export interface StepShape {
  /** Token rows of one micro-batch (batch × sequence length). */
  tokens: number;
  /** Backward products too (a training step), not only the forward. */
  backward: boolean;
  /** LoRA rank, when adapters are attached. */
  loraRank?: number;
  /** Full fine-tuning: every weight's gradient product too (decoder.ts linearBackward, lmHeadBackward). */
  fullWeights?: boolean;
  /** Rows of one loss chunk (the Trainer's lossChunkRows); the decoder's default when absent. */
  lossChunkRows?: number;
  /** A generation prefill: the head runs on the last rows only, as a matrix-vector product (infer.ts). */
  prefill?: boolean;
}

function format(w: Tensor | Nf4Weight): string {
  return isNf4(w) ? 'nf4' : w.dtype;
}

export function modelMatmulShapes(model: Model, step: StepShape): MatmulShape[] {
  const c = model.config;
  const T = step.tokens;
  const shapes: MatmulShape[] = [];
  for (const m of linearModules(c)) {
    const [out, inF] = linearShape(c, m);
    const weight = format(model.linear(0, m));
    // A fused module (Phi-3) runs one product per part (decoder.ts fusedForward, lora.ts *Parts).
    const fused = m === 'qkv_proj' || m === 'gate_up_proj';
    const outs = fused ? fusedParts(c, m).map((p) => p.rows) : [out];
    for (const o of outs) {
      shapes.push({ M: T, N: o, K: inF, transB: true, weight });
      if (step.backward) shapes.push({ M: T, N: inF, K: o, weight });
      if (step.backward && step.fullWeights) shapes.push({ M: o, N: inF, K: T, transA: true, weight: 'f32' });
      if (step.loraRank) {
        shapes.push({ M: T, N: o, K: step.loraRank, transB: true, weight: 'f32' });
        if (step.backward && fused) {
          shapes.push({ M: T, N: step.loraRank, K: o, weight: 'f32' });
          shapes.push({ M: o, N: step.loraRank, K: T, transA: true, weight: 'f32' });
        }
      }
    }
    if (step.loraRank && step.backward) shapes.push({ M: T, N: inF, K: step.loraRank, weight: 'f32' });
    // A bias is a rank-1 product with a column of ones (decoder.ts linearForward / linearBackward).
    const bias = model.bias(0, m);
    if (bias) {
      shapes.push({ M: T, N: out, K: 1, weight: bias.dtype });
      if (step.backward && step.fullWeights) shapes.push({ M: 1, N: out, K: T, transA: true, weight: 'f32' });
    }
  }
  const head = model.lmHead;
  if (!isRowSplit(head) && !step.prefill) {
    const { hiddenSize: H, vocabSize: V } = c;
    // decoder.ts chunkRows: the head's products run one loss chunk of rows at a time.
    const rows = Math.max(1, Math.min(T, step.lossChunkRows ?? Math.floor(LOGITS_CHUNK_BYTES / (4 * V))));
    // Every chunk but the last has `rows` rows; the last one holds the rest.
    for (const R of T % rows ? [rows, T % rows] : [rows]) {
      shapes.push({ M: R, N: V, K: H, transB: true, weight: format(head) });
      if (step.backward) shapes.push({ M: R, N: H, K: V, weight: format(head) });
      if (step.backward && step.fullWeights) shapes.push({ M: V, N: H, K: R, transA: true, weight: 'f32' });
    }
  }
  return shapes;
}
