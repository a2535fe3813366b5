// CPU reference for shaders/merge.wgsl: W' = W + s·(B @ A) in f32 (the product summed over r in
// order, then scaled, then added, as the GPU does), rounded to 16 bits with nearest-even.
import { toBf16, toF16 } from '../../src/engine/numeric/half.ts';

export function mergeRef(
  w: ArrayLike<number>,
  b: ArrayLike<number>,
  a: ArrayLike<number>,
  out: number,
  inF: number,
  r: number,
  scale: number,
): { f32: Float32Array; bf16: Uint16Array; f16: Uint16Array } {
  const f = Math.fround;
  const merged = new Float32Array(out * inF);
  for (let o = 0; o < out; o++)
    for (let i = 0; i < inF; i++) {
      let s = 0;
      for (let k = 0; k < r; k++) s = f(s + f(b[o * r + k] * a[k * inF + i]));
      merged[o * inF + i] = f(w[o * inF + i] + f(scale * s));
    }
  return { f32: merged, bf16: toBf16(merged), f16: toF16(merged) };
}
