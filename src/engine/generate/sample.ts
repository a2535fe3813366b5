// Next-token choice from last-position logits, with the rules of Hugging Face transformers
// `src/transformers/generation/logits_process.py` (RepetitionPenaltyLogitsProcessor,
// TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper) applied in the order
// `GenerationMixin._get_logits_processor` builds them: repetition penalty (a processor, also
// in greedy mode), then — only when sampling — temperature, top-k, top-p; then softmax and a
// multinomial draw, or argmax when `doSample` is false.
// Everything runs on the host: one [V] row per token is cheap next to the forward pass.

export interface SamplingOptions {
  /** > 0; 1 leaves the logits as they are. Ignored when doSample is false. */
  temperature: number;
  /** (0, 1]; 1 disables nucleus filtering. Ignored when doSample is false. */
  topP: number;
  /** ≥ 0; 0 disables top-k. Ignored when doSample is false. */
  topK: number;
  /** > 0; 1 disables. Applied in greedy mode too, as transformers does. */
  repetitionPenalty: number;
  /** false = greedy (argmax, first index on ties). */
  doSample: boolean;
}

export const DEFAULT_SAMPLING: SamplingOptions = {
  temperature: 1,
  topP: 1,
  topK: 0,
  repetitionPenalty: 1,
  doSample: false,
};

export class SamplingError extends Error {
  override readonly name = 'SamplingError';
}

/** Throws naming the option when a value is outside what transformers accepts. */
export function checkSamplingOptions(o: SamplingOptions): void {
  const bad = (k: string, v: number, why: string) => {
    throw new SamplingError(`${k} ${why}, got ${v}`);
  };
  if (!(o.repetitionPenalty > 0) || !Number.isFinite(o.repetitionPenalty))
    bad('repetition_penalty', o.repetitionPenalty, 'must be a finite number > 0');
  if (!o.doSample) return;
  if (!(o.temperature > 0) || !Number.isFinite(o.temperature))
    bad('temperature', o.temperature, 'must be a finite number > 0 (use do_sample: false for greedy decoding)');
  if (!(o.topP > 0 && o.topP <= 1)) bad('top_p', o.topP, 'must be in (0, 1]');
  if (!Number.isInteger(o.topK) || o.topK < 0) bad('top_k', o.topK, 'must be an integer ≥ 0');
}

/**
 * RepetitionPenaltyLogitsProcessor: every token id seen in `history` (prompt + generated, each
 * once) gets score/penalty when its score is positive and score·penalty otherwise. In place.
 */
export function applyRepetitionPenalty(scores: Float32Array, history: ArrayLike<number>, penalty: number): void {
  if (penalty === 1) return;
  const seen = new Set<number>();
  for (let i = 0; i < history.length; i++) {
    const id = history[i];
    if (seen.has(id)) continue;
    seen.add(id);
    if (id < 0 || id >= scores.length)
      throw new SamplingError(`history token id ${id} is outside the vocabulary (${scores.length})`);
    const s = scores[id];
    scores[id] = s < 0 ? s * penalty : s / penalty;
  }
}

/** TemperatureLogitsWarper: scores / temperature. In place. */
export function applyTemperature(scores: Float32Array, temperature: number): void {
  if (temperature === 1) return;
  for (let i = 0; i < scores.length; i++) scores[i] = scores[i] / temperature;
}

/**
 * TopKLogitsWarper: keeps every score ≥ the k-th largest (ties at the threshold all survive, as
 * `scores < topk(scores, k)[..., -1]` does); k is raised to minKeep and capped at V. In place.
 */
export function applyTopK(scores: Float32Array, topK: number, minKeep = 1): void {
  if (topK <= 0) return;
  const k = Math.min(Math.max(topK, minKeep), scores.length);
  if (k >= scores.length) return;
  const kth = kthLargest(scores, k);
  for (let i = 0; i < scores.length; i++) if (scores[i] < kth) scores[i] = -Infinity;
}

