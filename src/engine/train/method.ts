// The studio's Method step works on a LLaMA-Factory TrainConfig (the type the YAML reader
// produces), so the studio, the CLI and an exported YAML describe a run the same way. This module
// holds LlamaBoard's defaults (hiyouga/LLaMA-Factory src/llamafactory/webui/components/train.py),
// the table of knobs the Method step shows, and the checks it runs before a run can start.
import {
  ALL_LORA_TARGETS,
  KNOWN_LORA_TARGETS,
  LR_SCHEDULERS,
  parseTrainYaml,
  trainConfigToYaml,
  type LrScheduler,
  type TrainConfig,
  type TrainStage,
} from './llamafactory-config.ts';
import { PREF_LOSSES, PREFERENCE_DEFAULTS, usesReference, type PrefLoss } from './preference-loss.ts';

export type Method = 'lora' | 'qlora' | 'full';
export const METHODS: readonly Method[] = ['lora', 'qlora', 'full'];

export function methodOf(c: Pick<TrainConfig, 'finetuningType' | 'quantization'>): Method {
  return c.finetuningType === 'full' ? 'full' : c.quantization ? 'qlora' : 'lora';
}

/** Switches LoRA / QLoRA / full in place (QLoRA takes LLaMA-Factory's NF4 + double-quant defaults). */
export function setMethod(c: TrainConfig, m: Method): void {
  c.finetuningType = m === 'full' ? 'full' : 'lora';
  if (m !== 'qlora') c.quantization = null;
  else c.quantization ??= { bits: 4, type: 'nf4', doubleQuantization: true };
  if (m === 'full') c.lora.useRslora = c.lora.useDora = false;
}

export const STAGES: readonly TrainStage[] = ['sft', 'pt', 'dpo'];

/** Switches SFT / continued pre-training / preference tuning in place, with LLaMA-Factory's per-stage defaults (packing on for pt). */
export function setStage(c: TrainConfig, stage: TrainStage): void {
  if (c.stage === stage) return;
  c.stage = stage;
  c.packing = stage === 'pt';
  if (stage !== 'sft') c.trainOnPrompt = c.maskHistory = false;
  if (stage === 'dpo') c.neftuneNoiseAlpha = null;
}

/** The knobs that apply to the settings' method, stage and preference loss. */
export function knobApplies(k: Knob, c: TrainConfig): boolean {
  return (
    (!k.only || k.only.includes(methodOf(c))) &&
    (!k.stages || k.stages.includes(c.stage)) &&
    (!k.losses || (c.stage === 'dpo' && k.losses.includes(c.pref.loss)))
  );
}

export { PREF_LOSSES, usesReference, type PrefLoss };

/**
 * Picks the preference loss in place. dpo_label_smoothing is cDPO's and LLaMA-Factory refuses it
 * with any other loss (hparams/finetuning_args.py), so it goes back to 0 when it would be hidden.
 */
export function setPrefLoss(c: TrainConfig, loss: PrefLoss): void {
  c.pref.loss = loss;
  if (loss !== 'sigmoid') c.pref.labelSmoothing = 0;
}

/** LlamaBoard's defaults. Model and dataset names are filled in when a run starts or a YAML is written. */
export const DEFAULT_TRAIN_CONFIG: Readonly<TrainConfig> = deepFreeze({
  stage: 'sft',
  pref: { ...PREFERENCE_DEFAULTS },
  doTrain: true,
  modelNameOrPath: '',
  adapterNameOrPath: null,
  template: 'default',
  dataset: [],
  datasetDir: 'data',
  finetuningType: 'lora',
  lora: { rank: 8, alpha: 16, dropout: 0, target: [...ALL_LORA_TARGETS], useRslora: false, useDora: false },
  quantization: null,
  cutoffLen: 2048,
  maxSamples: 100000,
  valSize: 0,
  packing: false,
  trainOnPrompt: false,
  maskHistory: false,
  perDeviceTrainBatchSize: 2,
  gradientAccumulationSteps: 8,
  learningRate: 5e-5,
  numTrainEpochs: 3,
  maxSteps: null,
  lrSchedulerType: 'cosine',
  warmupSteps: 0,
  warmupRatio: 0,
  maxGradNorm: 1.0,
  weightDecay: 0,
  adamBeta1: 0.9,
  adamBeta2: 0.999,
  adamEpsilon: 1e-8,
  loggingSteps: 5,
  saveSteps: 100,
  outputDir: '',
  overwriteOutputDir: true,
  seed: 42,
  gradientCheckpointing: true,
  neftuneNoiseAlpha: null,
  resumeFromCheckpoint: null,
  bf16: true,
  fp16: false,
  plotLoss: true,
} satisfies TrainConfig);

