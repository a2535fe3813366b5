/** CPU reference for shaders/adamw.wgsl: torch.optim.AdamW's update (torch/optim/adamw.py, the algorithm in its docs), in f64. */
export function adamwRef(
  p: Float64Array,
  g: ArrayLike<number>,
  m: Float64Array,
  v: Float64Array,
  o: { lr: number; weightDecay: number; step: number; beta1?: number; beta2?: number; eps?: number; clipCoef?: number },
): void {
  const b1 = o.beta1 ?? 0.9;
  const b2 = o.beta2 ?? 0.999;
  const eps = o.eps ?? 1e-8;
  const bc1 = 1 - b1 ** o.step;
  const bc2 = 1 - b2 ** o.step;
  for (let i = 0; i < p.length; i++) {
    const gi = g[i] * (o.clipCoef ?? 1);
    p[i] *= 1 - o.lr * o.weightDecay;
    m[i] = b1 * m[i] + (1 - b1) * gi;
    v[i] = b2 * v[i] + (1 - b2) * gi * gi;
    p[i] -= ((o.lr / bc1) * m[i]) / (Math.sqrt(v[i]) / Math.sqrt(bc2) + eps);
  }
}
