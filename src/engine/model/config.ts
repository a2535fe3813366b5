// Hugging Face config.json → the decoder shape we run. Field semantics from transformers
// `models/llama/configuration_llama.py`, `models/qwen2/configuration_qwen2.py`,
// `models/qwen3/configuration_qwen3.py`, `models/mistral/configuration_mistral.py`,
// `models/smollm3/configuration_smollm3.py`, `models/phi3/configuration_phi3.py`;
// RoPE from `modeling_rope_utils.py`.

export const SUPPORTED_ARCHITECTURES = [
  'LlamaForCausalLM',
  'Qwen2ForCausalLM',
  'Qwen3ForCausalLM',
  'MistralForCausalLM',
  'Gemma3ForCausalLM',
  'Gemma2ForCausalLM',
  'SmolLM3ForCausalLM',
  'Phi3ForCausalLM',
] as const;
export type Architecture = (typeof SUPPORTED_ARCHITECTURES)[number];

export class ModelConfigError extends Error {
  override readonly name = 'ModelConfigError';
  constructor(
    readonly file: string,
    /** The config field at fault (dotted for nested ones). */
    readonly field: string | null,
    detail: string,
  ) {
    super(`${file}: ${field ? `${field}: ` : ''}${detail}`);
  }
}

export type RopeScaling =
  | { type: 'default' }
  | { type: 'linear'; factor: number }
  | { type: 'dynamic'; factor: number; originalMaxPositionEmbeddings: number | null }
  | {
      type: 'llama3';
      factor: number;
      lowFreqFactor: number;
      highFreqFactor: number;
      originalMaxPositionEmbeddings: number;
    }
  | {
      /**
       * LongRoPE (Phi-3 / Phi-3.5 / Phi-4-mini): inv_freq[i] = 1 / (ext[i] · θ^(2i/rotaryDim)) with
       * ext = shortFactor, or longFactor once a pass reaches past originalMaxPositionEmbeddings;
       * cos and sin are multiplied by attentionFactor.
       */
      type: 'longrope';
      shortFactor: number[];
      longFactor: number[];
      originalMaxPositionEmbeddings: number;
      attentionFactor: number;
    };

export type TorchDtype = 'float32' | 'float16' | 'bfloat16';

export interface ModelConfig {
  architecture: Architecture;
  modelType: string;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  vocabSize: number;
  maxPositionEmbeddings: number;
  rmsNormEps: number;
  ropeTheta: number;
  rope: RopeScaling;
  tieWordEmbeddings: boolean;
  /** q/k/v projections carry a bias (Qwen2 always; Llama/Qwen3 when attention_bias). */
  qkvBias: boolean;
  /** o_proj carries a bias (Llama/Qwen3 attention_bias). */
  oBias: boolean;
  /** gate/up/down carry a bias (Llama mlp_bias). */
  mlpBias: boolean;
  /** Qwen3: RMSNorm over head_dim on q and k before RoPE (self_attn.q_norm / k_norm). */
  qkNorm: boolean;
  /**
   * Gemma (modeling_gemma3.py / modeling_gemma2.py): RMSNorm scales by (1 + w) in f32
   * (Gemma3RMSNorm), the MLP gate is gelu_pytorch_tanh, embeddings are multiplied by √hidden
   * (see embeddingScale), the attention and MLP outputs are normalised before their residual adds
   * (post_attention_layernorm, post_feedforward_layernorm; pre_feedforward_layernorm feeds the
   * MLP), and tanh soft-capping may bend attention scores and the final logits.
   */
  gemma: GemmaShape | null;
  /**
   * Layers that attend through `slidingWindow` (Gemma's "sliding_attention" layer_types, and those
   * transformers derives for Qwen2/Qwen3/SmolLM3; the others are global); null: the window, when
   * set, applies to every layer (Mistral, Phi-3).
   */
  slidingLayers: number[] | null;
  /**
   * Gemma3ForConditionalGeneration when config.json is that multimodal checkpoint's (the decoder is
   * its language model, `model.language_model.*` in transformers' module tree); null otherwise.
   */
  languageModelOf: 'Gemma3ForConditionalGeneration' | null;
  /**
   * Layers whose attention takes no rotary position embedding (SmolLM3's NoPE layers,
   * modeling_smollm3.py `use_rope = config.no_rope_layers[layer_idx]`); empty for the others.
   */
  noRopeLayers: number[];
  /**
   * Leading dimensions of each head that RoPE rotates (head_dim · partial_rotary_factor, Phi-4-mini
   * 0.75 → 96 of 128); the rest pass through. headDim for every model without the factor.
   */
  rotaryDim: number;
  /**
   * Phi-3: q/k/v are one `self_attn.qkv_proj` [(Hq + 2·Hkv)·D, hidden] and gate/up one
   * `mlp.gate_up_proj` [2·intermediate, hidden] (modeling_phi3.py Phi3Attention / Phi3MLP).
   */
  fusedProjections: boolean;
  /** Sliding-window attention size when the model uses it, else null. */
  slidingWindow: number | null;
  torchDtype: TorchDtype | null;
  bosTokenId: number | null;
  eosTokenIds: number[];
  padTokenId: number | null;
  /** Things the user should know (e.g. how sliding-window attention is handled). */
  notes: string[];
}

/** What Gemma 2 / Gemma 3 add to the Llama shape (ModelConfig.gemma). */
export interface GemmaShape {
  /** query_pre_attn_scalar of config.json. */
  queryPreAttnScalar: number;
  /** Softmax scale query_pre_attn_scalar^-0.5 (Gemma3Attention.scaling). */
  attentionScale: number;
  /** attn_logit_softcapping (Gemma 2: 50), null when off. */
  attnSoftcap: number | null;
  /** final_logit_softcapping (Gemma 2: 30), null when off. */
  finalSoftcap: number | null;
  /** Gemma 3: rope_local_base_freq, the RoPE base of the sliding layers (default RoPE); null: one RoPE for all. */
  ropeLocalTheta: number | null;
}

/** Gated-MLP activation of the model (ops/swiglu.ts GateActivation). */
export function mlpActivation(c: Pick<ModelConfig, 'gemma'>): 'silu' | 'gelu_tanh' {
  return c.gemma ? 'gelu_tanh' : 'silu';
}

/** RMSNorm weight offset (ops/rmsnorm.ts): Gemma's (1 + w), else 0. */
export function normOffset(c: Pick<ModelConfig, 'gemma'>): number {
  return c.gemma ? 1 : 0;
}

/**
 * The embedding multiplier: 1, or Gemma's √hidden rounded to the dtype the embedding is held in,
 * as transformers does (Gemma3TextScaledWordEmbedding: embed_scale.to(weight.dtype); Gemma2Model:
 * torch.tensor(hidden_size**0.5, dtype=hidden_states.dtype)). A bf16 checkpoint therefore scales by
 * bf16(√hidden) (√640 = 25.30 → 25.25, √1152 = 33.94 → 34) even though Tabtune's activations stay
 * f32 — exactly what the checkpoint was trained and evaluated with; an f32 one by f32(√hidden).
 */
