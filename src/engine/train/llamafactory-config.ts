// LLaMA-Factory YAML (train / export / chat) ⇄ typed configs. Defaults follow hiyouga/LLaMA-Factory
// `src/llamafactory/hparams/finetuning_args.py`, `data_args.py`, `model_args.py`,
// `generating_args.py`, and transformers `training_args.py` (TrainingArguments) for the trainer keys.
import { parseDocument, stringify } from 'yaml';
import {
  PREF_LOSSES,
  PREFERENCE_DEFAULTS,
  usesReference,
  type PrefLoss,
  type PreferenceConfig,
} from './preference-loss.ts';

export class LlamaFactoryConfigError extends Error {
  override readonly name = 'LlamaFactoryConfigError';
  constructor(
    readonly file: string,
    readonly key: string | null,
    detail: string,
  ) {
    super(`${file}: ${key ? `${key}: ` : ''}${detail}`);
  }
}

export interface Parsed<T> {
  config: T;
  /** Keys we do not know (likely typos or features we lack): listed, never silently dropped. */
  warnings: string[];
  /** Keys accepted but without effect here, and how we interpret things. */
  notes: string[];
}

/** lora_target "all" = every linear layer of the decoder except lm_head (LLaMA-Factory find_all_linear_modules). */
export const ALL_LORA_TARGETS = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] as const;
/**
 * Phi-3's fused linear layers as PEFT names them (modeling_phi3.py): a lora_target list may name
 * them; "all" (the list above) means every linear layer of whichever model is loaded.
 */
export const FUSED_LORA_TARGETS = ['qkv_proj', 'gate_up_proj'] as const;
/** Every module name a lora_target list may hold. */
export const KNOWN_LORA_TARGETS: readonly string[] = [...ALL_LORA_TARGETS, ...FUSED_LORA_TARGETS];
export const LR_SCHEDULERS = ['constant', 'constant_with_warmup', 'linear', 'cosine'] as const;
export type LrScheduler = (typeof LR_SCHEDULERS)[number];

/** sft: supervised fine-tuning on conversations; pt: continued pre-training on raw text; dpo: preference tuning on pairs (pref_loss sigmoid / hinge / ipo / orpo / simpo). */
export type TrainStage = 'sft' | 'pt' | 'dpo';

export interface TrainConfig {
  stage: TrainStage;
  /** Stage dpo: LLaMA-Factory's RLHFArguments (pref_loss, pref_beta, pref_ftx, dpo_label_smoothing, simpo_gamma). */
  pref: PreferenceConfig;
  doTrain: boolean;
  modelNameOrPath: string;
  /** Existing adapter(s) to continue from (comma list in YAML). */
  adapterNameOrPath: string[] | null;
  template: string | null;
  dataset: string[];
  datasetDir: string;
  finetuningType: 'lora' | 'full';
  lora: { rank: number; alpha: number; dropout: number; target: string[]; useRslora: boolean; useDora: boolean };
  quantization: { bits: 4; type: 'nf4'; doubleQuantization: boolean } | null;
  cutoffLen: number;
  maxSamples: number | null;
  /** Fraction in [0, 1) or an absolute number of examples (≥ 1), as LLaMA-Factory. */
  valSize: number;
  packing: boolean;
  trainOnPrompt: boolean;
  maskHistory: boolean;
  perDeviceTrainBatchSize: number;
  gradientAccumulationSteps: number;
  learningRate: number;
  numTrainEpochs: number;
  /** null = derive from epochs (max_steps ≤ 0). */
  maxSteps: number | null;
  lrSchedulerType: LrScheduler;
  warmupSteps: number;
  warmupRatio: number;
  maxGradNorm: number;
  weightDecay: number;
  adamBeta1: number;
  adamBeta2: number;
  adamEpsilon: number;
  loggingSteps: number;
  saveSteps: number;
  outputDir: string;
  overwriteOutputDir: boolean;
  seed: number;
  gradientCheckpointing: boolean;
  neftuneNoiseAlpha: number | null;
  /** Tabtune's own keys: GPU-memory options (absent = the engine's defaults); see MemoryOptions. */
  memory?: MemoryOptions;
  /** A checkpoint folder, `true` for the last checkpoint in output_dir (transformers' convention), or null. */
  resumeFromCheckpoint: string | true | null;
  /** Kept so the YAML we write back says what the user asked for (compute is f32 here). */
  bf16: boolean;
  fp16: boolean;
  plotLoss: boolean;
}

/**
 * How a run saves GPU memory beyond LLaMA-Factory's knobs (Tabtune's own YAML keys):
 * checkpoint_precision (bf16 layer inputs under gradient checkpointing), head_precision (nf4:
 * the output head as NF4, a tied embedding then in host memory), embedding_on_host (untied models:
 * the input embedding in host memory) and loss_chunk_rows (logit rows computed at once).
 */
export interface MemoryOptions {
  checkpointPrecision?: 'f32' | 'bf16';
  headPrecision?: '16bit' | 'nf4';
  embeddingOnHost?: boolean;
  lossChunkRows?: number;
}

