// Generation forward: prefill + KV-cache decode, adapter on or off (for A/B chat).
import { readF32 } from '../gpu/transfer.ts';
import type { Tensor } from '../gpu/tensor.ts';
import { tuneMatvec } from '../ops/matvec.ts';
import { createTensor, releaseTensor, tensorSpec } from '../gpu/transfer.ts';
import { prepareBatch } from './batch.ts';
import { Decoder } from './decoder.ts';
import type { LoraSet, Model } from './model.ts';

/** Per-layer K and V of up to `capacity` tokens (post-RoPE), token-major [capacity, kvHeads·headDim]. */
export class KvCache {
  readonly k: Tensor[] = [];
  readonly v: Tensor[] = [];
  length = 0;

  constructor(
    readonly model: Model,
    readonly capacity: number,
  ) {
    const c = model.config;
    if (!Number.isInteger(capacity) || capacity < 1)
      throw new Error(`KV cache capacity must be a positive integer, got ${capacity}`);
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
  const V = model.config.vocabSize;
  for (const [i, id] of ids.entries())
    if (!(id >= 0 && id < V)) throw new Error(`token ${i} has id ${id}, outside the vocabulary [0, ${V})`);
  const offset = cache?.length ?? 0;
  if (cache && offset + N > cache.capacity)
    throw new Error(`KV cache full: ${offset} + ${N} tokens exceed its capacity ${cache.capacity}`);
  const hb = prepareBatch({
    batch: 1,
    seqLen: N,
    inputIds: ids,
    positionIds: Int32Array.from({ length: N }, (_, i) => offset + i),
  });
  // Decode steps run matrix-vector kernels: measure their split on this adapter once.
  await tuneMatvec(model.gpu);
  const dec = inferenceDecoder(model, lora);
  const inputs = dec.uploadInputs(hb, null);
  if (cache) inputs.kv = { k: cache.k, v: cache.v, offset };
  const logits = createTensor(model.gpu, tensorSpec('f32', [V], 'scratch', 'logits'));
  try {
    await dec.forwardLast(inputs, logits);
    const out = await readF32(model.gpu, logits);
    if (cache) cache.length = offset + N;
    return out;
  } finally {
    dec.releaseInputs(inputs);
    releaseTensor(model.gpu, logits);
  }
}
