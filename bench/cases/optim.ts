// Optimizer-side kernels over the LoRA parameter arena of Qwen2.5-0.5B (24 layers, r=8 on
// q,k,v,o,gate,up,down: 183,552 params per layer = 4,405,248) and r=64 (35.2M).
import { releaseTensor, tensorSpec, uploadTensor, type Tensor } from '../../src/engine/gpu/index.ts';
import { adamwBlocks, adamwBytes, adamwStep, type AdamwSegment } from '../../src/engine/ops/adamw.ts';
import { gradNorm, gradNormPartials } from '../../src/engine/ops/grad_norm.ts';
import type { BenchCase } from '../types.ts';

const LAYERS = 24;
// (in, out) of each adapted projection.
const PROJ: [number, number][] = [
  [896, 896],
  [896, 128],
  [896, 128],
  [896, 896],
  [896, 4864],
  [896, 4864],
  [4864, 896],
];

function loraSegments(r: number): { segments: AdamwSegment[]; size: number } {
  const segments: AdamwSegment[] = [];
  let at = 0;
  for (let l = 0; l < LAYERS; l++) {
    for (const [inF, outF] of PROJ) {
      segments.push({ offset: at, count: r * inF, group: 0 }); // lora_A [r, in]
      at += r * inF;
      segments.push({ offset: at, count: outF * r, group: 1 }); // lora_B [out, r] (LoRA+ group)
      at += outF * r;
    }
  }
  return { segments, size: at };
}

function filled(n: number): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = ((i * 2654435761) % 1000) / 1e5 - 0.005;
  return a;
}

function adamwCase(r: number): BenchCase {
  const { segments, size } = loraSegments(r);
  return {
    name: `adamw lora-r${r}`,
    shape: `${size} params, ${segments.length} tensors`,
    flops: 16 * size,
    bytesMoved: adamwBytes(size, true),
    extra: { tensors: segments.length },
    async setup(gpu) {
      const ts: Tensor[] = [];
      const f = (data: Float32Array | Uint32Array, label: string) => {
        const t = uploadTensor(
          gpu,
          data,
          tensorSpec(data instanceof Uint32Array ? 'u32' : 'f32', [data.length], 'optimizer', label),
        );
        ts.push(t);
        return t;
      };
      const params = f(filled(size), 'params');
      const grads = f(filled(size), 'grads');
      const m = f(new Float32Array(size), 'm');
      const v = f(new Float32Array(size), 'v');
      const blocksHost = adamwBlocks(segments, size);
      const blocks = f(blocksHost, 'blocks');
      const stats = f(new Float32Array([1, 0.5, 1, 0]), 'stats');
      const groups = [
        { lr: 2e-4, weightDecay: 0.01 },
        { lr: 3.2e-3, weightDecay: 0.01 },
      ];
      return {
        record: (rec) =>
          adamwStep(rec, {
            params,
            grads,
            m,
            v,
            blocks,
            blockCount: blocksHost.length / 4,
            groups,
            step: 10,
            gradStats: { tensor: stats },
          }),
        cleanup: () => ts.forEach((t) => releaseTensor(gpu, t)),
      };
    },
  };
}

function gradNormCase(r: number): BenchCase {
  const { size } = loraSegments(r);
  return {
    name: `grad_norm lora-r${r}`,
    shape: `${size} grads`,
    flops: 2 * size,
    bytesMoved: 4 * size,
    async setup(gpu) {
      const grads = uploadTensor(gpu, filled(size), tensorSpec('f32', [size], 'gradients', 'grads'));
      const partials = uploadTensor(
        gpu,
        new Float32Array(gradNormPartials([size])),
        tensorSpec('f32', [gradNormPartials([size])], 'scratch', 'partials'),
      );
      const stats = uploadTensor(gpu, new Float32Array(4), tensorSpec('f32', [4], 'scratch', 'stats'));
      return {
        record: (rec) => gradNorm(rec, { ranges: [{ grads }], partials, stats, maxNorm: 1 }),
        cleanup: () => [grads, partials, stats].forEach((t) => releaseTensor(gpu, t)),
      };
    },
  };
}

export const cases: BenchCase[] = [adamwCase(8), gradNormCase(8), adamwCase(64), gradNormCase(64)];
