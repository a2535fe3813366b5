// CPU reference for attention, written from the math with a naive (whole-row) softmax in f64.
// Layouts as src/engine/ops/attention.ts: Q/O [N, Hq, D], K/V [Nk, Hkv, D], LSE [Hq, N],
// segment ids per key position; query i sits at key position queryOffset + i.
// Sliding window (transformers masking_utils sliding_window_overlay): key m is visible to the query
// at position p only if p − m < window. Soft-capping (modeling_gemma2.py eager_attention_forward):
// the scaled score s becomes c = softcap·tanh(s / softcap) before the mask and softmax.

export interface AttentionRefShape {
  queries: number;
  keys: number;
  qHeads: number;
  kvHeads: number;
  headDim: number;
  scale?: number;
  queryOffset?: number;
  segmentIds?: ArrayLike<number>;
  /** 0/null/undefined: no window. */
  window?: number | null;
  /** 0/null/undefined: no capping. */
  softcap?: number | null;
}

type Arr = ArrayLike<number>;

function visible(s: AttentionRefShape, i: number, m: number): boolean {
  const pos = (s.queryOffset ?? 0) + i;
  if (m > pos) return false;
  if (s.window && pos - m >= s.window) return false;
  if (!s.segmentIds) return true;
  const sq = s.segmentIds[pos];
  return sq >= 0 && s.segmentIds[m] === sq;
}

/**
 * Softmax row P[i, :] of query head h (0 where masked), its log-sum-exp, and dc/ds per key (the
 * derivative of the capped score by the scaled score: 1 − tanh²(s / softcap), or 1 uncapped);
 * null: sees nothing.
 */
function probabilities(
  s: AttentionRefShape,
  q: Arr,
  k: Arr,
  h: number,
  i: number,
): { p: Float64Array; lse: number; capGrad: Float64Array } | null {
  const { keys: Nk, qHeads: Hq, kvHeads: Hkv, headDim: D } = s;
  const scale = s.scale ?? 1 / Math.sqrt(D);
  const kh = Math.floor(h / (Hq / Hkv));
  const scores = new Float64Array(Nk).fill(-Infinity);
  const capGrad = new Float64Array(Nk).fill(1);
  let max = -Infinity;
  for (let m = 0; m < Nk; m++) {
    if (!visible(s, i, m)) continue;
    let dot = 0;
    for (let d = 0; d < D; d++) dot += q[(i * Hq + h) * D + d] * k[(m * Hkv + kh) * D + d];
    scores[m] = dot * scale;
    if (s.softcap) {
      // c = cap·tanh(s / cap), dc/ds = 1 − tanh²(s / cap)
      const t = Math.tanh(scores[m] / s.softcap);
      scores[m] = s.softcap * t;
      capGrad[m] = 1 - t * t;
    }
    max = Math.max(max, scores[m]);
  }
  if (max === -Infinity) return null;
  let sum = 0;
  for (let m = 0; m < Nk; m++) sum += scores[m] === -Infinity ? 0 : Math.exp(scores[m] - max);
  const p = new Float64Array(Nk);
  for (let m = 0; m < Nk; m++) p[m] = scores[m] === -Infinity ? 0 : Math.exp(scores[m] - max) / sum;
  return { p, lse: max + Math.log(sum), capGrad };
}

export function attentionForwardRef(
  s: AttentionRefShape,
  q: Arr,
  k: Arr,
  v: Arr,
): { out: Float64Array; lse: Float64Array } {
  const { queries: N, keys: Nk, qHeads: Hq, kvHeads: Hkv, headDim: D } = s;
  const out = new Float64Array(N * Hq * D);
  const lse = new Float64Array(Hq * N);
  for (let h = 0; h < Hq; h++) {
    const kh = Math.floor(h / (Hq / Hkv));
    for (let i = 0; i < N; i++) {
      const row = probabilities(s, q, k, h, i);
      if (!row) continue; // padding: O = 0, LSE = 0
      const p = row.p;
      lse[h * N + i] = row.lse;
      for (let m = 0; m < Nk; m++) {
        if (p[m] === 0) continue;
        for (let d = 0; d < D; d++) out[(i * Hq + h) * D + d] += p[m] * v[(m * Hkv + kh) * D + d];
      }
    }
  }
  return { out, lse };
}