/** The k-th largest value (with multiplicity): a size-k min-heap, O(V log k), no copy of the row. */
export function kthLargest(x: Float32Array, k: number): number {
  if (k > 4096) return Float32Array.from(x).sort()[x.length - k];
  const heap = new Float32Array(k);
  let n = 0;
  const down = (i: number) => {
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < n && heap[l] < heap[m]) m = l;
      if (r < n && heap[r] < heap[m]) m = r;
      if (m === i) return;
      const t = heap[i];
      heap[i] = heap[m];
      heap[m] = t;
      i = m;
    }
  };
  for (let i = 0; i < x.length; i++) {
    const v = x[i];
    if (n < k) {
      let j = n++;
      heap[j] = v;
      while (j > 0) {
        const p = (j - 1) >> 1;
        if (heap[p] <= heap[j]) break;
        const t = heap[p];
        heap[p] = heap[j];
        heap[j] = t;
        j = p;
      }
    } else if (v > heap[0]) {
      heap[0] = v;
      down(0);
    }
  }
  return heap[0];
}

/**
 * TopPLogitsWarper: sort ascending, softmax, cumulative sum; drop the tokens whose cumulative
 * probability is ≤ 1 − top_p, always keeping the `minKeep` most probable. In place.
 * Tokens already at −∞ carry zero probability and stay removed. Ties are ordered by index (a
 * stable sort), so equal scores drop lowest index first. A native numeric sort of the weights
 * finds the cut (a 152k vocabulary costs milliseconds, not an index sort with a comparator).
 */
export function applyTopP(scores: Float32Array, topP: number, minKeep = 1): void {
  if (topP >= 1) return;
  let max = -Infinity;
  let live = 0;
  for (let i = 0; i < scores.length; i++) {
    if (scores[i] === -Infinity) continue;
    live++;
    if (scores[i] > max) max = scores[i];
  }
  if (live === 0) return;
  const e = new Float64Array(scores.length);
  const sorted = new Float64Array(live);
  let sum = 0;
  for (let i = 0, j = 0; i < scores.length; i++) {
    if (scores[i] === -Infinity) continue;
    e[i] = Math.exp(scores[i] - max);
    sorted[j++] = e[i];
  }
  for (let j = 0; j < live; j++) sum += sorted[j];
  if (live > 4096 && minKeep === 1) {
    topPBucketed(scores, e, sum, 1 - topP);
    return;
  }
  sorted.sort();
  sum = 0;
  for (let j = 0; j < live; j++) sum += sorted[j];
  // k = length of the ascending prefix to remove
  const threshold = 1 - topP;
  const keepFrom = live - Math.min(minKeep, live);
  let k = 0;
  let cum = 0;
  while (k < keepFrom) {
    cum += sorted[k] / sum;
    if (cum > threshold) break;
    k++;
  }
  if (k === 0) return;
  const cut = sorted[k - 1];
  let below = 0;
  for (let j = 0; j < k && sorted[j] < cut; j++) below++;
  let tiesToDrop = k - below;
  for (let i = 0; i < scores.length; i++) {
    if (scores[i] === -Infinity) continue;
    if (e[i] < cut) scores[i] = -Infinity;
    else if (e[i] === cut && tiesToDrop > 0) {
      scores[i] = -Infinity;
      tiesToDrop--;
    }
  }
}

/**
 * Top-p for large live sets without sorting them all: weights are bucketed by half-octaves of
 * their size; whole buckets of the smallest weights whose cumulative mass stays ≤ 1 − p are
 * removed at once, and only the bucket where the cumulative mass crosses it (and the larger ones)
 * are sorted. The most probable token (weight 1, bucket 0) is always kept.
 */
