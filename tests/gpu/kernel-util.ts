// Small upload/read helpers for the norm/rope/swiglu/embedding/loss/optimizer GPU tests.
import {
  Recorder,
  readF32,
  releaseTensor,
  tensorSpec,
  uploadTensor,
  type DType,
  type Gpu,
  type Tensor,
} from '../../src/engine/gpu/index.ts';
import { afterEach } from 'vitest';
import { fromBf16, fromF16, toBf16, toF16 } from '../../src/engine/numeric/half.ts';
import { testGpu } from './context.ts';
import { REDUCE_CLASS, REDUCE_FAMILY, reduceVariants, type ReduceVariant } from '../../src/engine/ops/reduce.ts';

export class Scope {
  private readonly tensors: Tensor[] = [];
  constructor(readonly gpu: Gpu) {}
  f32(
    data: ArrayLike<number>,
    shape: number[],
    label: string,
    category: 'activations' | 'gradients' | 'weights' | 'adapters' | 'optimizer' | 'scratch' = 'activations',
  ): Tensor {
    return this.keep(uploadTensor(this.gpu, Float32Array.from(data), tensorSpec('f32', shape, category, label)));
  }
  i32(data: ArrayLike<number>, shape: number[], label: string): Tensor {
    return this.keep(uploadTensor(this.gpu, Int32Array.from(data), tensorSpec('i32', shape, 'activations', label)));
  }
  u32(data: ArrayLike<number>, shape: number[], label: string): Tensor {
    return this.keep(uploadTensor(this.gpu, Uint32Array.from(data), tensorSpec('u32', shape, 'scratch', label)));
  }
  /** NaN-filled f32 (so a kernel that reads an output it should only write shows up). */
  nan(n: number, label: string): Tensor {
    return this.f32(new Float32Array(n).fill(NaN), [n], label);
  }
  raw16(bits: Uint16Array, dtype: 'bf16' | 'f16', shape: number[], label: string): Tensor {
    return this.keep(uploadTensor(this.gpu, bits, tensorSpec(dtype, shape, 'weights', label)));
  }
  /** A weight of `dtype`; returns the tensor and the f32 values the kernel actually sees. */
  weight(values: Float32Array, dtype: DType, shape: number[], label: string): { t: Tensor; seen: Float32Array } {
    if (dtype === 'bf16') {
      const b = toBf16(values);
      return { t: this.raw16(b, 'bf16', shape, label), seen: fromBf16(b) };
    }
    if (dtype === 'f16') {
      const b = toF16(values);
      return { t: this.raw16(b, 'f16', shape, label), seen: fromF16(b) };
    }
    return { t: this.f32(values, shape, label, 'weights'), seen: values };
  }
  read(t: Tensor): Promise<Float32Array> {
    return readF32(this.gpu, t);
  }
  async run(label: string, body: (rec: Recorder) => Promise<void>): Promise<void> {
    const rec = new Recorder(this.gpu, label);
    try {
      await body(rec);
    } finally {
      await rec.submit();
    }
  }
  keep(t: Tensor): Tensor {
    this.tensors.push(t);
    return t;
  }
  release(): void {
    for (const t of this.tensors.splice(0)) releaseTensor(this.gpu, t);
  }
}

/**
 * A Scope per test on this file's device: the returned `open()` gives the test a fresh Scope, and an
 * afterEach hook (registered when this is called at a test file's top level) releases its tensors.
 */
export function scopePerTest(): () => Promise<Scope> {
  let scope: Scope | null = null;
  afterEach(() => {
    scope?.release();
    scope = null;
  });
  return async () => {
    scope = new Scope(await testGpu());
    return scope;
  };
}

/**
 * Runs the reducing kernels of this test file's device on `variant` (tree or subgroup reductions,
 * src/engine/ops/reduce.ts); false when the adapter lacks what the variant needs. A variant forced
 * by TABTUNE_KERNELS still wins.
 */
export async function useReduceVariant(variant: ReduceVariant): Promise<boolean> {
  const gpu = await testGpu();
  if (!reduceVariants(gpu).includes(variant)) return false;
  gpu.kernels.set(REDUCE_FAMILY, REDUCE_CLASS, variant);
  return true;
}
