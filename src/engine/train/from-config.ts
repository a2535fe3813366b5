// LLaMA-Factory training YAML (parsed by llamafactory-config.ts) → engine settings: load options,
// LoRA config, trainer config, and the step count as the HF Trainer derives it.
import type { LoadOptions } from '../model/load.ts';
import type { LoraConfig } from '../model/model.ts';
import type { TrainConfig } from './llamafactory-config.ts';
import type { TrainerConfig } from './trainer.ts';

export function loadOptionsFrom(tc: TrainConfig): LoadOptions {
  if (tc.finetuningType === 'full') {
    if (tc.quantization) throw new Error('quantization_bit 4 needs finetuning_type: lora (QLoRA); full fine-tuning trains f32 weights');
    return { computeDType: 'f32' };
  }
  return tc.quantization ? { quantize: 'nf4', doubleQuant: tc.quantization.doubleQuantization } : {};
}

export function loraConfigFrom(tc: TrainConfig): LoraConfig | null {
  if (tc.finetuningType !== 'lora') return null;
  if (tc.lora.useDora) throw new Error('use_dora: DoRA is not supported by this engine yet; remove it to train plain LoRA');
  return { rank: tc.lora.rank, alpha: tc.lora.alpha, dropout: tc.lora.dropout, targets: tc.lora.target.includes('all') ? 'all' : tc.lora.target, rsLora: tc.lora.useRslora, seed: tc.seed };
}

/**
 * transformers Trainer: updates per epoch = ceil(micro-batches / accumulation) (≥ 4.46, the last
 * window may be short); max_steps > 0 wins, else ceil(epochs · updates per epoch).
 */
export function totalTrainingSteps(microBatchesPerEpoch: number, tc: Pick<TrainConfig, 'gradientAccumulationSteps' | 'numTrainEpochs' | 'maxSteps'>): number {
  if (tc.maxSteps !== null && tc.maxSteps > 0) return tc.maxSteps;
  const perEpoch = Math.max(1, Math.ceil(microBatchesPerEpoch / tc.gradientAccumulationSteps));
  return Math.max(1, Math.ceil(tc.numTrainEpochs * perEpoch));
}

export function trainerConfigFrom(tc: TrainConfig, totalSteps: number): TrainerConfig {
  return {
    learningRate: tc.learningRate,
    lrSchedulerType: tc.lrSchedulerType,
    totalSteps,
    warmupSteps: tc.warmupSteps,
    warmupRatio: tc.warmupRatio,
    weightDecay: tc.weightDecay,
    adamBeta1: tc.adamBeta1,
    adamBeta2: tc.adamBeta2,
    adamEpsilon: tc.adamEpsilon,
    maxGradNorm: tc.maxGradNorm,
    gradientCheckpointing: tc.gradientCheckpointing,
    neftuneAlpha: tc.neftuneNoiseAlpha,
    seed: tc.seed,
    full: tc.finetuningType === 'full',
  };
}
