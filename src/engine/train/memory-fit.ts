// A run's settings fitted to the GPU memory the user has: before it starts (auto-fit to the
// budget) and after an out-of-memory error (the next smaller plan, once). The studio's Worker and
// the CLI both call these, so the same budget gives the same run in both.
import { GpuError } from '../gpu/errors.ts';
import type { ModelConfig } from '../model/config.ts';
import { fitPlan, nextSmallerPlan, planMemory, type FitResult, type TrainPlanConfig } from '../plan/plan.ts';
import type { TrainConfig } from './llamafactory-config.ts';
import { applyPlanChange } from './method.ts';
import { memoryPlanInput, planRun } from './run-builder.ts';

type Limits = Parameters<typeof memoryPlanInput>[2];

export interface FittedRun {
  /** The settings to run (a copy; the input is untouched). */
  config: TrainConfig;
  /** What changed, in order, with the planner's labels (empty when nothing had to). */
  steps: FitResult['chosen'];
  /** Predicted peak of `config`. */
  planned: number;
  fits: boolean;
}

/** The planner's view of `tc` for sequences of `seqLen` tokens. */
export function runPlanInput(tc: TrainConfig, seqLen: number, limits?: Limits): TrainPlanConfig {
  return memoryPlanInput(planRun(tc), seqLen, limits);
}

/**
 * The planner's change as settings. Stage dpo plans two sequences per pair, so a micro-batch of
 * b sequences is b/2 pairs (at least one).
 */
function applyFit(tc: TrainConfig, r: FitResult): TrainConfig {
  const out = structuredClone(tc);
  const change = { ...r.change };
  if (tc.stage === 'dpo' && change.batchSize !== undefined) change.batchSize = Math.max(1, change.batchSize >> 1);
  applyPlanChange(out, change);
  return out;
}

function fitted(
  model: ModelConfig,
  tc: TrainConfig,
  r: FitResult,
  seqLen: number,
  budget: number | null,
  limits?: Limits,
): FittedRun {
  const config = applyFit(tc, r);
  const planned = planMemory(model, runPlanInput(config, seqLen, limits)).total;
  return { config, steps: r.chosen, planned, fits: budget === null || planned <= budget };
}

/**
 * Auto-fit: the cheapest memory steps (plan.ts FIT_STEPS) that bring the run under `budgetBytes`;
 * the method and cutoff_len stay the user's. `fits` is false when even the smallest plan does not.
 */
export function fitRunToBudget(
  model: ModelConfig,
  tc: TrainConfig,
  seqLen: number,
  budgetBytes: number,
  limits?: Limits,
): FittedRun {
  const r = fitPlan(model, runPlanInput(tc, seqLen, limits), budgetBytes);
  return fitted(model, tc, r, seqLen, budgetBytes, limits);
}

/** After an out-of-memory error: the next smaller plan of `tc`, or null when no step is left. */
export function smallerRun(model: ModelConfig, tc: TrainConfig, seqLen: number, limits?: Limits): FittedRun | null {
  const r = nextSmallerPlan(model, runPlanInput(tc, seqLen, limits));
  return r ? fitted(model, tc, r, seqLen, null, limits) : null;
}

/** Whether `e` is the GPU running out of memory (the device's error or the budget's). */
export function isOutOfMemory(e: unknown): boolean {
  return e instanceof GpuError ? e.kind === 'out-of-memory' : /out of memory|out-of-memory/i.test(String(e));
}