export function embeddingScale(c: Pick<ModelConfig, 'gemma' | 'hiddenSize'>, dtype: 'f32' | 'bf16' | 'f16'): number {
  if (!c.gemma) return 1;
  const v = Math.fround(Math.sqrt(c.hiddenSize));
  if (dtype === 'f32') return v;
  const f = new Float32Array([v]);
  const u = new Uint32Array(f.buffer);
  if (dtype === 'bf16') {
    // Round to nearest even on the upper 16 bits (torch's f32 → bf16).
    u[0] = ((u[0] + 0x7fff + ((u[0] >>> 16) & 1)) >>> 16) << 16;
    return f[0];
  }
  return f16Round(v);
}

/** Nearest f16 value of a positive normal f32 (round half to even on the 13 dropped mantissa bits). */
function f16Round(v: number): number {
  const e = Math.floor(Math.log2(v));
  const ulp = 2 ** (e - 10);
  const q = v / ulp;
  const r = Math.round(q);
  return (Math.abs(q - Math.trunc(q) - 0.5) < 1e-12 && r % 2 ? r - 1 : r) * ulp;
}

/** The sliding window of layer l, or null for full causal attention. */
export function layerWindow(c: Pick<ModelConfig, 'slidingWindow' | 'slidingLayers'>, l: number): number | null {
  if (c.slidingWindow === null) return null;
  return c.slidingLayers === null || c.slidingLayers.includes(l) ? c.slidingWindow : null;
}

type Json = Record<string, unknown>;

function isObj(x: unknown): x is Json {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}

class Reader {
  constructor(
    readonly file: string,
    readonly raw: Json,
    /** Where raw sits in the file ("text_config." for a multimodal checkpoint's language model). */
    readonly prefix = '',
  ) {}
  fail(field: string | null, detail: string): never {
    throw new ModelConfigError(this.file, field === null ? null : this.prefix + field, detail);
  }
  has(k: string): boolean {
    return this.raw[k] !== undefined && this.raw[k] !== null;
  }
  int(k: string, dflt?: number, min = 1): number {
    const v = this.raw[k];
    if (v === undefined || v === null) {
      if (dflt === undefined) this.fail(k, 'missing (required)');
      return dflt;
    }
    if (typeof v !== 'number' || !Number.isSafeInteger(v)) this.fail(k, `must be an integer, got ${JSON.stringify(v)}`);
    if (v < min) this.fail(k, `must be ≥ ${min}, got ${v}`);
    return v;
  }
  num(k: string, dflt?: number, positive = true): number {
    const v = this.raw[k];
    if (v === undefined || v === null) {
      if (dflt === undefined) this.fail(k, 'missing (required)');
      return dflt;
    }
    if (typeof v !== 'number' || !Number.isFinite(v)) this.fail(k, `must be a number, got ${JSON.stringify(v)}`);
    if (positive && !(v > 0)) this.fail(k, `must be > 0, got ${v}`);
    return v;
  }
  bool(k: string, dflt: boolean): boolean {
    const v = this.raw[k];
    if (v === undefined || v === null) return dflt;
    if (typeof v !== 'boolean') this.fail(k, `must be true or false, got ${JSON.stringify(v)}`);
    return v;
  }
  tokenId(k: string): number | null {
    const v = this.raw[k];
    if (v === undefined || v === null) return null;
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0)
      this.fail(k, `must be a token id, got ${JSON.stringify(v)}`);
    return v;
  }
  tokenIds(k: string): number[] {
    const v = this.raw[k];
    if (v === undefined || v === null) return [];
    const arr = Array.isArray(v) ? v : [v];
    return arr.map((x, i) => {
      if (typeof x !== 'number' || !Number.isSafeInteger(x) || x < 0)
        this.fail(Array.isArray(v) ? `${k}[${i}]` : k, `must be a token id, got ${JSON.stringify(x)}`);
      return x;
    });
  }
}

function ropeNumber(
  r: Reader,
  where: string,
  params: Json,
  k: string,
  opts: { int?: boolean; min?: number } = {},
): number {
  const v = params[k];
  if (v === undefined || v === null)
    r.fail(`${where}.${k}`, `required for rope_type "${String(params.rope_type ?? params.type)}"`);
  if (typeof v !== 'number' || !Number.isFinite(v) || (opts.int && !Number.isSafeInteger(v)))
    r.fail(`${where}.${k}`, `must be a${opts.int ? 'n integer' : ' number'}, got ${JSON.stringify(v)}`);
  if (opts.min !== undefined && v < opts.min) r.fail(`${where}.${k}`, `must be ≥ ${opts.min}, got ${v}`);
  return v;
}

/** What LongRoPE needs from the rest of config.json (see parseLongRope). */
interface RopeContext {
  architecture: Architecture;
  maxPositionEmbeddings: number;
  rotaryDim: number;
}

/** Reads rope_theta + scaling from either `rope_scaling` (+ top-level rope_theta) or the newer `rope_parameters`. */
function parseRope(r: Reader, defaultTheta: number, ctx: RopeContext): { theta: number; rope: RopeScaling } {
  const newer = r.raw.rope_parameters;
  const legacy = r.raw.rope_scaling;
  let where: string;
  let params: Json | null;
  if (isObj(newer)) {
    where = 'rope_parameters';
    params = newer;
  } else if (newer !== undefined && newer !== null) {
    r.fail('rope_parameters', 'must be an object');
  } else if (isObj(legacy)) {
    where = 'rope_scaling';
    params = legacy;
  } else if (legacy !== undefined && legacy !== null) {
    r.fail('rope_scaling', 'must be an object or null');
  } else {
    where = 'rope_scaling';
    params = null;
  }
  let theta: number;
  if (params && params.rope_theta !== undefined && params.rope_theta !== null)
    theta = ropeNumber(r, where!, params, 'rope_theta', { min: Number.MIN_VALUE });
  else theta = r.num('rope_theta', defaultTheta);
  if (!params) return { theta, rope: { type: 'default' } };
  // BC: "rope_type" was originally "type" (modeling_rope_utils.py).
  let t = params.rope_type ?? params.type ?? 'default';
  // configuration_phi3.py: early Phi-3 configs call LongRoPE "su" (or "yarn").
  if (ctx.architecture === 'Phi3ForCausalLM' && (t === 'su' || t === 'yarn')) t = 'longrope';
  const w = where!;
  switch (t) {
    case 'default':
      return { theta, rope: { type: 'default' } };
    case 'linear':
      return { theta, rope: { type: 'linear', factor: ropeNumber(r, w, params, 'factor', { min: 1 }) } };
    case 'dynamic': {
      const omp = params.original_max_position_embeddings;
      return {
        theta,
        rope: {
          type: 'dynamic',
          factor: ropeNumber(r, w, params, 'factor', { min: 1 }),
          originalMaxPositionEmbeddings:
            omp === undefined || omp === null
              ? null
              : ropeNumber(r, w, params, 'original_max_position_embeddings', { int: true, min: 1 }),
        },
      };
    }
    case 'llama3': {
      const low = ropeNumber(r, w, params, 'low_freq_factor', { min: Number.MIN_VALUE });
      const high = ropeNumber(r, w, params, 'high_freq_factor', { min: Number.MIN_VALUE });
      if (!(high > low)) r.fail(`${w}.high_freq_factor`, `must be greater than low_freq_factor (${low}), got ${high}`);
      const omp = ropeNumber(r, w, params, 'original_max_position_embeddings', { int: true, min: 1 });
      return {
        theta,
        rope: {
          type: 'llama3',
          factor: ropeNumber(r, w, params, 'factor', { min: 1 }),
          lowFreqFactor: low,
          highFreqFactor: high,
          originalMaxPositionEmbeddings: omp,
        },
      };
    }
    case 'longrope':
      return { theta, rope: parseLongRope(r, w, params, ctx) };
    default:
      r.fail(
        `${w}.rope_type`,
        `RoPE scaling ${JSON.stringify(t)} is not supported; supported: default, linear, dynamic, llama3, longrope`,
      );
  }
}

