// One micro-batch on the host: token ids, HF-style labels, positions and segments, turned
// into what the decoder uploads (shifted labels, segment ids for packing / padding).
import { IGNORE_INDEX } from '../ops/cross_entropy.ts';

/** B rows of T tokens, row-major (what collateBatch / packExamples produce). */
export interface MicroBatch {
  batch: number;
  seqLen: number;
  inputIds: Int32Array;
  /** Unshifted labels as in transformers (label n is the target of position n−1), −100 ignored. */
  labels?: Int32Array;
  /** Per-token RoPE positions (default 0..T−1 per row). */
  positionIds?: Int32Array;
  /** Per-token segment ids (packing); tokens attend only within their segment; < 0 = padding. */
  segmentIds?: Int32Array;
  /** Real length of each row (right padding after it), as collateBatch gives. */
  lengths?: Int32Array;
  /** Packed rows: example start offsets per row (PackedSequence.seqStarts), one array per row. */
  seqStarts?: Int32Array[];
  /** Preference pairs: rows [0, pairs) are the chosen answers, rows [pairs, 2·pairs) the rejected ones. */
  pairs?: number;
}

export interface HostBatch {
  B: number;
  T: number;
  N: number;
  ids: Int32Array;
  positions: Int32Array;
  segments: Int32Array;
  /** Label of token n = labels[n+1] within its row (−100 at the row end), as ForCausalLMLoss shifts. */
  shifted: Int32Array;
  /** Non-ignored shifted labels. */
  labelCount: number;
}

export function prepareBatch(mb: MicroBatch): HostBatch {
  const { batch: B, seqLen: T } = mb;
  const N = B * T;
  if (!Number.isInteger(B) || !Number.isInteger(T) || B < 1 || T < 1)
    throw new Error(`micro-batch: bad shape ${B}×${T}`);
  const check = (name: string, a: Int32Array | undefined) => {
    if (a && a.length !== N) throw new Error(`micro-batch: ${name} has ${a.length} entries, expected ${B}×${T} = ${N}`);
  };
  check('inputIds', mb.inputIds);
  check('labels', mb.labels);
  check('positionIds', mb.positionIds);
  check('segmentIds', mb.segmentIds);
  const positions = mb.positionIds ?? new Int32Array(N).map((_, n) => n % T);
  let segments: Int32Array;
  if (mb.segmentIds) segments = mb.segmentIds;
  else {
    segments = new Int32Array(N);
    for (let b = 0; b < B; b++) {
      const len = mb.lengths ? mb.lengths[b] : T;
      const starts = mb.seqStarts?.[b];
      for (let t = 0; t < T; t++) {
        const n = b * T + t;
        if (t >= len) segments[n] = -1;
        else if (starts) {
          // Segment = example index inside the row, made unique across rows; past the last example = padding.
          let e = -1;
          for (let i = 0; i + 1 < starts.length; i++) if (t >= starts[i] && t < starts[i + 1]) e = i;
          segments[n] = e < 0 ? -1 : b * 65536 + e;
        } else segments[n] = b;
      }
    }
  }
  const shifted = new Int32Array(N).fill(IGNORE_INDEX);
  let labelCount = 0;
  if (mb.labels) {
    for (let b = 0; b < B; b++) {
      for (let t = 0; t + 1 < T; t++) {
        const l = mb.labels[b * T + t + 1];
        shifted[b * T + t] = l;
        if (l !== IGNORE_INDEX) labelCount++;
      }
    }
  }
  return { B, T, N, ids: mb.inputIds, positions, segments, shifted, labelCount };
}

/** Count of non-ignored (shifted) labels, the HF Trainer's num_items_in_batch for one micro-batch. */
export function countLabels(mb: MicroBatch): number {
  return prepareBatch(mb).labelCount;
}

/** Maximal runs [start, end) of consecutive rows with a label: logits are computed only there. */
export function labelRuns(shifted: Int32Array): [number, number][] {
  const runs: [number, number][] = [];
  let start = -1;
  for (let n = 0; n <= shifted.length; n++) {
    const valid = n < shifted.length && shifted[n] !== IGNORE_INDEX;
    if (valid && start < 0) start = n;
    if (!valid && start >= 0) {
      runs.push([start, n]);
      start = -1;
    }
  }
  return runs;
}
