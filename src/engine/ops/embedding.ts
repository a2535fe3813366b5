// Token embedding gather (+ NEFTune noise) and its scatter-add backward without atomics;
// see shaders/embedding.wgsl.
import { GpuError } from '../gpu/errors.ts';
import { Params, type Recorder } from '../gpu/recorder.ts';
import { describe, type Tensor } from '../gpu/tensor.ts';
import { checkDistinct, checkDType, checkFits, checkPositiveInt, foldGrid, weightKind } from './k1_shared.ts';

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
}

/** Builds the backward's CSR from host token ids (the engine has them); rejects ids outside the vocabulary. */
export function embeddingCsr(ids: ArrayLike<number>, vocab: number): EmbeddingCsr {
  const count = new Map<number, number>();
  for (let n = 0; n < ids.length; n++) {
    const id = ids[n];
    if (!Number.isInteger(id) || id < 0 || id >= vocab) throw new Error(`embeddingCsr: token ${n} has id ${id}, outside the vocabulary [0, ${vocab})`);
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
  checkPositiveInt(w, 'tokens', tokens, 0);
  checkPositiveInt(w, 'vocab', vocab);
  checkPositiveInt(w, 'hidden', hidden);
}

/** Records out = W[ids] (+ NEFTune noise). */
export async function embeddingForward(rec: Recorder, a: EmbeddingForwardArgs): Promise<void> {
  const { tokens, vocab, hidden } = a;
  const w = `embedding.forward ids${describe(a.ids)} W${describe(a.weight)} → out${describe(a.out)} tokens=${tokens} vocab=${vocab} hidden=${hidden}${a.neftune ? ` neftune α=${a.neftune.alpha}` : ''}`;
  checkShape(w, tokens, vocab, hidden);
  const kind = weightKind(w, 'weight', a.weight);
  checkDType(w, 'ids', a.ids, 'i32');
  checkDType(w, 'out', a.out, 'f32');
  checkFits(w, 'ids', a.ids, tokens);
  checkFits(w, 'weight', a.weight, vocab * hidden);
  checkFits(w, 'out', a.out, tokens * hidden);
  checkDistinct(w, [['out', a.out], ['ids', a.ids], ['weight', a.weight]]);
  let mag = 0;
  const nf = a.neftune;
  if (nf) {
    if (!(nf.alpha >= 0) || !(nf.seqLen >= 1)) throw new GpuError('validation', w, `NEFTune needs alpha ≥ 0 and seqLen ≥ 1, got ${nf.alpha}, ${nf.seqLen}`);
    mag = nf.alpha / Math.sqrt(nf.seqLen * hidden);
  }
  if (tokens * hidden >= 2 ** 32) throw new GpuError('limit', w, 'more than 2³² output elements');
  const pipeline = await rec.gpu.pipelines.get('embedding', { W_KIND: `${kind}u` }, 'forward');
  const params = new Params(8).u32(tokens).u32(hidden).u32(vocab).u32(0).f32(mag).u32(nf?.seed ?? 0).u32(nf?.stream ?? 0).u32(0);
  rec.dispatch({ pipeline, what: w }, params.buffer, [a.ids, a.weight, a.out], foldGrid(rec, Math.ceil((tokens * hidden) / WG)));
}

/** Records dW[id] (= or +=) Σ dOut over the tokens with that id, one thread per (unique id, column). */
export async function embeddingBackward(rec: Recorder, a: EmbeddingBackwardArgs): Promise<void> {
  const { tokens, vocab, hidden, uniqueCount } = a;
  const w = `embedding.backward dOut${describe(a.dOut)} → dW${describe(a.dWeight)} tokens=${tokens} unique=${uniqueCount} vocab=${vocab} hidden=${hidden}`;
  checkShape(w, tokens, vocab, hidden);
  checkPositiveInt(w, 'uniqueCount', uniqueCount, 0);
  if (uniqueCount > tokens) throw new GpuError('validation', w, `uniqueCount ${uniqueCount} exceeds tokens ${tokens}`);
  checkDType(w, 'dOut', a.dOut, 'f32');
  checkDType(w, 'dWeight', a.dWeight, 'f32');
  for (const [name, t] of [['uniqueIds', a.uniqueIds], ['offsets', a.offsets], ['positions', a.positions]] as const) checkDType(w, name, t, 'i32');
  checkFits(w, 'dOut', a.dOut, tokens * hidden);
  checkFits(w, 'dWeight', a.dWeight, vocab * hidden);
  checkFits(w, 'uniqueIds', a.uniqueIds, uniqueCount);
  checkFits(w, 'offsets', a.offsets, uniqueCount + 1);
  checkFits(w, 'positions', a.positions, tokens);
  checkDistinct(w, [['dWeight', a.dWeight], ['dOut', a.dOut]]);
  const pipeline = await rec.gpu.pipelines.get('embedding', { W_KIND: '0u' }, 'backward');
  const params = new Params(8).u32(tokens).u32(hidden).u32(vocab).u32(uniqueCount).f32(0).u32(0).u32(0).u32(a.accumulate ? 1 : 0);
  const [y, z] = foldGrid(rec, uniqueCount);
  rec.dispatch({ pipeline, what: w }, params.buffer, [a.dOut, a.uniqueIds, a.offsets, a.positions, a.dWeight], [Math.ceil(hidden / WG), y, z]);
}