/**
 * LongRoPE as transformers resolves it (modeling_rope_utils.py `_compute_longrope_parameters`,
 * rope_config_utils.py `standardize_rope_params`): original_max_position_embeddings from the
 * top level of config.json when present (Phi-3 keeps it there; it wins), else from the scaling
 * dict, else max_position_embeddings; factor = the dict's `factor`, else max_position_embeddings /
 * original; attention factor = the dict's `attention_factor`, else √(1 + ln(factor) / ln(original))
 * (1 when factor ≤ 1). short_factor and long_factor hold one number per rotated frequency.
 */
function parseLongRope(
  r: Reader,
  w: string,
  params: Json,
  ctx: RopeContext,
): Extract<RopeScaling, { type: 'longrope' }> {
  const half = ctx.rotaryDim / 2;
  const list = (k: 'short_factor' | 'long_factor'): number[] => {
    const v = params[k];
    if (!Array.isArray(v)) r.fail(`${w}.${k}`, `required for rope_type "longrope": a list of ${half} numbers`);
    if (v.length !== half)
      r.fail(
        `${w}.${k}`,
        `must hold ${half} numbers (one per rotated frequency, rotary dim ${ctx.rotaryDim}), got ${v.length}`,
      );
    return v.map((x, i) => {
      if (typeof x !== 'number' || !(x > 0) || !Number.isFinite(x))
        r.fail(`${w}.${k}[${i}]`, `must be a positive number, got ${JSON.stringify(x)}`);
      return x;
    });
  };
  let original: number;
  if (r.has('original_max_position_embeddings')) original = r.int('original_max_position_embeddings');
  // Phi3Config always has the attribute (default 4096), so the dict's value never applies there.
  else if (ctx.architecture === 'Phi3ForCausalLM') original = 4096;
  else if (params.original_max_position_embeddings !== undefined && params.original_max_position_embeddings !== null)
    original = ropeNumber(r, w, params, 'original_max_position_embeddings', { int: true, min: 1 });
  else original = ctx.maxPositionEmbeddings;
  const factor =
    params.factor !== undefined && params.factor !== null
      ? ropeNumber(r, w, params, 'factor', { min: Number.MIN_VALUE })
      : ctx.maxPositionEmbeddings / original;
  let attentionFactor: number;
  if (params.attention_factor !== undefined && params.attention_factor !== null)
    attentionFactor = ropeNumber(r, w, params, 'attention_factor', { min: 0 });
  else attentionFactor = factor <= 1 ? 1 : Math.sqrt(1 + Math.log(factor) / Math.log(original));
  return {
    type: 'longrope',
    shortFactor: list('short_factor'),
    longFactor: list('long_factor'),
    originalMaxPositionEmbeddings: original,
    attentionFactor,
  };
}

const DTYPES: Record<string, TorchDtype> = {
  float32: 'float32',
  float16: 'float16',
  bfloat16: 'bfloat16',
  float: 'float32',
  half: 'float16',
};