export interface ExportConfig {
  modelNameOrPath: string;
  adapterNameOrPath: string[] | null;
  template: string | null;
  finetuningType: 'lora' | 'full';
  exportDir: string;
  /** Max shard size in GB (LLaMA-Factory export_size, default 5). */
  exportSize: number;
  /** true = .bin files; we only write safetensors and refuse it. */
  exportLegacyFormat: false;
  /** Tabtune's own key: merged safetensors (default) or one GGUF file for llama.cpp / Ollama. */
  exportFormat: 'safetensors' | 'gguf';
  /** Tabtune's own key: the GGUF tensor type (default f16); only read with export_format: gguf. */
  exportGgufType: 'f32' | 'f16' | 'bf16' | 'q8_0' | 'q4_k_m';
  /** Tabtune's own key: with export_format: gguf, write only the LoRA adapter as a GGUF adapter (llama.cpp --lora). */
  exportGgufAdapter: boolean;
}

export interface InferConfig {
  modelNameOrPath: string;
  adapterNameOrPath: string[] | null;
  template: string | null;
  finetuningType: 'lora' | 'full';
  maxNewTokens: number;
  doSample: boolean;
  temperature: number;
  topP: number;
  topK: number;
  repetitionPenalty: number;
}

// Keys accepted without effect, with the reason shown to the user.
const IGNORED: Record<string, string> = {
  bf16: 'weights stay in their stored 16-bit format; math runs in f32',
  fp16: 'weights stay in their stored 16-bit format; math runs in f32',
  tf32: 'no effect on WebGPU',
  pure_bf16: 'math runs in f32',
  plot_loss: 'the studio always plots the loss',
  report_to: 'metrics stay in the browser',
  run_name: 'not used',
  logging_dir: 'not used',
  ddp_timeout: 'single-device training',
  deepspeed: 'single-device training',
  ddp_find_unused_parameters: 'single-device training',
  flash_attn: 'attention is always the tiled (flash-style) kernel',
  trust_remote_code: 'only built-in architectures are run; no remote code',
  cache_dir: 'models are cached in the browser',
  overwrite_cache: 'tokenized data is cached per dataset and template',
  preprocessing_num_workers: 'tokenization runs in one worker',
  dataloader_num_workers: 'not used',
  save_only_model: 'checkpoints always hold the optimizer state for resuming',
  save_total_limit: 'not used',
  save_strategy: 'checkpoints follow save_steps',
  logging_strategy: 'logging follows logging_steps',
  per_device_eval_batch_size: 'evaluation uses the training batch size',
  eval_strategy: 'evaluation runs at logging_steps when val_size > 0',
  evaluation_strategy: 'evaluation runs at logging_steps when val_size > 0',
  eval_steps: 'evaluation runs at logging_steps when val_size > 0',
  do_eval: 'evaluation runs when val_size > 0',
  do_predict: 'not supported; use the chat tab',
  use_unsloth: 'not applicable',
  enable_liger_kernel: 'not applicable',
  disable_tqdm: 'not applicable',
  infer_backend: 'inference always runs on the WebGPU engine',
  infer_dtype: 'weights stay in their stored format',
  export_device: 'export runs in the browser',
  export_hub_model_id: 'files are downloaded, not pushed',
  hf_hub_token: 'not stored',
  optim: 'the optimizer is AdamW (torch semantics, f32 states)',
  include_num_input_tokens_seen: 'tokens seen are always counted',
};

type Kind = 'str' | 'int' | 'float' | 'bool' | 'list';
// Keys each kind of file understands, with their YAML types.
const COMMON_MODEL: Record<string, Kind> = {
  model_name_or_path: 'str',
  adapter_name_or_path: 'list',
  template: 'str',
  finetuning_type: 'str',
};
const TRAIN_KEYS: Record<string, Kind> = {
  ...COMMON_MODEL,
  stage: 'str',
  do_train: 'bool',
  dataset: 'list',
  dataset_dir: 'str',
  lora_rank: 'int',
  lora_alpha: 'int',
  lora_dropout: 'float',
  lora_target: 'list',
  use_rslora: 'bool',
  use_dora: 'bool',
  quantization_bit: 'int',
  quantization_type: 'str',
  double_quantization: 'bool',
  quantization_method: 'str',
  cutoff_len: 'int',
  max_samples: 'int',
  val_size: 'float',
  packing: 'bool',
  train_on_prompt: 'bool',
  mask_history: 'bool',
  per_device_train_batch_size: 'int',
  gradient_accumulation_steps: 'int',
  learning_rate: 'float',
  num_train_epochs: 'float',
  max_steps: 'int',
  lr_scheduler_type: 'str',
  warmup_steps: 'int',
  warmup_ratio: 'float',
  max_grad_norm: 'float',
  weight_decay: 'float',
  adam_beta1: 'float',
  adam_beta2: 'float',
  adam_epsilon: 'float',
  logging_steps: 'int',
  save_steps: 'int',
  output_dir: 'str',
  overwrite_output_dir: 'bool',
  seed: 'int',
  gradient_checkpointing: 'bool',
  disable_gradient_checkpointing: 'bool',
  neftune_noise_alpha: 'float',
  checkpoint_precision: 'str',
  head_precision: 'str',
  embedding_on_host: 'bool',
  loss_chunk_rows: 'int',
  resume_from_checkpoint: 'str',
  pref_beta: 'float',
  pref_ftx: 'float',
  pref_loss: 'str',
  dpo_label_smoothing: 'float',
  simpo_gamma: 'float',
  pref_bco_weight: 'float',
};
// Keys that change training in ways we do not implement: refused rather than ignored.
const UNSUPPORTED: Record<string, string> = {
  eval_dataset: 'use val_size to hold out part of the dataset',
  additional_target: 'training extra full modules (modules_to_save) is not supported',
  loraplus_lr_ratio: 'LoRA+ is not supported',
  pissa_init: 'PiSSA initialisation is not supported',
  use_galore: 'GaLore is not supported',
  use_apollo: 'APOLLO is not supported',
  use_badam: 'BAdam is not supported',
  use_llama_pro: 'LLaMA Pro is not supported',
  neat_packing: 'packing without cross-attention is not supported; use packing',
  streaming: 'datasets are loaded whole (they live in the browser)',
  rope_scaling: 'RoPE scaling comes from the model config.json',
  freeze_trainable_layers: 'freeze fine-tuning is not supported',
  freeze_trainable_modules: 'freeze fine-tuning is not supported',
  ref_model: 'the reference model of stage dpo is the base model with the LoRA adapters switched off',
  ld_alpha: 'LD-DPO length desensitization is not supported',
};
const EXPORT_KEYS: Record<string, Kind> = {
  ...COMMON_MODEL,
  export_dir: 'str',
  export_size: 'int',
  export_legacy_format: 'bool',
  export_format: 'str',
  export_gguf_type: 'str',
  export_gguf_adapter: 'bool',
};
const INFER_KEYS: Record<string, Kind> = {
  ...COMMON_MODEL,
  max_new_tokens: 'int',
  do_sample: 'bool',
  temperature: 'float',
  top_p: 'float',
  top_k: 'int',
  repetition_penalty: 'float',
};

