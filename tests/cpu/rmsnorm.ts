/**
 * CPU reference for shaders/rmsnorm.wgsl, from the definition y = (w + offset)·x/√(mean(x²)+eps), in
 * f64 (offset 1: Gemma's (1 + w)).
 */
export function rmsnormRef(
  x: ArrayLike<number>,
  w: ArrayLike<number>,
  rows: number,
  width: number,
  eps: number,
  offset = 0,
) {
  const y = new Float64Array(rows * width);
  const rstd = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    let ss = 0;
    for (let c = 0; c < width; c++) ss += x[r * width + c] ** 2;
    rstd[r] = 1 / Math.sqrt(ss / width + eps);
    for (let c = 0; c < width; c++) y[r * width + c] = (w[c] + offset) * x[r * width + c] * rstd[r];
  }
  return { y, rstd };
}

/** dL/dx and dL/dw given dL/dy, derived by hand (checked against finite differences in the tests). */
export function rmsnormBackwardRef(
  x: ArrayLike<number>,
  w: ArrayLike<number>,
  dy: ArrayLike<number>,
  rows: number,
  width: number,
  eps: number,
  offset = 0,
) {
  const { rstd } = rmsnormRef(x, w, rows, width, eps);
  const dx = new Float64Array(rows * width);
  const dw = new Float64Array(width);
  for (let r = 0; r < rows; r++) {
    const o = r * width;
    let dot = 0;
    for (let c = 0; c < width; c++) dot += dy[o + c] * (w[c] + offset) * x[o + c];
    const s = rstd[r];
    for (let c = 0; c < width; c++) {
      dx[o + c] = s * (w[c] + offset) * dy[o + c] - (x[o + c] * s * s * s * dot) / width;
      dw[c] += dy[o + c] * x[o + c] * s;
    }
  }
  return { dx, dw };
}
