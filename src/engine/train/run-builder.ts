// One route from a LLaMA-Factory TrainConfig (the YAML reader's type, which is also the studio's
// settings) to everything a run needs: how to load the model, the LoRA config, how to prepare and
// batch the data, the trainer config with its step count, the logging/saving cadence and the
// memory-plan input. The studio's Worker and the CLI both start runs through `planRun` and
// `startTraining`, so a setting cannot reach one and miss the other.
import type { PrepareOptions } from '../../data/pipeline.ts';
import type { EncodedExample, PackedSequence } from '../../data/types.ts';
import type { MicroBatch } from '../model/batch.ts';
import type { LoadOptions } from '../model/load.ts';
import { modelMatmulShapes } from '../model/matmul-shapes.ts';
import { attachLora, type LoraConfig, type LoraSet, type Model } from '../model/model.ts';
import { tuneLora, tuneMatmul, tuneReductions, type TuneOptions, type TuneResult } from '../ops/tuner.ts';
import type { TrainPlanConfig } from '../plan/plan.ts';
import { DataLoader } from './data.ts';
import type { TrainConfig } from './llamafactory-config.ts';
import { methodOf, type Method } from './method.ts';
import { Trainer, type TrainerConfig } from './trainer.ts';

/** How the data of a run is tokenized, truncated, split and packed. */
export type PrepareSpec = Required<
  Pick<PrepareOptions, 'cutoffLen' | 'trainOnPrompt' | 'maskHistory' | 'seed' | 'packing' | 'stage'>
> & { maxSamples: number | undefined; valSize: number | undefined; pretrainEos: string | undefined };

export interface RunPlan {
  method: Method;
  /** How the base model goes onto the GPU (also the key of a loaded model: equal options, same weights). */
  load: Pick<LoadOptions, 'quantize' | 'doubleQuant' | 'computeDType' | 'head' | 'embeddingOnHost'>;
  lora: LoraConfig | null;
  prepare: PrepareSpec;
  batches: { batchSize: number; gradientAccumulationSteps: number; seed: number };
  /** Everything of the trainer config but the step count, which needs the data. */
  optimizer: Omit<TrainerConfig, 'totalSteps'>;
  steps: Pick<TrainConfig, 'numTrainEpochs' | 'maxSteps' | 'gradientAccumulationSteps'>;
  cadence: { loggingSteps: number; saveSteps: number };
}

export function loadOptionsFrom(tc: TrainConfig): RunPlan['load'] {
  if (tc.finetuningType === 'full') {
    if (tc.quantization)
      throw new Error('quantization_bit 4 needs finetuning_type: lora (QLoRA); full fine-tuning trains f32 weights');
    return { computeDType: 'f32' };
  }
  // The vocabulary-sized matrices: only set when asked, so a plain run keeps its model key.
  const vocab: RunPlan['load'] = {
    ...(tc.memory?.headPrecision === 'nf4' ? { head: 'nf4' as const } : {}),
    ...(tc.memory?.embeddingOnHost ? { embeddingOnHost: true } : {}),
  };
  return tc.quantization
    ? { quantize: 'nf4', doubleQuant: tc.quantization.doubleQuantization, ...vocab }
    : { computeDType: 'stored', ...vocab };
}

export function loraConfigFrom(tc: TrainConfig): LoraConfig | null {
  if (tc.finetuningType !== 'lora') return null;
  if (tc.lora.useDora)
    throw new Error('use_dora: DoRA is not supported by this engine yet; remove it to train plain LoRA');
  return {
    rank: tc.lora.rank,
    alpha: tc.lora.alpha,
    dropout: tc.lora.dropout,
    targets: tc.lora.target.includes('all') ? 'all' : [...tc.lora.target],
    rsLora: tc.lora.useRslora,
    seed: tc.seed,
  };
}

/**
 * transformers Trainer: updates per epoch = ceil(micro-batches / accumulation) (≥ 4.46, the last
 * window may be short); max_steps > 0 wins, else ceil(epochs · updates per epoch).
 */
export function totalTrainingSteps(
  microBatchesPerEpoch: number,
  tc: Pick<TrainConfig, 'gradientAccumulationSteps' | 'numTrainEpochs' | 'maxSteps'>,
): number {
  if (tc.maxSteps !== null && tc.maxSteps > 0) return tc.maxSteps;
  const perEpoch = Math.max(1, Math.ceil(microBatchesPerEpoch / tc.gradientAccumulationSteps));
  return Math.max(1, Math.ceil(tc.numTrainEpochs * perEpoch));
}

function optimizerFrom(tc: TrainConfig): RunPlan['optimizer'] {
  return {
    learningRate: tc.learningRate,
    lrSchedulerType: tc.lrSchedulerType,
    warmupSteps: tc.warmupSteps,
    warmupRatio: tc.warmupRatio,
    weightDecay: tc.weightDecay,
    adamBeta1: tc.adamBeta1,
    adamBeta2: tc.adamBeta2,
    adamEpsilon: tc.adamEpsilon,
    maxGradNorm: tc.maxGradNorm,
    gradientCheckpointing: tc.gradientCheckpointing,
    checkpointPrecision: tc.memory?.checkpointPrecision,
    lossChunkRows: tc.memory?.lossChunkRows,
    neftuneAlpha: tc.neftuneNoiseAlpha,
    seed: tc.seed,
    full: tc.finetuningType === 'full',
    preference: tc.stage === 'dpo' ? { ...tc.pref } : null,
  };
}

