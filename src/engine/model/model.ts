// A decoder on the GPU: its config, its weights under their Hugging Face names, and LoRA
// adapter sets attached to it (PEFT semantics, see src/engine/ops/lora.ts).
import type { Gpu } from '../gpu/device.ts';
import { describe, tensorView, type Tensor } from '../gpu/tensor.ts';
import { releaseTensor, tensorSpec, writeTensor, zerosTensor } from '../gpu/transfer.ts';
import { initLoraA, loraScale, type LoraAdapter } from '../ops/lora.ts';
import { isNf4, releaseNf4, type Nf4Weight } from '../ops/nf4.ts';
import {
  ATTENTION_MODULES,
  MLP_MODULES,
  linearModules,
  linearShape,
  moduleGroup,
  type LinearModule,
  type ModelConfig,
} from './config.ts';

/**
 * A 2-D weight larger than one storage binding (e.g. a 152k × 2048 embedding), cut into
 * consecutive row ranges, each its own buffer. Only the embedding / lm_head are ever split.
 */
export interface RowSplitWeight {
  readonly kind: 'rows';
  readonly shape: readonly [number, number];
  readonly dtype: Tensor['dtype'];
  readonly parts: readonly { readonly tensor: Tensor; readonly row0: number; readonly rows: number }[];
  readonly label: string;
}

/**
 * A weight kept in host memory instead of on the GPU: the input embedding when only the batch's
 * rows need to reach the GPU (untied models, or tied ones whose head is NF4 on the GPU). The
 * bytes are the checkpoint's, row-major [vocab, hidden].
 */
export interface HostWeight {
  readonly kind: 'host';
  readonly shape: readonly [number, number];
  readonly dtype: 'f32' | 'bf16' | 'f16';
  readonly bytes: Uint8Array;
  readonly label: string;
}

export type ModelWeight = Tensor | Nf4Weight | RowSplitWeight | HostWeight;

export function isHostWeight(w: unknown): w is HostWeight {
  return typeof w === 'object' && w !== null && (w as { kind?: unknown }).kind === 'host';
}

/** The rows ids[n] of a host weight, packed [ids.length, hidden] in its dtype (ready to upload). */
export function gatherHostRows(w: HostWeight, ids: ArrayLike<number>): Uint16Array | Float32Array {
  const [V, H] = w.shape;
  const rowBytes = H * (w.dtype === 'f32' ? 4 : 2);
  const out = new Uint8Array(ids.length * rowBytes);
  for (let n = 0; n < ids.length; n++) {
    const id = ids[n];
    if (!Number.isInteger(id) || id < 0 || id >= V)
      throw new Error(`${w.label}: token id ${id} at position ${n} is outside the vocabulary of ${V}`);
    out.set(w.bytes.subarray(id * rowBytes, (id + 1) * rowBytes), n * rowBytes);
  }
  return w.dtype === 'f32' ? new Float32Array(out.buffer) : new Uint16Array(out.buffer);
}

export function isRowSplit(w: unknown): w is RowSplitWeight {
  return typeof w === 'object' && w !== null && (w as { kind?: unknown }).kind === 'rows';
}

export function weightLabel(w: ModelWeight): string {
  if (isNf4(w)) return `${w.label}[${w.shape.join('×')}:nf4]`;
  if (isRowSplit(w)) return `${w.label}[${w.shape.join('×')}:${w.dtype} in ${w.parts.length} row parts]`;
  if (isHostWeight(w)) return `${w.label}[${w.shape.join('×')}:${w.dtype} in host memory]`;
  return describe(w);
}

/** The linear layers of the Llama-shaped families (Phi-3 fuses some: see linearModules). */
export const LINEAR_MODULES: readonly LinearModule[] = [...ATTENTION_MODULES, ...MLP_MODULES];

export function modulePrefix(layer: number, m: LinearModule): string {
  return `model.layers.${layer}.${moduleGroup(m)}.${m}`;
}

export class Model {
  /** Weights by Hugging Face tensor name; with tied embeddings lm_head.weight is the embedding itself. */
  readonly weights = new Map<string, ModelWeight>();
  /** f32 [headDim/2] RoPE inverse frequencies (computeInvFreq). */
  invFreq: Tensor | null = null;
  /** Gemma 3: f32 [headDim/2] inverse frequencies of the sliding layers (rope_local_base_freq); else null. */
  invFreqLocal: Tensor | null = null;
  /** What the loader did (quantized tensors, dtype conversions, splits), for the UI. */
  readonly notes: string[] = [];
  private released = false;

  constructor(
    readonly gpu: Gpu,
    readonly config: ModelConfig,
  ) {}

  get(name: string): ModelWeight {
    const w = this.weights.get(name);
    if (!w) throw new Error(`model: weight "${name}" is not loaded`);
    return w;
  }

  /** A dense (not split) weight; NF4 allowed for linear layers. */
  linear(layer: number, m: LinearModule): Tensor | Nf4Weight {
    const name = `${modulePrefix(layer, m)}.weight`;
    const w = this.get(name);
    if (isRowSplit(w) || isHostWeight(w))
      throw new Error(`model: ${name} is ${weightLabel(w)}; only the embedding and lm_head may be`);
    return w;
  }

