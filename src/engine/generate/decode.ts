// The autoregressive loop, independent of how logits are computed: prefill the prompt once, then
// feed one token per step (KV-cache decode). `generate()` in ./generate.ts binds it to the model.
import { checkSamplingOptions, sampleToken, seededRng, type SamplingOptions } from './sample.ts';

/** Computes last-position logits [V] for `ids` appended to everything fed before (a KV cache). */
export type LogitsStep = (ids: Int32Array) => Promise<Float32Array>;

export interface DecodeOptions extends SamplingOptions {
  maxNewTokens: number;
  /** Generation ends after producing one of these (eos, <|im_end|>, …); the stop token is not yielded. */
  stopIds: readonly number[];
  /** Seed for the sampling draws (ignored when rng is given). Default 0. */
  seed?: number;
  rng?: () => number;
  /** Aborting ends generation after the current step; the loop returns with reason "abort". */
  signal?: AbortSignal;
  /** Streaming callback, called for every yielded token before it is yielded. */
  onToken?: (id: number, index: number) => void;
}

export type FinishReason = 'stop' | 'length' | 'abort';

export interface DecodeResult {
  /** Generated tokens, without the stop token. */
  tokens: Int32Array;
  reason: FinishReason;
  /** The stop token that ended generation, when reason is "stop". */
  stopId: number | null;
  promptTokens: number;
  /** Wall time of the prefill and of the decode steps (ms). */
  prefillMs: number;
  decodeMs: number;
}

export class GenerateError extends Error {
  override readonly name = 'GenerateError';
}

export function checkDecodeOptions(promptIds: ArrayLike<number>, o: DecodeOptions): void {
  checkSamplingOptions(o);
  if (!Number.isInteger(o.maxNewTokens) || o.maxNewTokens < 1)
    throw new GenerateError(`max_new_tokens must be an integer ≥ 1, got ${o.maxNewTokens}`);
  if (promptIds.length === 0)
    throw new GenerateError('the prompt is empty: at least one token is needed to start generating');
}

/**
 * Yields each new token as it is chosen; the generator's return value says why it ended.
 * History for the repetition penalty is prompt + generated ids, as transformers' input_ids.
 */
export async function* decodeLoop(
  step: LogitsStep,
  promptIds: ArrayLike<number>,
  o: DecodeOptions,
): AsyncGenerator<number, DecodeResult, void> {
  checkDecodeOptions(promptIds, o);
  const rng = o.rng ?? seededRng(o.seed ?? 0);
  const stop = new Set(o.stopIds);
  const history = new Int32Array(promptIds.length + o.maxNewTokens);
  history.set(Array.from(promptIds));
  let len = promptIds.length;
  const now = () => (typeof performance !== 'undefined' ? performance.now() : Date.now());
  const result = (reason: FinishReason, stopId: number | null, prefillMs: number, decodeMs: number): DecodeResult => ({
    tokens: history.slice(promptIds.length, len),
    reason,
    stopId,
    promptTokens: promptIds.length,
    prefillMs,
    decodeMs,
  });
  if (o.signal?.aborted) return result('abort', null, 0, 0);
  let t0 = now();
  let logits = await step(Int32Array.from(promptIds));
  const prefillMs = now() - t0;
  t0 = now();
  for (let i = 0; i < o.maxNewTokens; i++) {
    const id = sampleToken(logits, history.subarray(0, len), o, rng);
    if (stop.has(id)) return result('stop', id, prefillMs, now() - t0);
    history[len++] = id;
    o.onToken?.(id, i);
    yield id;
    if (o.signal?.aborted) return result('abort', null, prefillMs, now() - t0);
    if (i + 1 === o.maxNewTokens) break;
    logits = await step(Int32Array.of(id));
  }
  return result('length', null, prefillMs, now() - t0);
}

/** Runs the loop to the end and returns the result (for callers that only want the callback). */
export async function decodeAll(
  step: LogitsStep,
  promptIds: ArrayLike<number>,
  o: DecodeOptions,
): Promise<DecodeResult> {
  const it = decodeLoop(step, promptIds, o);
  for (;;) {
    const r = await it.next();
    if (r.done) return r.value;
  }
}

/**
 * Incremental detokenization for streaming text: decodes all generated ids and emits the new
 * suffix, holding back a trailing U+FFFD (a multi-byte character split across tokens).
 */
export class TextStreamer {
  private readonly ids: number[] = [];
  private printed = 0;
  constructor(private readonly decode: (ids: number[]) => string) {}

  /** Adds a token; returns the text that became final (possibly ""). */
  push(id: number): string {
    this.ids.push(id);
    const text = this.decode(this.ids);
    if (text.endsWith('\uFFFD')) return '';
    const out = text.slice(this.printed);
    this.printed = text.length;
    return out;
  }

  /** Whatever is still held back at the end. */
  flush(): string {
    const text = this.decode(this.ids);
    const out = text.slice(this.printed);
    this.printed = text.length;
    return out;
  }
}