/**
 * For the embedded demo model (5.7M parameters) and the identity dataset: LlamaBoard's defaults
 * (lr 5e-5, 3 epochs) leave a model this small unchanged. With these settings
 * scripts/demo-model/check_finetune.py takes the loss from 10.5 to 2.7 in 280 steps and Tabby
 * answers "I am Tabby, a small assistant made by the Tabtune team."
 */
export const DEMO_TRAIN_CONFIG: Readonly<TrainConfig> = deepFreeze({
  ...structuredClone(DEFAULT_TRAIN_CONFIG as TrainConfig),
  learningRate: 5e-3,
  numTrainEpochs: 20,
  cutoffLen: 256,
  perDeviceTrainBatchSize: 8,
  gradientAccumulationSteps: 1,
  saveSteps: 50,
  gradientCheckpointing: false,
});

function deepFreeze<T>(x: T): T {
  if (x && typeof x === 'object') {
    for (const v of Object.values(x)) deepFreeze(v);
    Object.freeze(x);
  }
  return x;
}

export { ALL_LORA_TARGETS, LR_SCHEDULERS };

// ---- the knobs of the Method step ------------------------------------------------------------

export type KnobGroup = 'train' | 'batch' | 'log' | 'lora' | 'pref';
interface KnobBase<V> {
  id: string;
  group: KnobGroup;
  /** Shown only for these methods (all when absent). */
  only?: readonly Method[];
  /** Shown only for these stages (all when absent). */
  stages?: readonly TrainStage[];
  /** Shown only for stage dpo with these preference losses (LlamaBoard's RLHF tab shows them per loss). */
  losses?: readonly PrefLoss[];
  get(c: TrainConfig): V;
  set(c: TrainConfig, v: V): void;
}
export interface NumberKnob extends KnobBase<number> {
  kind: 'number';
  step: 'any' | '1';
  min: number;
}
export interface BoolKnob extends KnobBase<boolean> {
  kind: 'bool';
}
export interface SchedulerKnob extends KnobBase<LrScheduler> {
  kind: 'scheduler';
}
export interface PrefLossKnob extends KnobBase<PrefLoss> {
  kind: 'prefLoss';
}
export type Knob = NumberKnob | BoolKnob | SchedulerKnob | PrefLossKnob;

type NumKey = { [K in keyof TrainConfig]-?: TrainConfig[K] extends number ? K : never }[keyof TrainConfig];
type BoolKey = { [K in keyof TrainConfig]-?: TrainConfig[K] extends boolean ? K : never }[keyof TrainConfig];
const LORA_ONLY: readonly Method[] = ['lora', 'qlora'];

