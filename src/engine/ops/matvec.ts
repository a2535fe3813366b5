// Matrix-vector products for one-token steps (KV-cache decode): y = alpha·x·Wᵀ + beta·y for a
// few rows of x, W stored [N, K] like nn.Linear.weight, dense (f32/bf16/f16) or NF4. See
// shaders/matvec.wgsl; training keeps the tiled matmul (ops/matmul.ts).
import { Params, type Recorder } from '../gpu/recorder.ts';
import type { ShaderConstants } from '../gpu/shader-library.ts';
import { describe, type Tensor } from '../gpu/tensor.ts';
import { check, checkInteger, checkOperands, foldGrid, launch, WEIGHT_DTYPES, weightKind } from './kernel.ts';
import { isNf4, nf4DecoderConstants, nf4Describe, nf4ExtraBindings, nf4Numel, type Nf4Weight } from './nf4.ts';

/** Most rows of x one launch takes (a decode step of up to this many sequences or tokens). */
export const MATVEC_MAX_ROWS = 8;

/**
 * Threads per output (the split of K) and threads per workgroup. 4 lanes read 4 consecutive
 * octets of a weight row (64 contiguous bytes of bf16 per step on a GPU); 16 outputs per
 * 64-thread workgroup put the 896-wide projections of a 0.5B model on 56 workgroups and its head
 * on ~9.5k. Wider splits cost CPU-emulated adapters dearly: on SwiftShader 32 lanes × 256
 * threads ran the 4864×896 bf16 product 5-8× slower than 4 × 64 (per-invocation overhead for
 * 28 multiply-adds each), with no gain to expect on a GPU for K of a few thousand.
 */
export const MATVEC_LAYOUT = { lanes: 4, workgroup: 64 } as const;

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
  /** Overrides MATVEC_LAYOUT (tests and benchmarks of other splits). lanes and workgroup: powers of two. */
  layout?: { lanes: number; workgroup: number };
}

function decoderOf(what: string, w: Tensor | Nf4Weight, need: number): ShaderConstants {
  if (!isNf4(w)) return { W_DECODE: 'weight_dense_octet', W_KIND: `${weightKind(what, 'W', w)}u` };
  check(what, need <= nf4Numel(w), `W needs ${need} elements but holds ${nf4Numel(w)}`);
  return { W_DECODE: 'weight_nf4_octet', ...nf4DecoderConstants(w) };
}

function checkLayout(what: string, l: { lanes: number; workgroup: number }): void {
  const pow2 = (v: number) => Number.isInteger(v) && v > 0 && (v & (v - 1)) === 0;
  check(
    what,
    pow2(l.lanes) && pow2(l.workgroup) && l.lanes <= l.workgroup && l.workgroup <= 256,
    `layout ${l.lanes} lanes × ${l.workgroup} threads: both powers of two, lanes ≤ threads ≤ 256`,
  );
}

/** Records y = alpha·x·Wᵀ + beta·y for `rows` ≤ MATVEC_MAX_ROWS rows; see shaders/matvec.wgsl. */
export async function matvec(rec: Recorder, args: MatvecArgs): Promise<void> {
  const { x, w, y, rows, N, K } = args;
  const xOffset = args.xOffset ?? 0;
  const yOffset = args.yOffset ?? 0;
  const yRowStride = args.yRowStride ?? N;
  const layout = args.layout ?? MATVEC_LAYOUT;
  const nf4 = isNf4(w) ? w : null;
  const what = `matvec ${describe(x)} ${nf4 ? nf4Describe(nf4) : describe(w as Tensor)} → ${describe(y)} rows=${rows} N=${N} K=${K}`;
  checkInteger(what, 'rows', rows);
  check(what, rows <= MATVEC_MAX_ROWS, `rows must be ≤ ${MATVEC_MAX_ROWS} (use matmul for more), got ${rows}`);
  checkInteger(what, 'N', N);
  checkInteger(what, 'K', K);
  check(what, yRowStride >= N, `yRowStride ${yRowStride} is narrower than N=${N}`);
  checkLayout(what, layout);
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
  const outsPerGroup = layout.workgroup / layout.lanes;
  await launch(rec, {
    shader: 'matvec',
    entry: 'matvec',
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