class Values {
  readonly warnings: string[] = [];
  readonly notes: string[] = [];
  constructor(
    readonly file: string,
    readonly raw: Record<string, unknown>,
    readonly known: Record<string, Kind>,
  ) {
    for (const [k, v] of Object.entries(raw)) {
      if (k in known) continue;
      if (k in UNSUPPORTED && v !== null && v !== false) this.fail(k, UNSUPPORTED[k]);
      if (k in IGNORED || k in UNSUPPORTED) {
        this.notes.push(`${k}: accepted and ignored (${IGNORED[k] ?? UNSUPPORTED[k]})`);
        continue;
      }
    }
    const unknown = Object.keys(raw).filter((k) => !(k in known) && !(k in IGNORED) && !(k in UNSUPPORTED));
    if (unknown.length > 0)
      this.warnings.push(`${file}: unknown key${unknown.length > 1 ? 's' : ''} ignored: ${unknown.join(', ')}`);
  }
  fail(key: string | null, detail: string): never {
    throw new LlamaFactoryConfigError(this.file, key, detail);
  }
  has(k: string): boolean {
    return this.raw[k] !== undefined && this.raw[k] !== null;
  }
  private got(v: unknown): string {
    return `${JSON.stringify(v)} (${Array.isArray(v) ? 'list' : typeof v})`;
  }
  str(k: string): string | null;
  str(k: string, dflt: string): string;
  str(k: string, dflt?: string): string | null {
    const v = this.raw[k];
    if (v === undefined || v === null) return dflt ?? null;
    if (typeof v === 'number') return String(v); // e.g. a checkpoint folder named 100
    if (typeof v !== 'string') this.fail(k, `must be a string, got ${this.got(v)}`);
    return v;
  }
  required(k: string): string {
    const v = this.str(k);
    if (v === null || v.trim() === '') this.fail(k, 'is required');
    return v;
  }
  int(k: string, dflt: number, min = -Infinity): number {
    const v = this.raw[k];
    if (v === undefined || v === null) return dflt;
    const n = typeof v === 'string' && /^[-+]?\d+$/.test(v.trim()) ? Number(v) : v;
    if (typeof n !== 'number' || !Number.isSafeInteger(n)) this.fail(k, `must be an integer, got ${this.got(v)}`);
    if (n < min) this.fail(k, `must be ≥ ${min}, got ${n}`);
    return n;
  }
  intOrNull(k: string, min: number): number | null {
    return this.has(k) ? this.int(k, 0, min) : null;
  }
  float(k: string, dflt: number, check?: (x: number) => string | null): number {
    const v = this.raw[k];
    if (v === undefined || v === null) return dflt;
    // PyYAML reads "1e-4" as a string and LLaMA-Factory examples write 1.0e-4; accept both.
    const n = typeof v === 'string' && v.trim() !== '' && Number.isFinite(Number(v)) ? Number(v) : v;
    if (typeof n !== 'number' || !Number.isFinite(n)) this.fail(k, `must be a number, got ${this.got(v)}`);
    const problem = check?.(n);
    if (problem) this.fail(k, `${problem}, got ${n}`);
    return n;
  }
  bool(k: string, dflt: boolean): boolean {
    const v = this.raw[k];
    if (v === undefined || v === null) return dflt;
    if (typeof v !== 'boolean') this.fail(k, `must be true or false, got ${this.got(v)}`);
    return v;
  }
  /** Comma-separated string or YAML list → trimmed names (LLaMA-Factory split_arg). */
  list(k: string): string[] | null {
    const v = this.raw[k];
    if (v === undefined || v === null) return null;
    const items =
      typeof v === 'string'
        ? v.split(',')
        : Array.isArray(v) && v.every((x) => typeof x === 'string')
          ? (v as string[])
          : this.fail(k, `must be a comma-separated string or a list of strings, got ${this.got(v)}`);
    const out = items.map((s) => s.trim()).filter((s) => s.length > 0);
    if (out.length === 0) this.fail(k, 'must name at least one item');
    return out;
  }
}

