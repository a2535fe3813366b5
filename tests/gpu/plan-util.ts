// planMemory against the memory ledger: what the plan-vs-ledger tests share — two LoRA training
// steps of a tiny model with the ledger's peaks measured over them, and the check that the plan
// predicts that peak (in total and per category) within 5 %.
import { expect } from 'vitest';
import { MEMORY_CATEGORIES, type MemoryCategory } from '../../src/engine/gpu/index.ts';
import { attachLora, type Model } from '../../src/engine/model/model.ts';
import type { MemoryPlan } from '../../src/engine/plan/plan.ts';
import { Trainer } from '../../src/engine/train/trainer.ts';

/** The shape every plan-vs-ledger test trains and plans: batch 2 of 48 tokens, LoRA rank 8 on all modules. */
export const PLAN_RUN = { batchSize: 2, seqLen: 48, loraRank: 8 } as const;

/**
 * Attaches LoRA (rank 8, all modules) to `model` and runs two Trainer steps of a batch of 2 × 48
 * tokens (the first 10 of each row masked); returns the ledger's peak per category over the two
 * steps, counting weights and adapters as they stand. Trainer and adapters are released after.
 */
export async function twoStepPeak(
  model: Model,
  opts: { gradientCheckpointing: boolean; checkpointPrecision?: 'f32' | 'bf16' },
): Promise<Record<MemoryCategory, number>> {
  const gpu = model.gpu;
  const lora = attachLora(model, { rank: PLAN_RUN.loraRank, alpha: 16, dropout: 0.05, targets: 'all', seed: 1 });
  const B = PLAN_RUN.batchSize;
  const T = PLAN_RUN.seqLen;
  const ids = Int32Array.from({ length: B * T }, (_, i) => (i * 7) % 63);
  const labels = Int32Array.from(ids, (x, i) => (i % T < 10 ? -100 : x));
  // Measure only what training adds on top of a loaded model: weights/adapters are counted as they stand.
  gpu.pool.ledger.resetPeaks();
  const trainer = new Trainer(model, lora, {
    learningRate: 1e-3,
    lrSchedulerType: 'constant',
    totalSteps: 2,
    seed: 0,
    ...opts,
  });
  try {
    await trainer.step([{ batch: B, seqLen: T, inputIds: ids, labels }]);
    await trainer.step([{ batch: B, seqLen: T, inputIds: ids, labels }]);
    return gpu.pool.ledger.report().peak;
  } finally {
    trainer.release();
    lora.release();
  }
}

/**
 * Expects `plan` within 5 % of the measured `peak`, in total and in every category; `scratchSlack`
 * bytes more are allowed in scratch (and so in the total). Returns the measured total and one line
 * per category (planned vs measured) for the test's log.
 */
export function expectPlanMatchesPeak(
  plan: MemoryPlan,
  peak: Record<MemoryCategory, number>,
  scratchSlack = 0,
): { measured: number; lines: string[] } {
  const measured = MEMORY_CATEGORIES.reduce((a, c) => a + peak[c], 0);
  const lines = MEMORY_CATEGORIES.map((c) => `${c}: planned ${plan.byCategory[c]} measured ${peak[c]}`);
  const slack = (c: MemoryCategory) => (c === 'scratch' ? scratchSlack : 0);
  expect(Math.abs(plan.total - measured) - scratchSlack, lines.join('\n')).toBeLessThan(0.05 * measured);
  for (const c of MEMORY_CATEGORIES)
    expect(Math.abs(plan.byCategory[c] - peak[c]) - slack(c), lines.join('\n')).toBeLessThan(
      0.05 * Math.max(1, peak[c]),
    );
  return { measured, lines };
}