/** Parses config.json text (or an already-parsed object). Throws ModelConfigError naming the field. */
export function parseModelConfig(input: string | Json, file = 'config.json'): ModelConfig {
  let raw: unknown = input;
  if (typeof input === 'string') {
    try {
      raw = JSON.parse(input);
    } catch (e) {
      throw new ModelConfigError(file, null, `not valid JSON: ${(e as Error).message}`);
    }
  }
  if (!isObj(raw)) throw new ModelConfigError(file, null, 'must be a JSON object');
  const r: Reader = languageModelReader(file, raw);
  // From here on, the language model's config (narrowed again after the reassignment).
  if (!isObj((raw = r.raw))) throw new ModelConfigError(file, null, 'must be a JSON object');

  const archs = raw.architectures;
  let arch: string | undefined;
  if (Array.isArray(archs) && archs.length > 0 && typeof archs[0] === 'string') arch = archs[0];
  else if (archs === undefined || archs === null) {
    const byType: Record<string, Architecture> = {
      llama: 'LlamaForCausalLM',
      qwen2: 'Qwen2ForCausalLM',
      qwen3: 'Qwen3ForCausalLM',
      mistral: 'MistralForCausalLM',
      gemma3_text: 'Gemma3ForCausalLM',
      gemma2: 'Gemma2ForCausalLM',
      smollm3: 'SmolLM3ForCausalLM',
      phi3: 'Phi3ForCausalLM',
    };
    arch = typeof raw.model_type === 'string' ? byType[raw.model_type] : undefined;
    if (!arch)
      r.fail(
        'architectures',
        `missing, and model_type ${JSON.stringify(raw.model_type)} does not name a supported model; supported: ${SUPPORTED_ARCHITECTURES.join(', ')}`,
      );
  } else r.fail('architectures', `must be a list of class names, got ${JSON.stringify(archs)}`);
  if (!(SUPPORTED_ARCHITECTURES as readonly string[]).includes(arch!)) {
    r.fail('architectures', `unsupported architecture ${arch}; supported: ${SUPPORTED_ARCHITECTURES.join(', ')}`);
  }
  const architecture = arch as Architecture;
  const notes: string[] = [];

  const hiddenSize = r.int('hidden_size');
  const intermediateSize = r.int('intermediate_size');
  const numLayers = r.int('num_hidden_layers');
  const numHeads = r.int('num_attention_heads');
  const numKvHeads = r.int('num_key_value_heads', numHeads);
  if (numHeads % numKvHeads !== 0)
    r.fail(
      'num_key_value_heads',
      `num_attention_heads (${numHeads}) must be divisible by num_key_value_heads (${numKvHeads})`,
    );
  let headDim: number;
  if (r.has('head_dim')) headDim = r.int('head_dim');
  else {
    if (hiddenSize % numHeads !== 0)
      r.fail(
        'hidden_size',
        `hidden_size (${hiddenSize}) must be divisible by num_attention_heads (${numHeads}) when head_dim is not given`,
      );
    headDim = hiddenSize / numHeads;
  }
  if (headDim % 2 !== 0) r.fail('head_dim', `RoPE needs an even head dimension, got ${headDim}`);
  const vocabSize = r.int('vocab_size');
  const maxPositionEmbeddings = r.int('max_position_embeddings', 2048);
  // Phi3Config defaults rms_norm_eps to 1e-5; the others to 1e-6.
  const rmsNormEps = r.num('rms_norm_eps', architecture === 'Phi3ForCausalLM' ? 1e-5 : 1e-6);
  const rotaryDim = parseRotaryDim(r, architecture, headDim);
  // configuration_smollm3.py: default_theta 2,000,000 (the others keep transformers' 10,000).
  const { theta: ropeTheta, rope } = parseRope(r, architecture === 'SmolLM3ForCausalLM' ? 2e6 : 10000, {
    architecture,
    maxPositionEmbeddings,
    rotaryDim,
  });
  const act = raw.hidden_act ?? 'silu';
  const isGemma = architecture === 'Gemma3ForCausalLM' || architecture === 'Gemma2ForCausalLM';
  // Gemma's MLP reads hidden_activation (Gemma2MLP / Gemma3MLP: ACT2FN[config.hidden_activation]).
  if (isGemma) {
    const ga = raw.hidden_activation ?? 'gelu_pytorch_tanh';
    if (ga !== 'gelu_pytorch_tanh')
      r.fail('hidden_activation', `only gelu_pytorch_tanh is supported for Gemma, got ${JSON.stringify(ga)}`);
  } else if (act !== 'silu' && act !== 'swish')
    r.fail('hidden_act', `only silu is supported, got ${JSON.stringify(act)}`);

  const attentionBias = r.bool('attention_bias', false);
  let qkvBias = false;
  let oBias = false;
  let mlpBias = false;
  let qkNorm = false;
  switch (architecture) {
    case 'LlamaForCausalLM':
    case 'SmolLM3ForCausalLM':
      qkvBias = oBias = attentionBias;
      mlpBias = r.bool('mlp_bias', false);
      break;
    case 'Qwen2ForCausalLM':
      // modeling_qwen2.py: q/k/v always have a bias, o_proj never.
      qkvBias = true;
      break;
    case 'Qwen3ForCausalLM':
      qkvBias = oBias = attentionBias;
      qkNorm = true;
      break;
    case 'Gemma3ForCausalLM':
      // modeling_gemma3.py Gemma3Attention: q_norm / k_norm over head_dim before RoPE.
      qkvBias = oBias = attentionBias;
      qkNorm = true;
      break;
    case 'Gemma2ForCausalLM':
      qkvBias = oBias = attentionBias;
      break;
    case 'MistralForCausalLM':
    case 'Phi3ForCausalLM':
      // modeling_phi3.py: qkv_proj, o_proj, gate_up_proj and down_proj carry no bias.
      break;
  }

  let slidingWindow: number | null = null;
  let windowLayers: number[] | null = null;
  const sw = raw.sliding_window;
  const swUsed =
    // modeling_phi3.py, like Mistral, masks by sliding_window whenever config.json sets it;
    // LlamaConfig has no sliding window (modeling_llama.py masks causally only).
    architecture === 'MistralForCausalLM' || architecture === 'Phi3ForCausalLM'
      ? sw !== undefined && sw !== null
      : architecture !== 'LlamaForCausalLM' && r.bool('use_sliding_window', false) && sw !== undefined && sw !== null;
  if (swUsed) {
    slidingWindow = r.int('sliding_window');
    windowLayers = windowedLayers(r, architecture, numLayers);
    const where = windowLayers ? ` on ${windowLayers.length} of ${numLayers} layers` : '';
    notes.push(
      `${file}: the model uses sliding-window attention (window ${slidingWindow}${where}); the attention kernels apply it, so sequences longer than the window are computed as transformers computes them`,
    );
  }

  const dtypeRaw = raw.torch_dtype ?? raw.dtype ?? null;
  let torchDtype: TorchDtype | null = null;
  if (dtypeRaw !== null) {
    const known =
      typeof dtypeRaw === 'string' && Object.prototype.hasOwnProperty.call(DTYPES, dtypeRaw) ? DTYPES[dtypeRaw] : null;
    if (known === null)
      r.fail(
        raw.torch_dtype !== undefined ? 'torch_dtype' : 'dtype',
        `unsupported dtype ${JSON.stringify(dtypeRaw)}; expected float32, float16 or bfloat16`,
      );
    torchDtype = known;
  }

  // SmolLM3Config and the Gemma configs tie by default; the others (PretrainedConfig) do not.
  const tieWordEmbeddings = r.bool('tie_word_embeddings', architecture === 'SmolLM3ForCausalLM' || isGemma);
  // modeling_phi3.py applies resid_pdrop to both residual branches and attention_dropout to the
  // attention weights when training (embd_pdrop is read by no module); the released Phi-3
  // checkpoints set them to 0, and Tabtune applies neither.
  if (architecture === 'Phi3ForCausalLM')
    for (const k of ['resid_pdrop', 'attention_dropout'] as const)
      if (r.num(k, 0, false) > 0)
        notes.push(
          `${file}: ${k} is ${String(raw[k])}; Tabtune trains without this dropout (LoRA dropout still applies)`,
        );
  let gemma: GemmaShape | null = null;
  let slidingLayers: number[] | null = windowLayers;
  if (isGemma) {
    // Every Gemma layer list names its sliding layers; the window is applied in the attention
    // kernels (forward, backward, KV-cache decode), so no sequence length is refused for it.
    slidingWindow = r.int('sliding_window');
    slidingLayers = parseSlidingLayers(r, architecture, numLayers);
    // EmbeddingGemma sets use_bidirectional_attention (modeling_gemma3.py: every token sees every other).
    if (r.bool('use_bidirectional_attention', false))
      r.fail(
        'use_bidirectional_attention',
        'bidirectional attention (an embedding model such as EmbeddingGemma) is not supported: Tabtune trains causal language models',
      );
    const cap = (k: string) => (r.has(k) ? r.num(k) : null);
    const queryPreAttnScalar = r.num('query_pre_attn_scalar');
    gemma = {
      queryPreAttnScalar,
      attentionScale: Math.pow(queryPreAttnScalar, -0.5),
      attnSoftcap: cap('attn_logit_softcapping'),
      finalSoftcap: cap('final_logit_softcapping'),
      ropeLocalTheta: architecture === 'Gemma3ForCausalLM' ? r.num('rope_local_base_freq') : null,
    };
  }
  const noRopeLayers = architecture === 'SmolLM3ForCausalLM' ? parseNoRopeLayers(r, numLayers) : [];
  const bosTokenId = r.tokenId('bos_token_id');
  const eosTokenIds = r.tokenIds('eos_token_id');
  const padTokenId = r.tokenId('pad_token_id');
  for (const [k, v] of [
    ['bos_token_id', bosTokenId],
    ['pad_token_id', padTokenId],
  ] as const) {
    if (v !== null && v >= vocabSize) r.fail(k, `token id ${v} is outside the vocabulary (vocab_size ${vocabSize})`);
  }
  eosTokenIds.forEach((id) => {
    if (id >= vocabSize) r.fail('eos_token_id', `token id ${id} is outside the vocabulary (vocab_size ${vocabSize})`);
  });
  if (rope.type === 'llama3' && rope.originalMaxPositionEmbeddings >= maxPositionEmbeddings) {
    notes.push(
      `${file}: rope_scaling.original_max_position_embeddings (${rope.originalMaxPositionEmbeddings}) is not below max_position_embeddings (${maxPositionEmbeddings})`,
    );
  }

  return {
    architecture,
    modelType:
      typeof raw.model_type === 'string' ? raw.model_type : architecture.replace('ForCausalLM', '').toLowerCase(),
    hiddenSize,
    intermediateSize,
    numLayers,
    numHeads,
    numKvHeads,
    headDim,
    vocabSize,
    maxPositionEmbeddings,
    rmsNormEps,
    ropeTheta,
    rope,
    tieWordEmbeddings,
    qkvBias,
    oBias,
    mlpBias,
    qkNorm,
    gemma,
    slidingLayers,
    languageModelOf: r.prefix ? 'Gemma3ForConditionalGeneration' : null,
    noRopeLayers,
    rotaryDim,
    fusedProjections: architecture === 'Phi3ForCausalLM',
    slidingWindow,
    torchDtype,
    bosTokenId,
    eosTokenIds,
    padTokenId,
    notes,
  };
}

