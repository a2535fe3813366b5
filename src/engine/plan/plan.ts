// Predicts the GPU memory of a training run before anything is allocated: every buffer the
// engine will hold, by ledger category (src/engine/gpu/ledger.ts), each rounded to the buffer
// pool's size class as the pool allocates it. The studio shows it before "Start" and offers the
// suggestions below; the gpu test compares it with the ledger's measured peak.
import { MEMORY_CATEGORIES, type MemoryCategory } from '../gpu/ledger.ts';
import { allocationBytes } from '../gpu/pool.ts';
import { storageBytes, type DType } from '../gpu/tensor.ts';
import {
  ATTENTION_MODULES,
  linearModules,
  linearShape,
  MLP_MODULES,
  type LinearModule,
  type ModelConfig,
} from '../model/config.ts';
import { loraArenaLayout } from '../model/model.ts';
import { ADAMW_BLOCK } from '../ops/adamw.ts';
import { gradNormPartials } from '../ops/grad_norm.ts';
import { rmsnormWeightGradPartials } from '../ops/rmsnorm.ts';

/** The decoder's logits chunk budget (src/engine/model/decoder.ts LOGITS_CHUNK_BYTES). */
const LOGITS_CHUNK_BYTES = 64 << 20;

export type PlanMethod = 'lora' | 'qlora' | 'full';
export type WeightDtype = 'bf16' | 'f16' | 'f32';

export interface TrainPlanConfig {
  method: PlanMethod;
  /** Sequences per micro-batch (per_device_train_batch_size). */
  batchSize: number;
  /** Tokens per sequence (cutoff_len, or the longest example; with packing every row is this long). */
  seqLen: number;
  /** Rows are packed to exactly seqLen (otherwise the collator pads to a multiple of 8). */
  packing?: boolean;
  /** LoRA/QLoRA: rank and target module names (q_proj … down_proj). */
  loraRank?: number;
  loraTargets?: readonly string[];
  /** QLoRA: double quantization of the absmax (LLaMA-Factory default true), block size 64. */
  doubleQuant?: boolean;
  nf4Blocksize?: number;
  gradientCheckpointing: boolean;
  /** With checkpointing: layer inputs kept as bf16 (one f32 working copy of the residual stream). */
  checkpointPrecision?: 'f32' | 'bf16';
  /** Output head as NF4 on the GPU (load.ts head 'nf4'); a tied embedding then lives in host memory. */
  headPrecision?: '16bit' | 'nf4';
  /** Untied models: input embedding in host memory, only the batch's rows uploaded (load.ts embeddingOnHost). */
  embeddingOnHost?: boolean;
  /** Storage dtype of the checkpoint's 16-bit weights; default from config.torch_dtype (bf16 when absent). */
  weightDtype?: WeightDtype;
  /** Logit rows computed at once by the chunked cross entropy (default: as many as fit in 64 MiB, as the decoder). */
  lossChunkRows?: number;
  /** Largest storage buffer the device binds; bigger tensors are split (default 1 GiB). */
  maxBufferBytes?: number;
  /** minStorageBufferOffsetAlignment of the device: where each LoRA tensor starts in its arena (default 256). */
  storageOffsetAlignment?: number;
}

export interface PlanItem {
  category: MemoryCategory;
  /** What it is, e.g. "layer weights (NF4 packed)". */
  what: string;
  /** Number of buffers and the bytes they take together (after pool rounding). */
  count: number;
  bytes: number;
}

export type SuggestionKind =
  | 'checkpointing'
  | 'qlora'
  | 'batch'
  | 'cutoff'
  | 'lossChunk'
  | 'hostEmbedding'
  | 'checkpointPrecision'
  | 'nf4Head'
  | 'autofit';

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
  /** Auto-fit: the steps it takes, in order (each a kind with its own label and change). */
  steps?: { kind: SuggestionKind; label: string; change: Partial<TrainPlanConfig> }[];
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