/** transformers takes a path or a boolean here; PyYAML users also write the string "True". */
function resumeFrom(v: Values): string | true | null {
  const r = v.raw.resume_from_checkpoint;
  if (r === true || r === 'true' || r === 'True') return true;
  if (r === false || r === 'false' || r === 'False') return null;
  return v.str('resume_from_checkpoint');
}

function load(text: string, file: string): Record<string, unknown> {
  const doc = parseDocument(text, { prettyErrors: true, uniqueKeys: true });
  if (doc.errors.length > 0) {
    const e = doc.errors[0];
    const where = e.linePos ? `line ${e.linePos[0].line}, column ${e.linePos[0].col}: ` : '';
    throw new LlamaFactoryConfigError(file, null, `invalid YAML: ${where}${e.message.split('\n')[0]}`);
  }
  const raw: unknown = doc.toJS();
  if (raw === null || raw === undefined) throw new LlamaFactoryConfigError(file, null, 'is empty');
  if (typeof raw !== 'object' || Array.isArray(raw))
    throw new LlamaFactoryConfigError(file, null, 'must be a mapping of key: value lines');
  return raw as Record<string, unknown>;
}

function finetuningType(v: Values): 'lora' | 'full' {
  const t = v.str('finetuning_type', 'lora');
  if (t === 'lora' || t === 'full') return t;
  if (t === 'freeze')
    v.fail('finetuning_type', 'freeze (partial-parameter) fine-tuning is not supported; use lora or full');
  if (t === 'oft') v.fail('finetuning_type', 'OFT is not supported; use lora or full');
  v.fail('finetuning_type', `must be lora or full, got "${t}"`);
}

function templateNote(v: Values): string | null {
  const t = v.str('template');
  if (t !== null)
    v.notes.push(
      `template: "${t}" accepted; prompts are built with the tokenizer's own chat template (tokenizer_config.json)`,
    );
  return t;
}

/** LLaMA-Factory RLHFArguments (hparams/finetuning_args.py) and its checks for stage dpo. */
function preferenceArgs(v: Values, stage: TrainStage, ft: 'lora' | 'full'): PreferenceConfig {
  const loss = v.str('pref_loss', PREFERENCE_DEFAULTS.loss);
  if (loss === 'kto_pair') v.fail('pref_loss', 'kto_pair is not supported; choose from ' + PREF_LOSSES.join(', '));
  if (!(PREF_LOSSES as readonly string[]).includes(loss))
    v.fail('pref_loss', `must be one of ${PREF_LOSSES.join(', ')}, got "${loss}"`);
  const pref: PreferenceConfig = {
    loss: loss as PrefLoss,
    beta: v.float('pref_beta', PREFERENCE_DEFAULTS.beta, (x) => (x > 0 ? null : 'must be > 0')),
    ftx: v.float('pref_ftx', PREFERENCE_DEFAULTS.ftx, (x) => (x >= 0 ? null : 'must be ≥ 0')),
    labelSmoothing: v.float('dpo_label_smoothing', PREFERENCE_DEFAULTS.labelSmoothing, (x) =>
      x >= 0 && x <= 0.5 ? null : 'must be in [0, 0.5]',
    ),
    simpoGamma: v.float('simpo_gamma', PREFERENCE_DEFAULTS.simpoGamma),
  };
  if (v.float('pref_bco_weight', 0) > 0) v.fail('pref_bco_weight', 'BCO re-weighting is not supported');
  if (stage !== 'dpo') {
    const set = ['pref_beta', 'pref_ftx', 'pref_loss', 'dpo_label_smoothing', 'simpo_gamma'].filter((k) => v.has(k));
    if (set.length) v.warnings.push(`${set.join(', ')}: only used by stage dpo`);
    return pref;
  }
  if (pref.loss !== 'sigmoid' && pref.labelSmoothing > 1e-6)
    v.fail('dpo_label_smoothing', 'is only valid for pref_loss: sigmoid');
  if (ft === 'full' && usesReference(pref.loss))
    v.fail(
      'finetuning_type',
      `pref_loss ${pref.loss} needs a reference model: here it is the base with the LoRA adapters off, so use finetuning_type: lora (orpo and simpo need no reference)`,
    );
  return pref;
}

