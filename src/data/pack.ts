// Packing short examples into sequences of cutoff_len with per-example boundaries. The assignment of
// examples to sequences is LLaMA-Factory's greedy_knapsack (processor_utils.py): lengths sorted
// ascending, each sequence repeatedly takes the longest example that still fits.
import { IGNORE_INDEX, type EncodedExample, type PackedSequence } from './types.ts';

/** LLaMA-Factory greedy_knapsack on example lengths; returns groups of indices into `lengths`. */
export function greedyKnapsack(lengths: number[], capacity: number): number[][] {
  const order = lengths.map((len, i) => ({ len, i })).filter((x) => x.len <= capacity);
  order.sort((a, b) => a.len - b.len || a.i - b.i);
  const groups: number[][] = [];
  while (order.length) {
    const group: number[] = [];
    let remaining = capacity;
    for (;;) {
      // bisect_right(lengths, remaining) - 1: the last item whose length ≤ remaining
      let lo = 0,
        hi = order.length;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (order[mid].len <= remaining) lo = mid + 1;
        else hi = mid;
      }
      const idx = lo - 1;
      if (idx < 0) break;
      remaining -= order[idx].len;
      group.push(order[idx].i);
      order.splice(idx, 1);
    }
    groups.push(group);
  }
  return groups;
}

/**
 * Packs examples (each at most `cutoffLen` tokens, i.e. already truncated) into sequences of exactly
 * `cutoffLen` tokens. Position ids restart at every example and `seqStarts` marks where each begins,
 * so the attention kernel can keep examples from seeing each other. Padding: `padId`, label -100,
 * position 0.
 */
export function packExamples(examples: EncodedExample[], cutoffLen: number, padId: number): PackedSequence[] {
  const lengths = examples.map((e) => e.inputIds.length);
  const tooLong = lengths.findIndex((l) => l > cutoffLen);
  if (tooLong >= 0)
    throw new Error(
      `packExamples: example of row ${examples[tooLong].row} has ${lengths[tooLong]} tokens > cutoff_len ${cutoffLen}; truncate first`,
    );
  const out: PackedSequence[] = [];
  for (const group of greedyKnapsack(lengths, cutoffLen)) {
    const inputIds = new Int32Array(cutoffLen).fill(padId);
    const labels = new Int32Array(cutoffLen).fill(IGNORE_INDEX);
    const positionIds = new Int32Array(cutoffLen);
    const seqStarts = new Int32Array(group.length + 1);
    const rows: number[] = [];
    let o = 0;
    group.forEach((i, k) => {
      const ex = examples[i];
      seqStarts[k] = o;
      inputIds.set(ex.inputIds, o);
      labels.set(ex.labels, o);
      for (let p = 0; p < ex.inputIds.length; p++) positionIds[o + p] = p;
      o += ex.inputIds.length;
      rows.push(ex.row);
    });
    seqStarts[group.length] = o;
    out.push({ inputIds, labels, positionIds, seqStarts, rows });
  }
  return out;
}

/** A right-padded batch of unpacked examples, row-major [batch, seqLen]. */
export interface PaddedBatch {
  batch: number;
  seqLen: number;
  inputIds: Int32Array;
  labels: Int32Array;
  positionIds: Int32Array;
  /** Real (unpadded) length of each row; the attention kernel masks keys at or past it. */
  lengths: Int32Array;
  rows: number[];
}

/**
 * Pads examples to the longest one (rounded up to `padToMultipleOf`), like transformers'
 * DataCollatorForSeq2Seq with label_pad_token_id -100: padding gets `padId`, label -100, position 0.
 */
export function collateBatch(examples: EncodedExample[], padId: number, padToMultipleOf = 1): PaddedBatch {
  const longest = examples.reduce((m, e) => Math.max(m, e.inputIds.length), 0);
  const seqLen = Math.max(1, Math.ceil(longest / padToMultipleOf) * padToMultipleOf);
  const batch = examples.length;
  const inputIds = new Int32Array(batch * seqLen).fill(padId);
  const labels = new Int32Array(batch * seqLen).fill(IGNORE_INDEX);
  const positionIds = new Int32Array(batch * seqLen);
  const lengths = new Int32Array(batch);
  examples.forEach((e, b) => {
    const o = b * seqLen;
    inputIds.set(e.inputIds, o);
    labels.set(e.labels, o);
    for (let p = 0; p < e.inputIds.length; p++) positionIds[o + p] = p;
    lengths[b] = e.inputIds.length;
  });
  return { batch, seqLen, inputIds, labels, positionIds, lengths, rows: examples.map((e) => e.row) };
}