function num(id: string, group: KnobGroup, key: NumKey, step: 'any' | '1', min: number): NumberKnob {
  return {
    id,
    group,
    kind: 'number',
    step,
    min,
    get: (c) => c[key] as number,
    set: (c, v) => void ((c[key] as number) = v),
  };
}
function prefNum(
  id: string,
  key: 'beta' | 'ftx' | 'labelSmoothing' | 'simpoGamma',
  min: number,
  losses?: readonly PrefLoss[],
): NumberKnob {
  return {
    id,
    group: 'pref',
    kind: 'number',
    step: 'any',
    min,
    stages: ['dpo'],
    ...(losses ? { losses } : {}),
    get: (c) => c.pref[key],
    set: (c, v) => void (c.pref[key] = v),
  };
}
function bool(id: string, group: KnobGroup, key: BoolKey): BoolKnob {
  return { id, group, kind: 'bool', get: (c) => c[key] as boolean, set: (c, v) => void ((c[key] as boolean) = v) };
}
function loraNum(id: string, key: 'rank' | 'alpha' | 'dropout', step: 'any' | '1', min: number): NumberKnob {
  return {
    id,
    group: 'lora',
    kind: 'number',
    step,
    min,
    only: LORA_ONLY,
    get: (c) => c.lora[key],
    set: (c, v) => void (c.lora[key] = v),
  };
}

/** Every knob of the Method step, in display order (the method choice, LoRA targets and template are separate controls). */
export const METHOD_KNOBS: readonly Knob[] = [
  num('learningRate', 'train', 'learningRate', 'any', 0),
  num('numTrainEpochs', 'train', 'numTrainEpochs', 'any', 0),
  num('maxGradNorm', 'train', 'maxGradNorm', 'any', 0),
  {
    id: 'maxSamples',
    group: 'train',
    kind: 'number',
    step: '1',
    min: 1,
    get: (c) => c.maxSamples ?? NaN,
    set: (c, v) => void (c.maxSamples = v),
  },
  {
    id: 'lrScheduler',
    group: 'train',
    kind: 'scheduler',
    get: (c) => c.lrSchedulerType,
    set: (c, v) => void (c.lrSchedulerType = v),
  },
  num('warmupSteps', 'train', 'warmupSteps', '1', 0),
  num('weightDecay', 'train', 'weightDecay', 'any', 0),
  num('seed', 'train', 'seed', '1', 0),
  num('cutoffLen', 'batch', 'cutoffLen', '1', 8),
  num('batchSize', 'batch', 'perDeviceTrainBatchSize', '1', 1),
  num('gradAccum', 'batch', 'gradientAccumulationSteps', '1', 1),
  num('valSize', 'batch', 'valSize', 'any', 0),
  // Preference pairs are padded per batch, never packed (LLaMA-Factory's pairwise collator).
  { ...bool('packing', 'batch', 'packing'), stages: ['sft', 'pt'] },
  { ...bool('trainOnPrompt', 'batch', 'trainOnPrompt'), stages: ['sft'] },
  { ...bool('maskHistory', 'batch', 'maskHistory'), stages: ['sft'] },
  bool('gradientCheckpointing', 'batch', 'gradientCheckpointing'),
  // LlamaBoard's neftune_alpha: 0 = off (null in the config).
  {
    id: 'neftuneAlpha',
    group: 'batch',
    kind: 'number',
    step: 'any',
    min: 0,
    // hparams/parser.py refuses NEFTune with stage dpo.
    stages: ['sft', 'pt'],
    get: (c) => c.neftuneNoiseAlpha ?? 0,
    set: (c, v) => void (c.neftuneNoiseAlpha = v > 0 ? v : v === 0 ? null : v),
  },
  num('loggingSteps', 'log', 'loggingSteps', '1', 1),
  num('saveSteps', 'log', 'saveSteps', '1', 1),
  loraNum('loraRank', 'rank', '1', 1),
  loraNum('loraAlpha', 'alpha', '1', 1),
  loraNum('loraDropout', 'dropout', 'any', 0),
  {
    id: 'useRslora',
    group: 'lora',
    kind: 'bool',
    only: LORA_ONLY,
    get: (c) => c.lora.useRslora,
    set: (c, v) => void (c.lora.useRslora = v),
  },
  {
    id: 'doubleQuant',
    group: 'lora',
    kind: 'bool',
    only: ['qlora'],
    get: (c) => c.quantization?.doubleQuantization ?? true,
    set: (c, v) => void (c.quantization && (c.quantization.doubleQuantization = v)),
  },
  // LlamaBoard's RLHF tab (webui/components/train.py): pref_beta, pref_ftx, pref_loss, and per loss
  // dpo_label_smoothing (sigmoid) and simpo_gamma (simpo).
  {
    id: 'prefLoss',
    group: 'pref',
    kind: 'prefLoss',
    stages: ['dpo'],
    get: (c) => c.pref.loss,
    set: (c, v) => setPrefLoss(c, v),
  },
  prefNum('prefBeta', 'beta', 0),
  prefNum('prefFtx', 'ftx', 0),
  prefNum('dpoLabelSmoothing', 'labelSmoothing', 0, ['sigmoid']),
  prefNum('simpoGamma', 'simpoGamma', 0, ['simpo']),
];

