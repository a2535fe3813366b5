import { createTensor, releaseTensor, tensorSpec, uploadTensor, type Tensor } from '../../src/engine/gpu/index.ts';
import {
  createLoraWorkspace,
  initLoraA,
  loraBackward,
  loraFlops,
  loraForward,
  loraScale,
  releaseLoraWorkspace,
  LORA_CLASS,
  LORA_FAMILY,
  LORA_VARIANT_NAMES,
  type LoraAdapter,
} from '../../src/engine/ops/lora.ts';
import { tuneLora, tuneMatmul } from '../../src/engine/ops/tuner.ts';
import type { BenchCase } from '../types.ts';

// LoRA on Qwen2.5-0.5B's q_proj (896 → 896): forward + backward of the adapter alone (the base
// matmul is benchmarked by the matmul/nf4 cases), on the forms the tuner picks (named in the row).
function filled(n: number, scale = 1): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = scale * (((i * 2654435761) % 1000) / 500 - 1);
  return a;
}

function loraCase(N: number, r: number, p: number, heavy: boolean): BenchCase {
  const inF = 896;
  const outF = 896;
  const fl = loraFlops(N, inF, outF, r);
  // x and dY read twice (forward + backward), y and dX read-modified-written, A/B and grads, t/g;
  // the dropout mask is recomputed from counters, so it moves no bytes.
  const bytes =
    4 * (2 * N * inF + 2 * N * outF + 2 * N * outF + 2 * N * inF + 2 * (r * inF + outF * r) * 2 + 4 * N * r);
  const extra: Record<string, string> = {};
  return {
    extra,
    name: `lora fwd+bwd q_proj r${r} N${N}${p > 0 ? ` p${p}` : ''}`,
    shape: `N${N} ${inF}→${outF} r${r}`,
    flops: fl.forward + fl.backward,
    bytesMoved: bytes,
    heavy,
    async setup(gpu) {
      await tuneLora(gpu);
      // The wide products (y += s·t·Bᵀ, dX += g·A) on their measured matmul variant too.
      await tuneMatmul(gpu, [
        { M: N, N: outF, K: r, transB: true, weight: 'f32' },
        { M: N, N: inF, K: r, weight: 'f32' },
      ]);
      extra.form = gpu.kernels.pick(LORA_FAMILY, LORA_CLASS, LORA_VARIANT_NAMES, 'skinny');
      const ts: Tensor[] = [];
      const up = (d: Float32Array, shape: number[], cat: 'activations' | 'adapters' | 'gradients', label: string) => {
        const t = uploadTensor(gpu, d, tensorSpec('f32', shape, cat, label));
        ts.push(t);
        return t;
      };
      const adapter: LoraAdapter = {
        a: up(initLoraA(r, inF, 1), [r, inF], 'adapters', 'A'),
        b: up(filled(outF * r, 0.01), [outF, r], 'adapters', 'B'),
        r,
        inFeatures: inF,
        outFeatures: outF,
        scale: loraScale(2 * r, r),
      };
      const x = up(filled(N * inF), [N, inF], 'activations', 'x');
      const dy = up(filled(N * outF, 0.1), [N, outF], 'activations', 'dY');
      const y = up(new Float32Array(N * outF), [N, outF], 'activations', 'y');
      const dx = up(new Float32Array(N * inF), [N, inF], 'gradients', 'dX');
      const dA = createTensor(gpu, tensorSpec('f32', [r, inF], 'gradients', 'dA'));
      const dB = createTensor(gpu, tensorSpec('f32', [outF, r], 'gradients', 'dB'));
      ts.push(dA, dB);
      const ws = createLoraWorkspace(gpu, N, adapter);
      const dropout = p > 0 ? { p, seed: 1, step: 0, moduleId: 0 } : undefined;
      return {
        async record(rec) {
          await loraForward(rec, { x, y, adapter, N, dropout, ws });
          await loraBackward(rec, { x, dY: dy, dX: dx, dA, dB, adapter, N, dropout, ws });
        },
        cleanup: () => {
          ts.forEach((t) => releaseTensor(gpu, t));
          releaseLoraWorkspace(gpu, ws);
        },
      };
    },
  };
}

export const cases: BenchCase[] = [
  loraCase(256, 8, 0, false),
  loraCase(256, 16, 0, false),
  loraCase(256, 16, 0.05, false),
  loraCase(1024, 8, 0, true),
  loraCase(1024, 16, 0, true),
];