/** Bytes the pool allocates for a tensor of `bytes` in `category` (split into ≤ maxBuffer pieces when larger). */
function pooled(bytes: number, maxBuffer: number, category: MemoryCategory): { count: number; bytes: number } {
  const raw = Math.ceil(bytes / 4) * 4;
  const alloc = (b: number) => allocationBytes(b, category);
  if (raw <= maxBuffer) return { count: 1, bytes: alloc(raw) };
  const pieces = Math.ceil(raw / maxBuffer);
  const per = Math.ceil(raw / pieces / 4) * 4;
  return { count: pieces, bytes: (pieces - 1) * alloc(per) + alloc(raw - (pieces - 1) * per) };
}

class Ledger {
  readonly items: PlanItem[] = [];
  constructor(private readonly maxBuffer: number) {}
  /** `n` identical buffers of `bytes` each. */
  add(category: MemoryCategory, what: string, bytes: number, n = 1): void {
    if (n <= 0 || bytes <= 0) return;
    const p = pooled(bytes, this.maxBuffer, category);
    const existing = this.items.find((i) => i.category === category && i.what === what);
    if (existing) {
      existing.count += p.count * n;
      existing.bytes += p.bytes * n;
    } else this.items.push({ category, what, count: p.count * n, bytes: p.bytes * n });
  }
  /** Bytes taken as they are (buffers outside the size-class pool). */
  addRaw(category: MemoryCategory, what: string, bytes: number, count: number): void {
    if (bytes > 0) this.items.push({ category, what, count, bytes });
  }
  byCategory(): Record<MemoryCategory, number> {
    const out = Object.fromEntries(MEMORY_CATEGORIES.map((c) => [c, 0])) as Record<MemoryCategory, number>;
    for (const i of this.items) out[i.category] += i.bytes;
    return out;
  }
}

function checkConfig(t: TrainPlanConfig): void {
  const pos = (k: keyof TrainPlanConfig, v: unknown) => {
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 1)
      throw new PlanError(`${String(k)} must be a positive integer, got ${String(v)}`);
  };
  pos('batchSize', t.batchSize);
  pos('seqLen', t.seqLen);
  if (t.method !== 'full') pos('loraRank', t.loraRank ?? 8);
  if (t.lossChunkRows !== undefined) pos('lossChunkRows', t.lossChunkRows);
  const bad = splitTargets(t.loraTargets ?? []).filter(
    (m) => !([...ATTENTION_MODULES, ...MLP_MODULES] as readonly string[]).includes(m),
  );
  if (bad.length) throw new PlanError(`unknown LoRA target module${bad.length > 1 ? 's' : ''} ${bad.join(', ')}`);
}

const LINEARS: readonly LinearModule[] = [...ATTENTION_MODULES, ...MLP_MODULES];

/**
 * The modules a LoRA of these targets adapts (model.ts resolveTargets): the model's own linear
 * layers; on Phi-3 the seven Llama-style names (the TrainConfig's "all") mean every fused layer.
 */
function loraTargetsOf(c: ModelConfig, wanted: readonly string[] | undefined): LinearModule[] {
  const modules = linearModules(c);
  if (!wanted) return [...modules];
  if (c.fusedProjections && LINEARS.every((m) => wanted.includes(m))) return [...modules];
  return modules.filter((m) => (c.fusedProjections ? wanted : splitTargets(wanted)).includes(m));
}

/** Target names with Phi-3's fused ones replaced by the modules they fuse (for the name check). */
function splitTargets(targets: readonly string[]): string[] {
  return targets.flatMap((m) =>
    m === 'qkv_proj' ? ['q_proj', 'k_proj', 'v_proj'] : m === 'gate_up_proj' ? ['gate_proj', 'up_proj'] : [m],
  );
}

/** Pool bytes of a tensor of `numel` elements of `dtype` (storageBytes, then the size class). */
function tb(dtype: DType, numel: number): number {
  return storageBytes(dtype, numel);
}

// Uniform parameter blocks of a recorder live in 64 KiB arenas (src/engine/gpu/recorder.ts) that
// are kept for reuse, so the largest recorder (one training micro-batch) sets how many exist.
const UNIFORM_ARENA_BYTES = 64 * 1024;
const UNIFORM_SLOT_BYTES = 256;