/**
 * Gradients of L = Σ dOut ∘ O through the softmax, from the textbook formulas:
 * dV = Pᵀ dO, dP = dO Vᵀ, dC = P ∘ (dP − rowsum(P ∘ dP)) (gradient by the capped scores c),
 * dS = dC ∘ dc/ds (chain rule through c = softcap·tanh(s / softcap): dc/ds = 1 − tanh²(s / softcap);
 * 1 without capping), and with s = scale·q·k: dQ = scale·dS K, dK = scale·dSᵀ Q.
 */
export function attentionBackwardRef(
  s: AttentionRefShape,
  q: Arr,
  k: Arr,
  v: Arr,
  dOut: Arr,
): { dq: Float64Array; dk: Float64Array; dv: Float64Array } {
  const { queries: N, keys: Nk, qHeads: Hq, kvHeads: Hkv, headDim: D } = s;
  const scale = s.scale ?? 1 / Math.sqrt(D);
  const dq = new Float64Array(N * Hq * D);
  const dk = new Float64Array(Nk * Hkv * D);
  const dv = new Float64Array(Nk * Hkv * D);
  const dp = new Float64Array(Nk);
  for (let h = 0; h < Hq; h++) {
    const kh = Math.floor(h / (Hq / Hkv));
    for (let i = 0; i < N; i++) {
      const row = probabilities(s, q, k, h, i);
      if (!row) continue;
      const { p, capGrad } = row;
      const qo = (i * Hq + h) * D;
      let rowSum = 0;
      for (let m = 0; m < Nk; m++) {
        if (p[m] === 0) continue;
        let acc = 0;
        for (let d = 0; d < D; d++) acc += dOut[qo + d] * v[(m * Hkv + kh) * D + d];
        dp[m] = acc;
        rowSum += p[m] * acc;
      }
      for (let m = 0; m < Nk; m++) {
        if (p[m] === 0) continue;
        const ko = (m * Hkv + kh) * D;
        const ds = p[m] * (dp[m] - rowSum) * capGrad[m] * scale;
        for (let d = 0; d < D; d++) {
          dv[ko + d] += p[m] * dOut[qo + d];
          dq[qo + d] += ds * k[ko + d];
          dk[ko + d] += ds * q[qo + d];
        }
      }
    }
  }
  return { dq, dk, dv };
}

/** L = Σ dOut ∘ O in f64: the scalar whose gradient attentionBackwardRef returns. */
export function attentionLossRef(s: AttentionRefShape, q: Arr, k: Arr, v: Arr, dOut: Arr): number {
  const { out } = attentionForwardRef(s, q, k, v);
  let l = 0;
  for (let j = 0; j < out.length; j++) l += out[j] * dOut[j];
  return l;
}

/** Central-difference gradient of attentionLossRef with respect to one input, in f64. */
export function attentionFiniteDifference(
  s: AttentionRefShape,
  inputs: { q: Float64Array; k: Float64Array; v: Float64Array },
  which: 'q' | 'k' | 'v',
  dOut: Arr,
  eps = 1e-5,
): Float64Array {
  const x = inputs[which];
  const g = new Float64Array(x.length);
  for (let j = 0; j < x.length; j++) {
    const keep = x[j];
    x[j] = keep + eps;
    const up = attentionLossRef(s, inputs.q, inputs.k, inputs.v, dOut);
    x[j] = keep - eps;
    const down = attentionLossRef(s, inputs.q, inputs.k, inputs.v, dOut);
    x[j] = keep;
    g[j] = (up - down) / (2 * eps);
  }
  return g;
}
