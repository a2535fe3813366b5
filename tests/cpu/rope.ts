/**
 * CPU reference for shaders/rope.wgsl from the definition: θ = f32(position·invFreq[i]) (one
 * f32 product, as transformers), cos/sin and the rotation in f64.
 * x [tokens, heads·D] → x' with x'₁ = x₁cos − x₂sin, x'₂ = x₂cos + x₁sin over the first
 * rotaryDim dimensions of each head (halves of rotaryDim/2), the rest copied (partial rotary,
 * modeling_phi3.py apply_rotary_pos_emb); direction −1 rotates by −θ (the backward).
 */
export function ropeRef(
  x: ArrayLike<number>,
  positions: ArrayLike<number>,
  invFreq: ArrayLike<number>,
  tokens: number,
  heads: number,
  headDim: number,
  direction = 1,
  attentionScaling = 1,
  rotaryDim = headDim,
): Float64Array {
  const half = rotaryDim / 2;
  const out = Float64Array.from(x as ArrayLike<number>);
  for (let n = 0; n < tokens; n++) {
    for (let i = 0; i < half; i++) {
      const theta = Math.fround(Math.fround(positions[n]) * invFreq[i]);
      const c = Math.cos(theta) * attentionScaling;
      const s = Math.sin(theta) * attentionScaling * direction;
      for (let h = 0; h < heads; h++) {
        const j = (n * heads + h) * headDim + i;
        const x1 = x[j];
        const x2 = x[j + half];
        out[j] = x1 * c - x2 * s;
        out[j + half] = x2 * c + x1 * s;
      }
    }
  }
  return out;
}

/** inv_freq = 1/θ^(2i/D), rounded to f32 (transformers' default rope). */
export function defaultInvFreq(base: number, headDim: number): Float32Array {
  const out = new Float32Array(headDim / 2);
  for (let i = 0; i < headDim / 2; i++) out[i] = 1 / base ** ((2 * i) / headDim);
  return out;
}
