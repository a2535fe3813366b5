// Causal GQA attention at Qwen2.5-0.5B shapes (14 query heads / 2 KV heads, head_dim 64, batch 1):
// forward (O + LSE) and FlashAttention-2 backward (rowStats, dQ, per-head dK/dV, head reduce).
// `extra` carries the scratch the op needs besides its inputs/outputs, which must grow linearly.
// The windowed rows (Mistral / Gemma sliding_window) skip key blocks outside the window, so their
// time follows N·window rather than N²/2.
import {
  Recorder,
  releaseTensor,
  tensorSpec,
  uploadTensor,
  type Gpu,
  type Tensor,
} from '../../src/engine/gpu/index.ts';
import {
  attentionBackward,
  attentionBackwardFlops,
  attentionForward,
  attentionForwardFlops,
  attentionForwardScratchBytes,
  attentionScratchBytes,
  createAttentionScratch,
  releaseAttentionCaches,
  releaseAttentionScratch,
  type AttentionShape,
} from '../../src/engine/ops/attention.ts';
import type { BenchCase } from '../types.ts';

const HQ = 14;
const HKV = 2;
const D = 64;

function shapeAt(seq: number, window?: number): AttentionShape {
  return { queries: seq, keys: seq, qHeads: HQ, kvHeads: HKV, headDim: D, window };
}

const windowed = (window?: number) => (window ? ` window${window}` : '');
const maskName = (window?: number) => (window ? `sliding window ${window}` : 'causal');

function filled(n: number, salt: number): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = (((i + salt) * 2654435761) % 1000) / 500 - 1;
  return a;
}

/** Peak scratch of a training step's attention: the backward's (forward gets a real LSE tensor). */
function peakScratch(seq: number): number {
  return attentionScratchBytes(shapeAt(seq)) + attentionForwardScratchBytes(shapeAt(seq), true);
}

const scratchTable = [256, 1024, 4096].map((s) => `${s}:${peakScratch(s)}`).join(',');

function tensors(gpu: Gpu, seq: number) {
  const s = shapeAt(seq);
  const qn = seq * HQ * D;
  const kn = seq * HKV * D;
  const f = (data: Float32Array, dims: number[], label: string, cat: 'activations' | 'gradients' = 'activations') =>
    uploadTensor(gpu, data, tensorSpec('f32', dims, cat, label));
  return {
    s,
    q: f(filled(qn, 1), [seq, HQ * D], 'q'),
    k: f(filled(kn, 2), [seq, HKV * D], 'k'),
    v: f(filled(kn, 3), [seq, HKV * D], 'v'),
    out: f(new Float32Array(qn), [seq, HQ * D], 'out'),
    lse: f(new Float32Array(HQ * seq), [HQ, seq], 'lse'),
  };
}

export function forwardCase(seq: number, heavy = false, window?: number): BenchCase {
  const s = shapeAt(seq, window);
  return {
    name: `attention fwd seq${seq}${windowed(window)}`,
    shape: `B1 T${seq} H${HQ}/${HKV} D${D} ${maskName(window)}`,
    flops: attentionForwardFlops(s),
    // read Q, K, V once; write O and LSE
    bytesMoved: 4 * (2 * seq * HQ * D + 2 * seq * HKV * D + HQ * seq),
    extra: { peak_scratch_B: peakScratch(seq) },
    heavy,
    async setup(gpu) {
      const t = tensors(gpu, seq);
      const all: Tensor[] = [t.q, t.k, t.v, t.out, t.lse];
      return {
        record: (rec) => attentionForward(rec, { ...s, q: t.q, k: t.k, v: t.v, out: t.out, lse: t.lse }),
        cleanup: () => all.forEach((x) => releaseTensor(gpu, x)),
      };
    },
  };
}