/** Parses a LLaMA-Factory training YAML, stage sft, pt or dpo (e.g. examples/train_lora/llama3_lora_sft.yaml, llama3_lora_pretrain.yaml, llama3_lora_dpo.yaml). */
export function parseTrainYaml(text: string, file = 'train.yaml'): Parsed<TrainConfig> {
  const v = new Values(file, load(text, file), TRAIN_KEYS);
  const stageRaw = v.str('stage', 'sft');
  if (stageRaw !== 'sft' && stageRaw !== 'pt' && stageRaw !== 'dpo') {
    v.fail(
      'stage',
      `must be sft (supervised), pt (continued pre-training) or dpo (preference tuning), got "${stageRaw}"${stageRaw === 'rm' || stageRaw === 'ppo' || stageRaw === 'kto' ? ' (reward modelling, PPO and KTO are not supported)' : ''}`,
    );
  }
  const stage = stageRaw as TrainStage;
  const ft = finetuningType(v);
  const template = templateNote(v);
  const pref = preferenceArgs(v, stage, ft);

  // finetuning_args.py LoraArguments: lora_rank 8, lora_alpha None → rank*2, dropout 0, target "all".
  const rank = v.int('lora_rank', 8, 1);
  const alpha = v.has('lora_alpha') ? v.int('lora_alpha', 0, 1) : rank * 2;
  const dropout = v.float('lora_dropout', 0, (x) => (x >= 0 && x < 1 ? null : 'must be in [0, 1)'));
  const targetRaw = v.list('lora_target') ?? ['all'];
  let target: string[];
  if (targetRaw.includes('all')) {
    if (targetRaw.length > 1) v.fail('lora_target', '"all" cannot be combined with other module names');
    target = [...ALL_LORA_TARGETS];
  } else {
    const bad = targetRaw.filter((t) => !KNOWN_LORA_TARGETS.includes(t));
    if (bad.length > 0)
      v.fail(
        'lora_target',
        `unknown module${bad.length > 1 ? 's' : ''} ${bad.join(', ')}; choose from all, ${KNOWN_LORA_TARGETS.join(', ')}`,
      );
    target = targetRaw;
  }
  const useRslora = v.bool('use_rslora', false);
  const useDora = v.bool('use_dora', false);
  if (ft !== 'lora') {
    for (const k of ['use_rslora', 'use_dora'] as const)
      if (v.bool(k, false)) v.fail(k, 'is only valid for LoRA training');
  }

  // model_args.py QuantizationArguments: quantization_bit None, quantization_type nf4, double_quantization True.
  let quantization: TrainConfig['quantization'] = null;
  if (v.has('quantization_bit')) {
    const bits = v.int('quantization_bit', 4);
    if (bits === 8)
      v.fail(
        'quantization_bit',
        '8-bit quantization is not supported; use quantization_bit: 4 (NF4 QLoRA) or remove it',
      );
    if (bits !== 4) v.fail('quantization_bit', `only 4-bit (NF4) quantization is supported, got ${bits}`);
    const method = v.str('quantization_method', 'bnb');
    if (method !== 'bnb' && method !== 'bitsandbytes')
      v.fail('quantization_method', `only bitsandbytes-style NF4 is supported, got "${method}"`);
    const qt = v.str('quantization_type', 'nf4');
    if (qt !== 'nf4') v.fail('quantization_type', `only nf4 is supported, got "${qt}"`);
    if (ft !== 'lora') v.fail('quantization_bit', 'quantized training needs finetuning_type: lora (QLoRA)');
    quantization = { bits: 4, type: 'nf4', doubleQuantization: v.bool('double_quantization', true) };
  }

  // data_args.py: dataset_dir "data", cutoff_len 2048, val_size 0.0, packing None (off for sft).
  const doTrain = v.bool('do_train', true);
  const dataset = v.list('dataset') ?? [];
  if (doTrain && dataset.length === 0)
    v.fail('dataset', 'is required for training (dataset names from dataset_info.json, comma-separated)');
  const valSize = v.float('val_size', 0, (x) =>
    x < 0
      ? 'must be ≥ 0'
      : x >= 1 && !Number.isInteger(x)
        ? 'must be a fraction in [0, 1) or a whole number of examples'
        : null,
  );
  const trainOnPrompt = v.bool('train_on_prompt', false);
  const maskHistory = v.bool('mask_history', false);
  // hparams/parser.py: prompt masking exists only for sft.
  if (stage !== 'sft' && (trainOnPrompt || maskHistory)) {
    v.fail(
      trainOnPrompt ? 'train_on_prompt' : 'mask_history',
      stage === 'pt'
        ? 'only applies to stage sft (pre-training trains every token)'
        : 'only applies to stage sft (preference tuning scores the answers only)',
    );
  }
  if (stage === 'dpo' && v.bool('packing', false))
    v.fail('packing', 'preference pairs are not packed (LLaMA-Factory pads each pair batch)');
  if (trainOnPrompt && maskHistory) v.fail('mask_history', '`mask_history` is incompatible with `train_on_prompt`');

  // transformers TrainingArguments defaults, except gradient checkpointing which LLaMA-Factory turns on
  // unless disable_gradient_checkpointing (model_args.py).
  const gradientCheckpointing = v.has('gradient_checkpointing')
    ? v.bool('gradient_checkpointing', true)
    : !v.bool('disable_gradient_checkpointing', false);
  const lrType = v.str('lr_scheduler_type', 'linear');
  if (!(LR_SCHEDULERS as readonly string[]).includes(lrType)) {
    v.fail('lr_scheduler_type', `"${lrType}" is not supported; choose from ${LR_SCHEDULERS.join(', ')}`);
  }
  const maxSteps = v.int('max_steps', -1);
  const neft = v.has('neftune_noise_alpha')
    ? v.float('neftune_noise_alpha', 0, (x) => (x >= 0 ? null : 'must be ≥ 0'))
    : null;
  if (stage === 'dpo' && neft) v.fail('neftune_noise_alpha', 'is not supported with stage dpo');
  const memory: MemoryOptions = {};
  if (v.has('checkpoint_precision')) {
    const x = v.str('checkpoint_precision', 'f32');
    if (x !== 'f32' && x !== 'bf16') v.fail('checkpoint_precision', `must be f32 or bf16, got ${JSON.stringify(x)}`);
    memory.checkpointPrecision = x as 'f32' | 'bf16';
  }
  if (v.has('head_precision')) {
    const x = v.str('head_precision', '16bit');
    if (x !== '16bit' && x !== 'nf4') v.fail('head_precision', `must be 16bit or nf4, got ${JSON.stringify(x)}`);
    if (x === 'nf4' && ft === 'full')
      v.fail('head_precision', 'nf4 needs finetuning_type: lora (full fine-tuning trains the head)');
    memory.headPrecision = x as '16bit' | 'nf4';
  }
  if (v.has('embedding_on_host')) {
    memory.embeddingOnHost = v.bool('embedding_on_host', false);
    if (memory.embeddingOnHost && ft === 'full')
      v.fail('embedding_on_host', 'needs finetuning_type: lora (full fine-tuning trains the embedding)');
  }
  if (v.has('loss_chunk_rows')) memory.lossChunkRows = v.int('loss_chunk_rows', 0, 1);

  const config: TrainConfig = {
    stage,
    pref,
    doTrain,
    modelNameOrPath: v.required('model_name_or_path'),
    adapterNameOrPath: v.list('adapter_name_or_path'),
    template,
    dataset,
    datasetDir: v.str('dataset_dir', 'data'),
    finetuningType: ft,
    lora: { rank, alpha, dropout, target, useRslora, useDora },
    quantization,
    cutoffLen: v.int('cutoff_len', 2048, 2),
    maxSamples: v.intOrNull('max_samples', 1),
    valSize,
    // hparams/parser.py: packing defaults to on for pt, off otherwise.
    packing: v.bool('packing', stage === 'pt'),
    trainOnPrompt,
    maskHistory,
    perDeviceTrainBatchSize: v.int('per_device_train_batch_size', 8, 1),
    gradientAccumulationSteps: v.int('gradient_accumulation_steps', 1, 1),
    learningRate: v.float('learning_rate', 5e-5, (x) => (x > 0 ? null : 'must be > 0')),
    numTrainEpochs: v.float('num_train_epochs', 3, (x) => (x > 0 ? null : 'must be > 0')),
    maxSteps: maxSteps > 0 ? maxSteps : null,
    lrSchedulerType: lrType as LrScheduler,
    warmupSteps: v.int('warmup_steps', 0, 0),
    warmupRatio: v.float('warmup_ratio', 0, (x) => (x >= 0 && x < 1 ? null : 'must be in [0, 1)')),
    maxGradNorm: v.float('max_grad_norm', 1, (x) => (x >= 0 ? null : 'must be ≥ 0 (0 disables clipping)')),
    weightDecay: v.float('weight_decay', 0, (x) => (x >= 0 ? null : 'must be ≥ 0')),
    adamBeta1: v.float('adam_beta1', 0.9, (x) => (x >= 0 && x < 1 ? null : 'must be in [0, 1)')),
    adamBeta2: v.float('adam_beta2', 0.999, (x) => (x >= 0 && x < 1 ? null : 'must be in [0, 1)')),
    adamEpsilon: v.float('adam_epsilon', 1e-8, (x) => (x > 0 ? null : 'must be > 0')),
    loggingSteps: v.int('logging_steps', 500, 1),
    saveSteps: v.int('save_steps', 500, 1),
    outputDir: v.str('output_dir', 'trainer_output'),
    overwriteOutputDir: v.bool('overwrite_output_dir', false),
    seed: v.int('seed', 42, 0),
    gradientCheckpointing,
    neftuneNoiseAlpha: neft,
    ...(Object.keys(memory).length ? { memory } : {}),
    resumeFromCheckpoint: resumeFrom(v),
    bf16: typeof v.raw.bf16 === 'boolean' ? v.raw.bf16 : false,
    fp16: typeof v.raw.fp16 === 'boolean' ? v.raw.fp16 : false,
    plotLoss: typeof v.raw.plot_loss === 'boolean' ? v.raw.plot_loss : false,
  };
  if (config.adapterNameOrPath && ft !== 'lora')
    v.fail('adapter_name_or_path', 'adapters can only be continued with finetuning_type: lora');
  if (config.packing && stage === 'sft')
    v.notes.push('packing: sequences are packed up to cutoff_len with attention kept inside each sequence');
  if (config.packing && stage === 'pt')
    v.notes.push('packing: documents are joined with the end-of-text token and cut into cutoff_len blocks');
  return { config, warnings: v.warnings, notes: v.notes };
}