/**
 * Rotated dimensions per head: int(head_dim · partial_rotary_factor) as modeling_rope_utils.py
 * computes `dim` (Phi-3 reads the factor at the top level or, in the newer layout, inside
 * rope_parameters). Only Phi-3 applies it (modeling_phi3.py apply_rotary_pos_emb rotates
 * q[..., :rotary_dim] and passes the rest); the other families refuse a factor other than 1.
 */
function parseRotaryDim(r: Reader, architecture: Architecture, headDim: number): number {
  const inner = isObj(r.raw.rope_parameters) ? r.raw.rope_parameters.partial_rotary_factor : undefined;
  const field = r.has('partial_rotary_factor') ? 'partial_rotary_factor' : 'rope_parameters.partial_rotary_factor';
  const v = r.has('partial_rotary_factor') ? r.raw.partial_rotary_factor : inner;
  if (v === undefined || v === null || v === 1) return headDim;
  if (architecture !== 'Phi3ForCausalLM')
    r.fail(field, `partial rotary embeddings are not supported for ${architecture} (got ${JSON.stringify(v)})`);
  if (typeof v !== 'number' || !(v > 0 && v <= 1))
    r.fail(field, `must be a number in (0, 1], got ${JSON.stringify(v)}`);
  const dim = Math.floor(headDim * v);
  // rotate_half splits the rotated part in two equal halves.
  if (dim < 2 || dim % 2 !== 0)
    r.fail(field, `head_dim ${headDim} × ${v} = ${dim} rotated dimensions; RoPE needs an even number ≥ 2`);
  return dim;
}

// Defaults of Gemma3TextConfig (configuration_gemma3.py) and Gemma2Config (configuration_gemma2.py)
// for the keys a config.json may leave out (a multimodal checkpoint's text_config leaves out most).
const GEMMA3_TEXT_DEFAULTS: Json = {
  vocab_size: 262208,
  hidden_size: 2304,
  intermediate_size: 9216,
  num_hidden_layers: 26,
  num_attention_heads: 8,
  num_key_value_heads: 4,
  head_dim: 256,
  hidden_activation: 'gelu_pytorch_tanh',
  max_position_embeddings: 131072,
  rms_norm_eps: 1e-6,
  pad_token_id: 0,
  eos_token_id: 1,
  bos_token_id: 2,
  tie_word_embeddings: true,
  rope_theta: 1000000.0,
  query_pre_attn_scalar: 256,
  sliding_window: 4096,
  rope_local_base_freq: 10000.0,
};
const GEMMA2_DEFAULTS: Json = {
  vocab_size: 256000,
  hidden_size: 2304,
  intermediate_size: 9216,
  num_hidden_layers: 26,
  num_attention_heads: 8,
  num_key_value_heads: 4,
  head_dim: 256,
  hidden_activation: 'gelu_pytorch_tanh',
  max_position_embeddings: 8192,
  rms_norm_eps: 1e-6,
  pad_token_id: 0,
  eos_token_id: 1,
  bos_token_id: 2,
  tie_word_embeddings: true,
  rope_theta: 10000.0,
  query_pre_attn_scalar: 256,
  sliding_window: 4096,
  final_logit_softcapping: 30.0,
  attn_logit_softcapping: 50.0,
};

/** Keys of `over` that are present (not undefined) win over `base`. */
function withDefaults(base: Json, over: Json): Json {
  const out: Json = { ...base };
  for (const [k, v] of Object.entries(over)) if (v !== undefined) out[k] = v;
  return out;
}

/**
 * The config the decoder reads. Gemma3ForConditionalGeneration (configuration_gemma3.py Gemma3Config)
 * keeps its language model's config under text_config: that is read (errors name
 * `text_config.<field>`) as a Gemma3ForCausalLM, with the top level's token ids where the text
 * config has none; the vision tower is not part of what Tabtune runs (load.ts reads only the
 * language model's weights). Gemma configs get their classes' defaults for absent keys, and
 * Gemma 3's newer per-layer-type `rope_parameters` ({full_attention, sliding_attention}) become
 * rope_theta + rope_scaling (global layers) and rope_local_base_freq (sliding layers).
 */
