// Training runs against PyTorch (tests/reference/gen_engine.py): 20 LoRA steps with gradient
// accumulation, warmup + cosine, clipping and AdamW follow the reference loss curve step by
// step; QLoRA (NF4 + double quant base, bitsandbytes rules) likewise; and resuming from a
// checkpoint continues the identical curve.
import { describe, expect, it } from 'vitest';
import { readF32, releaseTensor, tensorSpec, zerosTensor } from '../../src/engine/gpu/index.ts';
import { BUF } from '../../src/engine/gpu/usage.ts';
import type { EncodedExample } from '../../src/data/types.ts';
import { prepareBatch, type MicroBatch } from '../../src/engine/model/batch.ts';
import { Decoder } from '../../src/engine/model/decoder.ts';
import { attachLora, type Model } from '../../src/engine/model/model.ts';
import { checkpointFromFiles, checkpointToFiles } from '../../src/engine/train/checkpoint-files.ts';
import { DataLoader } from '../../src/engine/train/data.ts';
import { Trainer, type StepResult, type TrainerConfig } from '../../src/engine/train/trainer.ts';
import { relError } from '../cpu/compare.ts';
import { loadFixture, type Fixture } from '../reference/fixtures.ts';
import { minimalTestGpu, runtime, testGpu } from './context.ts';
import { fixtureLora, fixtureModel, readAll, realRows } from './engine-util.ts';

function microBatches(fx: Fixture): MicroBatch[] {
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
    });
  }
  return out;
}

function trainerConfig(fx: Fixture): TrainerConfig {
  const m = fx.meta;
  return {
    learningRate: m.lr,
    lrSchedulerType: 'cosine',
    totalSteps: m.steps,
    warmupSteps: m.warmup,
    weightDecay: m.weight_decay,
    maxGradNorm: m.max_norm,
    seed: 0,
  };
}

async function followCurve(
  model: Model,
  fx: Fixture,
  tol: { loss: number; norm: number; params: number },
): Promise<StepResult[]> {
  const gpu = model.gpu;
  const lora = fixtureLora(model, fx, fx.meta.targets, fx.meta.rank, fx.meta.alpha);
  const trainer = new Trainer(model, lora, trainerConfig(fx));
  const mbs = microBatches(fx);
  const losses = fx.f32('losses');
  const norms = fx.f32('grad_norms');
  const lrs = fx.f32('lrs');
  const results: StepResult[] = [];
  try {
    for (let s = 0; s < fx.meta.steps; s++) {
      const window = Array.from({ length: fx.meta.accum }, (_, j) => mbs[(fx.meta.accum * s + j) % mbs.length]);
      // Count the staging buffers the step maps for reading: exactly one per optimizer step.
      const acquire = gpu.pool.acquireSpecial;
      let maps = 0;
      gpu.pool.acquireSpecial = (bytes, usage, cat, label) => {
        if (usage & BUF.MAP_READ) maps++;
        return acquire.call(gpu.pool, bytes, usage, cat, label);
      };
      let r: StepResult;
      try {
        r = await trainer.step(window);
      } finally {
        gpu.pool.acquireSpecial = acquire;
      }
      results.push(r);
      expect(r.readbacks).toBe(1);
      expect(maps, 'GPU→CPU readbacks in one step').toBe(1);
      expect(Math.abs(r.lr - lrs[s]), `lr at step ${s}`).toBeLessThanOrEqual(1e-6 * fx.meta.lr);
      expect(
        Math.abs(r.loss - losses[s]) / losses[s],
        `loss at step ${s}: ${r.loss} vs ${losses[s]}`,
      ).toBeLessThanOrEqual(tol.loss);
      expect(
        Math.abs(r.gradNorm - norms[s]) / norms[s],
        `grad norm at step ${s}: ${r.gradNorm} vs ${norms[s]}`,
      ).toBeLessThanOrEqual(tol.norm);
    }
    const finals = await readAll(gpu, lora);
    let worst = 0;
    for (const [name] of lora.adapters) {
      worst = Math.max(
        worst,
        relError(finals.get(`A:${name}`)!, fx.f32(`final_A:${name}`)),
        relError(finals.get(`B:${name}`)!, fx.f32(`final_B:${name}`)),
      );
    }
    expect(worst, 'final adapter weights').toBeLessThanOrEqual(tol.params);
    const lossRel = Math.max(...results.map((r, s) => Math.abs(r.loss - losses[s]) / losses[s]));
    console.log(
      `[${runtime}] ${fx.meta.steps} steps: worst loss rel ${lossRel.toExponential(2)}, final adapters rel ${worst.toExponential(2)}, ${results[0].dispatches} dispatches/step, loss ${results[0].loss.toFixed(4)} → ${results.at(-1)!.loss.toFixed(4)}`,
    );
  } finally {
    trainer.release();
    lora.release();
  }
  return results;
}

