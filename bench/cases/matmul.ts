import { releaseTensor, tensorSpec, uploadTensor, type Tensor } from '../../src/engine/gpu/index.ts';
import { matmul, matmulFlops } from '../../src/engine/ops/matmul.ts';
import type { BenchCase } from '../types.ts';

function filled(n: number): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = ((i * 2654435761) % 1000) / 1000 - 0.5;
  return a;
}

function matmulCase(name: string, M: number, N: number, K: number, transB: boolean): BenchCase {
  return {
    name,
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
      return {
        record: (rec) => matmul(rec, { a, b, c, M, N, K, transB }),
        cleanup: () => ts.forEach((t) => releaseTensor(gpu, t)),
      };
    },
  };
}

export const cases: BenchCase[] = [
  matmulCase('matmul 256³', 256, 256, 256, false),
  matmulCase('matmul 1024³', 1024, 1024, 1024, false),
  // Qwen2.5-0.5B MLP down-projection at 512 tokens: h[512,4864] · W_downᵀ, W_down [896,4864].
  matmulCase('matmul llm-down', 512, 896, 4864, true),
];
