/** CPU reference for shaders/embedding.wgsl: gather rows (times `scale`), scatter-add the gradient (f64). */
export function embeddingRef(ids: ArrayLike<number>, w: ArrayLike<number>, hidden: number, scale = 1): Float64Array {
  const out = new Float64Array(ids.length * hidden);
  for (let n = 0; n < ids.length; n++)
    for (let h = 0; h < hidden; h++) out[n * hidden + h] = w[ids[n] * hidden + h] * scale;
  return out;
}

export function embeddingBackwardRef(
  ids: ArrayLike<number>,
  dOut: ArrayLike<number>,
  vocab: number,
  hidden: number,
  scale = 1,
): Float64Array {
  const dW = new Float64Array(vocab * hidden);
  for (let n = 0; n < ids.length; n++)
    for (let h = 0; h < hidden; h++) dW[ids[n] * hidden + h] += dOut[n * hidden + h] * scale;
  return dW;
}

/** The shader's noise stream (PCG hash of seed, stream, element index), ported bit for bit. */
export function pcgHash(x: number): number {
  const state = (Math.imul(x >>> 0, 747796405) + 2891336453) >>> 0;
  const word = Math.imul(((state >>> ((state >>> 28) + 4)) ^ state) >>> 0, 277803737) >>> 0;
  return ((word >>> 22) ^ word) >>> 0;
}

export function neftuneNoise(seed: number, stream: number, index: number): number {
  const key = pcgHash((seed ^ pcgHash(stream)) >>> 0);
  const bits = pcgHash((pcgHash(index) ^ key) >>> 0);
  return Math.fround((bits >>> 8) * (2 / 16777216) - 1);
}
