import { Params, type Recorder } from '../gpu/recorder.ts';
import type { ShaderConstants } from '../gpu/shader-library.ts';
import { describe, type Tensor } from '../gpu/tensor.ts';
import { check, checkOperands, launch, WEIGHT_DTYPES, weightKind } from './kernel.ts';
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
  /** Pins a variant (tests, the tuner, benchmarks); otherwise the adapter's tuned choice. */
  variant?: MatmulVariant;
}

/**
 * The verified variants of shaders/matmul.wgsl (entry points) and the C block one workgroup
 * covers. Every variant passes the same reference tests; which is fastest is measured per adapter.
 */
export const MATMUL_VARIANTS = {
  tiled64: { blockM: 64, blockN: 64 },
  tiled128: { blockM: 128, blockN: 128 },
  register8x8: { blockM: 64, blockN: 64 },
  octet8x8: { blockM: 64, blockN: 64 },
} as const;
export type MatmulVariant = keyof typeof MATMUL_VARIANTS;
export const MATMUL_VARIANT_NAMES = Object.keys(MATMUL_VARIANTS) as MatmulVariant[];
/** Served before the adapter has been measured for a shape class. */
export const MATMUL_UNTUNED: MatmulVariant = 'tiled64';

/** What the tuner distinguishes: B's storage format, the transposes and each extent's power of two. */
export interface MatmulShape {
  M: number;
  N: number;
  K: number;
  transA?: boolean;
  transB?: boolean;
  /** 'f32' | 'bf16' | 'f16' | 'nf4'. */
  weight: string;
}

/** log2 buckets: products in one bucket behave alike, so one measurement serves them all. */
export function matmulShapeClass(s: MatmulShape): string {
  const b = (x: number) => Math.ceil(Math.log2(Math.max(1, x)));
  return `${s.weight}/${s.transA ? 'T' : 'N'}${s.transB ? 'T' : 'N'}/m${b(s.M)}n${b(s.N)}k${b(s.K)}`;
}

function weightFormat(b: Tensor | Nf4Weight): string {
  return isNf4(b) ? 'nf4' : b.dtype;
}

/** Checks A, B (dense or NF4) and C for the extents the batched product touches; returns B's decoder constants. */
function checkMatmul(
  what: string,
  args: MatmulArgs,
  nf4: Nf4Weight | null,
  extent: (k: 'a' | 'b' | 'c', matrix: number) => number,
): ShaderConstants {
  const { M, N, K } = args;
  const dense = nf4 ? null : (args.b as Tensor);
  checkOperands(what, [
    { name: 'A', tensor: args.a, dtype: 'f32', min: extent('a', M * K) },
    { name: 'B', tensor: dense, dtype: WEIGHT_DTYPES, min: extent('b', K * N) },
    { name: 'C', tensor: args.c, dtype: 'f32', min: extent('c', M * N) },
  ]);
  if (dense) return { B_DECODE: 'weight_dense_octet', W_KIND: `${weightKind(what, 'B', dense)}u` };
  const need = extent('b', K * N);
  check(what, need <= nf4Numel(nf4!), `B needs ${need} elements but holds ${nf4Numel(nf4!)}`);
  return { B_DECODE: 'weight_nf4_octet', ...nf4DecoderConstants(nf4!) };
}

/** Records C = alpha·op(A)·op(B) + beta·C; see shaders/matmul.wgsl. */
export async function matmul(rec: Recorder, args: MatmulArgs): Promise<void> {
  const { a, b, c, M, N, K } = args;
  const batch = args.batch ?? 1;
  const transA = args.transA ?? false;
  const transB = args.transB ?? false;
  const nf4 = isNf4(b) ? b : null;
  const what = `matmul${transA ? 'ᵀ' : ''}·${transB ? 'ᵀ' : ''} ${describe(a)} ${nf4 ? nf4Describe(nf4) : describe(b as Tensor)} → ${describe(c)} M=${M} N=${N} K=${K} batch=${batch}`;
  const strides = {
    a: args.aBatchStride ?? M * K,
    b: args.bBatchStride ?? K * N,
    c: args.cBatchStride ?? M * N,
  };
  const offsets = { a: args.aOffset ?? 0, b: args.bOffset ?? 0, c: args.cOffset ?? 0 };
  const decoder = checkMatmul(what, args, nf4, (k, matrix) => offsets[k] + strides[k] * (batch - 1) + matrix);
  const params = new Params(16)
    .u32(M)
    .u32(N)
    .u32(K)
    .u32(0)
    .u32(offsets.a)
    .u32(offsets.b)
    .u32(offsets.c)
    .u32(0)
    .u32(strides.a)
    .u32(strides.b)
    .u32(strides.c)
    .u32(0)
    .f32(args.alpha ?? 1)
    .f32(args.beta ?? 0)
    .u32(0)
    .u32(0);
  const bBuffers = nf4 ? [nf4.packed, c, ...nf4ExtraBindings(nf4)] : [b as Tensor, c];
  const variant =
    args.variant ??
    rec.gpu.kernels.pick(
      'matmul',
      matmulShapeClass({ M, N, K, transA, transB, weight: weightFormat(b) }),
      MATMUL_VARIANT_NAMES,
      MATMUL_UNTUNED,
    );
  const { blockM, blockN } = MATMUL_VARIANTS[variant];
  await launch(rec, {
    shader: 'matmul',
    entry: variant,
    constants: { TRANS_A: transA, TRANS_B: transB, ...decoder },
    what,
    params,
    bindings: [a, ...bBuffers],
    grid: [Math.ceil(N / blockN), Math.ceil(M / blockM), batch],
  });
}

/** FLOPs of one call, for benchmarks. */
export function matmulFlops(M: number, N: number, K: number, batch = 1): number {
  return 2 * M * N * K * batch;
}
