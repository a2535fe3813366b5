// Rotary position embedding (half-split / rotate_half layout of transformers' Llama, Qwen2,
// Qwen3, Mistral, Phi-3 with partial rotary); see shaders/rope.wgsl. IN PLACE: the forward rotates Q and K where they
// lie, the backward rotates dL/dQ', dL/dK' back (inverse rotation) where they lie.
// invFreq f32[rotaryDim/2] comes from the host (computeInvFreq handles default / linear /
// dynamic / llama3 / longrope scaling); cos/sin are computed here from f32(position)·invFreq[i].
import { Params, type Recorder } from '../gpu/recorder.ts';
import { describe, type Tensor } from '../gpu/tensor.ts';
import { check, checkInteger, checkOperands, foldGrid, launch } from './kernel.ts';

export interface RopeShape {
  /** Per-token positions i32[tokens] (packed sequences restart at 0 per segment). */
  positionIds: Tensor;
  /** f32[rotaryDim/2] inverse frequencies. */
  invFreq: Tensor;
  tokens: number;
  qHeads: number;
  kvHeads: number;
  /** Head dimension D (the stride between heads). */
  headDim: number;
  /**
   * Leading dimensions of each head that rotate (even, ≤ D; default D): partial rotary
   * (Phi-4-mini 96 of 128) leaves the last D − rotaryDim untouched.
   */
  rotaryDim?: number;
  /** Multiplies cos and sin (transformers' attention_scaling; 1 unless yarn/longrope). */
  attentionScaling?: number;
  /** Elements between consecutive tokens (defaults qHeads·D / kvHeads·D) and first-element offsets. */
  qRowStride?: number;
  kRowStride?: number;
  qOffset?: number;
  kOffset?: number;
}

export interface RopeForwardArgs extends RopeShape {
  /** Q [tokens, qHeads·D] f32, rotated in place. */
  q: Tensor;
  /** K [tokens, kvHeads·D] f32, rotated in place. */
  k: Tensor;
}

export interface RopeBackwardArgs extends RopeShape {
  /** dL/dQ' [tokens, qHeads·D] f32, turned into dL/dQ in place. */
  dq: Tensor;
  /** dL/dK' [tokens, kvHeads·D] f32, turned into dL/dK in place. */
  dk: Tensor;
}

const WG = 64;

async function record(
  rec: Recorder,
  kernel: string,
  q: Tensor,
  k: Tensor,
  a: RopeShape,
  direction: 1 | -1,
): Promise<void> {
  const { tokens, qHeads, kvHeads, headDim } = a;
  const w = `rope.${kernel} q${describe(q)} k${describe(k)} tokens=${tokens} heads=${qHeads}/${kvHeads} D=${headDim}${a.rotaryDim === undefined ? '' : ` rotary=${a.rotaryDim}`}`;
  checkInteger(w, 'tokens', tokens, 0);
  checkInteger(w, 'qHeads', qHeads, 0);
  checkInteger(w, 'kvHeads', kvHeads, 0);
  checkInteger(w, 'headDim', headDim, 2);
  const rotaryDim = a.rotaryDim ?? headDim;
  checkInteger(w, 'rotaryDim', rotaryDim, 2);
  check(
    w,
    rotaryDim % 2 === 0,
    `${a.rotaryDim === undefined ? 'headDim' : 'rotaryDim'} must be even, got ${rotaryDim}`,
  );
  check(w, rotaryDim <= headDim, `rotaryDim ${rotaryDim} exceeds headDim ${headDim}`);
  const qStride = a.qRowStride ?? qHeads * headDim;
  const kStride = a.kRowStride ?? kvHeads * headDim;
  check(
    w,
    qStride >= qHeads * headDim && kStride >= kvHeads * headDim,
    `row strides ${qStride}/${kStride} are shorter than a token's heads`,
  );
  const qOff = a.qOffset ?? 0;
  const kOff = a.kOffset ?? 0;
  const extent = (offset: number, stride: number, row: number) =>
    tokens > 0 ? offset + (tokens - 1) * stride + row : 0;
  checkOperands(w, [
    { name: 'q', tensor: q, dtype: 'f32', min: extent(qOff, qStride, qHeads * headDim), write: true },
    { name: 'k', tensor: k, dtype: 'f32', min: extent(kOff, kStride, kvHeads * headDim), write: true },
    { name: 'invFreq', tensor: a.invFreq, dtype: 'f32', min: rotaryDim / 2 },
    { name: 'positionIds', tensor: a.positionIds, dtype: 'i32', min: tokens },
  ]);
  const params = new Params(12)
    .u32(tokens)
    .u32(qHeads)
    .u32(kvHeads)
    .u32(rotaryDim / 2)
    .u32(qStride)
    .u32(kStride)
    .u32(qOff)
    .u32(kOff)
    .f32(direction)
    .f32(a.attentionScaling ?? 1)
    .u32(headDim)
    .u32(0);
  await launch(rec, {
    shader: 'rope',
    what: w,
    params,
    bindings: [q, k, a.positionIds, a.invFreq],
    grid: foldGrid(rec, Math.ceil((tokens * rotaryDim) / 2 / WG)),
  });
}

/** Records q ← rope(q), k ← rope(k) in place. */
export function ropeForward(rec: Recorder, a: RopeForwardArgs): Promise<void> {
  return record(rec, 'forward', a.q, a.k, a, 1);
}

/** Records dq ← R(θ)ᵀ·dq, dk ← R(θ)ᵀ·dk in place (the rotation is orthogonal: inverse = transpose). */
export function ropeBackward(rec: Recorder, a: RopeBackwardArgs): Promise<void> {
  return record(rec, 'backward', a.dq, a.dk, a, -1);
}

/** Bytes one call moves: Q and K read and written, positions and invFreq read. */
export function ropeBytes(tokens: number, qHeads: number, kvHeads: number, headDim: number): number {
  return 8 * tokens * (qHeads + kvHeads) * headDim + 4 * tokens + 2 * headDim;
}
