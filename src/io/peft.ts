// PEFT LoRA adapters: adapter_config.json and the tensor key names of adapter_model.safetensors
// (huggingface/peft `src/peft/tuners/lora/config.py` LoraConfig, `src/peft/utils/save_and_load.py`
// which drops the adapter name ".default" from saved keys).

// The last two are Phi-3's fused projections (modeling_phi3.py self_attn.qkv_proj, mlp.gate_up_proj).
export const LORA_MODULES = [
  'q_proj',
  'k_proj',
  'v_proj',
  'o_proj',
  'gate_proj',
  'up_proj',
  'down_proj',
  'qkv_proj',
  'gate_up_proj',
] as const;
export type LoraModule = (typeof LORA_MODULES)[number];
export type LoraWhich = 'A' | 'B' | 'magnitude';

export class PeftError extends Error {
  override readonly name = 'PeftError';
  constructor(
    readonly file: string,
    readonly field: string | null,
    detail: string,
  ) {
    super(`${file}: ${field ? `${field}: ` : ''}${detail}`);
  }
}

export interface LoraAdapterConfig {
  r: number;
  loraAlpha: number;
  loraDropout: number;
  /** Module names (suffix match, as PEFT) or one regex string (full match, as PEFT). */
  targetModules: string[] | string;
  useRslora: boolean;
  useDora: boolean;
  baseModelNameOrPath: string | null;
  layersToTransform: number[] | null;
  rankPattern: Record<string, number>;
  alphaPattern: Record<string, number>;
  initLoraWeights: boolean | string;
  taskType: string | null;
  revision: string | null;
}

/** adapter_config.json as PEFT writes it (fields present since PEFT 0.9, so older PEFT loads it too). */
export function adapterConfigJson(c: LoraAdapterConfig): Record<string, unknown> {
  return {
    alpha_pattern: c.alphaPattern,
    auto_mapping: null,
    base_model_name_or_path: c.baseModelNameOrPath,
    bias: 'none',
    fan_in_fan_out: false,
    inference_mode: true,
    init_lora_weights: c.initLoraWeights,
    layers_pattern: null,
    layers_to_transform: c.layersToTransform,
    loftq_config: {},
    lora_alpha: c.loraAlpha,
    lora_dropout: c.loraDropout,
    megatron_config: null,
    megatron_core: 'megatron.core',
    modules_to_save: null,
    peft_type: 'LORA',
    r: c.r,
    rank_pattern: c.rankPattern,
    revision: c.revision,
    target_modules: Array.isArray(c.targetModules) ? [...c.targetModules].sort() : c.targetModules,
    task_type: c.taskType ?? 'CAUSAL_LM',
    use_dora: c.useDora,
    use_rslora: c.useRslora,
  };
}

export function writeAdapterConfig(c: LoraAdapterConfig): string {
  return JSON.stringify(adapterConfigJson(c), null, 2) + '\n';
}

/** A config for a fresh adapter with PEFT's defaults for everything not given. */
export function makeAdapterConfig(p: {
  r: number;
  loraAlpha: number;
  targetModules: string[];
  loraDropout?: number;
  useRslora?: boolean;
  useDora?: boolean;
  baseModelNameOrPath?: string | null;
}): LoraAdapterConfig {
  return {
    r: p.r,
    loraAlpha: p.loraAlpha,
    loraDropout: p.loraDropout ?? 0,
    targetModules: p.targetModules,
    useRslora: p.useRslora ?? false,
    useDora: p.useDora ?? false,
    baseModelNameOrPath: p.baseModelNameOrPath ?? null,
    layersToTransform: null,
    rankPattern: {},
    alphaPattern: {},
    initLoraWeights: true,
    taskType: 'CAUSAL_LM',
    revision: null,
  };
}

function isObj(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}

