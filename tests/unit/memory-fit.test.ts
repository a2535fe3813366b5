import { describe, expect, it } from 'vitest';
import { GpuError } from '../../src/engine/gpu/errors.ts';
import { knownConfig } from '../../src/engine/plan/known-configs.ts';
import { planMemory } from '../../src/engine/plan/plan.ts';
import type { TrainConfig } from '../../src/engine/train/llamafactory-config.ts';
import { fitRunToBudget, isOutOfMemory, runPlanInput, smallerRun } from '../../src/engine/train/memory-fit.ts';
import { DEFAULT_TRAIN_CONFIG } from '../../src/engine/train/method.ts';

const q15 = knownConfig('Qwen/Qwen2.5-1.5B-Instruct');
const run = (over: Partial<TrainConfig> = {}): TrainConfig => ({
  ...structuredClone(DEFAULT_TRAIN_CONFIG as TrainConfig),
  quantization: { bits: 4, type: 'nf4', doubleQuantization: true },
  perDeviceTrainBatchSize: 8,
  gradientAccumulationSteps: 2,
  gradientCheckpointing: false,
  cutoffLen: 512,
  ...over,
});
const total = (tc: TrainConfig) => planMemory(q15, runPlanInput(tc, 512)).total;

describe('auto-fit of a run to a GPU memory budget', () => {
  it('changes nothing when the run fits, and says so', () => {
    const tc = run();
    const f = fitRunToBudget(q15, tc, 512, total(tc) + 1);
    expect(f.steps).toEqual([]);
    expect(f.config).toEqual(tc);
    expect(f.planned).toBe(total(tc));
    expect(f.fits).toBe(true);
  });
  it('takes the planner steps until the run fits; the effective batch is kept and the input untouched', () => {
    const tc = run();
    const before = structuredClone(tc);
    const budget = 1.6e9;
    const f = fitRunToBudget(q15, tc, 512, budget);
    expect(tc).toEqual(before);
    expect(f.fits).toBe(true);
    expect(f.planned).toBeLessThanOrEqual(budget);
    expect(f.planned).toBe(total(f.config));
    expect(f.steps[0].kind).toBe('checkpointing');
    expect(f.config.gradientCheckpointing).toBe(true);
    expect(f.config.perDeviceTrainBatchSize * f.config.gradientAccumulationSteps).toBe(16);
    // The method and cutoff_len stay the user's.
    expect(f.config.quantization).toEqual(tc.quantization);
    expect(f.config.cutoffLen).toBe(512);
  });
  it('stage dpo: the planner counts two sequences per pair, the fitted batch is in pairs', () => {
    const tc = run({ stage: 'dpo', perDeviceTrainBatchSize: 4, gradientCheckpointing: true });
    const f = fitRunToBudget(q15, tc, 512, total(tc) * 0.8);
    const batch = f.steps.find((s) => s.kind === 'batch');
    expect(batch).toBeDefined();
    expect(f.config.perDeviceTrainBatchSize).toBe((batch!.change.batchSize as number) / 2);
    expect(f.planned).toBe(total(f.config));
  });
  it('reports when even the smallest plan is above the budget', () => {
    const f = fitRunToBudget(q15, run(), 512, 1e8);
    expect(f.fits).toBe(false);
    expect(f.planned).toBe(total(f.config));
    expect(f.config.memory?.headPrecision).toBe('nf4');
  });
  it('after an out-of-memory error: one step smaller, then none left', () => {
    let tc = run();
    const seen: string[] = [];
    for (let i = 0; i < 20; i++) {
      const s = smallerRun(q15, tc, 512);
      if (!s) break;
      expect(s.planned).toBeLessThan(total(tc));
      seen.push(...s.steps.map((st) => st.kind));
      tc = s.config;
    }
    expect(smallerRun(q15, tc, 512)).toBeNull();
    expect(seen[0]).toBe('checkpointing');
    expect(seen).toContain('nf4Head');
  });
  it('knows an out-of-memory error from the device or the budget, and nothing else', () => {
    expect(isOutOfMemory(new GpuError('out-of-memory', 'lora.arena', 'needs 1 MiB more'))).toBe(true);
    expect(isOutOfMemory(new GpuError('validation', 'matmul', 'bad binding'))).toBe(false);
    expect(isOutOfMemory(new Error('the GPU ran out of memory'))).toBe(true);
    expect(isOutOfMemory(new Error('no such file'))).toBe(false);
  });
});