  bias(layer: number, m: LinearModule): Tensor | null {
    const w = this.weights.get(`${modulePrefix(layer, m)}.bias`);
    return w ? (w as Tensor) : null;
  }

  tensor(name: string): Tensor {
    const w = this.get(name);
    if (isNf4(w) || isRowSplit(w) || isHostWeight(w))
      throw new Error(`model: ${name} must be a plain tensor, it is ${weightLabel(w)}`);
    return w;
  }

  get embedding(): Tensor | RowSplitWeight | HostWeight {
    return this.get('model.embed_tokens.weight') as Tensor | RowSplitWeight | HostWeight;
  }

  get lmHead(): Tensor | Nf4Weight | RowSplitWeight {
    return this.get('lm_head.weight') as Tensor | Nf4Weight | RowSplitWeight;
  }

  /** Total GPU bytes of the weights (tied tensors counted once). */
  weightBytes(): number {
    const seen = new Set<unknown>();
    let n = 0;
    for (const w of this.weights.values()) {
      if (seen.has(w)) continue;
      seen.add(w);
      if (isNf4(w)) n += w.packed.buf.size + w.absmax.buf.size + (w.nested?.table.buf.size ?? 0);
      else if (isRowSplit(w)) n += w.parts.reduce((a, p) => a + p.tensor.buf.size, 0);
      else if (!isHostWeight(w)) n += w.buf.size;
    }
    return n;
  }

  release(): void {
    if (this.released) return;
    this.released = true;
    const seen = new Set<unknown>();
    for (const w of this.weights.values()) {
      if (seen.has(w)) continue;
      seen.add(w);
      if (isNf4(w)) releaseNf4(this.gpu, w);
      else if (isRowSplit(w)) w.parts.forEach((p) => releaseTensor(this.gpu, p.tensor));
      else if (!isHostWeight(w)) releaseTensor(this.gpu, w);
    }
    this.weights.clear();
    if (this.invFreq) releaseTensor(this.gpu, this.invFreq);
    this.invFreq = null;
    if (this.invFreqLocal) releaseTensor(this.gpu, this.invFreqLocal);
    this.invFreqLocal = null;
  }
}

// ---------------------------------------------------------------------------------------------
// LoRA

export interface LoraConfig {
  rank: number;
  alpha: number;
  dropout: number;
  /**
   * Module names (q_proj, ...; Phi-3: qkv_proj, o_proj, gate_up_proj, down_proj as PEFT names
   * them), or 'all' (every linear layer, LLaMA-Factory's lora_target: all).
   */
  targets: readonly string[] | 'all';
  rsLora?: boolean;
  /** Seeds A's initialisation and the dropout masks. */
  seed: number;
  /** Layers to adapt (default all). */
  layers?: readonly number[];
}

export interface LoraModuleState {
  /** f32 [r, in] and [out, r] (PEFT lora_A / lora_B). */
  A: Tensor;
  B: Tensor;
  /** The op-level view of the same tensors. */
  adapter: LoraAdapter;
  layer: number;
  module: LinearModule;
  /** Stream id of this module's dropout mask and initialisation. */
  moduleId: number;
}

export class LoraSet {
  /** By HF module name, e.g. "model.layers.0.self_attn.q_proj". */
  readonly adapters = new Map<string, LoraModuleState>();
  readonly scale: number;
  readonly targets: LinearModule[];
  /**
   * Where the adapted layers sit under PEFT's base_model.model: `model` (…ForCausalLM) or
   * `model.language_model` (the language model of a Gemma3ForConditionalGeneration checkpoint).
   */
  peftBase: 'model' | 'model.language_model' = 'model';

  constructor(
    readonly gpu: Gpu,
    readonly config: LoraConfig,
    /** The model's linear layers (linearModules of its config). */
    modules: readonly LinearModule[] = LINEAR_MODULES,
  ) {
    this.scale = loraScale(config.alpha, config.rank, config.rsLora ?? false);
    this.targets = resolveTargets(config.targets, modules);
  }

  get(layer: number, m: LinearModule): LoraModuleState | undefined {
    return this.adapters.get(modulePrefix(layer, m));
  }

  /** PEFT key of a tensor: base_model.model.<module>.lora_A.weight. */
  static peftKey(moduleName: string, which: 'A' | 'B'): string {
    return `base_model.model.${moduleName}.lora_${which}.weight`;
  }

  parameterCount(): number {
    let n = 0;
    for (const a of this.adapters.values()) n += a.adapter.r * (a.adapter.inFeatures + a.adapter.outFeatures);
    return n;
  }

  /**
   * Every A and B of the set in one f32 buffer, each at an aligned offset: the trainer's AdamW
   * and gradient clipping then work on the adapters in place, with no second copy of them.
   */
  arena: Tensor | null = null;