/** Parses a LLaMA-Factory export YAML (examples/merge_lora/llama3_lora_sft.yaml). */
export function parseExportYaml(text: string, file = 'export.yaml'): Parsed<ExportConfig> {
  const v = new Values(file, load(text, file), EXPORT_KEYS);
  const ft = finetuningType(v);
  const template = templateNote(v);
  if (v.bool('export_legacy_format', false))
    v.fail('export_legacy_format', 'only safetensors is written; remove export_legacy_format or set it to false');
  const config: ExportConfig = {
    modelNameOrPath: v.required('model_name_or_path'),
    adapterNameOrPath: v.list('adapter_name_or_path'),
    template,
    finetuningType: ft,
    exportDir: v.required('export_dir'),
    exportSize: v.int('export_size', 5, 1),
    exportLegacyFormat: false,
    exportFormat: 'safetensors',
    exportGgufType: 'f16',
    exportGgufAdapter: false,
  };
  const format = v.str('export_format', 'safetensors');
  if (format !== 'safetensors' && format !== 'gguf')
    v.fail('export_format', `must be safetensors or gguf, got ${JSON.stringify(format)}`);
  config.exportFormat = format as ExportConfig['exportFormat'];
  const ggufType = v.str('export_gguf_type', 'f16').toLowerCase();
  const ggufTypes = ['f32', 'f16', 'bf16', 'q8_0', 'q4_k_m'];
  if (!ggufTypes.includes(ggufType) && (/^q[2-6]_k/.test(ggufType) || /^q[45]_[01]$/.test(ggufType)))
    v.fail('export_gguf_type', `${ggufType} is not yet supported; use f32, f16, bf16, q8_0 or q4_k_m`);
  if (!ggufTypes.includes(ggufType))
    v.fail('export_gguf_type', `must be f32, f16, bf16, q8_0 or q4_k_m, got ${JSON.stringify(ggufType)}`);
  config.exportGgufType = ggufType as ExportConfig['exportGgufType'];
  if (format !== 'gguf' && v.has('export_gguf_type'))
    v.warnings.push('export_gguf_type is only used with export_format: gguf');
  config.exportGgufAdapter = v.bool('export_gguf_adapter', false);
  if (config.exportGgufAdapter) {
    if (format !== 'gguf') v.fail('export_gguf_adapter', 'needs export_format: gguf');
    if (config.adapterNameOrPath === null)
      v.fail('export_gguf_adapter', 'needs adapter_name_or_path: the adapter to write');
    else if (config.adapterNameOrPath.length > 1)
      v.fail('export_gguf_adapter', 'writes one adapter; adapter_name_or_path lists several');
    if (!['f32', 'f16', 'bf16'].includes(ggufType))
      v.fail('export_gguf_type', `a GGUF LoRA adapter is written as f32, f16 or bf16, not ${ggufType}`);
  }
  if (format === 'gguf' && v.has('export_size'))
    v.warnings.push('export_size is not used for GGUF: one file is written');
  if (config.adapterNameOrPath === null && ft === 'lora')
    v.notes.push('adapter_name_or_path not given: the base model is exported as is');
  return { config, warnings: v.warnings, notes: v.notes };
}

