// Predicts the GPU memory of a training run before anything is allocated: every buffer the
// engine will hold, by ledger category (src/engine/gpu/ledger.ts), each rounded to the buffer
// pool's size class as the pool allocates it. The studio shows it before "Start" and offers the
// suggestions below; the gpu test compares it with the ledger's measured peak.
import { MEMORY_CATEGORIES, type MemoryCategory } from '../gpu/ledger.ts';
import { sizeClass } from '../gpu/pool.ts';
import { ATTENTION_MODULES, linearShape, MLP_MODULES, type LinearModule, type ModelConfig } from '../model/config.ts';

export type PlanMethod = 'lora' | 'qlora' | 'full';
export type WeightDtype = 'bf16' | 'f16' | 'f32';

export interface TrainPlanConfig {
  method: PlanMethod;
  /** Sequences per micro-batch (per_device_train_batch_size). */
  batchSize: number;
  /** Tokens per sequence (cutoff_len; with packing every row is this long). */
  seqLen: number;
  /** LoRA/QLoRA: rank and target module names (q_proj … down_proj). */
  loraRank?: number;
  loraTargets?: readonly string[];
  /** QLoRA: double quantization of the absmax (LLaMA-Factory default true), block size 64. */
  doubleQuant?: boolean;
  nf4Blocksize?: number;
  gradientCheckpointing: boolean;
  /** Storage dtype of the checkpoint's 16-bit weights; default from config.torch_dtype (bf16 when absent). */
  weightDtype?: WeightDtype;
  /** Logit rows computed at once by the chunked cross entropy (default 256). */
  lossChunkRows?: number;
  /** Largest storage buffer the device binds; bigger tensors are split (default 1 GiB). */
  maxBufferBytes?: number;
}

export interface PlanItem {
  category: MemoryCategory;
  /** What it is, e.g. "layer weights (NF4 packed)". */
  what: string;
  /** Number of buffers and the bytes they take together (after pool rounding). */
  count: number;
  bytes: number;
}

export type SuggestionKind = 'checkpointing' | 'qlora' | 'batch' | 'cutoff';

export interface Suggestion {
  kind: SuggestionKind;
  /** Human text, e.g. "turn on gradient checkpointing". */
  label: string;
  /** The training-config change the studio applies. */
  change: Partial<TrainPlanConfig>;
  /** Predicted total after the change, and bytes saved. */
  total: number;
  saves: number;
  fits: boolean;
}

export interface MemoryPlan {
  /** Sum of the per-category peaks (what the ledger reports as peak by category). */
  total: number;
  byCategory: Record<MemoryCategory, number>;
  items: PlanItem[];
  fits(budgetBytes: number): boolean;
  /** Changes that lower the total, most effective first, each with its predicted total. */
  suggestions(budgetBytes: number): Suggestion[];
}

export class PlanError extends Error {
  override readonly name = 'PlanError';
}

const DEFAULT_MAX_BUFFER = 2 ** 30;

/** Bytes the pool allocates for a tensor of `bytes` (split into ≤ maxBuffer pieces when larger). */
function pooled(bytes: number, maxBuffer: number): { count: number; bytes: number } {
  const raw = Math.ceil(bytes / 4) * 4;
  if (raw <= maxBuffer) return { count: 1, bytes: sizeClass(raw) };
  const pieces = Math.ceil(raw / maxBuffer);
  const per = Math.ceil(raw / pieces / 4) * 4;
  return { count: pieces, bytes: (pieces - 1) * sizeClass(per) + sizeClass(raw - (pieces - 1) * per) };
}

class Ledger {
  readonly items: PlanItem[] = [];
  constructor(private readonly maxBuffer: number) {}
  /** `n` identical buffers of `bytes` each. */
  add(category: MemoryCategory, what: string, bytes: number, n = 1): void {
    if (n <= 0 || bytes <= 0) return;
    const p = pooled(bytes, this.maxBuffer);
    const existing = this.items.find((i) => i.category === category && i.what === what);
    if (existing) {
      existing.count += p.count * n;
      existing.bytes += p.bytes * n;
    } else this.items.push({ category, what, count: p.count * n, bytes: p.bytes * n });
  }
  byCategory(): Record<MemoryCategory, number> {
    const out = Object.fromEntries(MEMORY_CATEGORIES.map((c) => [c, 0])) as Record<MemoryCategory, number>;
    for (const i of this.items) out[i.category] += i.bytes;
    return out;
  }
}

function checkConfig(t: TrainPlanConfig): void {
  const pos = (k: keyof TrainPlanConfig, v: unknown) => {
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 1) throw new PlanError(`${String(k)} must be a positive integer, got ${String(v)}`);
  };
  pos('batchSize', t.batchSize);
  pos('seqLen', t.seqLen);
  if (t.method !== 'full') pos('loraRank', t.loraRank ?? 8);
  if (t.lossChunkRows !== undefined) pos('lossChunkRows', t.lossChunkRows);
  const bad = (t.loraTargets ?? []).filter((m) => !([...ATTENTION_MODULES, ...MLP_MODULES] as readonly string[]).includes(m));
  if (bad.length) throw new PlanError(`unknown LoRA target module${bad.length > 1 ? 's' : ''} ${bad.join(', ')}`);
}