function topPBucketed(scores: Float32Array, e: Float64Array, sum: number, threshold: number): void {
  const B = 128;
  const bucketOf = (w: number) => Math.min(B - 1, Math.floor(-Math.log2(w) * 2));
  const mass = new Float64Array(B);
  for (let i = 0; i < scores.length; i++) if (scores[i] !== -Infinity) mass[bucketOf(e[i])] += e[i];
  let cum = 0;
  let cross = 0;
  for (let b = B - 1; b >= 0; b--) {
    if ((cum + mass[b]) / sum > threshold) {
      cross = b;
      break;
    }
    cum += mass[b];
  }
  const cand: number[] = [];
  for (let i = 0; i < scores.length; i++) {
    if (scores[i] === -Infinity) continue;
    if (bucketOf(e[i]) > cross) scores[i] = -Infinity;
    else cand.push(i);
  }
  cand.sort((a, b) => e[a] - e[b] || a - b);
  let c = cum / sum;
  for (let j = 0; j < cand.length - 1; j++) {
    c += e[cand[j]] / sum;
    if (c <= threshold) scores[cand[j]] = -Infinity;
    else break;
  }
}

/** Softmax in f64 (−∞ → 0). */
export function softmax(scores: Float32Array): Float64Array {
  let max = -Infinity;
  for (let i = 0; i < scores.length; i++) if (scores[i] > max) max = scores[i];
  const p = new Float64Array(scores.length);
  if (max === -Infinity) throw new SamplingError('every token has probability zero (all scores are −∞)');
  let sum = 0;
  for (let i = 0; i < scores.length; i++) sum += p[i] = Math.exp(scores[i] - max);
  for (let i = 0; i < scores.length; i++) p[i] /= sum;
  return p;
}

/** First index of the largest score (torch.argmax on CPU returns the first maximum). */
export function argmax(scores: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < scores.length; i++) if (scores[i] > scores[best]) best = i;
  return best;
}

/** Inverse-CDF draw: the first index whose cumulative probability exceeds u ∈ [0, 1). */
export function drawFrom(probs: Float64Array, u: number): number {
  let cum = 0;
  let last = -1;
  for (let i = 0; i < probs.length; i++) {
    if (probs[i] === 0) continue;
    cum += probs[i];
    last = i;
    if (u < cum) return i;
  }
  if (last < 0) throw new SamplingError('no token has a non-zero probability');
  return last; // u within rounding of 1
}

/**
 * Applies the processors/warpers to a copy of `logits` and returns the scores the choice is
 * made from (−∞ where filtered). Exposed for tests and for showing probabilities in the UI.
 */
export function processLogits(logits: Float32Array, history: ArrayLike<number>, o: SamplingOptions): Float32Array {
  checkSamplingOptions(o);
  for (let i = 0; i < logits.length; i++) {
    if (Number.isNaN(logits[i])) throw new SamplingError(`logit ${i} is NaN: the model produced non-finite values`);
  }
  const scores = Float32Array.from(logits);
  applyRepetitionPenalty(scores, history, o.repetitionPenalty);
  if (!o.doSample) return scores;
  applyTemperature(scores, o.temperature);
  applyTopK(scores, o.topK);
  applyTopP(scores, o.topP);
  return scores;
}

/** The next token: argmax when !doSample, else a draw with `rng()` ∈ [0, 1). */
export function sampleToken(
  logits: Float32Array,
  history: ArrayLike<number>,
  o: SamplingOptions,
  rng: () => number,
): number {
  const scores = processLogits(logits, history, o);
  if (!o.doSample) return argmax(scores);
  return drawFrom(softmax(scores), rng());
}

/**
 * Seeded uniform generator in [0, 1) with 53 random bits per draw (xoshiro128** from a
 * splitmix32-expanded seed), so a chat reply replays exactly for a given seed.
 */
export function seededRng(seed: number): () => number {
  let x = seed >>> 0;
  const split = () => {
    x = (x + 0x9e3779b9) >>> 0;
    let z = x;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    return (z ^ (z >>> 16)) >>> 0;
  };
  const s = new Uint32Array([split(), split(), split(), split()]);
  if ((s[0] | s[1] | s[2] | s[3]) === 0) s[0] = 1;
  const next = () => {
    const r = Math.imul(rotl(Math.imul(s[1], 5) >>> 0, 7), 9) >>> 0;
    const t = (s[1] << 9) >>> 0;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 11);
    return r;
  };
  return () => ((next() >>> 5) * 67108864 + (next() >>> 6)) / 9007199254740992;
}

function rotl(v: number, k: number): number {
  return ((v << k) | (v >>> (32 - k))) >>> 0;
}