/**
 * Peak GPU bytes by category for training `model` with `train`, buffer by buffer as the engine
 * allocates them (src/engine/model/load.ts, decoder.ts, train/trainer.ts). Pure arithmetic: call
 * it freely while the user edits the form. Load-time transients (a 16-bit weight held while it
 * is quantized) come before training and are not part of the training peak.
 */
export function planMemory(model: ModelConfig, train: TrainPlanConfig): MemoryPlan {
  checkConfig(train);
  const c = model;
  const maxBuffer = train.maxBufferBytes ?? DEFAULT_MAX_BUFFER;
  const L = new Ledger(maxBuffer);
  const full = train.method === 'full';
  const wd: WeightDtype =
    train.weightDtype ?? (c.torchDtype === 'float32' ? 'f32' : c.torchDtype === 'float16' ? 'f16' : 'bf16');
  const wType: DType = full ? 'f32' : wd;
  const H = c.hiddenSize;
  const I = c.intermediateSize;
  const V = c.vocabSize;
  const D = c.headDim;
  const QD = c.numHeads * D;
  const KD = c.numKvHeads * D;
  const layers = c.numLayers;
  const T = train.packing ? train.seqLen : Math.ceil(train.seqLen / 8) * 8; // packed rows are cutoff_len long; the collator pads to a multiple of 8
  const N = train.batchSize * T;
  const rank = train.loraRank ?? 8;
  const targets = full ? [] : loraTargetsOf(c, train.loraTargets);
  const blocksize = train.nf4Blocksize ?? 64;
  const dq = train.doubleQuant ?? true;
  const trainableTensors: number[] = [];
  const biasModules = LINEARS.filter((m) =>
    (ATTENTION_MODULES as readonly string[]).includes(m) ? (m === 'o_proj' ? c.oBias : c.qkvBias) : c.mlpBias,
  );

  // ---- weights (load.ts): dense in the stored dtype (f32 for full FT), NF4 for QLoRA linears
  const dense = (what: string, shape: [number, number] | [number], n: number, splittable = false) => {
    const numel = shape.reduce((a, b) => a * b, 1);
    if (splittable && tb(wType, numel) > maxBuffer) {
      // row split: parts of floor(limit / rowBytes) rows (load.ts loadRowSplit)
      const rowBytes = tb(wType, shape[1]!);
      const rowsPer = Math.max(1, Math.floor(maxBuffer / rowBytes));
      for (let r0 = 0; r0 < shape[0]; r0 += rowsPer)
        L.add('weights', what, tb(wType, Math.min(rowsPer, shape[0] - r0) * shape[1]!), n);
    } else L.add('weights', what, tb(wType, numel), n);
    if (full) for (let i = 0; i < n; i++) trainableTensors.push(numel);
  };
  const nf4Head = !full && train.headPrecision === 'nf4';
  const hostEmbed = !full && (c.tieWordEmbeddings ? nf4Head : !!train.embeddingOnHost);
  // NF4 head (load.ts quantizeHead): codes and f32 block scales of 64, no double quantization.
  const headNf4 = () => {
    L.add('weights', 'lm_head (NF4 codes)', tb('nf4', V * H));
    L.add('weights', 'lm_head NF4 absmax (f32)', tb('f32', Math.ceil((V * H) / 64)));
  };
  if (!hostEmbed) dense('embed_tokens', [V, H], 1, true);
  // Gemma: four norms per layer (input, post-attention, pre- and post-feed-forward).
  dense('norms', [H], (c.gemma ? 4 : 2) * layers + 1);
  if (c.qkNorm) dense('q/k norms', [D], 2 * layers);
  for (const m of linearModules(c)) {
    const [o, i] = linearShape(c, m);
    if (train.method === 'qlora') {
      const blocks = Math.ceil((o * i) / blocksize);
      L.add('weights', 'linear weights (NF4 codes)', tb('nf4', o * i), layers);
      if (dq) {
        L.add('weights', 'NF4 absmax (8-bit, double quant)', tb('u8', blocks), layers);
        L.add('weights', 'NF4 nested absmax tables', tb('f32', 257 + Math.ceil(blocks / 256)), layers);
      } else L.add('weights', 'NF4 absmax (f32)', tb('f32', blocks), layers);
    } else dense(`linear weights (${wType})`, [o, i], layers);
  }
  for (const m of biasModules) dense('biases', [linearShape(c, m)[0]], layers);
  // lm_head stays unquantized unless asked (bitsandbytes / LLaMA-Factory skip it); a tied head is the embedding.
  if (nf4Head) headNf4();
  else if (!c.tieWordEmbeddings) dense('lm_head', [V, H], 1, true);
  L.add('weights', 'RoPE inv_freq', tb('f32', c.rotaryDim / 2));
  if (c.gemma?.ropeLocalTheta) L.add('weights', 'RoPE inv_freq (sliding layers)', tb('f32', D / 2));

  // ---- adapters (model.ts LoraSet.allocate: one arena, each tensor aligned), gradients (an arena
  //      of the same layout, decoder.ts; full FT: per weight + the trainer's flat arena), optimizer
  //      (exp_avg, exp_avg_sq, block table; full FT also a parameter arena)
  const loraModules: number[][] = [];
  for (let l = 0; l < layers; l++)
    for (const m of targets) {
      const [o, i] = linearShape(c, m);
      loraModules.push([rank * i, o * rank]);
      trainableTensors.push(rank * i, o * rank);
    }
  let total = trainableTensors.reduce((a, b) => a + b, 0);
  if (full) {
    for (const n of trainableTensors) L.add('gradients', 'parameter gradients', tb('f32', n));
    L.add('gradients', 'gradient arena (flat, for clipping and AdamW)', tb('f32', total));
    L.add('optimizer', 'AdamW parameter arena, exp_avg, exp_avg_sq', tb('f32', total), 3);
  } else {
    total = loraArenaLayout(loraModules, train.storageOffsetAlignment ?? 256).floats;
    L.add('adapters', 'LoRA A and B (one arena)', tb('f32', total));
    L.add('gradients', 'LoRA gradients (one arena, clipped and stepped in place)', tb('f32', total));
    L.add('optimizer', 'AdamW exp_avg, exp_avg_sq', tb('f32', total), 2);
  }
  const adamBlocks = trainableTensors.reduce((a, n) => a + Math.ceil(n / ADAMW_BLOCK), 0);
  L.add('optimizer', 'AdamW block table', tb('u32', 4 * adamBlocks));

  // ---- activations of one micro-batch (decoder.ts trainMicroBatch): inputs, residual stream,
  //      per-layer saved tensors (one recomputed set with gradient checkpointing), final norm
  const needOnes = biasModules.length > 0;
  L.add('activations', 'input ids, positions, segments, labels', tb('i32', N), 4);
  if (hostEmbed) {
    L.add('activations', 'embedding rows gathered on the host, their row ids', tb(wType, N * H));
    L.add('activations', 'embedding rows gathered on the host, their row ids', tb('i32', N));
  }
  if (needOnes) L.add('activations', 'ones column (biases)', tb('f32', N));
  const ck16 = train.gradientCheckpointing && train.checkpointPrecision === 'bf16';
  if (ck16) {
    L.add('activations', 'layer inputs h0..hL (bf16 checkpoints)', tb('bf16', N * H), layers + 1);
    L.add('activations', 'residual stream (f32 working copy)', tb('f32', N * H));
  } else L.add('activations', 'residual stream h0..hL', tb('f32', N * H), layers + 1);
  const sets = train.gradientCheckpointing ? 1 : layers;
  const what = train.gradientCheckpointing ? 'recomputed layer' : 'saved layers';
  L.add('activations', `${what}: normed inputs`, tb('f32', N * H), 2 * sets);
  L.add('activations', `${what}: rms 1/σ`, tb('f32', N), 2 * sets);
  L.add('activations', `${what}: q, attention output`, tb('f32', N * QD), 2 * sets);
  L.add('activations', `${what}: k, v`, tb('f32', N * KD), 2 * sets);
  L.add('activations', `${what}: attention LSE`, tb('f32', c.numHeads * N), sets);
  L.add('activations', `${what}: residual after attention`, tb('f32', N * H), sets);
  L.add('activations', `${what}: gate, up, act`, tb('f32', N * I), 3 * sets);
  if (c.qkNorm) {
    L.add('activations', `${what}: q, k before norm`, tb('f32', N * QD), sets);
    L.add('activations', `${what}: q, k before norm`, tb('f32', N * KD), sets);
    L.add('activations', `${what}: q/k rms 1/σ`, tb('f32', N * c.numHeads), sets);
    L.add('activations', `${what}: q/k rms 1/σ`, tb('f32', N * c.numKvHeads), sets);
  }
  if (c.gemma) {
    // decoder.ts normOntoResidual: o_proj's and down_proj's outputs and the rstd of their norms.
    L.add('activations', `${what}: o_proj, down_proj outputs (Gemma)`, tb('f32', N * H), 2 * sets);
    L.add('activations', `${what}: post-attention / post-feed-forward rms 1/σ`, tb('f32', N), 2 * sets);
  }
  // LoRA workspaces: x·Aᵀ saved (activations) and s·dY·B (scratch), one per module per saved set
  L.add('activations', `${what}: LoRA x·Aᵀ`, tb('f32', N * rank), targets.length * sets);
  L.add('activations', 'final norm output, rms 1/σ', tb('f32', N * H));
  L.add('activations', 'final norm output, rms 1/σ', tb('f32', N));

  // ---- scratch: backward temporaries, the loss chunk, attention backward scratch, trainer state
  L.add('scratch', 'LoRA dY·B', tb('f32', N * rank), targets.length * sets);
  L.add('scratch', 'backward: dh, dxf, dX', tb('f32', N * H), 3);
  // dGate reuses the saved silu(gate)·up (decoder.ts layerBackward)
  L.add('scratch', 'backward: dAct, dUp', tb('f32', N * I), 2);
  L.add('scratch', 'backward: dO, dQ', tb('f32', N * QD), 2);
  L.add('scratch', 'backward: dK, dV', tb('f32', N * KD), 2);
  if (c.qkNorm) {
    L.add('scratch', 'backward: dQ, dK before norm', tb('f32', N * QD));
    L.add('scratch', 'backward: dQ, dK before norm', tb('f32', N * KD));
  }
  if (c.gemma)
    L.add('scratch', 'backward: gradient behind the post-attention / post-feed-forward norm', tb('f32', N * H));
  const partialRows = Math.max(N, c.qkNorm ? N * c.numHeads : 0);
  L.add(
    'scratch',
    'RMSNorm weight-gradient partials',
    tb('f32', Math.max(rmsnormWeightGradPartials(partialRows, Math.max(H, D)), rmsnormWeightGradPartials(N, H))),
  );
  // Logits are computed for runs of labelled rows, and a run never crosses a sequence end (the last
  // token of a row has no label), so a chunk holds at most T − 1 rows.
  const chunk = Math.max(1, Math.min(T - 1, train.lossChunkRows ?? Math.floor(LOGITS_CHUNK_BYTES / (4 * V))));
  L.add('scratch', `logits chunk (${chunk} rows × vocab)`, tb('f32', chunk * V));
  L.add('scratch', 'per-row losses', tb('f32', N));
  L.add('scratch', 'attention backward rowStats', tb('f32', 2 * c.numHeads * N));
  if (c.numHeads !== c.numKvHeads)
    L.add('scratch', 'attention backward dK/dV per query head', tb('f32', N * c.numHeads * D), 2);
  L.add('scratch', 'gradient-norm partials', tb('f32', gradNormPartials([total])));
  L.add('scratch', 'step report, loss scale', tb('f32', 8));
  L.add('scratch', 'step report, loss scale', tb('f32', 4));
  const nL = targets.length;
  const biases = biasModules.length;
  const fwd = 2 + 7 + biases + 2 * nL + 1 + 1 + 1 + (c.qkNorm ? 2 : 0) + (c.gemma ? 2 : 0);
  const bwd = 7 + 4 * nL + 1 + 2 + 4 + 1 + (c.qkNorm ? 2 : 0) + (c.gemma ? 2 : 0) + (full ? 7 + biases + 4 : 0);
  const chunks = train.batchSize * Math.ceil((T - 1) / chunk);
  // bf16 checkpoints: pack + unpack of each kept input in the forward, one unpack per layer in the backward
  const packs = ck16 ? 2 * (layers + 1) + layers : 0;
  const dispatches = 1 + layers * (fwd * (train.gradientCheckpointing ? 2 : 1) + bwd) + 2 + chunks * 4 + 2 + packs;
  const arenas = Math.ceil((dispatches * UNIFORM_SLOT_BYTES) / UNIFORM_ARENA_BYTES);
  L.addRaw('scratch', 'uniform parameter arenas (≈ one slot per dispatch)', arenas * UNIFORM_ARENA_BYTES, arenas);

  const byCategory = L.byCategory();
  const sum = MEMORY_CATEGORIES.reduce((s, k) => s + byCategory[k], 0);
  return {
    total: sum,
    byCategory,
    items: L.items,
    fits: (budget) => sum <= budget,
    suggestions: (budget) => suggest(model, train, sum, budget),
  };
}

