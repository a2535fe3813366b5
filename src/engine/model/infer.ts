// Generation forward: prefill + KV-cache decode, adapter on or off (for A/B chat).
import { readF32 } from '../gpu/transfer.ts';
import type { Tensor } from '../gpu/tensor.ts';
import { MATVEC_MAX_ROWS } from '../ops/matvec.ts';
import { tuneMatmul, tuneMatvec } from '../ops/tuner.ts';
import { createTensor, releaseTensor, tensorSpec } from '../gpu/transfer.ts';
import { prepareBatch } from './batch.ts';
import { Decoder, type PassInputs } from './decoder.ts';
import { modelMatmulShapes } from './matmul-shapes.ts';
import type { LoraSet, Model } from './model.ts';

/** Per-layer K and V of up to `capacity` tokens (post-RoPE), token-major [capacity, kvHeads·headDim]. */
export class KvCache {
  readonly k: Tensor[] = [];
  readonly v: Tensor[] = [];
  /** The tokens behind the cached entries (LongRoPE re-encodes them when it switches tables). */
  readonly ids: Int32Array;
  length = 0;

  constructor(
    readonly model: Model,
    readonly capacity: number,
  ) {
    const c = model.config;
    if (!Number.isInteger(capacity) || capacity < 1)
      throw new Error(`KV cache capacity must be a positive integer, got ${capacity}`);
    this.ids = new Int32Array(capacity);
    const shape = [capacity, c.numKvHeads * c.headDim];
    for (let l = 0; l < c.numLayers; l++) {
      this.k.push(createTensor(model.gpu, tensorSpec('f32', shape, 'activations', `kv.k${l}`)));
      this.v.push(createTensor(model.gpu, tensorSpec('f32', shape, 'activations', `kv.v${l}`)));
    }
  }

  reset(): void {
    this.length = 0;
  }

  release(): void {
    for (const t of [...this.k, ...this.v]) releaseTensor(this.model.gpu, t);
    this.k.length = 0;
    this.v.length = 0;
  }
}

// Weak on both keys: a chat that swaps adapters must not keep every released LoraSet reachable.
const decoders = new WeakMap<Model, { base?: Decoder; tuned: WeakMap<LoraSet, Decoder> }>();

function inferenceDecoder(model: Model, lora: LoraSet | null): Decoder {
  let m = decoders.get(model);
  if (!m) decoders.set(model, (m = { tuned: new WeakMap() }));
  if (!lora) return (m.base ??= new Decoder(model, null, { inference: true }));
  let d = m.tuned.get(lora);
  if (!d) m.tuned.set(lora, (d = new Decoder(model, lora, { inference: true })));
  return d;
}

/**
 * Runs `ids` (the new tokens) through the model and returns the logits of the last one [V].
 * With a cache the tokens continue after cache.length and are appended to it; without one they
 * are a whole sequence from position 0.
 */
export async function forwardLogits(
  model: Model,
  lora: LoraSet | null,
  ids: Int32Array,
  cache: KvCache | null,
): Promise<Float32Array> {
  const N = ids.length;
  if (!N) throw new Error('forwardLogits needs at least one token');
  checkIds(model, ids);
  let offset = cache?.length ?? 0;
  if (cache && offset + N > cache.capacity)
    throw new Error(`KV cache full: ${offset} + ${N} tokens exceed its capacity ${cache.capacity}`);
  const rope = model.config.rope;
  if (cache) {
    cache.ids.set(ids, offset);
    // LongRoPE: the cached keys were rotated with the short factors; the first pass past
    // original_max_position_embeddings re-encodes the whole sequence with the long ones, as
    // Phi3ForCausalLM.prepare_inputs_for_generation drops its cache there (modeling_phi3.py).
    if (
      rope.type === 'longrope' &&
      offset > 0 &&
      offset <= rope.originalMaxPositionEmbeddings &&
      offset + N > rope.originalMaxPositionEmbeddings
    ) {
      ids = cache.ids.slice(0, offset + N);
      offset = 0;
    }
  }
  const positions = Int32Array.from({ length: ids.length }, (_, i) => offset + i);
  const out = await runTokens(model, lora, ids, positions, 1, (inputs) => {
    if (cache) inputs.kv = { k: cache.k, v: cache.v, offset };
  });
  if (cache) cache.length = offset + ids.length;
  return out;
}

