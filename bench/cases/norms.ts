// Norm / position / activation / embedding kernels at Qwen2.5-0.5B shapes (hidden 896,
// 14 heads / 2 KV, head_dim 64, intermediate 4864, vocab 151936), batch 1, seq 256 and 1024.
// FLOP counts are nominal (one per add/mul, one per exp/rsqrt; sin+cos as 20).
import { createTensor, releaseTensor, tensorSpec, uploadTensor, type Tensor } from '../../src/engine/gpu/index.ts';
import { toBf16 } from '../../src/engine/numeric/half.ts';
import { embeddingBackward, embeddingCsr, embeddingForward } from '../../src/engine/ops/embedding.ts';
import { rmsnormBackward, rmsnormForward, rmsnormWeightGradPartials } from '../../src/engine/ops/rmsnorm.ts';
import { ropeBackward, ropeBytes, ropeForward } from '../../src/engine/ops/rope.ts';
import { swigluBackward, swigluForward } from '../../src/engine/ops/swiglu.ts';
import type { BenchCase } from '../types.ts';

const HIDDEN = 896;
const HEADS = 14;
const KV_HEADS = 2;
const HEAD_DIM = 64;
const INTER = 4864;
const VOCAB = 151936;

function filled(n: number, scale = 1): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = (((i * 2654435761) % 1000) / 1000 - 0.5) * scale;
  return a;
}

function f32(
  gpu: Parameters<BenchCase['setup']>[0],
  ts: Tensor[],
  data: Float32Array | Int32Array,
  label: string,
): Tensor {
  const t = uploadTensor(
    gpu,
    data,
    tensorSpec(data instanceof Int32Array ? 'i32' : 'f32', [data.length], 'activations', label),
  );
  ts.push(t);
  return t;
}

function rmsnormCase(tokens: number, rows: number, width: number, backward: boolean, label: string): BenchCase {
  const n = rows * width;
  return {
    name: `rmsnorm ${backward ? 'bwd' : 'fwd'} ${label} T${tokens}`,
    shape: `[${rows}×${width}] w:bf16${backward ? ' dx+dW' : ''}`,
    flops: backward ? 9 * n : 5 * n,
    bytesMoved: backward ? 4 * 3 * n + 4 * rows + 2 * width + 4 * width : 4 * 2 * n + 4 * rows + 2 * width,
    async setup(gpu) {
      const ts: Tensor[] = [];
      const x = f32(gpu, ts, filled(n), 'x');
      const wBits = toBf16(filled(width).map((v) => 1 + v));
      const weight = uploadTensor(gpu, wBits, tensorSpec('bf16', [width], 'weights', 'w'));
      ts.push(weight);
      const y = f32(gpu, ts, new Float32Array(n), 'y');
      const rstd = f32(gpu, ts, new Float32Array(rows), 'rstd');
      const dx = f32(gpu, ts, new Float32Array(n), 'dx');
      const dWeight = f32(gpu, ts, new Float32Array(width), 'dw');
      const partials = f32(gpu, ts, new Float32Array(rmsnormWeightGradPartials(rows, width)), 'partials');
      // Valid rstd for the backward.
      const { Recorder } = await import('../../src/engine/gpu/index.ts');
      const warm = new Recorder(gpu, 'rstd');
      await rmsnormForward(warm, { x, weight, y, rstd, rows, width, eps: 1e-6 });
      await warm.submit();
      return {
        record: (rec) =>
          backward
            ? rmsnormBackward(rec, { x, weight, rstd, dy: y, dx, dWeight, partials, rows, width })
            : rmsnormForward(rec, { x, weight, y, rstd, rows, width, eps: 1e-6 }),
        cleanup: () => ts.forEach((t) => releaseTensor(gpu, t)),
      };
    },
  };
}

function ropeCase(tokens: number, backward: boolean): BenchCase {
  return {
    name: `rope ${backward ? 'bwd' : 'fwd'} T${tokens}`,
    shape: `N${tokens} H${HEADS}/${KV_HEADS} D${HEAD_DIM} (in place)`,
    flops: tokens * (HEAD_DIM / 2) * (22 + 6 * (HEADS + KV_HEADS)),
    bytesMoved: ropeBytes(tokens, HEADS, KV_HEADS, HEAD_DIM),
    async setup(gpu) {
      const ts: Tensor[] = [];
      const q = f32(gpu, ts, filled(tokens * HEADS * HEAD_DIM), 'q');
      const k = f32(gpu, ts, filled(tokens * KV_HEADS * HEAD_DIM), 'k');
      const positionIds = f32(
        gpu,
        ts,
        Int32Array.from({ length: tokens }, (_, i) => i),
        'pos',
      );
      const invFreq = f32(
        gpu,
        ts,
        Float32Array.from({ length: HEAD_DIM / 2 }, (_, i) => 1 / 1e6 ** ((2 * i) / HEAD_DIM)),
        'invFreq',
      );
      const shape = { positionIds, invFreq, tokens, qHeads: HEADS, kvHeads: KV_HEADS, headDim: HEAD_DIM };
      return {
        record: (rec) =>
          backward ? ropeBackward(rec, { dq: q, dk: k, ...shape }) : ropeForward(rec, { q, k, ...shape }),
        cleanup: () => ts.forEach((t) => releaseTensor(gpu, t)),
      };
    },
  };
}

