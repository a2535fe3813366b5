/** CPU reference for shaders/grad_norm.wgsl in f64: ‖g‖₂ over all ranges and torch's clip coefficient. */
export function gradNormRef(ranges: ArrayLike<number>[], maxNorm: number) {
  let sumSq = 0;
  for (const r of ranges) for (let i = 0; i < r.length; i++) sumSq += r[i] * r[i];
  const norm = Math.sqrt(sumSq);
  const clipCoef = maxNorm > 0 ? Math.min(1, maxNorm / (norm + 1e-6)) : 1;
  return { norm, sumSq, clipCoef };
}
