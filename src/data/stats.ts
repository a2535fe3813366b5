// Dataset statistics for the UI and the CLI.
import { IGNORE_INDEX, type EncodedExample, type Example } from './types.ts';

export interface Histogram {
  /** Bin i counts lengths in [edges[i], edges[i+1]); the last bin includes its upper edge. */
  edges: number[];
  counts: number[];
}

export interface TokenStats {
  examples: number;
  cutoffLen: number;
  /** Lengths before truncation. */
  minTokens: number;
  maxTokens: number;
  meanTokens: number;
  p50Tokens: number;
  p95Tokens: number;
  histogram: Histogram;
  truncated: number;
  truncatedPct: number;
  /** Tokens kept after truncation, and of those the ones with a label (trained). */
  totalTokens: number;
  trainedTokens: number;
}

/** Statistics that need no tokenizer. */
export interface TextStats {
  examples: number;
  chat: number;
  text: number;
  turns: { min: number; max: number; mean: number };
  chars: { min: number; max: number; mean: number; p50: number; p95: number };
  withSystem: number;
  withTools: number;
  duplicateRows: number;
}

function quantile(sorted: number[], q: number): number {
  if (!sorted.length) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * (sorted.length - 1) + 0.5))];
}

/** The smallest 1·10ᵏ, 2·10ᵏ or 5·10ᵏ (k ≥ 0) that is ≥ x: bin edges a reader takes in at a glance. */
export function niceStep(x: number): number {
  if (!(x > 1)) return 1;
  const p = 10 ** Math.floor(Math.log10(x));
  for (const m of [1, 2, 5, 10]) if (m * p >= x) return m * p;
  return 10 * p;
}

/** At most `bins` bins of a nice width over [0, max] (default: the largest value). */
export function histogram(values: number[], bins = 20, max?: number): Histogram {
  const hi = Math.max(1, max ?? values.reduce((a, b) => (b > a ? b : a), 0));
  const width = niceStep(hi / bins);
  const n = Math.max(1, Math.ceil(hi / width));
  const edges = Array.from({ length: n + 1 }, (_, i) => i * width);
  const counts = new Array<number>(n).fill(0);
  for (const v of values) counts[Math.min(n - 1, Math.floor(v / width))]++;
  return { edges, counts };
}

export function tokenStats(encoded: EncodedExample[], cutoffLen: number, bins = 20): TokenStats {
  const lengths = encoded.map((e) => e.fullLength);
  const sorted = [...lengths].sort((a, b) => a - b);
  let truncated = 0,
    totalTokens = 0,
    trainedTokens = 0;
  for (const e of encoded) {
    if (e.truncated) truncated++;
    totalTokens += e.inputIds.length;
    for (let i = 0; i < e.labels.length; i++) if (e.labels[i] !== IGNORE_INDEX) trainedTokens++;
  }
  const n = encoded.length;
  return {
    examples: n,
    cutoffLen,
    minTokens: sorted[0] ?? 0,
    maxTokens: sorted[n - 1] ?? 0,
    meanTokens: n ? lengths.reduce((a, b) => a + b, 0) / n : 0,
    p50Tokens: quantile(sorted, 0.5),
    p95Tokens: quantile(sorted, 0.95),
    // Over the lengths that occur, not up to cutoff_len: short rows under a 2048 cutoff would
    // otherwise all fall in the first bar. The UI marks cutoff_len when it falls inside.
    histogram: histogram(lengths, bins, sorted[n - 1] ?? 0),
    truncated,
    truncatedPct: n ? (100 * truncated) / n : 0,
    totalTokens,
    trainedTokens,
  };
}

export function textStats(examples: Example[], duplicateGroups: number[][] = []): TextStats {
  const chars: number[] = [];
  const turns: number[] = [];
  let chat = 0,
    text = 0,
    withSystem = 0,
    withTools = 0;
  for (const e of examples) {
    if (e.kind === 'text') {
      text++;
      chars.push(e.text.length);
      continue;
    }
    chat++;
    const c = e.conversation;
    turns.push(c.messages.length);
    chars.push(c.messages.reduce((a, m) => a + m.content.length, 0) + (c.system?.length ?? 0));
    if (c.system) withSystem++;
    if (c.tools) withTools++;
  }
  const sc = [...chars].sort((a, b) => a - b);
  const mean = (v: number[]) => (v.length ? v.reduce((a, b) => a + b, 0) / v.length : 0);
  return {
    examples: examples.length,
    chat,
    text,
    turns: {
      min: turns.length ? turns.reduce((a, b) => (b < a ? b : a)) : 0,
      max: turns.reduce((a, b) => (b > a ? b : a), 0),
      mean: mean(turns),
    },
    chars: {
      min: sc[0] ?? 0,
      max: sc[sc.length - 1] ?? 0,
      mean: mean(chars),
      p50: quantile(sc, 0.5),
      p95: quantile(sc, 0.95),
    },
    withSystem,
    withTools,
    duplicateRows: duplicateGroups.reduce((a, g) => a + g.length - 1, 0),
  };
}
