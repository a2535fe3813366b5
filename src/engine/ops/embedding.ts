// Token embedding gather (+ NEFTune noise) and its scatter-add backward without atomics;
// see shaders/embedding.wgsl.
import { GpuError } from '../gpu/errors.ts';
import { Params, type Recorder } from '../gpu/recorder.ts';
import { describe, type Tensor } from '../gpu/tensor.ts';
import { check, checkInteger, checkOperands, foldGrid, launch, WEIGHT_DTYPES, weightKind } from './kernel.ts';

const WG = 256;

/**
 * NEFTune (Jain et al. 2023) as transformers applies it through `neftune_post_forward_hook`
 * (src/transformers/trainer_utils.py): out += U(−mag, mag), mag = alpha/√(seqLen·hidden),
 * where seqLen is the (padded) sequence length of the batch, output.size(1) — not the
 * total token count. Training only.
 */
export interface NeftuneOptions {
  alpha: number;
  seqLen: number;
  /** Run seed and a per-call stream id (e.g. step·gradAccum + microBatch): together they pick the noise. */
  seed: number;
  stream: number;
}

export interface EmbeddingForwardArgs {
  /** Token ids i32[tokens]. Ids outside [0, vocab) produce NaN rows (loud on purpose). */
  ids: Tensor;
  /** Embedding table [vocab, hidden]: f32, bf16 or f16. */
  weight: Tensor;
  /** Output [tokens, hidden] f32. */
  out: Tensor;
  tokens: number;
  vocab: number;
  hidden: number;
  neftune?: NeftuneOptions;
  /** Output multiplier (Gemma: √hidden in the embedding's dtype); default 1. */
  scale?: number;
  /** NEFTune noise added before the scale (Gemma 2) instead of after it. */
  noiseBeforeScale?: boolean;
}

/** Token positions grouped by id: positions[offsets[u] .. offsets[u+1]) hold uniqueIds[u]. */
export interface EmbeddingCsr {
  uniqueIds: Int32Array;
  offsets: Int32Array;
  positions: Int32Array;
}

export interface EmbeddingBackwardArgs {
  /** dL/dout [tokens, hidden] f32. */
  dOut: Tensor;
  /** The CSR of embeddingCsr(ids) uploaded as i32 tensors, and its unique-id count. */
  uniqueIds: Tensor;
  offsets: Tensor;
  positions: Tensor;
  uniqueCount: number;
  /** dL/dW [vocab, hidden] f32. Only rows of ids present are written: clear it first or accumulate. */
  dWeight: Tensor;
  accumulate?: boolean;
  tokens: number;
  vocab: number;
  hidden: number;
  /** The forward's scale (default 1). */
  scale?: number;
}

/** Builds the backward's CSR from host token ids (the engine has them); rejects ids outside the vocabulary. */
export function embeddingCsr(ids: ArrayLike<number>, vocab: number): EmbeddingCsr {
  const count = new Map<number, number>();
  for (let n = 0; n < ids.length; n++) {
    const id = ids[n];
    if (!Number.isInteger(id) || id < 0 || id >= vocab)
      throw new Error(`embeddingCsr: token ${n} has id ${id}, outside the vocabulary [0, ${vocab})`);
    count.set(id, (count.get(id) ?? 0) + 1);
  }
  const uniqueIds = Int32Array.from([...count.keys()].sort((a, b) => a - b));
  const offsets = new Int32Array(uniqueIds.length + 1);
  const slot = new Map<number, number>();
  uniqueIds.forEach((id, u) => {
    offsets[u + 1] = offsets[u] + (count.get(id) ?? 0);
    slot.set(id, offsets[u]);
  });
  const positions = new Int32Array(ids.length);
  for (let n = 0; n < ids.length; n++) {
    const at = slot.get(ids[n])!;
    positions[at] = n; // ascending token order inside each id: a deterministic summation order
    slot.set(ids[n], at + 1);
  }
  return { uniqueIds, offsets, positions };
}

function checkShape(w: string, tokens: number, vocab: number, hidden: number): void {
  checkInteger(w, 'tokens', tokens, 0);
  checkInteger(w, 'vocab', vocab);
  checkInteger(w, 'hidden', hidden);
}