export function backwardCase(seq: number, heavy = false, window?: number): BenchCase {
  const s = shapeAt(seq, window);
  const qBytes = 4 * seq * HQ * D;
  const kBytes = 4 * seq * HKV * D;
  return {
    name: `attention bwd seq${seq}${windowed(window)}`,
    shape: `B1 T${seq} H${HQ}/${HKV} D${D} ${maskName(window)}`,
    flops: attentionBackwardFlops(s),
    // read Q, O, dO, K, V, LSE; write dQ, dK, dV; the scratch (rowStats, per-head dK/dV partials)
    // is written once and read back once
    bytesMoved: 4 * qBytes + 4 * kBytes + 4 * HQ * seq + 2 * attentionScratchBytes(s),
    extra: { peak_scratch_B: peakScratch(seq), 'scratch_B@seq': scratchTable },
    heavy,
    async setup(gpu) {
      const t = tensors(gpu, seq);
      const dOut = uploadTensor(gpu, filled(seq * HQ * D, 4), tensorSpec('f32', [seq, HQ * D], 'activations', 'dOut'));
      const dq = uploadTensor(gpu, new Float32Array(seq * HQ * D), tensorSpec('f32', [seq, HQ * D], 'gradients', 'dq'));
      const dk = uploadTensor(
        gpu,
        new Float32Array(seq * HKV * D),
        tensorSpec('f32', [seq, HKV * D], 'gradients', 'dk'),
      );
      const dv = uploadTensor(
        gpu,
        new Float32Array(seq * HKV * D),
        tensorSpec('f32', [seq, HKV * D], 'gradients', 'dv'),
      );
      const scratch = createAttentionScratch(gpu, s, 'bench.attention');
      const fwd = new Recorder(gpu, 'bench attention forward');
      await attentionForward(fwd, { ...s, q: t.q, k: t.k, v: t.v, out: t.out, lse: t.lse });
      await fwd.submit();
      const all: Tensor[] = [t.q, t.k, t.v, t.out, t.lse, dOut, dq, dk, dv];
      return {
        record: (rec) =>
          attentionBackward(rec, { ...s, q: t.q, k: t.k, v: t.v, out: t.out, lse: t.lse, dOut, dq, dk, dv, scratch }),
        cleanup: () => {
          all.forEach((x) => releaseTensor(gpu, x));
          releaseAttentionScratch(gpu, scratch);
        },
      };
    },
  };
}

/** One generated token against a KV cache of `cache` positions (key-split forward + combine). */
function decodeCase(cache: number): BenchCase {
  const s: AttentionShape = { queries: 1, keys: cache, qHeads: HQ, kvHeads: HKV, headDim: D, queryOffset: cache - 1 };
  return {
    name: `attention decode kv${cache}`,
    shape: `1 query, cache ${cache}, H${HQ}/${HKV} D${D}`,
    flops: attentionForwardFlops(s),
    bytesMoved: 4 * (2 * HQ * D + 2 * cache * HKV * D),
    extra: { scratch_B: attentionForwardScratchBytes(s, false) },
    async setup(gpu) {
      const all: Tensor[] = [
        uploadTensor(gpu, filled(HQ * D, 1), tensorSpec('f32', [1, HQ * D], 'activations', 'q')),
        uploadTensor(gpu, filled(cache * HKV * D, 2), tensorSpec('f32', [cache, HKV * D], 'activations', 'kCache')),
        uploadTensor(gpu, filled(cache * HKV * D, 3), tensorSpec('f32', [cache, HKV * D], 'activations', 'vCache')),
        uploadTensor(gpu, new Float32Array(HQ * D), tensorSpec('f32', [1, HQ * D], 'activations', 'out')),
      ];
      const [q, k, v, out] = all;
      return {
        record: (rec) => attentionForward(rec, { ...s, q, k, v, out }),
        cleanup: () => {
          all.forEach((x) => releaseTensor(gpu, x));
          releaseAttentionCaches(gpu); // the LSE sink and per-split buffers the op made
        },
      };
    },
  };
}

export const cases: BenchCase[] = [
  decodeCase(1024),
  forwardCase(256),
  backwardCase(256),
  forwardCase(1024),
  backwardCase(1024),
  forwardCase(1024, false, 128),
  backwardCase(1024, false, 128),
  forwardCase(4096, true),
  backwardCase(4096, true),
];
