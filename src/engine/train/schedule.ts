// Learning-rate schedules exactly as transformers' get_scheduler (optimization.py):
// LambdaLR multipliers evaluated at the scheduler's step count, which is 0 for the first
// optimizer step (so with warmup the first update uses lr 0, as in the HF Trainer).
import type { LrScheduler } from './llamafactory-config.ts';

export interface ScheduleConfig {
  type: LrScheduler;
  /** Peak learning rate. */
  lr: number;
  totalSteps: number;
  /** Absolute warmup steps (wins when > 0) … */
  warmupSteps?: number;
  /** … else ceil(totalSteps · ratio), TrainingArguments.get_warmup_steps. */
  warmupRatio?: number;
}

export function warmupStepsOf(c: ScheduleConfig): number {
  if ((c.warmupSteps ?? 0) > 0) return c.warmupSteps!;
  return Math.ceil(c.totalSteps * (c.warmupRatio ?? 0));
}

/** The multiplier at scheduler step `s` (0-based count of optimizer steps already taken). */
export function lrLambda(c: ScheduleConfig, s: number): number {
  const W = warmupStepsOf(c);
  const T = c.totalSteps;
  switch (c.type) {
    case 'constant':
      return 1;
    case 'constant_with_warmup':
      return s < W ? s / Math.max(1, W) : 1;
    case 'linear':
      if (s < W) return s / Math.max(1, W);
      return Math.max(0, (T - s) / Math.max(1, T - W));
    case 'cosine': {
      if (s < W) return s / Math.max(1, W);
      const progress = (s - W) / Math.max(1, T - W);
      // num_cycles = 0.5
      return Math.max(0, 0.5 * (1 + Math.cos(Math.PI * 0.5 * 2 * progress)));
    }
  }
}

export function lrAt(c: ScheduleConfig, s: number): number {
  return c.lr * lrLambda(c, s);
}