function swigluCase(tokens: number, backward: boolean): BenchCase {
  const n = tokens * INTER;
  return {
    name: `swiglu ${backward ? 'bwd' : 'fwd'} T${tokens}`,
    shape: `[${tokens}×${INTER}]`,
    flops: backward ? 10 * n : 5 * n,
    bytesMoved: 4 * n * (backward ? 5 : 3),
    async setup(gpu) {
      const ts: Tensor[] = [];
      const gate = f32(gpu, ts, filled(n, 6), 'gate');
      const up = f32(gpu, ts, filled(n), 'up');
      const y = f32(gpu, ts, new Float32Array(n), 'y');
      const dGate = f32(gpu, ts, new Float32Array(n), 'dGate');
      const dUp = f32(gpu, ts, new Float32Array(n), 'dUp');
      return {
        record: (rec) =>
          backward
            ? swigluBackward(rec, { gate, up, dy: y, dGate, dUp, rows: tokens, width: INTER })
            : swigluForward(rec, { gate, up, y, rows: tokens, width: INTER }),
        cleanup: () => ts.forEach((t) => releaseTensor(gpu, t)),
      };
    },
  };
}

function embeddingCase(tokens: number, backward: boolean): BenchCase {
  const n = tokens * HIDDEN;
  return {
    name: `embedding ${backward ? 'bwd' : 'fwd'} T${tokens}`,
    shape: `${tokens} ids of [${VOCAB}×${HIDDEN}]${backward ? ' → dW f32 (CSR)' : ' bf16 + NEFTune'}`,
    flops: backward ? n : 2 * n,
    bytesMoved: backward ? 8 * n + 12 * tokens : 6 * n + 4 * tokens,
    // dW [151936×896] f32 is 545 MB: only with --full on a software adapter.
    heavy: backward,
    async setup(gpu) {
      const ts: Tensor[] = [];
      const idsHost = Int32Array.from({ length: tokens }, (_, i) => (i * 7919) % 20000);
      const ids = f32(gpu, ts, idsHost, 'ids');
      if (!backward) {
        const weight = createTensor(gpu, tensorSpec('bf16', [VOCAB, HIDDEN], 'weights', 'embed_tokens'));
        ts.push(weight);
        const out = f32(gpu, ts, new Float32Array(n), 'out');
        return {
          record: (rec) =>
            embeddingForward(rec, {
              ids,
              weight,
              out,
              tokens,
              vocab: VOCAB,
              hidden: HIDDEN,
              neftune: { alpha: 5, seqLen: tokens, seed: 1, stream: 2 },
            }),
          cleanup: () => ts.forEach((t) => releaseTensor(gpu, t)),
        };
      }
      const csr = embeddingCsr(idsHost, VOCAB);
      const dOut = f32(gpu, ts, filled(n), 'dOut');
      const uniqueIds = f32(gpu, ts, csr.uniqueIds, 'uniq');
      const offsets = f32(gpu, ts, csr.offsets, 'offsets');
      const positions = f32(gpu, ts, csr.positions, 'positions');
      const dWeight = createTensor(gpu, tensorSpec('f32', [VOCAB, HIDDEN], 'gradients', 'dW'));
      ts.push(dWeight);
      return {
        record: (rec) =>
          embeddingBackward(rec, {
            dOut,
            uniqueIds,
            offsets,
            positions,
            uniqueCount: csr.uniqueIds.length,
            dWeight,
            tokens,
            vocab: VOCAB,
            hidden: HIDDEN,
          }),
        cleanup: () => ts.forEach((t) => releaseTensor(gpu, t)),
      };
    },
  };
}

export const cases: BenchCase[] = [256, 1024].flatMap((T) => [
  rmsnormCase(T, T, HIDDEN, false, 'hidden'),
  rmsnormCase(T, T, HIDDEN, true, 'hidden'),
  // Qwen3-0.6B q_norm: 16 heads × head_dim 128 per token.
  rmsnormCase(T, T * 16, 128, false, 'q_norm(Qwen3)'),
  ropeCase(T, false),
  ropeCase(T, true),
  swigluCase(T, false),
  swigluCase(T, true),
  embeddingCase(T, false),
  embeddingCase(T, true),
]);