const LINEARS: readonly LinearModule[] = [...ATTENTION_MODULES, ...MLP_MODULES];

/** NF4 storage of one [out, in] weight: packed codes + absmax (f32, or u8 codes + nested table). */
function nf4Buffers(numel: number, blocksize: number, doubleQuant: boolean): { packed: number; absmax: number; table: number } {
  const blocks = Math.ceil(numel / blocksize);
  if (!doubleQuant) return { packed: Math.ceil(numel / 2), absmax: 4 * blocks, table: 0 };
  // nested.table = [code8 (256), offset, nested absmax per 256 blocks] f32 (src/engine/ops/nf4.ts)
  return { packed: Math.ceil(numel / 2), absmax: blocks, table: 4 * (256 + 1 + Math.ceil(blocks / 256)) };
}

/**
 * Peak GPU bytes by category for training `model` with `train`. Pure arithmetic: call it
 * freely while the user edits the form.
 */
export function planMemory(model: ModelConfig, train: TrainPlanConfig): MemoryPlan {
  checkConfig(train);
  const c = model;
  const maxBuffer = train.maxBufferBytes ?? DEFAULT_MAX_BUFFER;
  const L = new Ledger(maxBuffer);
  const wd: WeightDtype = train.weightDtype ?? (c.torchDtype === 'float32' ? 'f32' : c.torchDtype === 'float16' ? 'f16' : 'bf16');
  const wBytes = train.method === 'full' ? 4 : wd === 'f32' ? 4 : 2;
  const H = c.hiddenSize;
  const I = c.intermediateSize;
  const V = c.vocabSize;
  const Q = c.numHeads * c.headDim;
  const KV = c.numKvHeads * c.headDim;
  const N = train.batchSize * train.seqLen;
  const rank = train.loraRank ?? 8;
  const targets = new Set(train.method === 'full' ? [] : (train.loraTargets ?? LINEARS));
  const blocksize = train.nf4Blocksize ?? 64;
  const dq = train.doubleQuant ?? true;
  let paramCount = 0; // every parameter (full fine-tuning trains them all)

  // ---- weights: embedding, norms, linears (dense or NF4), biases, lm_head
  L.add('weights', 'embed_tokens', V * H * wBytes);
  L.add('weights', 'norms', H * wBytes, 2 * c.numLayers + 1);
  paramCount += V * H + (2 * c.numLayers + 1) * H;
  if (c.qkNorm) {
    L.add('weights', 'q/k norms', c.headDim * wBytes, 2 * c.numLayers);
    paramCount += 2 * c.numLayers * c.headDim;
  }
  for (const m of LINEARS) {
    const [o, i] = linearShape(c, m);
    paramCount += o * i * c.numLayers;
    if (train.method === 'qlora') {
      const b = nf4Buffers(o * i, blocksize, dq);
      L.add('weights', 'linear weights (NF4 codes)', b.packed, c.numLayers);
      L.add('weights', dq ? 'NF4 absmax (8-bit, double quant)' : 'NF4 absmax (f32)', b.absmax, c.numLayers);
      if (b.table) L.add('weights', 'NF4 nested absmax tables', b.table, c.numLayers);
    } else L.add('weights', `linear weights (${train.method === 'full' ? 'f32' : wd})`, o * i * wBytes, c.numLayers);
    const hasBias = (ATTENTION_MODULES as readonly string[]).includes(m) ? (m === 'o_proj' ? c.oBias : c.qkvBias) : c.mlpBias;
    if (hasBias) {
      L.add('weights', 'biases', o * wBytes, c.numLayers);
      paramCount += o * c.numLayers;
    }
  }
  // lm_head stays unquantized (bitsandbytes / LLaMA-Factory skip it); tied heads reuse the embedding.
  if (!c.tieWordEmbeddings) {
    L.add('weights', 'lm_head', V * H * wBytes);
    paramCount += V * H;
  }

  // ---- adapters, their gradients and AdamW moments (f32)
  const adapterShapes: [number, number][] = [];
  if (train.method !== 'full') {
    for (const m of LINEARS) {
      if (!targets.has(m)) continue;
      const [o, i] = linearShape(c, m);
      for (let l = 0; l < c.numLayers; l++) adapterShapes.push([rank * i, o * rank]);
    }
    for (const [a, b] of adapterShapes) {
      L.add('adapters', 'LoRA A', 4 * a);
      L.add('adapters', 'LoRA B', 4 * b);
    }
    const n = adapterShapes.reduce((s, [a, b]) => s + a + b, 0);
    L.add('gradients', 'adapter gradients (one arena)', 4 * n);
    L.add('optimizer', 'AdamW m, v (two arenas)', 4 * n, 2);
  } else {
    L.add('gradients', 'parameter gradients (one arena)', 4 * paramCount);
    L.add('optimizer', 'AdamW m, v (two arenas)', 4 * paramCount, 2);
  }

  // ---- activations kept from the forward for the backward (f32, token-major)
  const nTargets = targets.size;
  const layerSaved = (what: string, n: number) => {
    L.add('activations', `${what}: layer input`, 4 * N * H, n);
    L.add('activations', `${what}: normed inputs`, 4 * N * H, 2 * n);
    L.add('activations', `${what}: rms 1/σ`, 4 * N, 2 * n);
    L.add('activations', `${what}: q`, 4 * N * Q, n);
    L.add('activations', `${what}: k, v`, 4 * N * KV, 2 * n);
    L.add('activations', `${what}: attention output`, 4 * N * Q, n);
    L.add('activations', `${what}: attention LSE`, 4 * N * c.numHeads, n);
    L.add('activations', `${what}: residual after attention`, 4 * N * H, n);
    L.add('activations', `${what}: gate, up, act`, 4 * N * I, 3 * n);
    if (nTargets) L.add('activations', `${what}: LoRA x·Aᵀ`, 4 * N * rank, nTargets * n);
  };
  if (train.gradientCheckpointing) {
    // one layer input per layer; the layer being differentiated is recomputed whole
    L.add('activations', 'checkpointed layer inputs', 4 * N * H, c.numLayers);
    layerSaved('recomputed layer', 1);
  } else layerSaved('layers', c.numLayers);
  L.add('activations', 'final norm output', 4 * N * H);
  L.add('activations', 'final rms 1/σ', 4 * N);
  L.add('activations', 'input ids, labels, segment ids', 4 * N, 3);

  // ---- scratch: the largest transient set (backward of one layer, or the loss chunk)
  const chunk = Math.min(train.lossChunkRows ?? 256, N);
  const lossScratch = pooled(4 * chunk * V, maxBuffer).bytes + pooled(4 * N, maxBuffer).bytes + 2 * 256;
  const layerBackward = [4 * N * H, 4 * N * H, 4 * N * Math.max(I, Q), 4 * N * Math.max(I, Q), 4 * N * Q, 4 * N * KV, 4 * N * KV, 4 * N * c.numHeads]
    .reduce((s, b) => s + pooled(b, maxBuffer).bytes, 0) + (nTargets ? pooled(4 * N * rank, maxBuffer).bytes : 0);
  if (lossScratch >= layerBackward) {
    L.add('scratch', `logits chunk (${chunk} rows × vocab) + row losses`, lossScratch);
  } else {
    L.add('scratch', 'layer backward temporaries (dX, dQ/dK/dV, dGate/dUp)', layerBackward);
  }

  const byCategory = L.byCategory();
  const total = MEMORY_CATEGORIES.reduce((s, k) => s + byCategory[k], 0);
  return {
    total,
    byCategory,
    items: L.items,
    fits: (budget) => total <= budget,
    suggestions: (budget) => suggest(model, train, total, budget),
  };
}