/** Parses a LLaMA-Factory chat/inference YAML (examples/inference/llama3_lora_sft.yaml); generating_args.py defaults. */
export function parseInferYaml(text: string, file = 'infer.yaml'): Parsed<InferConfig> {
  const v = new Values(file, load(text, file), INFER_KEYS);
  const ft = finetuningType(v);
  const template = templateNote(v);
  const config: InferConfig = {
    modelNameOrPath: v.required('model_name_or_path'),
    adapterNameOrPath: v.list('adapter_name_or_path'),
    template,
    finetuningType: ft,
    maxNewTokens: v.int('max_new_tokens', 1024, 1),
    doSample: v.bool('do_sample', true),
    temperature: v.float('temperature', 0.95, (x) =>
      x > 0 ? null : 'must be > 0 (use do_sample: false for greedy decoding)',
    ),
    topP: v.float('top_p', 0.7, (x) => (x > 0 && x <= 1 ? null : 'must be in (0, 1]')),
    topK: v.int('top_k', 50, 0),
    repetitionPenalty: v.float('repetition_penalty', 1.0, (x) => (x > 0 ? null : 'must be > 0')),
  };
  return { config, warnings: v.warnings, notes: v.notes };
}

// ---------------------------------------------------------------------------------------------
// TrainConfig → YAML text, laid out like LLaMA-Factory's examples.

/** A float PyYAML (YAML 1.1) also reads as a float: "1.0e-4", "3.0" (not "1e-4" or "3"). */
export function yamlFloat(x: number): string {
  if (!Number.isFinite(x)) throw new Error(`cannot write ${x} as a YAML float`);
  // Small values in exponent form, as LLaMA-Factory's examples write learning rates (1.0e-4).
  const s = x !== 0 && Math.abs(x) < 1e-3 ? x.toExponential() : String(x);
  const m = /^(-?)(\d+)(?:\.(\d+))?e([+-])(\d+)$/.exec(s);
  if (m) return `${m[1]}${m[2]}.${m[3] ?? '0'}e${m[4]}${m[5]}`;
  return Number.isInteger(x) ? `${s}.0` : s;
}