/** Parses adapter_config.json; refuses what we cannot apply faithfully, naming the field. */
export function parseAdapterConfig(
  input: string | Record<string, unknown>,
  file = 'adapter_config.json',
): LoraAdapterConfig {
  let raw: unknown = input;
  if (typeof input === 'string') {
    try {
      raw = JSON.parse(input);
    } catch (e) {
      throw new PeftError(file, null, `not valid JSON: ${(e as Error).message}`);
    }
  }
  if (!isObj(raw)) throw new PeftError(file, null, 'must be a JSON object');
  const fail = (field: string, detail: string): never => {
    throw new PeftError(file, field, detail);
  };
  const peftType = raw.peft_type ?? 'LORA';
  if (peftType !== 'LORA') fail('peft_type', `only LORA adapters are supported, got ${JSON.stringify(peftType)}`);
  const r = raw.r ?? 8;
  if (typeof r !== 'number' || !Number.isSafeInteger(r) || r < 1)
    fail('r', `must be a positive integer, got ${JSON.stringify(r)}`);
  const alpha = raw.lora_alpha ?? 8;
  if (typeof alpha !== 'number' || !Number.isFinite(alpha) || alpha <= 0)
    fail('lora_alpha', `must be a positive number, got ${JSON.stringify(alpha)}`);
  const dropout = raw.lora_dropout ?? 0;
  if (typeof dropout !== 'number' || !(dropout >= 0 && dropout < 1))
    fail('lora_dropout', `must be in [0, 1), got ${JSON.stringify(dropout)}`);
  const tm = raw.target_modules;
  let targetModules: string[] | string;
  if (typeof tm === 'string') {
    try {
      new RegExp(`^(?:${tm})$`);
    } catch {
      fail('target_modules', `regex ${JSON.stringify(tm)} does not compile`);
    }
    targetModules = tm;
  } else if (Array.isArray(tm) && tm.length > 0 && tm.every((x) => typeof x === 'string'))
    targetModules = tm as string[];
  else
    targetModules = fail(
      'target_modules',
      `must be a non-empty list of module names or a regex string, got ${JSON.stringify(tm)}`,
    );
  const bias = raw.bias ?? 'none';
  if (bias !== 'none')
    fail('bias', `only "none" is supported (bias terms are not trained), got ${JSON.stringify(bias)}`);
  if ((raw.fan_in_fan_out ?? false) !== false)
    fail('fan_in_fan_out', 'must be false for Llama/Qwen/Mistral linear layers');
  const mts = raw.modules_to_save;
  if (mts !== undefined && mts !== null && !(Array.isArray(mts) && mts.length === 0))
    fail('modules_to_save', `fully trained extra modules (${JSON.stringify(mts)}) are not supported`);
  const bool = (k: string): boolean => {
    const v = raw[k] ?? false;
    if (typeof v !== 'boolean') fail(k, `must be true or false, got ${JSON.stringify(v)}`);
    return v as boolean;
  };
  const useRslora = bool('use_rslora');
  const useDora = bool('use_dora');
  const ltt = raw.layers_to_transform;
  let layersToTransform: number[] | null = null;
  if (ltt !== undefined && ltt !== null) {
    const arr = Array.isArray(ltt) ? ltt : [ltt];
    if (!arr.every((x) => typeof x === 'number' && Number.isSafeInteger(x) && x >= 0))
      fail('layers_to_transform', `must be a layer index or a list of them, got ${JSON.stringify(ltt)}`);
    layersToTransform = arr as number[];
  }
  if (
    raw.layers_pattern !== undefined &&
    raw.layers_pattern !== null &&
    raw.layers_pattern !== 'layers' &&
    !(Array.isArray(raw.layers_pattern) && raw.layers_pattern.length === 0)
  ) {
    fail('layers_pattern', `only the default "layers" is supported, got ${JSON.stringify(raw.layers_pattern)}`);
  }
  const pattern = (k: string): Record<string, number> => {
    const v = raw[k] ?? {};
    if (!isObj(v)) fail(k, 'must be an object {module pattern: number}');
    const out: Record<string, number> = {};
    for (const [pk, pv] of Object.entries(v as Record<string, unknown>)) {
      try {
        new RegExp(pk);
      } catch {
        fail(`${k}.${pk}`, 'pattern does not compile as a regex');
      }
      if (typeof pv !== 'number' || !(pv > 0))
        fail(`${k}.${pk}`, `must be a positive number, got ${JSON.stringify(pv)}`);
      out[pk] = pv as number;
    }
    return out;
  };
  const base = raw.base_model_name_or_path;
  if (base !== undefined && base !== null && typeof base !== 'string')
    fail('base_model_name_or_path', 'must be a string');
  const init = raw.init_lora_weights ?? true;
  if (typeof init !== 'boolean' && typeof init !== 'string')
    fail('init_lora_weights', `must be true/false or a method name, got ${JSON.stringify(init)}`);
  const taskType = raw.task_type;
  if (taskType !== undefined && taskType !== null && taskType !== 'CAUSAL_LM')
    fail('task_type', `must be CAUSAL_LM, got ${JSON.stringify(taskType)}`);
  return {
    r: r as number,
    loraAlpha: alpha as number,
    loraDropout: dropout as number,
    targetModules,
    useRslora,
    useDora,
    baseModelNameOrPath: (base as string | null | undefined) ?? null,
    layersToTransform,
    rankPattern: pattern('rank_pattern'),
    alphaPattern: pattern('alpha_pattern'),
    initLoraWeights: init as boolean | string,
    taskType: (taskType as string | null | undefined) ?? null,
    revision: typeof raw.revision === 'string' ? raw.revision : null,
  };
}