function languageModelReader(file: string, raw: Json): Reader {
  const archs = raw.architectures;
  const first = Array.isArray(archs) && typeof archs[0] === 'string' ? archs[0] : undefined;
  let prefix = '';
  let cfg = raw;
  let arch = first;
  if (first === 'Gemma3ForConditionalGeneration' || (first === undefined && raw.model_type === 'gemma3')) {
    const text = raw.text_config;
    if (!isObj(text))
      throw new ModelConfigError(file, 'text_config', 'missing: Gemma 3 keeps its language model config there');
    prefix = 'text_config.';
    cfg = { ...text, architectures: ['Gemma3ForCausalLM'] };
    for (const k of ['bos_token_id', 'eos_token_id', 'pad_token_id', 'torch_dtype', 'dtype'])
      if (cfg[k] === undefined && raw[k] !== undefined) cfg[k] = raw[k];
    arch = 'Gemma3ForCausalLM';
  }
  const type = cfg.model_type;
  if (arch === 'Gemma3ForCausalLM' || (arch === undefined && type === 'gemma3_text')) {
    cfg = withDefaults(GEMMA3_TEXT_DEFAULTS, cfg);
    const rp = cfg.rope_parameters;
    if (isObj(rp) && (isObj(rp.full_attention) || isObj(rp.sliding_attention))) {
      const full = isObj(rp.full_attention) ? rp.full_attention : {};
      const local = isObj(rp.sliding_attention) ? rp.sliding_attention : {};
      const { rope_theta: globalTheta, ...scaling } = full;
      const localType = local.rope_type ?? local.type ?? 'default';
      if (localType !== 'default')
        new Reader(file, cfg, prefix).fail(
          'rope_parameters.sliding_attention.rope_type',
          `the sliding layers' RoPE must be "default", got ${JSON.stringify(localType)}`,
        );
      cfg = { ...cfg, rope_parameters: undefined, rope_scaling: scaling };
      if (globalTheta !== undefined) cfg.rope_theta = globalTheta;
      if (local.rope_theta !== undefined) cfg.rope_local_base_freq = local.rope_theta;
    }
  } else if (arch === 'Gemma2ForCausalLM' || (arch === undefined && type === 'gemma2')) {
    cfg = withDefaults(GEMMA2_DEFAULTS, cfg);
  }
  return new Reader(file, cfg, prefix);
}

/**
 * Gemma's sliding layers: `layer_types` ("sliding_attention" / "full_attention" per layer) when the
 * config has it; otherwise Gemma 3's `sliding_window_pattern` (default 6: layers 5, 11, … are
 * global; configuration_gemma3.py) or Gemma 2's alternation (even layers slide;
 * configuration_gemma2.py `bool((i + 1) % 2)`).
 */
function parseSlidingLayers(r: Reader, architecture: Architecture, numLayers: number): number[] {
  const types = r.raw.layer_types;
  const all = Array.from({ length: numLayers }, (_, l) => l);
  if (types === undefined || types === null) {
    const pattern =
      architecture === 'Gemma2ForCausalLM'
        ? 2
        : r.has('sliding_window_pattern')
          ? r.int('sliding_window_pattern')
          : r.int('_sliding_window_pattern', 6);
    return all.filter((l) => (l + 1) % pattern !== 0);
  }
  if (!Array.isArray(types))
    r.fail('layer_types', `must be a list of "sliding_attention" / "full_attention", got ${JSON.stringify(types)}`);
  if (types.length < numLayers)
    r.fail('layer_types', `has ${types.length} entries for ${numLayers} layers (num_hidden_layers)`);
  return all.filter((l) => {
    const t = types[l];
    if (t !== 'sliding_attention' && t !== 'full_attention')
      r.fail(`layer_types[${l}]`, `must be "sliding_attention" or "full_attention", got ${JSON.stringify(t)}`);
    return t === 'sliding_attention';
  });
}

/**
 * configuration_smollm3.py: `no_rope_layers` holds 1 (RoPE) or 0 (NoPE) per layer; without it,
 * every `no_rope_layer_interval`-th layer (default 4: layers 3, 7, 11, …) is NoPE.
 */
function parseNoRopeLayers(r: Reader, numLayers: number): number[] {
  const list = r.raw.no_rope_layers;
  if (list === undefined || list === null) {
    const interval = r.int('no_rope_layer_interval', 4);
    return Array.from({ length: numLayers }, (_, l) => l).filter((l) => (l + 1) % interval === 0);
  }
  if (!Array.isArray(list)) r.fail('no_rope_layers', `must be a list of 0 and 1, got ${JSON.stringify(list)}`);
  if (list.length < numLayers)
    r.fail('no_rope_layers', `has ${list.length} entries for ${numLayers} layers (num_hidden_layers)`);
  const out: number[] = [];
  list.slice(0, numLayers).forEach((v, l) => {
    if (v !== 0 && v !== 1) r.fail(`no_rope_layers[${l}]`, `must be 0 (no RoPE) or 1 (RoPE), got ${JSON.stringify(v)}`);
    if (v === 0) out.push(l);
  });
  return out;
}

/**
 * Layers a `use_sliding_window` config slides on, as transformers derives `layer_types` when the
 * config gives none: Qwen2/Qwen3 (configuration_qwen2.py, configuration_qwen3.py) the layers
 * ≥ max_window_layers (default 28), SmolLM3 (configuration_smollm3.py) its NoPE layers. Mistral
 * and Phi-3 slide on every layer (null).
 */
function windowedLayers(r: Reader, architecture: Architecture, numLayers: number): number[] | null {
  if (architecture === 'MistralForCausalLM' || architecture === 'Phi3ForCausalLM') return null;
  if (r.raw.layer_types !== undefined && r.raw.layer_types !== null)
    return parseSlidingLayers(r, architecture, numLayers);
  if (architecture === 'SmolLM3ForCausalLM') return parseNoRopeLayers(r, numLayers);
  const first = r.int('max_window_layers', 28, 0);
  return Array.from({ length: numLayers }, (_, l) => l).filter((l) => l >= first);
}

// ---------------------------------------------------------------------------------------------
// Expected weights

export type WeightRole = 'embed' | 'norm' | 'linear' | 'bias' | 'qk-norm' | 'lm-head';

export interface ExpectedWeight {
  name: string;
  shape: number[];
  role: WeightRole;
  /** Layer index, or null for embed/norm/lm_head. */
  layer: number | null;
  /** lm_head.weight when tied: checkpoints may or may not store it. */
  optional: boolean;
}

export const ATTENTION_MODULES = ['q_proj', 'k_proj', 'v_proj', 'o_proj'] as const;
export const MLP_MODULES = ['gate_proj', 'up_proj', 'down_proj'] as const;
/** Phi-3's linear layers (modeling_phi3.py): q/k/v fused in qkv_proj, gate/up in gate_up_proj. */
export const FUSED_ATTENTION_MODULES = ['qkv_proj', 'o_proj'] as const;
export const FUSED_MLP_MODULES = ['gate_up_proj', 'down_proj'] as const;
export type LinearModule =
  | (typeof ATTENTION_MODULES)[number]
  | (typeof MLP_MODULES)[number]
  | (typeof FUSED_ATTENTION_MODULES)[number]
  | (typeof FUSED_MLP_MODULES)[number];