function yamlStr(s: string): string {
  return stringify(s).trimEnd();
}

export function trainConfigToYaml(c: TrainConfig): string {
  const lines: string[] = [];
  const kv = (k: string, val: string) => lines.push(`${k}: ${val}`);
  lines.push('### model');
  kv('model_name_or_path', yamlStr(c.modelNameOrPath));
  if (c.adapterNameOrPath) kv('adapter_name_or_path', yamlStr(c.adapterNameOrPath.join(',')));
  if (c.quantization) {
    kv('quantization_bit', '4');
    kv('quantization_type', c.quantization.type);
    kv('double_quantization', String(c.quantization.doubleQuantization));
  }
  lines.push('', '### method');
  kv('stage', c.stage);
  if (c.stage === 'dpo') {
    kv('pref_beta', yamlFloat(c.pref.beta));
    kv('pref_loss', c.pref.loss);
    if (c.pref.ftx !== PREFERENCE_DEFAULTS.ftx) kv('pref_ftx', yamlFloat(c.pref.ftx));
    if (c.pref.labelSmoothing !== PREFERENCE_DEFAULTS.labelSmoothing)
      kv('dpo_label_smoothing', yamlFloat(c.pref.labelSmoothing));
    if (c.pref.loss === 'simpo') kv('simpo_gamma', yamlFloat(c.pref.simpoGamma));
  }
  kv('do_train', String(c.doTrain));
  kv('finetuning_type', c.finetuningType);
  if (c.finetuningType === 'lora') {
    kv('lora_rank', String(c.lora.rank));
    kv('lora_alpha', String(c.lora.alpha));
    kv('lora_dropout', yamlFloat(c.lora.dropout));
    const all =
      c.lora.target.length === ALL_LORA_TARGETS.length && ALL_LORA_TARGETS.every((t) => c.lora.target.includes(t));
    kv('lora_target', all ? 'all' : c.lora.target.join(','));
    if (c.lora.useRslora) kv('use_rslora', 'true');
    if (c.lora.useDora) kv('use_dora', 'true');
  }
  if (!c.gradientCheckpointing) kv('disable_gradient_checkpointing', 'true');
  lines.push('', '### dataset');
  kv('dataset', yamlStr(c.dataset.join(',')));
  if (c.datasetDir !== 'data') kv('dataset_dir', yamlStr(c.datasetDir));
  if (c.template !== null) kv('template', yamlStr(c.template));
  kv('cutoff_len', String(c.cutoffLen));
  if (c.maxSamples !== null) kv('max_samples', String(c.maxSamples));
  if (c.packing !== (c.stage === 'pt')) kv('packing', String(c.packing));
  if (c.trainOnPrompt) kv('train_on_prompt', 'true');
  if (c.maskHistory) kv('mask_history', 'true');
  lines.push('', '### output');
  kv('output_dir', yamlStr(c.outputDir));
  kv('logging_steps', String(c.loggingSteps));
  kv('save_steps', String(c.saveSteps));
  kv('plot_loss', String(c.plotLoss));
  kv('overwrite_output_dir', String(c.overwriteOutputDir));
  if (c.resumeFromCheckpoint !== null)
    kv('resume_from_checkpoint', c.resumeFromCheckpoint === true ? 'true' : yamlStr(c.resumeFromCheckpoint));
  lines.push('', '### train');
  kv('per_device_train_batch_size', String(c.perDeviceTrainBatchSize));
  kv('gradient_accumulation_steps', String(c.gradientAccumulationSteps));
  kv('learning_rate', yamlFloat(c.learningRate));
  kv('num_train_epochs', yamlFloat(c.numTrainEpochs));
  if (c.maxSteps !== null) kv('max_steps', String(c.maxSteps));
  kv('lr_scheduler_type', c.lrSchedulerType);
  if (c.warmupSteps > 0) kv('warmup_steps', String(c.warmupSteps));
  kv('warmup_ratio', yamlFloat(c.warmupRatio));
  kv('max_grad_norm', yamlFloat(c.maxGradNorm));
  kv('weight_decay', yamlFloat(c.weightDecay));
  kv('adam_beta1', yamlFloat(c.adamBeta1));
  kv('adam_beta2', yamlFloat(c.adamBeta2));
  kv('adam_epsilon', yamlFloat(c.adamEpsilon));
  kv('seed', String(c.seed));
  if (c.neftuneNoiseAlpha !== null) kv('neftune_noise_alpha', yamlFloat(c.neftuneNoiseAlpha));
  if (c.memory?.checkpointPrecision) kv('checkpoint_precision', c.memory.checkpointPrecision);
  if (c.memory?.headPrecision) kv('head_precision', c.memory.headPrecision);
  if (c.memory?.embeddingOnHost !== undefined) kv('embedding_on_host', String(c.memory.embeddingOnHost));
  if (c.memory?.lossChunkRows !== undefined) kv('loss_chunk_rows', String(c.memory.lossChunkRows));
  if (c.bf16) kv('bf16', 'true');
  if (c.fp16) kv('fp16', 'true');
  if (c.valSize > 0) {
    lines.push('', '### eval');
    kv('val_size', c.valSize >= 1 ? String(c.valSize) : yamlFloat(c.valSize));
  }
  return lines.join('\n') + '\n';
}