export function moduleGroup(m: LoraModule): 'self_attn' | 'mlp' {
  return m === 'gate_proj' || m === 'up_proj' || m === 'down_proj' || m === 'gate_up_proj' ? 'mlp' : 'self_attn';
}

/** The module's path inside the transformers model: `model.layers.N.self_attn.q_proj`. */
export function modulePath(layer: number, module: LoraModule, base: PeftModelBase = 'model'): string {
  return `${base}.layers.${layer}.${moduleGroup(module)}.${module}`;
}

/**
 * Where the decoder layers sit in the PEFT-wrapped model: `model` for a ...ForCausalLM,
 * `model.language_model` for Gemma3ForConditionalGeneration (modeling_gemma3.py: Gemma3Model keeps
 * the text model as language_model).
 */
export type PeftModelBase = 'model' | 'model.language_model';

/** `base_model.model.model.layers.N.self_attn.q_proj.lora_A.weight` (and lora_B / lora_magnitude_vector). */
export function loraKey(layer: number, module: LoraModule, which: LoraWhich, base: PeftModelBase = 'model'): string {
  const leaf = which === 'magnitude' ? 'lora_magnitude_vector' : `lora_${which}.weight`;
  return `base_model.model.${modulePath(layer, module, base)}.${leaf}`;
}

// The decoder layers of a ...ForCausalLM, or of a Gemma3ForConditionalGeneration's language model
// (model.language_model.layers, or language_model.model.layers as transformers < 4.52 named it).
const KEY_RE =
  /^base_model\.model\.(?:model\.language_model\.|language_model\.model\.|model\.)layers\.(\d+)\.(self_attn|mlp)\.([a-z_]+)\.(?:lora_(A|B)(?:\.default)?\.weight|(lora_magnitude_vector)(?:\.default)?(?:\.weight)?)$/;

/** Parses an adapter tensor key; null when it is not a LoRA weight of a known module. */
export function parseLoraKey(key: string): { layer: number; module: LoraModule; which: LoraWhich } | null {
  const m = KEY_RE.exec(key);
  if (!m) return null;
  const module = m[3] as LoraModule;
  if (!(LORA_MODULES as readonly string[]).includes(module) || moduleGroup(module) !== m[2]) return null;
  const layer = Number(m[1]);
  if (!Number.isSafeInteger(layer)) return null;
  return { layer, module, which: m[5] ? 'magnitude' : (m[4] as 'A' | 'B') };
}

/** PEFT's rule (tuners_utils check_target_module_exists): list entries match the name or a dotted suffix; a string is a full-match regex. */
export function isTargeted(
  c: Pick<LoraAdapterConfig, 'targetModules' | 'layersToTransform'>,
  layer: number,
  module: LoraModule,
  base: PeftModelBase = 'model',
): boolean {
  const path = modulePath(layer, module, base);
  const hit =
    typeof c.targetModules === 'string'
      ? new RegExp(`^(?:${c.targetModules})$`).test(path)
      : c.targetModules.some((t) => path === t || path.endsWith(`.${t}`));
  if (!hit) return false;
  return c.layersToTransform === null || c.layersToTransform.includes(layer);
}

/** Rank, alpha and the scale applied to B·A for one module (rank_pattern/alpha_pattern as PEFT: `(.*\.)?key$`). */
export function loraParamsFor(
  c: LoraAdapterConfig,
  layer: number,
  module: LoraModule,
): { r: number; alpha: number; scale: number } {
  const path = modulePath(layer, module);
  const pick = (pat: Record<string, number>, dflt: number) => {
    for (const [k, v] of Object.entries(pat)) if (new RegExp(`^(.*\\.)?(${k})$`).test(path)) return v;
    return dflt;
  };
  const r = pick(c.rankPattern, c.r);
  const alpha = pick(c.alphaPattern, c.loraAlpha);
  return { r, alpha, scale: c.useRslora ? alpha / Math.sqrt(r) : alpha / r };
}