export function knob(id: string): Knob {
  const k = METHOD_KNOBS.find((x) => x.id === id);
  if (!k) throw new Error(`no Method knob "${id}"`);
  return k;
}

/** Turns one LoRA target on or off (all seven when every one is on, as LlamaBoard's empty lora_target). */
/** Phi-3's linear layers as PEFT names them (modeling_phi3.py: q/k/v and gate/up fused). */
export const PHI3_LORA_TARGETS = ['qkv_proj', 'o_proj', 'gate_up_proj', 'down_proj'] as const;

/** The LoRA target checkboxes the Method step shows for a model of this architecture. */
export function loraTargetChoices(architecture: string | null | undefined): readonly string[] {
  return architecture === 'Phi3ForCausalLM' ? PHI3_LORA_TARGETS : ALL_LORA_TARGETS;
}

/** Whether a target box is ticked: named, or the config says "all" (the seven Llama-style names). */
export function loraTargetChecked(c: TrainConfig, name: string): boolean {
  return c.lora.target.includes(name) || ALL_LORA_TARGETS.every((t) => c.lora.target.includes(t));
}

/**
 * Ticks or unticks one target among `choices` (loraTargetChoices). Every box of a model ticked is
 * stored as "all" (ALL_LORA_TARGETS, which lora_target: all reads as), so Phi-3's four fused
 * layers and a Llama's seven both save as LLaMA-Factory's `lora_target: all`.
 */
export function toggleLoraTarget(
  c: TrainConfig,
  name: string,
  on: boolean,
  choices: readonly string[] = ALL_LORA_TARGETS,
): void {
  const current = choices.filter((x) => loraTargetChecked(c, x));
  const next = on ? [...new Set([...current, name])] : current.filter((x) => x !== name);
  const ordered = choices.filter((x) => next.includes(x));
  c.lora.target = ordered.length === choices.length ? [...ALL_LORA_TARGETS] : ordered;
}

// ---- checks ------------------------------------------------------------------------------------

/** Why a knob's value is refused; `problemText` gives the English sentence, the studio its own language. */
export type ProblemCode =
  | 'lr-range'
  | 'more-than-zero'
  | 'whole-at-least'
  | 'val-size'
  | 'clip'
  | 'at-least-zero'
  | 'neftune'
  | 'dropout'
  | 'unknown-module'
  | 'no-module'
  | 'history-with-prompt'
  | 'label-smoothing'
  | 'finite'
  | 'pref-needs-reference';
export interface Problem {
  /** Knob id, or 'loraTarget'. */
  field: string;
  code: ProblemCode;
  params: Record<string, string | number>;
}