/** Logit rows per loss chunk the memory options and auto-fit use (16 × a 152k vocabulary = 9.7 MB of f32). */
export const SMALL_LOSS_CHUNK_ROWS = 16;

/** One memory step auto-fit can take, least costly first (speed, then exactness). */
interface FitStep {
  kind: SuggestionKind;
  label: string;
  /** The change, or null when it does not apply to this run. */
  change(m: ModelConfig, t: TrainPlanConfig): Partial<TrainPlanConfig> | null;
}

const FIT_STEPS: readonly FitStep[] = [
  {
    kind: 'checkpointing',
    label: 'turn on gradient checkpointing',
    change: (_m, t) => (t.gradientCheckpointing ? null : { gradientCheckpointing: true }),
  },
  {
    kind: 'lossChunk',
    label: `compute the loss over ${SMALL_LOSS_CHUNK_ROWS} logit rows at a time (a little slower)`,
    change: (m, t) =>
      (t.lossChunkRows ?? Math.floor(LOGITS_CHUNK_BYTES / (4 * m.vocabSize))) > SMALL_LOSS_CHUNK_ROWS
        ? { lossChunkRows: SMALL_LOSS_CHUNK_ROWS }
        : null,
  },
  {
    kind: 'hostEmbedding',
    label: 'keep the input embedding in host memory (only each batch’s rows go to the GPU)',
    change: (m, t) =>
      t.method !== 'full' && !m.tieWordEmbeddings && !t.embeddingOnHost ? { embeddingOnHost: true } : null,
  },
  {
    kind: 'checkpointPrecision',
    label: 'keep checkpointed layer inputs as bf16 (math stays f32)',
    change: (_m, t) =>
      t.gradientCheckpointing && t.checkpointPrecision !== 'bf16' ? { checkpointPrecision: 'bf16' } : null,
  },
  {
    kind: 'batch',
    label: 'halve the micro-batch (gradient accumulation keeps the effective batch)',
    change: (_m, t) => (t.batchSize > 1 ? { batchSize: Math.floor(t.batchSize / 2) } : null),
  },
  {
    kind: 'nf4Head',
    label: 'store the output head as NF4 (4-bit; the loss changes slightly)',
    change: (_m, t) => (t.method !== 'full' && t.headPrecision !== 'nf4' ? { headPrecision: 'nf4' } : null),
  },
];

