// Data order for training: epochs of seeded shuffles cut into micro-batches and accumulation
// windows, with a cursor that a checkpoint saves so a resumed run sees the same batches.
// The shuffle is our own seeded permutation (not torch's RandomSampler stream).
import { collateBatch } from '../../data/pack.ts';
import type { EncodedExample, PackedSequence } from '../../data/types.ts';
import type { MicroBatch } from '../model/batch.ts';
import { mix32 } from '../ops/lora.ts';

export interface DataLoaderOptions {
  batchSize: number;
  gradientAccumulationSteps: number;
  seed: number;
  padId: number;
  shuffle?: boolean;
  /** Pad each batch to a multiple of this (default 8, as LLaMA-Factory's collator). */
  padToMultipleOf?: number;
}

export interface DataCursor {
  epoch: number;
  /** Micro-batches of this epoch already handed out. */
  micro: number;
}

/** Fisher–Yates with a counter-hash generator: permutation of 0..n-1 for (seed, epoch). */
export function epochOrder(n: number, seed: number, epoch: number): Int32Array {
  const order = Int32Array.from({ length: n }, (_, i) => i);
  let ctr = 0;
  const next = () => mix32((mix32((seed ^ 0x5bd1e995) >>> 0) ^ mix32(epoch + 0x27d4eb2f) ^ ctr++) >>> 0) / 2 ** 32;
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(next() * (i + 1));
    const t = order[i];
    order[i] = order[j];
    order[j] = t;
  }
  return order;
}

type Item = EncodedExample | PackedSequence;

function isPacked(x: Item): x is PackedSequence {
  return (x as PackedSequence).seqStarts !== undefined;
}

export class DataLoader {
  private cursor: DataCursor = { epoch: 0, micro: 0 };
  private order: Int32Array;

  constructor(
    readonly items: readonly Item[],
    readonly opts: DataLoaderOptions,
  ) {
    if (!items.length) throw new Error('training data is empty');
    if (!(opts.batchSize >= 1) || !(opts.gradientAccumulationSteps >= 1))
      throw new Error('batch size and gradient accumulation steps must be ≥ 1');
    this.order = this.makeOrder(0);
  }

  /** Micro-batches per epoch (the last one may be smaller), as len(DataLoader). */
  get microBatchesPerEpoch(): number {
    return Math.ceil(this.items.length / this.opts.batchSize);
  }

  /** Optimizer steps per epoch: full windows plus a shorter last one (transformers ≥ 4.46). */
  get stepsPerEpoch(): number {
    return Math.ceil(this.microBatchesPerEpoch / this.opts.gradientAccumulationSteps);
  }

  state(): DataCursor {
    return { ...this.cursor };
  }

  setState(c: DataCursor): void {
    if (
      !Number.isInteger(c.epoch) ||
      !Number.isInteger(c.micro) ||
      c.epoch < 0 ||
      c.micro < 0 ||
      c.micro > this.microBatchesPerEpoch
    ) {
      throw new Error(
        `data cursor ${JSON.stringify(c)} does not fit this dataset (${this.microBatchesPerEpoch} micro-batches per epoch)`,
      );
    }
    this.cursor = { ...c };
    this.order = this.makeOrder(c.epoch);
  }

  /** Fractional epoch reached (for logs). */
  get epoch(): number {
    return this.cursor.epoch + this.cursor.micro / this.microBatchesPerEpoch;
  }

  private makeOrder(epoch: number): Int32Array {
    return this.opts.shuffle === false
      ? Int32Array.from({ length: this.items.length }, (_, i) => i)
      : epochOrder(this.items.length, this.opts.seed, epoch);
  }

  private microBatch(k: number): MicroBatch {
    const bs = this.opts.batchSize;
    const idx = Array.from(this.order.subarray(k * bs, Math.min(this.items.length, (k + 1) * bs)));
    const picked = idx.map((i) => this.items[i]);
    if (picked.every(isPacked)) {
      const T = picked[0].inputIds.length;
      const B = picked.length;
      const cat = (f: (p: PackedSequence) => Int32Array) => {
        const out = new Int32Array(B * T);
        picked.forEach((p, b) => out.set(f(p as PackedSequence), b * T));
        return out;
      };
      return {
        batch: B,
        seqLen: T,
        inputIds: cat((p) => p.inputIds),
        labels: cat((p) => p.labels),
        positionIds: cat((p) => p.positionIds),
        seqStarts: picked.map((p) => (p as PackedSequence).seqStarts),
      };
    }
    if (picked.some(isPacked)) throw new Error('training data mixes packed and unpacked examples');
    const examples = picked as EncodedExample[];
    if (examples.some((e) => e.rejected)) return this.pairBatch(examples);
    const pb = collateBatch(examples, this.opts.padId, this.opts.padToMultipleOf ?? 8);
    return {
      batch: pb.batch,
      seqLen: pb.seqLen,
      inputIds: pb.inputIds,
      labels: pb.labels,
      positionIds: pb.positionIds,
      lengths: pb.lengths,
    };
  }

  /** Preference pairs: all chosen sequences, then all rejected ones (TRL concatenated_forward), padded together. */
  private pairBatch(pairs: EncodedExample[]): MicroBatch {
    const rows: EncodedExample[] = [...pairs];
    for (const p of pairs) {
      if (!p.rejected) throw new Error(`training data mixes preference pairs and single examples (row ${p.row})`);
      rows.push({ ...p, ...p.rejected, truncated: p.truncated, rejected: undefined });
    }
    const pb = collateBatch(rows, this.opts.padId, this.opts.padToMultipleOf ?? 8);
    return {
      batch: pb.batch,
      seqLen: pb.seqLen,
      inputIds: pb.inputIds,
      labels: pb.labels,
      positionIds: pb.positionIds,
      lengths: pb.lengths,
      pairs: pairs.length,
    };
  }

  /** The micro-batches of the next optimizer step (shorter at the end of an epoch). */
  nextWindow(): MicroBatch[] {
    if (this.cursor.micro >= this.microBatchesPerEpoch) {
      this.cursor = { epoch: this.cursor.epoch + 1, micro: 0 };
      this.order = this.makeOrder(this.cursor.epoch);
    }
    const out: MicroBatch[] = [];
    while (out.length < this.opts.gradientAccumulationSteps && this.cursor.micro < this.microBatchesPerEpoch) {
      out.push(this.microBatch(this.cursor.micro));
      this.cursor.micro++;
    }
    return out;
  }
}
