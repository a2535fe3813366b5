import { releaseTensor, tensorSpec, uploadTensor, type Tensor } from '../../src/engine/gpu/index.ts';
import {
  matmul,
  matmulFlops,
  matmulShapeClass,
  MATMUL_VARIANT_NAMES,
  type MatmulVariant,
} from '../../src/engine/ops/matmul.ts';
import { tuneMatmul } from '../../src/engine/ops/tuner.ts';
import type { BenchCase } from '../types.ts';

function filled(n: number): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = ((i * 2654435761) % 1000) / 1000 - 0.5;
  return a;
}

/** `variant` pins one; without it the tuner measures the class first and the row names its pick. */
function matmulCase(
  name: string,
  M: number,
  N: number,
  K: number,
  transB: boolean,
  variant?: MatmulVariant,
): BenchCase {
  const extra: Record<string, string> = {};
  return {
    name: `${name} [${variant ?? 'tuned'}]`,
    extra,
    shape: `${M}×${N}×${K}${transB ? ' (A·Bᵀ)' : ''}`,
    flops: matmulFlops(M, N, K),
    bytesMoved: 4 * (M * K + K * N + M * N),
    async setup(gpu) {
      const ts: Tensor[] = [
        uploadTensor(gpu, filled(M * K), tensorSpec('f32', [M, K], 'activations', 'A')),
        uploadTensor(gpu, filled(K * N), tensorSpec('f32', transB ? [N, K] : [K, N], 'weights', 'B')),
        uploadTensor(gpu, new Float32Array(M * N), tensorSpec('f32', [M, N], 'activations', 'C')),
      ];
      const [a, b, c] = ts;
      if (!variant) {
        const shape = { M, N, K, transB, weight: 'f32' };
        const [r] = await tuneMatmul(gpu, [shape]);
        extra.chosen = gpu.kernels.pick('matmul', matmulShapeClass(shape), MATMUL_VARIANT_NAMES, 'tiled64');
        if (r) extra.tuner_ms = JSON.stringify(r.ms);
      }
      return {
        record: (rec) => matmul(rec, { a, b, c, M, N, K, transB, variant }),
        cleanup: () => ts.forEach((t) => releaseTensor(gpu, t)),
      };
    },
  };
}

const shapes: [string, number, number, number, boolean][] = [
  ['matmul 256³', 256, 256, 256, false],
  ['matmul 1024³', 1024, 1024, 1024, false],
  // Qwen2.5-0.5B q_proj / o_proj at 256 tokens: x[256,896] · W_qᵀ.
  ['matmul llm-qproj', 256, 896, 896, true],
  // Qwen2.5-0.5B MLP down-projection at 512 tokens: h[512,4864] · W_downᵀ, W_down [896,4864].
  ['matmul llm-down', 512, 896, 4864, true],
];

export const cases: BenchCase[] = shapes.flatMap(([name, M, N, K, transB]) => [
  ...MATMUL_VARIANT_NAMES.map((v) => matmulCase(name, M, N, K, transB, v)),
  matmulCase(name, M, N, K, transB),
]);