export interface FitResult {
  /** The settings that fit (or the smallest plan reachable when nothing fits). */
  train: TrainPlanConfig;
  plan: MemoryPlan;
  /** Everything changed against the input, merged (apply it as one suggestion). */
  change: Partial<TrainPlanConfig>;
  /** The steps taken, in order, with their labels. */
  chosen: { kind: SuggestionKind; label: string; change: Partial<TrainPlanConfig> }[];
  fits: boolean;
}

/**
 * Auto-fit: from `train`, takes the memory steps in FIT_STEPS order (the micro-batch halves as
 * often as needed before the head goes to NF4) until the plan fits `budgetBytes`. The method and
 * cutoff_len are the user's and never change here. Pure arithmetic, like planMemory.
 */
export function fitPlan(model: ModelConfig, train: TrainPlanConfig, budgetBytes: number): FitResult {
  let t = { ...train };
  let plan = planMemory(model, t);
  const chosen: FitResult['chosen'] = [];
  for (const step of FIT_STEPS) {
    for (;;) {
      if (plan.total <= budgetBytes) break;
      const change = step.change(model, t);
      if (!change) break;
      const next = { ...t, ...change };
      const p = planMemory(model, next);
      if (p.total >= plan.total) break;
      t = next;
      plan = p;
      const label = step.kind === 'batch' ? batchLabel(t.batchSize, train.batchSize) : step.label;
      const last = chosen[chosen.length - 1];
      if (last?.kind === step.kind) Object.assign(last, { label, change: { ...last.change, ...change } });
      else chosen.push({ kind: step.kind, label, change });
      if (step.kind !== 'batch') break;
    }
  }
  const change: Partial<TrainPlanConfig> = {};
  for (const c of chosen) Object.assign(change, c.change);
  return { train: t, plan, change, chosen, fits: plan.total <= budgetBytes };
}