export const PROBLEM_EN: Record<ProblemCode, string> = {
  'lr-range': 'must be between 0 and 1 (e.g. 5e-5 for LoRA on small data, 1e-4 … 2e-4 common)',
  'more-than-zero': 'must be more than 0',
  'whole-at-least': 'must be a whole number ≥ {min}',
  'val-size': 'a fraction in [0, 1) or a whole number of rows',
  clip: 'must be ≥ 0 (0 turns clipping off)',
  'at-least-zero': 'must be ≥ 0',
  neftune: 'must be ≥ 0 (0 = off; 5 is typical)',
  dropout: 'must be in [0, 1)',
  'unknown-module': 'unknown module {modules}',
  'no-module': 'choose at least one module',
  'history-with-prompt': 'cannot be combined with Train on prompt (LLaMA-Factory refuses it)',
  'label-smoothing': 'must be in [0, 0.5] (0 = plain DPO)',
  finite: 'must be a number',
  'pref-needs-reference':
    '{loss} compares with a reference model, which here is the base with the LoRA adapters off: choose LoRA or QLoRA, or ORPO / SimPO (no reference) for full fine-tuning',
};
export const PROBLEM_CODES = Object.keys(PROBLEM_EN) as ProblemCode[];

export function problemText(
  p: Pick<Problem, 'code' | 'params'>,
  table: Record<ProblemCode, string> = PROBLEM_EN,
): string {
  return table[p.code].replace(/\{(\w+)\}/g, (m, k: string) => (k in p.params ? String(p.params[k]) : m));
}

/** What is wrong with the settings, one entry per knob (empty when a run can start). */
export function checkTrainConfig(c: TrainConfig): Problem[] {
  const out: Problem[] = [];
  const add = (field: string, code: ProblemCode, params: Problem['params'] = {}) => out.push({ field, code, params });
  const wholeAtLeast = (id: string, min = 1) => {
    const v = knob(id).get(c) as number;
    if (!Number.isInteger(v) || v < min) add(id, 'whole-at-least', { min });
  };
  if (!(c.learningRate > 0 && c.learningRate < 1)) add('learningRate', 'lr-range');
  if (!(c.numTrainEpochs > 0)) add('numTrainEpochs', 'more-than-zero');
  if (c.maxSamples !== null) wholeAtLeast('maxSamples');
  wholeAtLeast('cutoffLen', 8);
  wholeAtLeast('batchSize');
  wholeAtLeast('gradAccum');
  wholeAtLeast('loggingSteps');
  wholeAtLeast('saveSteps');
  wholeAtLeast('warmupSteps', 0);
  wholeAtLeast('seed', 0);
  if (!(c.valSize >= 0) || (c.valSize >= 1 && !Number.isInteger(c.valSize))) add('valSize', 'val-size');
  if (!(c.maxGradNorm >= 0)) add('maxGradNorm', 'clip');
  if (!(c.weightDecay >= 0)) add('weightDecay', 'at-least-zero');
  if (!((c.neftuneNoiseAlpha ?? 0) >= 0)) add('neftuneAlpha', 'neftune');
  if (c.trainOnPrompt && c.maskHistory) add('maskHistory', 'history-with-prompt');
  if (c.stage === 'dpo') {
    // LLaMA-Factory's RLHFArguments checks (llamafactory-config.ts preferenceArgs reads the YAML with the same).
    if (c.finetuningType === 'full' && usesReference(c.pref.loss))
      add('prefLoss', 'pref-needs-reference', { loss: c.pref.loss });
    if (!(c.pref.beta > 0)) add('prefBeta', 'more-than-zero');
    if (!(c.pref.ftx >= 0)) add('prefFtx', 'at-least-zero');
    if (c.pref.loss === 'sigmoid' && !(c.pref.labelSmoothing >= 0 && c.pref.labelSmoothing <= 0.5))
      add('dpoLabelSmoothing', 'label-smoothing');
    if (c.pref.loss === 'simpo' && !Number.isFinite(c.pref.simpoGamma)) add('simpoGamma', 'finite');
  }
  if (c.finetuningType !== 'full') {
    wholeAtLeast('loraRank');
    wholeAtLeast('loraAlpha');
    if (!(c.lora.dropout >= 0 && c.lora.dropout < 1)) add('loraDropout', 'dropout');
    const bad = c.lora.target.filter((t) => !KNOWN_LORA_TARGETS.includes(t));
    if (bad.length) add('loraTarget', 'unknown-module', { modules: bad.join(', ') });
    else if (!c.lora.target.length) add('loraTarget', 'no-module');
  }
  return out;
}

