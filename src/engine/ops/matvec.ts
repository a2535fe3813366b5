// Matrix-vector products for one-token steps (KV-cache decode): y = alpha·x·Wᵀ + beta·y for a
// few rows of x, W stored [N, K] like nn.Linear.weight, dense (f32/bf16/f16) or NF4. See
// shaders/matvec.wgsl; training keeps the tiled matmul (ops/matmul.ts).
import { Params, Recorder } from '../gpu/recorder.ts';
import type { ShaderConstants } from '../gpu/shader-library.ts';
import { describe, type Tensor } from '../gpu/tensor.ts';
import { check, checkInteger, checkOperands, foldGrid, launch, WEIGHT_DTYPES, weightKind } from './kernel.ts';
import { isNf4, nf4DecoderConstants, nf4Describe, nf4ExtraBindings, nf4Numel, type Nf4Weight } from './nf4.ts';

/** Most rows of x one launch takes (a decode step of up to this many sequences or tokens). */
export const MATVEC_MAX_ROWS = 8;

/**
 * The verified forms of shaders/matvec.wgsl: entry point, threads per output (lanes, splitting K),
 * outputs per lane group and threads per workgroup. Which is fastest depends on the adapter, so it
 * is measured (tuneMatvec in ops/tuner.ts):
 *   split4   4 lanes read 4 consecutive octets of a weight row (64 contiguous bytes of bf16), 16
 *            outputs per 64-thread workgroup: long per-thread loops, few invocations; on
 *            SwiftShader 5-8× faster than split32 on the 4864×896 bf16 product.
 *   split32  32 lanes read 512 contiguous bytes of a row per step, 8 outputs per 256 threads:
 *            8× the threads for the 896-wide projections, for GPUs that need many loads in flight.
 *   quad     one thread per 4 outputs walking all of K, no workgroup memory or barrier: a quarter
 *            of the x reads per weight (for CPU-emulated adapters, where every load is costly).
 */
export const MATVEC_VARIANTS = {
  split4: { entry: 'matvec', lanes: 4, outputs: 1, workgroup: 64 },
  split32: { entry: 'matvec', lanes: 32, outputs: 1, workgroup: 256 },
  quad: { entry: 'matvecQuad', lanes: 1, outputs: 4, workgroup: 64 },
} as const;
export type MatvecVariant = keyof typeof MATVEC_VARIANTS;
export const MATVEC_VARIANT_NAMES = Object.keys(MATVEC_VARIANTS) as MatvecVariant[];
/** Served before tuneMatvec has measured this adapter. */
export const MATVEC_UNTUNED: MatvecVariant = 'split4';
/** One shape class: the split that wins depends on the adapter far more than on the projection. */
export const MATVEC_CLASS = 'decode';

export interface MatvecArgs {
  /** f32 rows [rows, K] from xOffset. */
  x: Tensor;
  /** [N, K] weight (nn.Linear layout): f32, bf16, f16 or NF4. */
  w: Tensor | Nf4Weight;
  /** f32 output, row m at yOffset + m·yRowStride (N values). */
  y: Tensor;
  rows: number;
  N: number;
  K: number;
  /** y = alpha·x·Wᵀ + beta·y; beta = 1 accumulates (residual, bias, LoRA). */
  alpha?: number;
  beta?: number;
  xOffset?: number;
  yOffset?: number;
  /** Elements between output rows (default N; the vocabulary width for a row-split head part). */
  yRowStride?: number;
  /** Pins a split (tests, the tuner, benchmarks); otherwise the adapter's measured choice. */
  variant?: MatvecVariant;
}

function decoderOf(what: string, w: Tensor | Nf4Weight, need: number): ShaderConstants {
  if (!isNf4(w)) return { W_DECODE: 'weight_dense_octet', W_KIND: `${weightKind(what, 'W', w)}u` };
  check(what, need <= nf4Numel(w), `W needs ${need} elements but holds ${nf4Numel(w)}`);
  return { W_DECODE: 'weight_nf4_octet', ...nf4DecoderConstants(w) };
}

/** Records y = alpha·x·Wᵀ + beta·y for `rows` ≤ MATVEC_MAX_ROWS rows; see shaders/matvec.wgsl. */
export async function matvec(rec: Recorder, args: MatvecArgs): Promise<void> {
  const { x, w, y, rows, N, K } = args;
  const xOffset = args.xOffset ?? 0;
  const yOffset = args.yOffset ?? 0;
  const yRowStride = args.yRowStride ?? N;
  const variant = args.variant ?? rec.gpu.kernels.pick('matvec', MATVEC_CLASS, MATVEC_VARIANT_NAMES, MATVEC_UNTUNED);
  const layout = MATVEC_VARIANTS[variant];
  const nf4 = isNf4(w) ? w : null;
  const what = `matvec ${describe(x)} ${nf4 ? nf4Describe(nf4) : describe(w as Tensor)} → ${describe(y)} rows=${rows} N=${N} K=${K}`;
  checkInteger(what, 'rows', rows);
  check(what, rows <= MATVEC_MAX_ROWS, `rows must be ≤ ${MATVEC_MAX_ROWS} (use matmul for more), got ${rows}`);
  checkInteger(what, 'N', N);
  checkInteger(what, 'K', K);
  check(what, yRowStride >= N, `yRowStride ${yRowStride} is narrower than N=${N}`);
  checkOperands(what, [
    { name: 'x', tensor: x, dtype: 'f32', min: xOffset + rows * K },
    { name: 'W', tensor: nf4 ? null : (w as Tensor), dtype: WEIGHT_DTYPES, min: N * K },
    { name: 'y', tensor: y, dtype: 'f32', min: yOffset + (rows - 1) * yRowStride + N, write: true },
  ]);
  const decoder = decoderOf(what, w, N * K);
  const params = new Params(8)
    .u32(N)
    .u32(K)
    .u32(xOffset)
    .u32(yOffset)
    .u32(yRowStride)
    .f32(args.alpha ?? 1)
    .f32(args.beta ?? 0)
    .u32(0);
  const outsPerGroup = (layout.workgroup / layout.lanes) * layout.outputs;
  await launch(rec, {
    shader: 'matvec',
    entry: layout.entry,
    constants: { ROWS: `${rows}u`, LANES: `${layout.lanes}u`, WG: `${layout.workgroup}u`, ...decoder },
    what,
    params,
    bindings: nf4 ? [x, nf4.packed, y, ...nf4ExtraBindings(nf4)] : [x, w as Tensor, y],
    grid: foldGrid(rec, Math.ceil(N / outsPerGroup)),
  });
}

/** FLOPs of one call, for benchmarks. */
export function matvecFlops(rows: number, N: number, K: number): number {
  return 2 * rows * N * K;
}
