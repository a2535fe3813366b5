// Generation metrics for the Evaluate step, as LLaMA-Factory's ComputeSimilarity reports them
// (src/llamafactory/train/sft/metric.py): BLEU-4 over characters with NLTK's sentence_bleu and
// SmoothingFunction().method3, ROUGE-L F1 over words, both ×100 and averaged over rows.
// LLaMA-Factory segments words with jieba; without a Chinese dictionary here, CJK text counts one
// word per character and other text splits into words and punctuation, so ROUGE-L on Chinese can
// differ slightly from theirs (BLEU-4 uses characters in both, so it matches).

/** Characters as NLTK sees `list(text)` (code points). */
export function charTokens(text: string): string[] {
  return Array.from(text);
}

const CJK = /[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af]/u;

/** Words for ROUGE: runs of letters/digits, single CJK characters and single punctuation marks. */
export function wordTokens(text: string): string[] {
  const out: string[] = [];
  for (const m of text.matchAll(/[\p{L}\p{N}_]+|[^\s\p{L}\p{N}_]/gu)) {
    const w = m[0];
    if (CJK.test(w)) {
      let run = '';
      for (const ch of w) {
        if (CJK.test(ch)) {
          if (run) (out.push(run), (run = ''));
          out.push(ch);
        } else run += ch;
      }
      if (run) out.push(run);
    } else out.push(w);
  }
  return out;
}

function ngramCounts(tokens: string[], n: number): Map<string, number> {
  const m = new Map<string, number>();
  for (let i = 0; i + n <= tokens.length; i++) {
    const k = tokens.slice(i, i + n).join('\u0001');
    m.set(k, (m.get(k) ?? 0) + 1);
  }
  return m;
}

/** Sentence BLEU-4 in [0, 1] (nltk.translate.bleu_score.sentence_bleu, uniform weights, method3). */
export function sentenceBleu4(reference: string[], hypothesis: string[]): number {
  const numerators: number[] = [];
  const denominators: number[] = [];
  for (let n = 1; n <= 4; n++) {
    const hyp = ngramCounts(hypothesis, n);
    const ref = ngramCounts(reference, n);
    let clipped = 0;
    let total = 0;
    for (const [k, c] of hyp) {
      clipped += Math.min(c, ref.get(k) ?? 0);
      total += c;
    }
    numerators.push(clipped);
    denominators.push(Math.max(1, total));
  }
  // NLTK returns 0 when no unigram matches at all.
  if (numerators[0] === 0) return 0;
  const c = hypothesis.length;
  const r = reference.length;
  const bp = c > r ? 1 : c === 0 ? 0 : Math.exp(1 - r / c);
  // method3 (NIST geometric sequence smoothing): the k-th zero precision becomes 1 / (2^k · denominator).
  let k = 1;
  let logSum = 0;
  for (let n = 0; n < 4; n++) {
    let p = numerators[n] / denominators[n];
    if (numerators[n] === 0) {
      p = 1 / (2 ** k * denominators[n]);
      k++;
    }
    logSum += 0.25 * Math.log(p);
  }
  return bp * Math.exp(logSum);
}

function lcsLength(a: string[], b: string[]): number {
  if (!a.length || !b.length) return 0;
  let prev = new Uint32Array(b.length + 1);
  let cur = new Uint32Array(b.length + 1);
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++)
      cur[j] = a[i - 1] === b[j - 1] ? prev[j - 1] + 1 : Math.max(prev[j], cur[j - 1]);
    [prev, cur] = [cur, prev];
  }
  return prev[b.length];
}

/** ROUGE-L F1 in [0, 1] (the `rouge` / `rouge-chinese` packages' rouge-l "f"). */
export function rougeL(reference: string[], hypothesis: string[]): number {
  const lcs = lcsLength(reference, hypothesis);
  if (lcs === 0) return 0;
  const p = lcs / hypothesis.length;
  const r = lcs / reference.length;
  return (2 * p * r) / (p + r);
}

export interface SimilarityScores {
  /** Averages ×100, as LLaMA-Factory prints them. */
  bleu4: number;
  rougeL: number;
  rows: number;
}

/** Mean BLEU-4 and ROUGE-L (×100) of predictions against references. */
export function similarity(pairs: { reference: string; prediction: string }[]): SimilarityScores {
  if (!pairs.length) return { bleu4: 0, rougeL: 0, rows: 0 };
  let b = 0;
  let r = 0;
  for (const { reference, prediction } of pairs) {
    b += sentenceBleu4(charTokens(reference), charTokens(prediction));
    const hw = wordTokens(prediction);
    const rw = wordTokens(reference);
    // rouge-chinese raises on empty text; LLaMA-Factory then scores the row 0.
    r += hw.length && rw.length ? rougeL(rw, hw) : 0;
  }
  return { bleu4: (100 * b) / pairs.length, rougeL: (100 * r) / pairs.length, rows: pairs.length };
}

/** Perplexity from a mean token cross-entropy (nats). */
export function perplexity(meanLoss: number): number {
  return Math.exp(meanLoss);
}
