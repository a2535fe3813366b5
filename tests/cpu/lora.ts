// CPU reference for LoRA (src/engine/ops/lora.ts), in float64, written from PEFT's formula:
//   y = x·Wᵀ + s·(dropout(x)·Aᵀ)·Bᵀ,  dropout keeps element i iff hash(seed, step, module, i) ≥ ⌊p·2³²⌉.
// The hash is re-derived here from its definition (lowbias32 chained over the four counters).

function lowbias32(v: number): number {
  let x = v >>> 0;
  x = (x ^ (x >>> 16)) >>> 0;
  x = Math.imul(x, 0x7feb352d) >>> 0;
  x = (x ^ (x >>> 15)) >>> 0;
  x = Math.imul(x, 0x846ca68b) >>> 0;
  return (x ^ (x >>> 16)) >>> 0;
}

export interface DropoutSpec {
  p: number;
  seed: number;
  step: number;
  moduleId: number;
}

/** Multiplier per element of x [N·in]: 0 when dropped, f32(1/(1−p)) when kept. */
export function dropoutMaskRef(n: number, d: DropoutSpec | undefined): Float64Array {
  const m = new Float64Array(n);
  if (!d || d.p === 0) return m.fill(1);
  const thr = Math.min(0xffffffff, Math.round(d.p * 2 ** 32));
  const scale = Math.fround(1 / (1 - d.p));
  const k = lowbias32((d.moduleId ^ lowbias32((d.step ^ lowbias32((d.seed + 0x9e3779b9) >>> 0)) >>> 0)) >>> 0);
  for (let i = 0; i < n; i++) m[i] = lowbias32((i ^ k) >>> 0) >= thr ? scale : 0;
  return m;
}

export interface LoraRefInput {
  N: number;
  fin: number;
  fout: number;
  r: number;
  scale: number;
  /** Base weight [out, in] (already dequantized), or null for the adapter alone. */
  w: ArrayLike<number> | null;
  a: ArrayLike<number>;
  b: ArrayLike<number>;
  x: ArrayLike<number>;
  mask: Float64Array;
}

export function loraForwardRef(p: LoraRefInput): { y: Float64Array; t: Float64Array } {
  const { N, fin, fout, r } = p;
  const t = new Float64Array(N * r);
  for (let n = 0; n < N; n++)
    for (let k = 0; k < r; k++) {
      let s = 0;
      for (let i = 0; i < fin; i++) s += p.x[n * fin + i] * p.mask[n * fin + i] * p.a[k * fin + i];
      t[n * r + k] = s;
    }
  const y = new Float64Array(N * fout);
  for (let n = 0; n < N; n++)
    for (let o = 0; o < fout; o++) {
      let base = 0;
      if (p.w) for (let i = 0; i < fin; i++) base += p.x[n * fin + i] * p.w[o * fin + i];
      let l = 0;
      for (let k = 0; k < r; k++) l += t[n * r + k] * p.b[o * r + k];
      y[n * fout + o] = base + p.scale * l;
    }
  return { y, t };
}

/** Gradients of L = Σ y·dY: dA, dB and dX (base path included when w is given). */
export function loraBackwardRef(
  p: LoraRefInput,
  dy: ArrayLike<number>,
): { dA: Float64Array; dB: Float64Array; dX: Float64Array } {
  const { N, fin, fout, r, scale } = p;
  const { t } = loraForwardRef(p);
  const dB = new Float64Array(fout * r);
  for (let o = 0; o < fout; o++)
    for (let k = 0; k < r; k++) {
      let s = 0;
      for (let n = 0; n < N; n++) s += dy[n * fout + o] * t[n * r + k];
      dB[o * r + k] = scale * s;
    }
  const g = new Float64Array(N * r);
  for (let n = 0; n < N; n++)
    for (let k = 0; k < r; k++) {
      let s = 0;
      for (let o = 0; o < fout; o++) s += dy[n * fout + o] * p.b[o * r + k];
      g[n * r + k] = scale * s;
    }
  const dA = new Float64Array(r * fin);
  for (let k = 0; k < r; k++)
    for (let i = 0; i < fin; i++) {
      let s = 0;
      for (let n = 0; n < N; n++) s += g[n * r + k] * p.x[n * fin + i] * p.mask[n * fin + i];
      dA[k * fin + i] = s;
    }
  const dX = new Float64Array(N * fin);
  for (let n = 0; n < N; n++)
    for (let i = 0; i < fin; i++) {
      let s = 0;
      for (let k = 0; k < r; k++) s += g[n * r + k] * p.a[k * fin + i];
      let base = 0;
      if (p.w) for (let o = 0; o < fout; o++) base += dy[n * fout + o] * p.w[o * fin + i];
      dX[n * fin + i] = s * p.mask[n * fin + i] + base;
    }
  return { dA, dB, dX };
}
