// Preference tuning against an independent PyTorch implementation (tests/reference/gen_preference.py):
// DPO sigmoid (with label smoothing and pref_ftx), hinge, IPO, ORPO and SimPO on the tiny Llama and
// Qwen2 — loss, TRL's metrics and the LoRA gradients per step, the grad-norm and loss curves, and
// the final adapters. The first sigmoid step is ln 2 exactly with zero rewards (LoRA B starts at 0,
// so the policy is the reference bit for bit).
import { describe, expect, it } from 'vitest';
import { readF32 } from '../../src/engine/gpu/index.ts';
import type { MicroBatch } from '../../src/engine/model/batch.ts';
import type { Model } from '../../src/engine/model/model.ts';
import type { PreferenceConfig } from '../../src/engine/train/preference.ts';
import { Trainer, type StepResult } from '../../src/engine/train/trainer.ts';
import { relError } from '../cpu/compare.ts';
import { loadFixture, type Fixture } from '../reference/fixtures.ts';
import { runtime, testGpu } from './context.ts';
import { fixtureLora, fixtureModel, readAll } from './engine-util.ts';

function pairBatches(fx: Fixture): MicroBatch[] {
  const out: MicroBatch[] = [];
  for (let j = 0; fx.t[`mb${j}_ids`]; j++) {
    const ids = fx.t[`mb${j}_ids`].data as Int32Array;
    const lengths = fx.t[`mb${j}_lengths`].data as Int32Array;
    const B = lengths.length;
    out.push({
      batch: B,
      seqLen: ids.length / B,
      inputIds: ids,
      labels: fx.t[`mb${j}_labels`].data as Int32Array,
      lengths,
      pairs: fx.meta.pairs,
    });
  }
  return out;
}

interface Agreement {
  loss: number;
  metrics: number;
  grads: number;
  norm: number;
  adapters: number;
  /** Trainer.evaluatePairs at the start weights against the first training step (loss and metrics). */
  evaluation: number;
}

/** |engine − torch| / (the metric's largest |value| over the run): rewards start at exactly 0. */
function metricError(got: number[], want: Float32Array): number {
  const scale = Math.max(1e-12, ...Array.from(want, Math.abs));
  return Math.max(...got.map((g, s) => Math.abs(g - want[s]) / scale));
}

/** Relative error per step, against 1 % of the run's largest value where a value is (near) 0 (a satisfied hinge). */
function curveError(got: number, want: Float32Array, s: number): number {
  const floor = 1e-2 * Math.max(...Array.from(want, Math.abs));
  return Math.abs(got - want[s]) / Math.max(Math.abs(want[s]), floor, 1e-12);
}

async function followPreference(model: Model, fx: Fixture): Promise<{ steps: StepResult[]; worst: Agreement }> {
  const gpu = model.gpu;
  const m = fx.meta;
  const lora = fixtureLora(model, fx, m.targets, m.rank, m.alpha);
  const trainer = new Trainer(model, lora, {
    learningRate: m.lr,
    lrSchedulerType: 'cosine',
    totalSteps: m.steps,
    warmupSteps: m.warmup,
    weightDecay: m.weight_decay,
    maxGradNorm: m.max_norm,
    seed: 0,
    preference: m.pref as PreferenceConfig,
  });
  const mbs = pairBatches(fx);
  const losses = fx.f32('losses');
  const norms = fx.f32('grad_norms');
  const worst: Agreement = { loss: 0, metrics: 0, grads: 0, norm: 0, adapters: 0, evaluation: 0 };
  const steps: StepResult[] = [];
  try {
    // Evaluation at the start weights scores the first window as its training step does (no
    // dropout in these fixtures), with no update.
    const first = await trainer.evaluatePairs(Array.from({ length: m.accum }, (_, j) => mbs[j % mbs.length]));
    for (let s = 0; s < m.steps; s++) {
      const window = Array.from({ length: m.accum }, (_, j) => mbs[(m.accum * s + j) % mbs.length]);
      const r = await trainer.step(window);
      steps.push(r);
      worst.loss = Math.max(worst.loss, curveError(r.loss, losses, s));
      worst.norm = Math.max(worst.norm, curveError(r.gradNorm, norms, s));
      if (s < m.grad_steps) {
        for (const [name, grad] of trainer.decoder.grads) {
          const [, mod, ab] = /^(.*)\.lora_([AB])$/.exec(name)!;
          const want = fx.f32(`step${s}_grad_${ab}:${mod}`);
          // Step 0 has B = 0, so dA is exactly zero on both sides.
          if (want.every((v) => v === 0)) expect(Array.from(await readF32(gpu, grad)).every((v) => v === 0)).toBe(true);
          else worst.grads = Math.max(worst.grads, relError(await readF32(gpu, grad), want));
        }
      }
    }
    const rel = (a: number, b: number) => Math.abs(a - b) / Math.max(Math.abs(b), 1e-6);
    worst.evaluation = Math.max(
      rel(first.loss, steps[0].loss),
      ...Object.entries(steps[0].metrics!).map(([k, v]) => rel(first.metrics[k], v)),
    );
    for (const key of m.metrics as string[]) {
      const got = steps.map((r) => r.metrics![key]);
      worst.metrics = Math.max(worst.metrics, metricError(got, fx.f32(`metric:${key}`)));
    }
    const finals = await readAll(gpu, lora);
    for (const [name] of lora.adapters) {
      worst.adapters = Math.max(
        worst.adapters,
        relError(finals.get(`A:${name}`)!, fx.f32(`final_A:${name}`)),
        relError(finals.get(`B:${name}`)!, fx.f32(`final_B:${name}`)),
      );
    }
  } finally {
    trainer.release();
    lora.release();
  }
  return { steps, worst };
}