/** LLaMA-Factory template names for the models the studio offers (src/llamafactory/data/template.py). */
export function guessTemplate(modelName: string, architecture: string | null): string {
  const n = modelName.toLowerCase();
  if (n.includes('qwen3') || architecture === 'Qwen3ForCausalLM') return 'qwen3';
  if (n.includes('qwen') || architecture === 'Qwen2ForCausalLM') return 'qwen';
  if (n.includes('llama-3') || n.includes('llama3')) return 'llama3';
  if (n.includes('smollm2')) return 'smollm2';
  // LLaMA-Factory has no smollm3 template; its ChatML `smollm` is the one that fits.
  if (n.includes('smollm3') || architecture === 'SmolLM3ForCausalLM') return 'smollm';
  // LLaMA-Factory's template.py: phi4_mini (<|user|>…<|end|><|assistant|>, no newlines) for
  // Phi-4-mini, phi4 (<|im_start|>…<|im_sep|>) for Phi-4, phi for Phi-3 / Phi-3.5.
  if (n.includes('phi-4-mini') || n.includes('phi4-mini') || n.includes('phi4_mini')) return 'phi4_mini';
  if (n.includes('phi-4') || n.includes('phi4')) return 'phi4';
  if (n.includes('phi-3') || n.includes('phi3') || architecture === 'Phi3ForCausalLM') return 'phi';
  // LLaMA-Factory's template.py: gemma3 (Gemma 3, system prompt folded into the first user turn)
  // and gemma (Gemma / Gemma 2: <start_of_turn>user … <end_of_turn>, no system role).
  if (n.includes('gemma-3') || n.includes('gemma3') || architecture === 'Gemma3ForCausalLM') return 'gemma3';
  if (n.includes('gemma') || architecture === 'Gemma2ForCausalLM') return 'gemma';
  if (n.includes('mistral') || architecture === 'MistralForCausalLM') return 'mistral';
  return 'default';
}

// ---- YAML ------------------------------------------------------------------------------------

/** The run as it will start: the studio's settings with the model and the datasets filled in. */
export function runConfig(c: TrainConfig, o: { modelNameOrPath: string; datasets: string[] }): TrainConfig {
  const out = structuredClone(c);
  out.modelNameOrPath = o.modelNameOrPath;
  out.dataset = o.datasets.length ? [...o.datasets] : ['identity_en_zh'];
  out.outputDir ||= `saves/${o.modelNameOrPath.split('/').pop()}/${c.finetuningType}/${c.stage}`;
  return out;
}

export function studioYaml(c: TrainConfig, o: { modelNameOrPath: string; datasets: string[] }): string {
  return trainConfigToYaml(runConfig(c, o));
}

/** Settings from a LLaMA-Factory YAML (the "load" button); unknown keys come back as warnings. */
export function studioConfigFromYaml(
  text: string,
  file = 'train.yaml',
): { config: TrainConfig; warnings: string[]; notes: string[]; model: string; datasets: string[] } {
  const { config, warnings, notes } = parseTrainYaml(text, file);
  // The model and datasets are chosen on their own steps; the output folder is derived from the model.
  const settings: TrainConfig = {
    ...config,
    modelNameOrPath: '',
    dataset: [],
    datasetDir: 'data',
    outputDir: '',
    resumeFromCheckpoint: null,
    adapterNameOrPath: null,
  };
  return { config: settings, warnings, notes, model: config.modelNameOrPath, datasets: config.dataset };
}

/**
 * Settings stored by studio versions whose Method step kept its own flat form (in IndexedDB:
 * saved settings and run records), as the TrainConfig they meant.
 */
