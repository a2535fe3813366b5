// Text generation on the model: prefill the prompt into a KV cache, then decode one token per
// step with the sampling rules of ./sample.ts. `lora` null runs the base model, so the chat tab
// can answer the same prompt with the adapter on and off (A/B).
import { forwardLogits, forwardLogitsRows, KvCache } from '../model/infer.ts';
import { MATVEC_MAX_ROWS } from '../ops/matvec.ts';
import type { LoraSet, Model } from '../model/model.ts';
import {
  checkDecodeOptions,
  decodeLoop,
  GenerateError,
  type DecodeOptions,
  type DecodeResult,
  type FinishReason,
} from './decode.ts';
import { sampleToken, seededRng } from './sample.ts';

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
  const maxNew = newTokenLimit(model, promptIds, opts);
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

/** max_new_tokens capped at the model's positions (× factor with dynamic NTK RoPE, whose point is to reach past the trained length). */
function newTokenLimit(model: Model, promptIds: ArrayLike<number>, opts: GenerateOptions): number {
  const c = model.config;
  const maxPos =
    c.rope.type === 'dynamic' ? Math.floor(c.maxPositionEmbeddings * c.rope.factor) : c.maxPositionEmbeddings;
  if (promptIds.length >= maxPos)
    throw new GenerateError(`the prompt has ${promptIds.length} tokens; the model handles at most ${maxPos} positions`);
  return Math.min(opts.maxNewTokens, maxPos - promptIds.length);
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

/** One sequence of a batched generation. */
class BatchRow {
  readonly history: Int32Array;
  len: number;
  logits: Float32Array | null = null;
  result: DecodeResult | null = null;

  constructor(
    readonly prompt: ArrayLike<number>,
    readonly maxNew: number,
    readonly cache: KvCache,
    readonly rng: () => number,
  ) {
    this.history = new Int32Array(prompt.length + maxNew);
    this.history.set(Array.from(prompt));
    this.len = prompt.length;
  }

  finish(reason: FinishReason, stopId: number | null, prefillMs: number, decodeMs: number): void {
    this.result = {
      tokens: this.history.slice(this.prompt.length, this.len),
      reason,
      stopId,
      promptTokens: this.prompt.length,
      prefillMs,
      decodeMs,
    };
  }
}

/**
 * Generates for several prompts at once (evaluation rows): groups of MATVEC_MAX_ROWS prompts are
 * each prefilled into their own KV cache, then the group's unfinished sequences decode together,
 * so one read of each weight serves them all (and only one group's caches are held at a time).
 * Every sequence gets the tokens generate() would give it alone (sampling draws from its own
 * seededRng(seed); a shared `opts.rng` is drawn in row order instead). `onToken` is not called;
 * `onGroup(done)` reports progress; results come back in prompt order, and a row's `decodeMs`
 * is the wall time of its group's decode steps until it finished.
 */
export async function generateBatch(
  model: Model,
  lora: LoraSet | null,
  prompts: readonly ArrayLike<number>[],
  opts: GenerateOptions,
  onGroup?: (done: number) => void,
): Promise<DecodeResult[]> {
  for (const p of prompts) checkDecodeOptions(p, opts);
  const out: DecodeResult[] = [];
  for (let g = 0; g < prompts.length; g += MATVEC_MAX_ROWS) {
    out.push(...(await generateGroup(model, lora, prompts.slice(g, g + MATVEC_MAX_ROWS), opts)));
    onGroup?.(out.length);
  }
  return out;
}

async function generateGroup(
  model: Model,
  lora: LoraSet | null,
  prompts: readonly ArrayLike<number>[],
  opts: GenerateOptions,
): Promise<DecodeResult[]> {
  const stop = new Set(opts.stopIds);
  const rows: BatchRow[] = [];
  const now = () => performance.now();
  try {
    for (const p of prompts) {
      const maxNew = newTokenLimit(model, p, opts);
      rows.push(new BatchRow(p, maxNew, new KvCache(model, p.length + maxNew), opts.rng ?? seededRng(opts.seed ?? 0)));
    }
    const prefillMs: number[] = [];
    for (const r of rows) {
      if (opts.signal?.aborted) break;
      const t0 = now();
      r.logits = await forwardLogits(model, lora, Int32Array.from(r.prompt), r.cache);
      prefillMs.push(now() - t0);
    }
    const t0 = now();
    for (;;) {
      const next: BatchRow[] = [];
      const ids: number[] = [];
      for (const [i, r] of rows.entries()) {
        if (r.result) continue;
        if (!r.logits || opts.signal?.aborted) {
          r.finish('abort', null, prefillMs[i] ?? 0, now() - t0);
          continue;
        }
        const id = sampleToken(r.logits, r.history.subarray(0, r.len), opts, r.rng);
        if (stop.has(id)) {
          r.finish('stop', id, prefillMs[i], now() - t0);
          continue;
        }
        r.history[r.len++] = id;
        if (r.len - r.prompt.length === r.maxNew) r.finish('length', null, prefillMs[i], now() - t0);
        else {
          next.push(r);
          ids.push(id);
        }
      }
      if (!next.length) break;
      const V = model.config.vocabSize;
      const logits = await forwardLogitsRows(
        model,
        lora,
        Int32Array.from(ids),
        next.map((r) => r.cache),
      );
      next.forEach((r, n) => (r.logits = logits.subarray(n * V, (n + 1) * V)));
    }
    return rows.map((r) => r.result!);
  } finally {
    for (const r of rows) r.cache.release();
  }
}
