// Text generation on the model: prefill the prompt into a KV cache, then decode one token per
// step with the sampling rules of ./sample.ts. `lora` null runs the base model, so the chat tab
// can answer the same prompt with the adapter on and off (A/B).
import { forwardLogits, KvCache } from '../model/infer.ts';
import type { LoraSet, Model } from '../model/model.ts';
import { decodeLoop, GenerateError, type DecodeOptions, type DecodeResult } from './decode.ts';

export {
  decodeAll,
  decodeLoop,
  TextStreamer,
  GenerateError,
  type DecodeOptions,
  type DecodeResult,
  type FinishReason,
  type LogitsStep,
} from './decode.ts';
export { DEFAULT_SAMPLING, sampleToken, seededRng, processLogits, type SamplingOptions } from './sample.ts';

export type GenerateOptions = DecodeOptions;

/**
 * Yields each generated token id as soon as it is chosen (the stop token is not yielded); the
 * return value (for `it.next()` callers) says why generation ended. The KV cache lives for one
 * call: sized prompt + maxNewTokens, capped at the model's positions (max_position_embeddings;
 * × factor with dynamic NTK RoPE, whose point is to reach past the trained length).
 */
export async function* generate(
  model: Model,
  lora: LoraSet | null,
  promptIds: ArrayLike<number>,
  opts: GenerateOptions,
): AsyncGenerator<number, DecodeResult, void> {
  const c = model.config;
  const maxPos =
    c.rope.type === 'dynamic' ? Math.floor(c.maxPositionEmbeddings * c.rope.factor) : c.maxPositionEmbeddings;
  if (promptIds.length >= maxPos)
    throw new GenerateError(`the prompt has ${promptIds.length} tokens; the model handles at most ${maxPos} positions`);
  const maxNew = Math.min(opts.maxNewTokens, maxPos - promptIds.length);
  const cache = new KvCache(model, promptIds.length + maxNew);
  try {
    return yield* decodeLoop((ids) => forwardLogits(model, lora, ids, cache), promptIds, {
      ...opts,
      maxNewTokens: maxNew,
    });
  } finally {
    cache.release();
  }
}

/** Runs generate() to the end, calling `opts.onToken` per token; resolves with the result. */
export async function generateAll(
  model: Model,
  lora: LoraSet | null,
  promptIds: ArrayLike<number>,
  opts: GenerateOptions,
): Promise<DecodeResult> {
  const it = generate(model, lora, promptIds, opts);
  for (;;) {
    const r = await it.next();
    if (r.done) return r.value;
  }
}
