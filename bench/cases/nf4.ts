import {
  releaseTensor,
  tensorSpec,
  uploadTensor,
  createTensor,
  Recorder,
  type Tensor,
} from '../../src/engine/gpu/index.ts';
import {
  matmul,
  matmulFlops,
  matmulShapeClass,
  MATMUL_UNTUNED,
  MATMUL_VARIANT_NAMES,
} from '../../src/engine/ops/matmul.ts';
import { tuneMatmul } from '../../src/engine/ops/tuner.ts';
import { dequantizeNf4, quantizeNf4, releaseNf4, type Nf4Weight } from '../../src/engine/ops/nf4.ts';
import { toBf16 } from '../../src/engine/numeric/half.ts';
import type { Gpu } from '../../src/engine/gpu/device.ts';
import type { BenchCase } from '../types.ts';

// Qwen2.5-0.5B: hidden 896, intermediate 4864 (gate/up: [4864, 896], down: [896, 4864]).
function filled(n: number, scale = 0.05): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = scale * (((i * 2654435761) % 1000) / 500 - 1);
  return a;
}

/** NF4 weight [rows, cols] quantized on the GPU from bf16 (double quant as QLoRA does by default). */
async function nf4Weight(gpu: Gpu, rows: number, cols: number, doubleQuant = true): Promise<Nf4Weight> {
  const src = uploadTensor(gpu, toBf16(filled(rows * cols)), tensorSpec('bf16', [rows, cols], 'weights', 'W.bf16'));
  const rec = new Recorder(gpu, 'bench nf4 setup');
  const { weight, scratch } = await quantizeNf4(rec, { src, doubleQuant, label: 'W' });
  await rec.submit();
  [src, ...scratch].forEach((t) => releaseTensor(gpu, t));
  return weight;
}

/** Bytes of an NF4 weight with double quant: 4 bits per weight + 1 byte per 64 + the nested table. */
function nf4Bytes(rows: number, cols: number): number {
  const n = rows * cols;
  const blocks = Math.ceil(n / 64);
  return n / 2 + blocks + 4 * (257 + Math.ceil(blocks / 256));
}

function dequantCase(rows: number, cols: number): BenchCase {
  const n = rows * cols;
  return {
    name: `nf4 dequant ${rows}×${cols}`,
    shape: `${rows}×${cols} dq → f32`,
    flops: 0,
    bytesMoved: nf4Bytes(rows, cols) + 4 * n,
    async setup(gpu) {
      const w = await nf4Weight(gpu, rows, cols);
      const out = createTensor(gpu, tensorSpec('f32', [n], 'scratch', 'out'));
      const abs = createTensor(gpu, tensorSpec('f32', [Math.ceil(n / 64)], 'scratch', 'absmax'));
      return {
        record: (rec) => dequantizeNf4(rec, w, out, abs),
        cleanup: () => {
          releaseNf4(gpu, w);
          [out, abs].forEach((t) => releaseTensor(gpu, t));
        },
      };
    },
  };
}

function quantizeCase(rows: number, cols: number): BenchCase {
  const n = rows * cols;
  return {
    name: `nf4 quantize ${rows}×${cols}`,
    shape: `bf16 ${rows}×${cols} → nf4+dq`,
    flops: 0,
    bytesMoved: 2 * n + nf4Bytes(rows, cols),
    async setup(gpu) {
      const src = uploadTensor(gpu, toBf16(filled(n)), tensorSpec('bf16', [rows, cols], 'weights', 'W.bf16'));
      const made: Nf4Weight[] = [];
      const scratch: Tensor[] = [];
      return {
        async record(rec) {
          const q = await quantizeNf4(rec, { src, doubleQuant: true, label: 'W' });
          made.push(q.weight);
          scratch.push(...q.scratch);
        },
        cleanup: () => {
          made.forEach((w) => releaseNf4(gpu, w));
          [src, ...scratch].forEach((t) => releaseTensor(gpu, t));
        },
      };
    },
  };
}

/**
 * y[M,N] = x[M,K]·dequant(W[N,K])ᵀ (forward) or dX[M,K] = dY[M,N]·dequant(W) (backward), on the
 * variant the tuner picks for the class (named in the row), as a training step would run it.
 */
function matmulCase(M: number, K: number, N: number, backward: boolean, heavy: boolean): BenchCase {
  const [inF, outF] = backward ? [N, K] : [K, N];
  const extra: Record<string, string> = {};
  return {
    extra,
    name: `nf4 matmul ${backward ? 'dX ' : ''}M${M} ${K}→${N}`,
    shape: backward ? `dY[${M}×${outF}]·W[${outF}×${inF}]` : `x[${M}×${K}]·W[${N}×${K}]ᵀ`,
    flops: matmulFlops(M, N, K),
    bytesMoved: 4 * (M * K + M * N) + nf4Bytes(N, K),
    heavy,
    async setup(gpu) {
      // W is [out, in] like nn.Linear: forward uses it transposed, backward as stored.
      const w = await nf4Weight(gpu, outF, inF);
      const a = uploadTensor(gpu, filled(M * K, 1), tensorSpec('f32', [M, K], 'activations', 'A'));
      const c = createTensor(gpu, tensorSpec('f32', [M, N], 'activations', 'C'));
      const shape = { M, N, K, transB: !backward, weight: 'nf4' };
      await tuneMatmul(gpu, [shape]);
      extra.chosen = gpu.kernels.pick('matmul', matmulShapeClass(shape), MATMUL_VARIANT_NAMES, MATMUL_UNTUNED);
      return {
        record: (rec) => matmul(rec, { a, b: w, c, M, N, K, transB: !backward }),
        cleanup: () => {
          releaseNf4(gpu, w);
          [a, c].forEach((t) => releaseTensor(gpu, t));
        },
      };
    },
  };
}

export const cases: BenchCase[] = [
  dequantCase(4864, 896),
  quantizeCase(4864, 896),
  matmulCase(256, 896, 4864, false, false),
  matmulCase(256, 4864, 896, false, false),
  matmulCase(256, 4864, 896, true, false),
  matmulCase(1024, 896, 4864, false, true),
  matmulCase(1024, 4864, 896, false, true),
];
