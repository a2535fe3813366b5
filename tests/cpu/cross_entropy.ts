/** CPU reference for shaders/cross_entropy.wgsl, from the definition, in f64. */
export function crossEntropyRef(
  logits: ArrayLike<number>,
  labels: ArrayLike<number>,
  rows: number,
  vocab: number,
  scale: number,
  ignoreIndex = -100,
  /** The logits are capped values cap·tanh(x / cap): the gradient is taken to the raw x. */
  softcap = 0,
) {
  const rowLoss = new Float64Array(rows);
  const grad = new Float64Array(rows * vocab);
  for (let r = 0; r < rows; r++) {
    const label = labels[r];
    if (label === ignoreIndex) continue;
    const o = r * vocab;
    let m = -Infinity;
    for (let v = 0; v < vocab; v++) m = Math.max(m, logits[o + v]);
    let s = 0;
    for (let v = 0; v < vocab; v++) s += Math.exp(logits[o + v] - m);
    const lse = m + Math.log(s);
    rowLoss[r] = lse - logits[o + label];
    for (let v = 0; v < vocab; v++) {
      const d = softcap ? 1 - (logits[o + v] / softcap) ** 2 : 1;
      grad[o + v] = (Math.exp(logits[o + v] - lse) - (v === label ? 1 : 0)) * scale * d;
    }
  }
  return { rowLoss, grad, total: rowLoss.reduce((a, b) => a + b, 0) * scale };
}

/** Logits from an integer hash, reproduced exactly by tests/reference/gen_cross_entropy.py. */
export function hashedLogits(n: number, salt: number, spread: number): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const h = ((i + salt) * 2654435761) % 4294967296; // < 2^53: exact in f64
    out[i] = (h / 4294967296 - 0.5) * spread;
  }
  return out;
}