/** Every linear module name of every supported family, in model order (for sorting adapters). */
export const ALL_LINEAR_MODULES: readonly LinearModule[] = [
  'q_proj',
  'k_proj',
  'v_proj',
  'qkv_proj',
  'o_proj',
  'gate_proj',
  'up_proj',
  'gate_up_proj',
  'down_proj',
];

/** The linear layers a model of this config has, in checkpoint order (PEFT / LoRA target names). */
export function linearModules(c: Pick<ModelConfig, 'fusedProjections'>): readonly LinearModule[] {
  return c.fusedProjections
    ? [...FUSED_ATTENTION_MODULES, ...FUSED_MLP_MODULES]
    : [...ATTENTION_MODULES, ...MLP_MODULES];
}

/**
 * How a fused module's output rows split into the tensors the decoder works with: qkv_proj →
 * q, k, v (modeling_phi3.py slices qkv[..., :Hq·D], the next Hkv·D, the rest); gate_up_proj →
 * gate, up (`chunk(2, dim=-1)`: gate first). row0 is the first output row of the part.
 */
export function fusedParts(c: ModelConfig, m: 'qkv_proj' | 'gate_up_proj'): { row0: number; rows: number }[] {
  if (m === 'gate_up_proj')
    return [
      { row0: 0, rows: c.intermediateSize },
      { row0: c.intermediateSize, rows: c.intermediateSize },
    ];
  const q = c.numHeads * c.headDim;
  const kv = c.numKvHeads * c.headDim;
  return [
    { row0: 0, rows: q },
    { row0: q, rows: kv },
    { row0: q + kv, rows: kv },
  ];
}

/** [out, in] of each linear module (y = x·Wᵀ). */
export function linearShape(c: ModelConfig, m: LinearModule): [number, number] {
  const q = c.numHeads * c.headDim;
  const kv = c.numKvHeads * c.headDim;
  switch (m) {
    case 'q_proj':
      return [q, c.hiddenSize];
    case 'k_proj':
      return [kv, c.hiddenSize];
    case 'v_proj':
      return [kv, c.hiddenSize];
    case 'o_proj':
      return [c.hiddenSize, q];
    case 'gate_proj':
      return [c.intermediateSize, c.hiddenSize];
    case 'up_proj':
      return [c.intermediateSize, c.hiddenSize];
    case 'down_proj':
      return [c.hiddenSize, c.intermediateSize];
    case 'qkv_proj':
      return [q + 2 * kv, c.hiddenSize];
    case 'gate_up_proj':
      return [2 * c.intermediateSize, c.hiddenSize];
  }
}

export function moduleGroup(m: LinearModule): 'self_attn' | 'mlp' {
  return (ATTENTION_MODULES as readonly string[]).includes(m) || m === 'qkv_proj' ? 'self_attn' : 'mlp';
}

/** Every tensor a transformers checkpoint of this config holds, with its shape, in model order. */
export function expectedWeights(c: ModelConfig): ExpectedWeight[] {
  const out: ExpectedWeight[] = [];
  const push = (name: string, shape: number[], role: WeightRole, layer: number | null, optional = false) =>
    out.push({ name, shape, role, layer, optional });
  push('model.embed_tokens.weight', [c.vocabSize, c.hiddenSize], 'embed', null);
  for (let l = 0; l < c.numLayers; l++) {
    const p = `model.layers.${l}`;
    push(`${p}.input_layernorm.weight`, [c.hiddenSize], 'norm', l);
    const modules = linearModules(c);
    for (const m of modules.filter((x) => moduleGroup(x) === 'self_attn')) {
      const [o, i] = linearShape(c, m);
      push(`${p}.self_attn.${m}.weight`, [o, i], 'linear', l);
      if (m === 'o_proj' ? c.oBias : c.qkvBias) push(`${p}.self_attn.${m}.bias`, [o], 'bias', l);
    }
    if (c.qkNorm) {
      push(`${p}.self_attn.q_norm.weight`, [c.headDim], 'qk-norm', l);
      push(`${p}.self_attn.k_norm.weight`, [c.headDim], 'qk-norm', l);
    }
    // Gemma: the MLP's input norm is pre_feedforward_layernorm and its output has its own norm.
    if (c.gemma) {
      push(`${p}.pre_feedforward_layernorm.weight`, [c.hiddenSize], 'norm', l);
      push(`${p}.post_feedforward_layernorm.weight`, [c.hiddenSize], 'norm', l);
    }
    push(`${p}.post_attention_layernorm.weight`, [c.hiddenSize], 'norm', l);
    for (const m of modules.filter((x) => moduleGroup(x) === 'mlp')) {
      const [o, i] = linearShape(c, m);
      push(`${p}.mlp.${m}.weight`, [o, i], 'linear', l);
      if (c.mlpBias) push(`${p}.mlp.${m}.bias`, [o], 'bias', l);
    }
  }
  push('model.norm.weight', [c.hiddenSize], 'norm', null);
  push('lm_head.weight', [c.vocabSize, c.hiddenSize], 'lm-head', null, c.tieWordEmbeddings);
  return out;
}

export interface WeightCheck {
  missing: ExpectedWeight[];
  /** Present but not part of the model (and not a known-harmless buffer). */
  unexpected: string[];
  misshaped: { name: string; expected: number[]; actual: number[] }[];
  /** Known-harmless extras (e.g. old rotary_emb.inv_freq buffers). */
  ignored: string[];
  /** bitsandbytes 4-bit weights (shape checked by element count; companions accepted). */
  quantized: string[];
  /** One line per problem, naming the tensor; empty when the checkpoint fits. */
  problems: string[];
}

const IGNORABLE = [/\.rotary_emb\.inv_freq$/];
// bitsandbytes companions of a quantized `M.weight` (bitsandbytes/functional.py QuantState.as_dict(packed=True),
// written by bitsandbytes/nn/modules.py Params4bit / Linear4bit._save_to_state_dict).
const BNB_SUFFIXES = [
  '.absmax',
  '.quant_map',
  '.nested_absmax',
  '.nested_quant_map',
  '.quant_state.bitsandbytes__nf4',
  '.quant_state.bitsandbytes__fp4',
];