export function trainConfigFromLegacyMethod(m: Record<string, unknown>): TrainConfig {
  const c = structuredClone(DEFAULT_TRAIN_CONFIG as TrainConfig);
  const n = (k: string, dflt: number) => (typeof m[k] === 'number' ? (m[k] as number) : dflt);
  const b = (k: string, dflt: boolean) => (typeof m[k] === 'boolean' ? (m[k] as boolean) : dflt);
  const method = m.method === 'full' || m.method === 'qlora' ? m.method : 'lora';
  setMethod(c, method);
  if (c.quantization) c.quantization.doubleQuantization = b('doubleQuant', true);
  const targets = Array.isArray(m.loraTarget) ? (m.loraTarget as string[]) : [];
  c.lora = {
    rank: n('loraRank', 8),
    alpha: n('loraAlpha', 16),
    dropout: n('loraDropout', 0),
    target: targets.length ? [...targets] : [...ALL_LORA_TARGETS],
    useRslora: method !== 'full' && b('useRslora', false),
    useDora: false,
  };
  Object.assign(c, {
    learningRate: n('learningRate', c.learningRate),
    numTrainEpochs: n('numTrainEpochs', c.numTrainEpochs),
    maxSamples: n('maxSamples', 100000),
    cutoffLen: n('cutoffLen', c.cutoffLen),
    perDeviceTrainBatchSize: n('batchSize', c.perDeviceTrainBatchSize),
    gradientAccumulationSteps: n('gradAccum', c.gradientAccumulationSteps),
    valSize: n('valSize', 0),
    warmupSteps: n('warmupSteps', 0),
    maxGradNorm: n('maxGradNorm', 1),
    weightDecay: n('weightDecay', 0),
    loggingSteps: n('loggingSteps', c.loggingSteps),
    saveSteps: n('saveSteps', c.saveSteps),
    seed: n('seed', 42),
    packing: b('packing', false),
    trainOnPrompt: b('trainOnPrompt', false),
    maskHistory: b('maskHistory', false),
    gradientCheckpointing: b('gradientCheckpointing', true),
    neftuneNoiseAlpha: n('neftuneAlpha', 0) > 0 ? n('neftuneAlpha', 0) : null,
    template: typeof m.template === 'string' ? m.template : 'default',
  });
  if ((LR_SCHEDULERS as readonly unknown[]).includes(m.lrScheduler)) c.lrSchedulerType = m.lrScheduler as LrScheduler;
  return c;
}

/** Applies a memory-plan suggestion (planMemory's `change`) to the settings, keeping the effective batch. */
export function applyPlanChange(
  c: TrainConfig,
  change: {
    method?: Method;
    batchSize?: number;
    seqLen?: number;
    gradientCheckpointing?: boolean;
    checkpointPrecision?: 'f32' | 'bf16';
    headPrecision?: '16bit' | 'nf4';
    embeddingOnHost?: boolean;
    lossChunkRows?: number;
  },
): void {
  if (change.method) setMethod(c, change.method);
  if (typeof change.batchSize === 'number') {
    // What leaves the micro-batch goes to accumulation.
    const effective = c.perDeviceTrainBatchSize * c.gradientAccumulationSteps;
    c.perDeviceTrainBatchSize = change.batchSize;
    c.gradientAccumulationSteps = Math.max(1, Math.round(effective / change.batchSize));
  }
  if (typeof change.seqLen === 'number') c.cutoffLen = change.seqLen;
  if (typeof change.gradientCheckpointing === 'boolean') c.gradientCheckpointing = change.gradientCheckpointing;
  // The GPU-memory options (Tabtune's own YAML keys checkpoint_precision, head_precision, …).
  const memory = { ...c.memory };
  if (change.checkpointPrecision) memory.checkpointPrecision = change.checkpointPrecision;
  if (change.headPrecision) memory.headPrecision = change.headPrecision;
  if (typeof change.embeddingOnHost === 'boolean') memory.embeddingOnHost = change.embeddingOnHost;
  if (typeof change.lossChunkRows === 'number') memory.lossChunkRows = change.lossChunkRows;
  if (Object.keys(memory).length) c.memory = memory;
}
