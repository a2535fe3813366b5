/**
 * CPU reference for shaders/matvec.wgsl, written from the definition (f64 accumulation):
 * y[yOffset + m·yRowStride + n] = alpha·Σ_k x[xOffset + m·K + k]·W[n·K + k] + beta·y[…].
 * `y` holds the output buffer's initial contents (beta reads it; elements outside the rows stay).
 */
export function matvecRef(
  x: ArrayLike<number>,
  w: ArrayLike<number>,
  y: ArrayLike<number>,
  rows: number,
  N: number,
  K: number,
  opts: { alpha?: number; beta?: number; xOffset?: number; yOffset?: number; yRowStride?: number } = {},
): Float32Array {
  const alpha = opts.alpha ?? 1;
  const beta = opts.beta ?? 0;
  const xo = opts.xOffset ?? 0;
  const yo = opts.yOffset ?? 0;
  const stride = opts.yRowStride ?? N;
  const out = Float32Array.from(y);
  for (let m = 0; m < rows; m++) {
    for (let n = 0; n < N; n++) {
      let s = 0;
      for (let k = 0; k < K; k++) s += x[xo + m * K + k] * w[n * K + k];
      const i = yo + m * stride + n;
      out[i] = alpha * s + (beta !== 0 ? beta * y[i] : 0);
    }
  }
  return out;
}