  /** Allocates the arena for `modules` (zeros) and adds them with A and B as views of it. */
  allocate(modules: readonly LoraModuleSpec[]): void {
    if (this.arena || this.adapters.size) throw new Error('LoRA set: adapters are already allocated');
    const r = this.config.rank;
    const layout = loraArenaLayout(
      modules.map((m) => [r * m.inFeatures, m.outFeatures * r]),
      this.gpu.limits.minStorageBufferOffsetAlignment,
    );
    const arena = zerosTensor(this.gpu, tensorSpec('f32', [layout.floats], 'adapters', 'lora.arena'));
    this.arena = arena;
    modules.forEach((m, i) => {
      const [atA, atB] = layout.offsets[i];
      const A = tensorView(arena, atA * 4, 'f32', [r, m.inFeatures], `${m.name}.lora_A`);
      const B = tensorView(arena, atB * 4, 'f32', [m.outFeatures, r], `${m.name}.lora_B`);
      this.adapters.set(m.name, {
        A,
        B,
        adapter: { a: A, b: B, r, inFeatures: m.inFeatures, outFeatures: m.outFeatures, scale: this.scale },
        layer: m.layer,
        module: m.module,
        moduleId: m.moduleId,
      });
    });
  }

  release(): void {
    if (this.arena) releaseTensor(this.gpu, this.arena);
    this.arena = null;
    this.adapters.clear();
  }
}

/** One adapted module of a LoraSet. */
export interface LoraModuleSpec {
  name: string;
  layer: number;
  module: LinearModule;
  moduleId: number;
  inFeatures: number;
  outFeatures: number;
}

/**
 * Float offsets of each tensor in a flat arena where every tensor starts on a multiple of
 * `alignBytes` (WebGPU binds a storage range only at minStorageBufferOffsetAlignment), and the
 * arena's length. `tensors` lists element counts, grouped per module.
 */
export function loraArenaLayout(
  tensors: readonly (readonly number[])[],
  alignBytes: number,
): { offsets: number[][]; floats: number } {
  const align = Math.max(1, alignBytes / 4);
  let at = 0;
  const offsets = tensors.map((group) =>
    group.map((n) => {
      const o = at;
      at = Math.ceil((at + n) / align) * align;
      return o;
    }),
  );
  return { offsets, floats: Math.max(at, 1) };
}

/** LoraSet.peftBase for a model of this config. */
export function peftBaseOf(c: Pick<ModelConfig, 'languageModelOf'>): 'model' | 'model.language_model' {
  return c.languageModelOf ? 'model.language_model' : 'model';
}

export function resolveTargets(
  targets: readonly string[] | 'all',
  modules: readonly LinearModule[] = LINEAR_MODULES,
): LinearModule[] {
  if (targets === 'all' || (targets.length === 1 && targets[0] === 'all')) return [...modules];
  // A TrainConfig says lora_target: all as the seven Llama-style names (llamafactory-config.ts
  // ALL_LORA_TARGETS); on Phi-3 that is every fused linear layer, as find_all_linear_modules finds.
  if (!modules.includes('q_proj') && LINEAR_MODULES.every((m) => targets.includes(m))) return [...modules];
  const out: LinearModule[] = [];
  for (const t of targets) {
    if (!(modules as readonly string[]).includes(t)) {
      throw new Error(
        `LoRA target "${t}" is not a linear layer of this model; choose from ${modules.join(', ')} or "all"`,
      );
    }
    if (!out.includes(t as LinearModule)) out.push(t as LinearModule);
  }
  if (!out.length) throw new Error('LoRA needs at least one target module');
  return out;
}

/**
 * Adds PEFT-initialised adapters (A Kaiming-uniform from the seed, B zero) to every targeted
 * linear layer. Weights of the base model are untouched.
 */
export function attachLora(model: Model, cfg: LoraConfig): LoraSet {
  const c = model.config;
  const linears = linearModules(c);
  const set = new LoraSet(model.gpu, cfg, linears);
  set.peftBase = peftBaseOf(model.config);
  const layers = cfg.layers ?? Array.from({ length: c.numLayers }, (_, i) => i);
  const modules: LoraModuleSpec[] = [];
  for (const l of layers) {
    if (!Number.isInteger(l) || l < 0 || l >= c.numLayers)
      throw new Error(`LoRA layer ${l} outside 0..${c.numLayers - 1}`);
    for (const m of set.targets) {
      const [outFeatures, inFeatures] = linearShape(c, m);
      // The Llama-shaped families keep their ids (l·7 + index); Phi-3 numbers its four modules.
      const moduleId = l * linears.length + linears.indexOf(m);
      modules.push({ name: modulePrefix(l, m), layer: l, module: m, moduleId, inFeatures, outFeatures });
    }
  }
  set.allocate(modules);
  // B starts at zero (the arena is); A gets PEFT's Kaiming-uniform draw.
  for (const m of modules)
    writeTensor(model.gpu, set.adapters.get(m.name)!.A, initLoraA(cfg.rank, m.inFeatures, cfg.seed, m.moduleId));
  return set;
}