/** NEFTune's noise magnitude alpha/√(seqLen·hidden), 0 without NEFTune. */
function neftuneMagnitude(w: string, nf: NeftuneOptions | undefined, hidden: number): number {
  if (!nf) return 0;
  check(w, nf.alpha >= 0 && nf.seqLen >= 1, `NEFTune needs alpha ≥ 0 and seqLen ≥ 1, got ${nf.alpha}, ${nf.seqLen}`);
  return nf.alpha / Math.sqrt(nf.seqLen * hidden);
}

/** Records out = W[ids]·scale (+ NEFTune noise). */
export async function embeddingForward(rec: Recorder, a: EmbeddingForwardArgs): Promise<void> {
  const { tokens, vocab, hidden, neftune: nf } = a;
  const w = `embedding.forward ids${describe(a.ids)} W${describe(a.weight)} → out${describe(a.out)} tokens=${tokens} vocab=${vocab} hidden=${hidden}${nf ? ` neftune α=${nf.alpha}` : ''}`;
  checkShape(w, tokens, vocab, hidden);
  const kind = weightKind(w, 'weight', a.weight);
  checkOperands(w, [
    { name: 'ids', tensor: a.ids, dtype: 'i32', min: tokens },
    { name: 'weight', tensor: a.weight, dtype: WEIGHT_DTYPES, min: vocab * hidden },
    { name: 'out', tensor: a.out, dtype: 'f32', min: tokens * hidden, write: true },
  ]);
  const mag = neftuneMagnitude(w, nf, hidden);
  if (tokens * hidden >= 2 ** 32) throw new GpuError('limit', w, 'more than 2³² output elements');
  check(w, Number.isFinite(a.scale ?? 1), `scale must be finite, got ${a.scale}`);
  const params = new Params(12)
    .u32(tokens)
    .u32(hidden)
    .u32(vocab)
    .u32(0)
    .f32(mag)
    .u32(nf?.seed ?? 0)
    .u32(nf?.stream ?? 0)
    .u32(0)
    .f32(a.scale ?? 1)
    .u32(a.noiseBeforeScale ? 1 : 0)
    .u32(0)
    .u32(0);
  await launch(rec, {
    shader: 'embedding',
    entry: 'forward',
    constants: { W_KIND: `${kind}u` },
    what: w,
    params,
    bindings: [a.ids, a.weight, a.out],
    grid: foldGrid(rec, Math.ceil((tokens * hidden) / WG)),
  });
}

/** Records dW[id] (= or +=) Σ dOut over the tokens with that id, one thread per (unique id, column). */
export async function embeddingBackward(rec: Recorder, a: EmbeddingBackwardArgs): Promise<void> {
  const { tokens, vocab, hidden, uniqueCount } = a;
  const w = `embedding.backward dOut${describe(a.dOut)} → dW${describe(a.dWeight)} tokens=${tokens} unique=${uniqueCount} vocab=${vocab} hidden=${hidden}`;
  checkShape(w, tokens, vocab, hidden);
  checkInteger(w, 'uniqueCount', uniqueCount, 0);
  check(w, uniqueCount <= tokens, `uniqueCount ${uniqueCount} exceeds tokens ${tokens}`);
  checkOperands(w, [
    { name: 'dOut', tensor: a.dOut, dtype: 'f32', min: tokens * hidden },
    { name: 'uniqueIds', tensor: a.uniqueIds, dtype: 'i32', min: uniqueCount },
    { name: 'offsets', tensor: a.offsets, dtype: 'i32', min: uniqueCount + 1 },
    { name: 'positions', tensor: a.positions, dtype: 'i32', min: tokens },
    { name: 'dWeight', tensor: a.dWeight, dtype: 'f32', min: vocab * hidden, write: true },
  ]);
  const params = new Params(12)
    .u32(tokens)
    .u32(hidden)
    .u32(vocab)
    .u32(uniqueCount)
    .f32(0)
    .u32(0)
    .u32(0)
    .u32(a.accumulate ? 1 : 0)
    .f32(a.scale ?? 1)
    .u32(0)
    .u32(0)
    .u32(0);
  const [y, z] = foldGrid(rec, uniqueCount);
  await launch(rec, {
    shader: 'embedding',
    entry: 'backward',
    constants: { W_KIND: '0u' },
    what: w,
    params,
    bindings: [a.dOut, a.uniqueIds, a.offsets, a.positions, a.dWeight],
    grid: [Math.ceil(hidden / WG), y, z],
  });
}