/** Compares a checkpoint's tensors (name → shape) with what the config needs. */
export function checkWeights(c: ModelConfig, available: ReadonlyMap<string, readonly number[]>): WeightCheck {
  const expected = expectedWeights(c);
  const byName = new Map(expected.map((w) => [w.name, w]));
  const res: WeightCheck = { missing: [], unexpected: [], misshaped: [], ignored: [], quantized: [], problems: [] };
  const companion = new Set<string>();
  for (const w of expected) {
    if (
      available.has(`${w.name}.quant_state.bitsandbytes__nf4`) ||
      available.has(`${w.name}.quant_state.bitsandbytes__fp4`)
    ) {
      for (const s of BNB_SUFFIXES) if (available.has(w.name + s)) companion.add(w.name + s);
    }
  }
  for (const w of expected) {
    const shape = available.get(w.name);
    if (!shape) {
      if (!w.optional) {
        res.missing.push(w);
        res.problems.push(`missing tensor "${w.name}" (expected shape [${w.shape.join(', ')}])`);
      }
      continue;
    }
    if (
      companion.has(`${w.name}.quant_state.bitsandbytes__nf4`) ||
      companion.has(`${w.name}.quant_state.bitsandbytes__fp4`)
    ) {
      res.quantized.push(w.name);
      const numel = w.shape.reduce((a, b) => a * b, 1);
      const packed = shape.reduce((a, b) => a * b, 1);
      if (packed * 2 !== numel && packed * 2 !== numel + 1) {
        res.misshaped.push({ name: w.name, expected: w.shape, actual: [...shape] });
        res.problems.push(
          `tensor "${w.name}": 4-bit packed size ${packed} bytes does not hold [${w.shape.join(', ')}]`,
        );
      }
      continue;
    }
    if (shape.length !== w.shape.length || shape.some((d, i) => d !== w.shape[i])) {
      res.misshaped.push({ name: w.name, expected: w.shape, actual: [...shape] });
      res.problems.push(
        `tensor "${w.name}" has shape [${shape.join(', ')}] but config.json implies [${w.shape.join(', ')}]`,
      );
    }
  }
  for (const name of available.keys()) {
    if (byName.has(name) || companion.has(name)) continue;
    if (IGNORABLE.some((re) => re.test(name))) res.ignored.push(name);
    else {
      res.unexpected.push(name);
      res.problems.push(`unexpected tensor "${name}" (not part of a ${c.architecture} with this config.json)`);
    }
  }
  return res;
}

// ---------------------------------------------------------------------------------------------
// RoPE inverse frequencies

const f = Math.fround;

/** Base frequencies 1/θ^(2i/d) in f32 as torch computes them (int64 arange → float / dim). */
function defaultInvFreq(theta: number, dim: number): Float32Array {
  const out = new Float32Array(dim / 2);
  const base = f(theta);
  for (let i = 0; i < dim / 2; i++) out[i] = f(1 / f(Math.pow(base, f((2 * i) / dim))));
  return out;
}

/**
 * inv_freq of length rotaryDim/2 (headDim/2 without partial rotary) exactly as transformers
 * `modeling_rope_utils.py` (ROPE_INIT_FUNCTIONS): default, linear (÷factor), dynamic NTK (base
 * rescaled when seqLen exceeds the trained length), llama3 (per-wavelength band: keep high
 * frequencies, ÷factor low ones, smooth blend between), longrope (÷ short or long factor).
 * `seqLen` matters for dynamic scaling (transformers recomputes when seq_len > max_position_embeddings)
 * and for longrope (long factors when seq_len > original_max_position_embeddings).
 */
export function computeInvFreq(
  c: Pick<ModelConfig, 'headDim' | 'ropeTheta' | 'rope' | 'maxPositionEmbeddings'> & { rotaryDim?: number },
  seqLen?: number,
): Float32Array {
  const dim = c.rotaryDim ?? c.headDim;
  const r = c.rope;
  switch (r.type) {
    case 'longrope': {
      // _compute_longrope_parameters: 1 / (ext · base^(arange(0, dim, 2) / dim)), all in f32.
      const ext = longRopeUsesLong(r, seqLen) ? r.longFactor : r.shortFactor;
      const base = f(c.ropeTheta);
      const out = new Float32Array(dim / 2);
      for (let i = 0; i < dim / 2; i++) out[i] = f(1 / f(f(ext[i]) * f(Math.pow(base, f((2 * i) / dim)))));
      return out;
    }
    case 'default':
      return defaultInvFreq(c.ropeTheta, dim);
    case 'linear':
      return defaultInvFreq(c.ropeTheta, dim).map((x) => f(x / f(r.factor)));
    case 'dynamic': {
      // _compute_dynamic_ntk_parameters scales against config.max_position_embeddings.
      const maxPos = c.maxPositionEmbeddings;
      const s = seqLen !== undefined && seqLen > maxPos ? seqLen : maxPos;
      const base = c.ropeTheta * Math.pow((r.factor * s) / maxPos - (r.factor - 1), dim / (dim - 2));
      return defaultInvFreq(base, dim);
    }
    case 'llama3': {
      const inv = defaultInvFreq(c.ropeTheta, dim);
      const old = r.originalMaxPositionEmbeddings;
      const lowWavelen = old / r.lowFreqFactor;
      const highWavelen = old / r.highFreqFactor;
      // torch casts the Python scalars to f32 inside each elementwise op; mirror that.
      const factor = f(r.factor);
      const out = new Float32Array(inv.length);
      for (let i = 0; i < inv.length; i++) {
        const wavelen = f(f(2 * Math.PI) / inv[i]);
        if (wavelen < f(highWavelen)) out[i] = inv[i];
        else if (wavelen > f(lowWavelen)) out[i] = f(inv[i] / factor);
        else {
          const smooth = f(f(f(f(old) / wavelen) - f(r.lowFreqFactor)) / f(r.highFreqFactor - r.lowFreqFactor));
          out[i] = f(f(f(f(1 - smooth) * inv[i]) / factor) + f(smooth * inv[i]));
        }
      }
      return out;
    }
  }
}

/**
 * Which LongRoPE table a pass of `seqLen` (its largest position + 1) uses. transformers (v4.48 on,
 * modeling_rope_utils.py `dynamic_rope_update` → `longrope_frequency_update`) switches to the long
 * factors when torch.max(position_ids) + 1 > original_max_position_embeddings and keeps the short
 * ones otherwise, per forward call; training and evaluation here do the same per pass. For
 * generation, Phi3ForCausalLM.prepare_inputs_for_generation (modeling_phi3.py) drops the KV cache
 * the first time the sequence crosses that length, so every token is re-encoded with the long
 * factors; infer.ts does the same (see forwardLogits).
 */
export function longRopeUsesLong(r: Extract<RopeScaling, { type: 'longrope' }>, seqLen?: number): boolean {
  return seqLen !== undefined && seqLen > r.originalMaxPositionEmbeddings;
}

/** transformers' attention_scaling multiplying cos and sin: LongRoPE's attention factor, else 1. */
export function ropeAttentionScaling(c: Pick<ModelConfig, 'rope'>): number {
  return c.rope.type === 'longrope' ? c.rope.attentionFactor : 1;
}
