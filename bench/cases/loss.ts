// Fused cross entropy at the Qwen2 vocabulary (151936): one row chunk of 256 logits rows (the
// engine's chunk size) and 1024 rows; loss + dLogits in place + scaled loss sum.
import { releaseTensor, tensorSpec, uploadTensor, type Tensor } from '../../src/engine/gpu/index.ts';
import { crossEntropy, crossEntropyBytes } from '../../src/engine/ops/cross_entropy.ts';
import type { BenchCase } from '../types.ts';

const VOCAB = 151936;

function ceCase(rows: number, heavy: boolean): BenchCase {
  return {
    name: `cross_entropy rows${rows}`,
    shape: `[${rows}×${VOCAB}] +dLogits`,
    // max, exp, sum (pass 1), exp, sub, mul (pass 2)
    flops: 7 * rows * VOCAB,
    bytesMoved: crossEntropyBytes(rows, VOCAB),
    heavy,
    async setup(gpu) {
      const ts: Tensor[] = [];
      const logitsHost = new Float32Array(rows * VOCAB);
      for (let i = 0; i < logitsHost.length; i++) logitsHost[i] = ((i * 2654435761) % 1000) / 100 - 5;
      const logits = uploadTensor(gpu, logitsHost, tensorSpec('f32', [rows, VOCAB], 'activations', 'logits'));
      const labels = uploadTensor(
        gpu,
        Int32Array.from({ length: rows }, (_, i) => (i % 7 === 0 ? -100 : (i * 131) % VOCAB)),
        tensorSpec('i32', [rows], 'activations', 'labels'),
      );
      const rowLoss = uploadTensor(gpu, new Float32Array(rows), tensorSpec('f32', [rows], 'scratch', 'rowLoss'));
      const accum = uploadTensor(gpu, new Float32Array(1), tensorSpec('f32', [1], 'scratch', 'loss'));
      const scale = uploadTensor(gpu, new Float32Array([1 / rows]), tensorSpec('f32', [1], 'scratch', 'scale'));
      ts.push(logits, labels, rowLoss, accum, scale);
      return {
        record: (rec) =>
          crossEntropy(rec, {
            logits,
            labels,
            rowLoss,
            lossScale: { buffer: scale },
            lossAccum: { tensor: accum, accumulate: true },
            rows,
            vocab: VOCAB,
          }),
        cleanup: () => ts.forEach((t) => releaseTensor(gpu, t)),
      };
    },
  };
}

export const cases: BenchCase[] = [ceCase(256, false), ceCase(1024, true)];