function suggest(model: ModelConfig, t: TrainPlanConfig, total: number, budget: number): Suggestion[] {
  const out: Suggestion[] = [];
  const tryChange = (kind: SuggestionKind, label: string, change: Partial<TrainPlanConfig>) => {
    const p = planMemory(model, { ...t, ...change });
    if (p.total < total) out.push({ kind, label, change, total: p.total, saves: total - p.total, fits: p.total <= budget });
  };
  if (!t.gradientCheckpointing) tryChange('checkpointing', 'turn on gradient checkpointing', { gradientCheckpointing: true });
  if (t.method === 'lora') tryChange('qlora', 'turn on QLoRA (4-bit NF4 base weights)', { method: 'qlora' });
  // smallest batch / cutoff that fits, else the halved value
  for (let b = Math.floor(t.batchSize / 2); b >= 1; b = Math.floor(b / 2)) {
    const p = planMemory(model, { ...t, batchSize: b });
    if (p.total <= budget || b === 1) {
      tryChange('batch', `lower the batch size to ${b} (raise gradient accumulation ×${Math.ceil(t.batchSize / b)} to keep the effective batch)`, { batchSize: b });
      break;
    }
  }
  for (let s = Math.floor(t.seqLen / 2); s >= 64; s = Math.floor(s / 2)) {
    const p = planMemory(model, { ...t, seqLen: s });
    if (p.total <= budget || Math.floor(s / 2) < 64) {
      tryChange('cutoff', `lower cutoff_len to ${s} (longer examples are truncated)`, { seqLen: s });
      break;
    }
  }
  return out.sort((a, b) => Number(b.fits) - Number(a.fits) || b.saves - a.saves);
}

export function fmtGB(bytes: number): string {
  return `${(bytes / 1e9).toFixed(2)} GB`;
}