describe(`engine training vs PyTorch [${runtime}]`, { timeout: 900_000 }, () => {
  it('20 LoRA steps (accumulation 2, warmup 3 + cosine, clip 1.0, AdamW wd 0.01) follow the PyTorch curve', async () => {
    const gpu = await testGpu();
    const fx = await loadFixture('engine_train_lora');
    const model = await fixtureModel(gpu, fx, await loadFixture('engine_llama'));
    try {
      await followCurve(model, fx, { loss: 1e-4, norm: 1e-3, params: 1e-3 });
    } finally {
      model.release();
    }
  });

  it('Gemma 3 (window 4 under rows of up to 11 tokens, local and global RoPE): 20 LoRA steps follow the PyTorch curve', async () => {
    const gpu = await testGpu();
    const fx = await loadFixture('engine_train_gemma3');
    const model = await fixtureModel(gpu, fx, await loadFixture('engine_gemma3'));
    try {
      await followCurve(model, fx, { loss: 1e-4, norm: 1e-3, params: 1e-3 });
    } finally {
      model.release();
    }
  });

  it('Gemma 2 (bf16, soft-capped attention and logits, window 4): 20 LoRA steps follow the PyTorch curve', async () => {
    const gpu = await testGpu();
    const fx = await loadFixture('engine_train_gemma2');
    const model = await fixtureModel(gpu, fx, await loadFixture('engine_gemma2'));
    try {
      await followCurve(model, fx, { loss: 1e-4, norm: 1e-3, params: 1e-3 });
    } finally {
      model.release();
    }
  });

  it('SmolLM3 (NoPE layers): 20 LoRA steps on all seven modules follow the PyTorch curve', async () => {
    const gpu = await testGpu();
    const fx = await loadFixture('engine_train_smollm3');
    const model = await fixtureModel(gpu, fx, await loadFixture('engine_smollm3'));
    try {
      await followCurve(model, fx, { loss: 1e-4, norm: 1e-3, params: 1e-3 });
    } finally {
      model.release();
    }
  });

  it('Phi-3 (fused qkv_proj / gate_up_proj, LongRoPE switching tables per micro-batch, partial rotary): 20 LoRA steps follow the PyTorch curve', async () => {
    const gpu = await testGpu();
    const fx = await loadFixture('engine_train_phi3');
    expect(fx.meta.targets).toEqual(['qkv_proj', 'o_proj', 'gate_up_proj', 'down_proj']);
    const model = await fixtureModel(gpu, fx, await loadFixture('engine_phi3'));
    try {
      await followCurve(model, fx, { loss: 1e-4, norm: 1e-3, params: 1e-3 });
    } finally {
      model.release();
    }
  });

  it("on an adapter with only WebGPU's default limits (8 storage buffers per stage), LoRA and QLoRA follow the same curves", async () => {
    const gpu = await minimalTestGpu();
    expect(gpu.limits.maxStorageBuffersPerShaderStage).toBe(8);
    expect(gpu.limits.maxComputeWorkgroupStorageSize).toBe(16384);
    const base = await loadFixture('engine_llama');
    for (const [name, opts] of [
      ['engine_train_lora', {}],
      ['engine_train_qlora', { quantize: 'nf4', doubleQuant: true }],
    ] as const) {
      const model = await fixtureModel(gpu, await loadFixture(name), base, opts);
      try {
        await followCurve(model, await loadFixture(name), { loss: 1e-4, norm: 1e-3, params: 1e-3 });
      } finally {
        model.release();
      }
    }
  });

  it('QLoRA: NF4 + double-quant base quantized at load gives the bitsandbytes logits and follows the curve', async () => {
    const gpu = await testGpu();
    const fx = await loadFixture('engine_train_qlora');
    const model = await fixtureModel(gpu, fx, await loadFixture('engine_llama'), {
      quantize: 'nf4',
      doubleQuant: true,
    });
    try {
      const B = fx.meta.base_B as number;
      const T = fx.meta.base_T as number;
      const lengths = fx.t.base_lengths.data as Int32Array;
      const hb = prepareBatch({ batch: B, seqLen: T, inputIds: fx.t.base_ids.data as Int32Array, lengths });
      const dec = new Decoder(model, null, { inference: true });
      const V = model.config.vocabSize;
      const logits = zerosTensor(gpu, tensorSpec('f32', [hb.N, V], 'scratch', 'logits'));
      const accum = zerosTensor(gpu, tensorSpec('f32', [4], 'scratch', 'acc'));
      const inputs = dec.uploadInputs(hb, null);
      await dec.forwardLoss(inputs, { lossScale: 1, accum, accumIndex: 0 }, { logits });
      dec.releaseInputs(inputs);
      const rel = relError(
        realRows(await readF32(gpu, logits), hb.segments, V),
        realRows(fx.f32('base_logits'), hb.segments, V),
      );
      releaseTensor(gpu, logits);
      releaseTensor(gpu, accum);
      expect(rel, `NF4 base logits rel ${rel}`).toBeLessThanOrEqual(1e-4);
      await followCurve(model, fx, { loss: 1e-4, norm: 1e-3, params: 1e-3 });
    } finally {
      model.release();
    }
  });

  it('full fine-tuning (every f32 weight, HF decay groups, linear schedule) follows the PyTorch curve', async () => {
    const gpu = await testGpu();
    const fx = await loadFixture('engine_train_full');
    const model = await fixtureModel(gpu, fx, await loadFixture('engine_llama'), { computeDType: 'f32' });
    const m = fx.meta;
    const trainer = new Trainer(model, null, {
      learningRate: m.lr,
      lrSchedulerType: 'linear',
      totalSteps: m.steps,
      warmupSteps: m.warmup,
      weightDecay: m.weight_decay,
      maxGradNorm: m.max_norm,
      seed: 0,
      full: true,
    });
    try {
      const mbs = microBatches(fx);
      const losses = fx.f32('losses');
      const norms = fx.f32('grad_norms');
      for (let s = 0; s < m.steps; s++) {
        const r = await trainer.step(mbs);
        expect(
          Math.abs(r.loss - losses[s]) / losses[s],
          `loss at step ${s}: ${r.loss} vs ${losses[s]}`,
        ).toBeLessThanOrEqual(1e-4);
        expect(Math.abs(r.gradNorm - norms[s]) / norms[s], `grad norm at step ${s}`).toBeLessThanOrEqual(1e-3);
      }
      for (const name of [
        'model.layers.1.mlp.down_proj.weight',
        'model.norm.weight',
        'model.embed_tokens.weight',
        'lm_head.weight',
      ]) {
        const rel = relError(await readF32(gpu, model.tensor(name)), fx.f32(`final_w:${name}`));
        expect(rel, `${name} after ${m.steps} steps: rel ${rel}`).toBeLessThanOrEqual(1e-4);
      }
      console.log(
        `[${runtime}] full FT: ${trainer.trainableParameters} parameters, loss ${losses[0].toFixed(4)} → ${losses[m.steps - 1].toFixed(4)}`,
      );
    } finally {
      trainer.release();
      model.release();
    }
  });

  it('resume: 10 steps + checkpoint files + fresh trainer + 10 steps == 20 straight (dropout, NEFTune, shuffled data)', async () => {
    const gpu = await testGpu();
    const fx = await loadFixture('engine_train_lora');
    const model = await fixtureModel(gpu, fx, await loadFixture('engine_llama'));
    try {
      const examples: EncodedExample[] = [];
      for (const mb of microBatches(fx)) {
        for (let b = 0; b < mb.batch; b++) {
          const L = mb.lengths![b];
          const o = b * mb.seqLen;
          examples.push({
            row: examples.length,
            inputIds: mb.inputIds.slice(o, o + L),
            labels: mb.labels!.slice(o, o + L),
            fullLength: L,
            truncated: false,
          });
        }
      }
      const loraCfg = { rank: 4, alpha: 8, dropout: 0.1, targets: 'all' as const, seed: 11 };
      const cfg: TrainerConfig = {
        ...trainerConfig(fx),
        totalSteps: 20,
        neftuneAlpha: 5,
        seed: 5,
        gradientCheckpointing: true,
      };
      const loader = () =>
        new DataLoader(examples, { batchSize: 2, gradientAccumulationSteps: 2, seed: 3, padId: 0, padToMultipleOf: 1 });
      const lossesOf = async (t: Trainer, steps: number) => {
        const out: number[] = [];
        for (let s = 0; s < steps; s++) out.push((await t.step()).loss);
        return out;
      };
      // Run A: 20 straight steps, saving checkpoint files after step 10 (a readback only).
      const loraA = attachLora(model, loraCfg);
      const a = new Trainer(model, loraA, cfg, loader());
      const head = await lossesOf(a, 10);
      const files = await checkpointToFiles(await a.saveCheckpoint());
      const tail = await lossesOf(a, 10);
      const weightsA = await readAll(gpu, loraA);
      a.release();
      loraA.release();
      // Run B: a fresh LoRA set, data loader and trainer restored from those files, 10 more steps.
      const loraB = attachLora(model, loraCfg);
      const b = new Trainer(model, loraB, cfg, loader());
      await b.loadCheckpoint(await checkpointFromFiles(files));
      expect(b.stepCount).toBe(10);
      const resumed = await lossesOf(b, 10);
      const weightsB = await readAll(gpu, loraB);
      b.release();
      loraB.release();
      expect(resumed).toEqual(tail);
      for (const [k, v] of weightsA) expect(weightsB.get(k), k).toEqual(v);
      const straight = [...head, ...tail];
      expect(new Set(straight).size, 'losses move').toBeGreaterThan(10);
      console.log(`[${runtime}] resume: 20 identical losses ${straight[0].toFixed(4)} → ${straight[19].toFixed(4)}`);
    } finally {
      model.release();
    }
  }, 900_000);
});
