import { GpuError } from '../gpu/errors.ts';
import { Params, type Recorder } from '../gpu/recorder.ts';
import type { ShaderConstants } from '../gpu/shader-library.ts';
import { describe, numelOf, type DType, type Tensor } from '../gpu/tensor.ts';
import { isNf4, nf4DecoderConstants, nf4Describe, nf4ExtraBindings, nf4Numel, type Nf4Weight } from './nf4.ts';

export interface MatmulArgs {
  /** op(A) is M×K; A is stored [M,K] or, with transA, [K,M]. f32. */
  a: Tensor;
  /**
   * op(B) is K×N; B is stored [K,N] or, with transB, [N,K]. f32, bf16 or f16, or an NF4 weight
   * decoded per element inside the kernel (y = x·Wᵀ with transB; dX = dY·W without).
   */
  b: Tensor | Nf4Weight;
  /** Output [M,N] per batch, f32. */
  c: Tensor;
  M: number;
  N: number;
  K: number;
  batch?: number;
  transA?: boolean;
  transB?: boolean;
  /** C = alpha·op(A)·op(B) + beta·C. beta = 1 accumulates (gradient sums). */
  alpha?: number;
  beta?: number;
  /** Element offsets of the first matrix; batch strides in elements (0 broadcasts one matrix). */
  aOffset?: number;
  bOffset?: number;
  cOffset?: number;
  aBatchStride?: number;
  bBatchStride?: number;
  cBatchStride?: number;
}

const B_KIND: Partial<Record<DType, number>> = { f32: 0, bf16: 1, f16: 2 };
const TILE = 64;

/** Records C = alpha·op(A)·op(B) + beta·C; see shaders/matmul.wgsl. */
export async function matmul(rec: Recorder, args: MatmulArgs): Promise<void> {
  const { a, b, c, M, N, K } = args;
  const batch = args.batch ?? 1;
  const transA = args.transA ?? false;
  const transB = args.transB ?? false;
  const nf4 = isNf4(b) ? b : null;
  const what = `matmul${transA ? 'ᵀ' : ''}·${transB ? 'ᵀ' : ''} ${describe(a)} ${nf4 ? nf4Describe(nf4) : describe(b as Tensor)} → ${describe(c)} M=${M} N=${N} K=${K} batch=${batch}`;
  const bKind = nf4 ? 0 : B_KIND[(b as Tensor).dtype];
  if (a.dtype !== 'f32' || c.dtype !== 'f32' || bKind === undefined) {
    throw new GpuError('validation', what, 'A and C must be f32; B f32, bf16, f16 or NF4');
  }
  const strides = {
    a: args.aBatchStride ?? M * K,
    b: args.bBatchStride ?? K * N,
    c: args.cBatchStride ?? M * N,
  };
  const offsets = { a: args.aOffset ?? 0, b: args.bOffset ?? 0, c: args.cOffset ?? 0 };
  checkFits(what, 'A', a, offsets.a + strides.a * (batch - 1) + M * K);
  const bNeed = offsets.b + strides.b * (batch - 1) + K * N;
  if (nf4) {
    if (bNeed > nf4Numel(nf4)) throw new GpuError('validation', what, `B needs ${bNeed} elements but holds ${nf4Numel(nf4)}`);
  } else {
    checkFits(what, 'B', b as Tensor, bNeed);
  }
  checkFits(what, 'C', c, offsets.c + strides.c * (batch - 1) + M * N);

  const decoder: ShaderConstants = nf4 ? { B_DECODE: 'weight_nf4', ...nf4DecoderConstants(nf4) } : { B_DECODE: 'weight_dense', W_KIND: `${bKind}u` };
  const pipeline = await rec.gpu.pipelines.get('matmul', { TRANS_A: transA, TRANS_B: transB, ...decoder });
  const params = new Params(16)
    .u32(M).u32(N).u32(K).u32(0)
    .u32(offsets.a).u32(offsets.b).u32(offsets.c).u32(0)
    .u32(strides.a).u32(strides.b).u32(strides.c).u32(0)
    .f32(args.alpha ?? 1).f32(args.beta ?? 0).u32(0).u32(0);
  const bBuffers = nf4 ? [nf4.packed, c, ...nf4ExtraBindings(nf4)] : [b as Tensor, c];
  rec.dispatch({ pipeline, what }, params.buffer, [a, ...bBuffers], [Math.ceil(N / TILE), Math.ceil(M / TILE), batch]);
}

function checkFits(what: string, name: string, t: Tensor, elements: number): void {
  if (elements > numelOf(t.shape)) {
    throw new GpuError('validation', what, `${name} needs ${elements} elements but ${describe(t)} holds ${numelOf(t.shape)}`);
  }
}

/** FLOPs of one call, for benchmarks. */
export function matmulFlops(M: number, N: number, K: number, batch = 1): number {
  return 2 * M * N * K * batch;
}