const CASES = [
  'pref_llama_sigmoid',
  'pref_qwen2_sigmoid',
  'pref_llama_ipo',
  'pref_qwen2_hinge',
  'pref_llama_orpo',
  'pref_qwen2_simpo',
] as const;

describe(`preference tuning vs PyTorch [${runtime}]`, { timeout: 900_000 }, () => {
  for (const name of CASES) {
    it(`${name}: loss, metrics, LoRA gradients and the curve equal PyTorch's (rel ≤ 1e-4)`, async () => {
      const gpu = await testGpu();
      const fx = await loadFixture(name);
      const model = await fixtureModel(gpu, fx, await loadFixture(fx.meta.weights));
      try {
        const { steps, worst } = await followPreference(model, fx);
        console.log(
          `[${runtime}] ${name} ${fx.meta.steps} steps: loss rel ${worst.loss.toExponential(2)}, metrics ${worst.metrics.toExponential(2)}, ` +
            `LoRA grads (steps 0-${fx.meta.grad_steps - 1}) ${worst.grads.toExponential(2)}, grad norm ${worst.norm.toExponential(2)}, ` +
            `final adapters ${worst.adapters.toExponential(2)}, evaluation vs step 1 ${worst.evaluation.toExponential(2)}; loss ${steps[0].loss.toFixed(4)} → ${steps.at(-1)!.loss.toFixed(4)}, ` +
            `accuracy ${steps.map((s) => s.metrics!['rewards/accuracies']).join(' ')}`,
        );
        expect(worst.loss).toBeLessThanOrEqual(1e-4);
        expect(worst.metrics).toBeLessThanOrEqual(1e-4);
        expect(worst.grads).toBeLessThanOrEqual(1e-4);
        expect(worst.norm).toBeLessThanOrEqual(1e-4);
        expect(worst.adapters).toBeLessThanOrEqual(1e-3);
        expect(worst.evaluation).toBeLessThanOrEqual(1e-5);
        if (fx.meta.pref.loss !== 'orpo' && fx.meta.pref.loss !== 'simpo') {
          // LoRA B starts at 0: the policy is the reference bit for bit, so every reward is exactly 0.
          for (const k of ['rewards/chosen', 'rewards/rejected', 'rewards/margins', 'rewards/accuracies'])
            expect(steps[0].metrics![k], k).toBe(0);
        }
        if (fx.meta.pref.loss === 'sigmoid' && fx.meta.pref.ftx === 0) {
          // Policy = reference at the first step: z = 0 exactly, so −log σ(0) = ln 2 and no reward.
          expect(steps[0].loss).toBe(Math.LN2);
          for (const k of ['rewards/chosen', 'rewards/rejected', 'rewards/margins', 'rewards/accuracies'])
            expect(steps[0].metrics![k], k).toBe(0);
        }
      } finally {
        model.release();
      }
    });
  }
});