/**
 * The next smaller plan after an out-of-memory error at `train`: auto-fit to just below its own
 * predicted total (one more step), or null when no step is left.
 */
export function nextSmallerPlan(model: ModelConfig, train: TrainPlanConfig): FitResult | null {
  const now = planMemory(model, train).total;
  const r = fitPlan(model, train, now - 1);
  return r.chosen.length ? r : null;
}

function batchLabel(batch: number, from: number): string {
  return `lower the batch size to ${batch} (raise gradient accumulation ×${Math.ceil(from / batch)} to keep the effective batch)`;
}

function suggest(model: ModelConfig, t: TrainPlanConfig, total: number, budget: number): Suggestion[] {
  const out: Suggestion[] = [];
  const tryChange = (kind: SuggestionKind, label: string, change: Partial<TrainPlanConfig>) => {
    const p = planMemory(model, { ...t, ...change });
    if (p.total < total)
      out.push({ kind, label, change, total: p.total, saves: total - p.total, fits: p.total <= budget });
  };
  if (!t.gradientCheckpointing)
    tryChange('checkpointing', 'turn on gradient checkpointing', { gradientCheckpointing: true });
  for (const step of FIT_STEPS) {
    if (step.kind === 'checkpointing' || step.kind === 'batch') continue;
    const change = step.change(model, t);
    if (change) tryChange(step.kind, step.label, change);
  }
  if (t.method === 'lora') tryChange('qlora', 'turn on QLoRA (4-bit NF4 base weights)', { method: 'qlora' });
  // smallest batch / cutoff that fits, else the halved value
  for (let b = Math.floor(t.batchSize / 2); b >= 1; b = Math.floor(b / 2)) {
    const p = planMemory(model, { ...t, batchSize: b });
    if (p.total <= budget || b === 1) {
      tryChange('batch', batchLabel(b, t.batchSize), { batchSize: b });
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
  // Auto-fit: every step needed at once, when more than one is (one step alone is listed above).
  const fit = fitPlan(model, t, budget);
  if (total > budget && fit.chosen.length > 1)
    out.push({
      kind: 'autofit',
      label: `fit automatically: ${fit.chosen.map((c) => c.label).join('; ')}`,
      change: fit.change,
      total: fit.plan.total,
      saves: total - fit.plan.total,
      fits: fit.fits,
      steps: fit.chosen,
    });
  return out.sort((a, b) => Number(b.fits) - Number(a.fits) || b.saves - a.saves);
}

export function fmtGB(bytes: number): string {
  return `${(bytes / 1e9).toFixed(2)} GB`;
}