export function trainerConfigFrom(tc: TrainConfig, totalSteps: number): TrainerConfig {
  return { ...optimizerFrom(tc), totalSteps };
}

/** Everything a run of `tc` needs that does not depend on the model or the data; throws on what the engine cannot train. */
export function planRun(tc: TrainConfig): RunPlan {
  return {
    method: methodOf(tc),
    load: loadOptionsFrom(tc),
    lora: loraConfigFrom(tc),
    prepare: {
      cutoffLen: tc.cutoffLen,
      trainOnPrompt: tc.trainOnPrompt,
      maskHistory: tc.maskHistory,
      seed: tc.seed,
      packing: tc.packing,
      stage: tc.stage,
      // pretrain.py: Llama 3 Instruct's eos is <|eot_id|>; documents end with <|end_of_text|> there.
      pretrainEos: tc.stage === 'pt' && tc.template === 'llama3' ? '<|end_of_text|>' : undefined,
      maxSamples: tc.maxSamples ?? undefined,
      valSize: tc.valSize || undefined,
    },
    batches: {
      batchSize: tc.perDeviceTrainBatchSize,
      gradientAccumulationSteps: tc.gradientAccumulationSteps,
      seed: tc.seed,
    },
    optimizer: optimizerFrom(tc),
    steps: {
      numTrainEpochs: tc.numTrainEpochs,
      maxSteps: tc.maxSteps,
      gradientAccumulationSteps: tc.gradientAccumulationSteps,
    },
    cadence: { loggingSteps: tc.loggingSteps, saveSteps: tc.saveSteps },
  };
}

/** The memory planner's view of the run (sequence length: cutoff_len, or the longest example once the data is known). */
export function memoryPlanInput(
  plan: RunPlan,
  seqLen: number,
  /** The device's limits, when one is open (defaults otherwise). */
  limits?: Pick<GPUSupportedLimits, 'maxStorageBufferBindingSize' | 'minStorageBufferOffsetAlignment'>,
): TrainPlanConfig {
  return {
    method: plan.method,
    // Stage dpo: each pair is two sequences (chosen and rejected) in the same micro-batch.
    batchSize: plan.batches.batchSize * (plan.optimizer.preference ? 2 : 1),
    seqLen,
    packing: plan.prepare.packing,
    loraRank: plan.lora?.rank,
    loraTargets: plan.lora ? (plan.lora.targets === 'all' ? undefined : plan.lora.targets) : undefined,
    doubleQuant: plan.load.doubleQuant,
    gradientCheckpointing: plan.optimizer.gradientCheckpointing ?? true,
    checkpointPrecision: plan.optimizer.checkpointPrecision,
    lossChunkRows: plan.optimizer.lossChunkRows,
    headPrecision: plan.load.head === 'nf4' ? 'nf4' : undefined,
    embeddingOnHost: plan.load.embeddingOnHost,
    maxBufferBytes: limits?.maxStorageBufferBindingSize,
    storageOffsetAlignment: limits?.minStorageBufferOffsetAlignment,
  };
}

/** The held-out rows as micro-batches in order (evaluation at each log uses them all). */
export function evalBatchesOf(plan: RunPlan, val: EncodedExample[], padId: number): MicroBatch[] {
  if (!val.length) return [];
  const loader = new DataLoader(val, { ...plan.batches, gradientAccumulationSteps: 1, padId, shuffle: false });
  return Array.from({ length: loader.microBatchesPerEpoch }, () => loader.nextWindow()[0]);
}

export interface Training {
  lora: LoraSet | null;
  loader: DataLoader;
  totalSteps: number;
  trainer: Trainer;
}

/**
 * Adapters, data loader and trainer of a run on a loaded model. `adapter` continues an existing
 * adapter instead of a fresh one. On failure nothing made here stays allocated.
 */
export function startTraining(
  model: Model,
  plan: RunPlan,
  items: (EncodedExample | PackedSequence)[],
  padId: number,
  adapter?: LoraSet,
): Training {
  const loader = new DataLoader(items, { ...plan.batches, padId });
  const totalSteps = totalTrainingSteps(loader.microBatchesPerEpoch, plan.steps);
  const lora = adapter ?? (plan.lora ? attachLora(model, plan.lora) : null);
  try {
    return { lora, loader, totalSteps, trainer: new Trainer(model, lora, { ...plan.optimizer, totalSteps }, loader) };
  } catch (e) {
    if (!adapter) lora?.release();
    throw e;
  }
}

/**
 * Measures the matmul variants for the products this run issues (once per adapter and shape
 * class; the store remembers across runs) and the reductions, so the first step already runs the
 * fastest ones. Returns the matmul classes it timed.
 */
export async function tuneKernelsForRun(
  model: Model,
  plan: RunPlan,
  seqLen: number,
  opts: TuneOptions = {},
): Promise<TuneResult[]> {
  const shapes = modelMatmulShapes(model, {
    // Stage dpo runs each pair's chosen and rejected sequences in one micro-batch.
    tokens: plan.batches.batchSize * (plan.optimizer.preference ? 2 : 1) * seqLen,
    backward: true,
    loraRank: plan.lora?.rank,
    fullWeights: plan.optimizer.full,
    lossChunkRows: plan.optimizer.lossChunkRows,
  });
  await tuneReductions(model.gpu, opts);
  if (plan.lora) await tuneLora(model.gpu, opts);
  return tuneMatmul(model.gpu, shapes, opts);
}