/**
 * One decode step of several sequences at once (batched generation): ids[n] is the next token of
 * the sequence held in caches[n], appended to it. Returns the logits of each row [n·V, (n+1)·V).
 * Up to MATVEC_MAX_ROWS rows share each weight read of the matrix-vector kernels.
 */
export async function forwardLogitsRows(
  model: Model,
  lora: LoraSet | null,
  ids: Int32Array,
  caches: readonly KvCache[],
): Promise<Float32Array> {
  if (!ids.length || ids.length !== caches.length)
    throw new Error(`a batched step needs one token per cache, got ${ids.length} tokens for ${caches.length} caches`);
  if (new Set(caches).size !== caches.length) throw new Error('a batched step needs a distinct cache per row');
  checkIds(model, ids);
  for (const [n, cache] of caches.entries()) {
    if (cache.model !== model) throw new Error(`cache ${n} belongs to another model`);
    if (cache.length + 1 > cache.capacity)
      throw new Error(`KV cache ${n} full: it holds its capacity of ${cache.capacity} tokens`);
  }
  const positions = Int32Array.from(caches, (c) => c.length);
  const c = model.config;
  // LongRoPE picks its table per pass: rows on both sides of original_max_position_embeddings,
  // or one crossing it (its cache is re-encoded), take their own passes.
  if (c.rope.type === 'longrope') {
    const orig = c.rope.originalMaxPositionEmbeddings;
    const long = caches.map((cache) => cache.length + 1 > orig);
    if (long.some((x) => x) && !caches.every((cache) => cache.length > orig)) {
      const rows = new Float32Array(ids.length * c.vocabSize);
      for (const [n, cache] of caches.entries())
        rows.set(await forwardLogits(model, lora, ids.subarray(n, n + 1), cache), n * c.vocabSize);
      return rows;
    }
  }
  // Dynamic NTK RoPE rescales per pass from its largest position: past the trained length each
  // row takes its own pass, so every sequence sees the table it would see decoding alone.
  if (c.rope.type === 'dynamic' && Math.max(...positions) + 1 > c.maxPositionEmbeddings) {
    const rows = new Float32Array(ids.length * c.vocabSize);
    for (const [n, cache] of caches.entries())
      rows.set(await forwardLogits(model, lora, ids.subarray(n, n + 1), cache), n * c.vocabSize);
    return rows;
  }
  const out = await runTokens(model, lora, ids, positions, ids.length, (inputs) => {
    inputs.kvRows = caches.map((c) => ({ k: c.k, v: c.v, offset: c.length }));
  });
  for (const [n, cache] of caches.entries()) {
    cache.ids[cache.length] = ids[n];
    cache.length += 1;
  }
  return out;
}

function checkIds(model: Model, ids: Int32Array): void {
  const V = model.config.vocabSize;
  for (const [i, id] of ids.entries())
    if (!(id >= 0 && id < V)) throw new Error(`token ${i} has id ${id}, outside the vocabulary [0, ${V})`);
}

/** Runs `ids` at `positions` through the model (caches attached by `attach`); logits of the last `rows` tokens. */
async function runTokens(
  model: Model,
  lora: LoraSet | null,
  ids: Int32Array,
  positions: Int32Array,
  rows: number,
  attach: (inputs: PassInputs) => void,
): Promise<Float32Array> {
  const hb = prepareBatch({ batch: 1, seqLen: ids.length, inputIds: ids, positionIds: positions });
  // Decode steps run matrix-vector kernels: measure their split on this adapter once. A prefill
  // longer than that runs the tiled products: measure their variants for its shape classes
  // (cheap once a training run has measured them; each class is timed once per adapter).
  await tuneMatvec(model.gpu);
  if (ids.length > MATVEC_MAX_ROWS)
    await tuneMatmul(
      model.gpu,
      modelMatmulShapes(model, { tokens: ids.length, backward: false, loraRank: lora?.config.rank, prefill: true }),
    );
  const dec = inferenceDecoder(model, lora);
  const inputs = dec.uploadInputs(hb, null);
  attach(inputs);
  const V = model.config.vocabSize;
  const logits = createTensor(model.gpu, tensorSpec('f32', [rows, V], 'scratch', 'logits'));
  try {
    await dec.forwardLast(inputs, logits, rows);
    return await readF32(model.gpu, logits);
  } finally {
    dec.releaseInputs(inputs);
    releaseTensor(model.gpu, logits);
  }
}
