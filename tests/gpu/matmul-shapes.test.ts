// The kernel tuner measures the shape classes modelMatmulShapes predicts before a run or a
// prefill; a product outside them would run an unmeasured variant (on a CPU-emulated adapter up to
// 10× slower). Each case records the classes ops/matmul asks for and checks they were predicted.
import { afterEach, describe, expect, it } from 'vitest';
import type { Gpu } from '../../src/engine/gpu/index.ts';
import { generateAll, DEFAULT_SAMPLING } from '../../src/engine/generate/generate.ts';
import { parseModelConfig } from '../../src/engine/model/config.ts';
import { loadModel, type LoadOptions } from '../../src/engine/model/load.ts';
import { modelMatmulShapes, type StepShape } from '../../src/engine/model/matmul-shapes.ts';
import { attachLora, type Model } from '../../src/engine/model/model.ts';
import { matmulShapeClass } from '../../src/engine/ops/matmul.ts';
import { Trainer } from '../../src/engine/train/trainer.ts';
import { testGpu } from './context.ts';
import { randomWeightSource } from './engine-util.ts';

const QWEN2 = {
  architectures: ['Qwen2ForCausalLM'],
  hidden_size: 48,
  intermediate_size: 72,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  vocab_size: 96,
  max_position_embeddings: 128,
  rms_norm_eps: 1e-6,
  rope_theta: 10000,
  tie_word_embeddings: false,
  torch_dtype: 'float32',
};
const PHI3 = {
  ...QWEN2,
  architectures: ['Phi3ForCausalLM'],
  tie_word_embeddings: true,
  original_max_position_embeddings: 128,
};
const TOKENS = 24;
const RANK = 4;

/** The matmul classes ops/matmul looks up while `body` runs. */
async function classesUsed(gpu: Gpu, body: () => Promise<void>): Promise<Set<string>> {
  const used = new Set<string>();
  const pick = gpu.kernels.pick.bind(gpu.kernels);
  gpu.kernels.pick = ((family, cls, variants, fallback) => {
    if (family === 'matmul') used.add(cls);
    return pick(family, cls, variants, fallback);
  }) as typeof gpu.kernels.pick;
  try {
    await body();
  } finally {
    gpu.kernels.pick = pick;
  }
  return used;
}

function expectPredicted(model: Model, step: StepShape, used: Set<string>): void {
  const predicted = new Set(modelMatmulShapes(model, step).map(matmulShapeClass));
  expect(used.size).toBeGreaterThan(0);
  expect([...used].filter((c) => !predicted.has(c))).toEqual([]);
}

const ids = Int32Array.from({ length: TOKENS }, (_, i) => (i * 37 + 5) % 96);
let release: (() => void)[] = [];
afterEach(() => {
  for (const r of release.reverse()) r();
  release = [];
});

async function tinyModel(raw: Record<string, unknown>, opts: LoadOptions = {}): Promise<Model> {
  const c = parseModelConfig(raw);
  const model = await loadModel(await testGpu(), c, randomWeightSource(c, 'matmul-shapes'), opts);
  release.push(() => model.release());
  return model;
}

async function trainStep(model: Model, full: boolean, lossChunkRows?: number): Promise<Set<string>> {
  const lora = full ? null : attachLora(model, { rank: RANK, alpha: 8, dropout: 0, targets: 'all', seed: 3 });
  if (lora) release.push(() => lora.release());
  const trainer = new Trainer(model, lora, {
    learningRate: 1e-3,
    lrSchedulerType: 'constant',
    totalSteps: 1,
    maxGradNorm: 1,
    seed: 1,
    gradientCheckpointing: true,
    full,
    lossChunkRows,
  });
  release.push(() => trainer.release());
  return classesUsed(model.gpu, async () => {
    await trainer.step([{ batch: 1, seqLen: TOKENS, inputIds: ids, labels: ids }]);
  });
}

describe('modelMatmulShapes predicts every product a step or a prefill issues', () => {
  for (const [name, raw] of [
    ['Qwen2', QWEN2],
    ['Phi-3 (fused qkv / gate_up)', PHI3],
  ] as const) {
    it(`${name}: LoRA step with 5-row loss chunks`, async () => {
      const model = await tinyModel(raw);
      const used = await trainStep(model, false, 5);
      expectPredicted(model, { tokens: TOKENS, backward: true, loraRank: RANK, lossChunkRows: 5 }, used);
    });

    it(`${name}: full fine-tuning step`, async () => {
      const model = await tinyModel(raw, { computeDType: 'f32' });
      const used = await trainStep(model, true);
      expectPredicted(model, { tokens: TOKENS, backward: true, fullWeights: true }, used);
    });
  }

  it('QLoRA (NF4 weights): LoRA step with the default loss chunk', async () => {
    const model = await tinyModel(QWEN2, { quantize: 'nf4', doubleQuant: true });
    const used = await trainStep(model, false);
    expectPredicted(model, { tokens: TOKENS, backward: true, loraRank: RANK }, used);
  });

  it('a generation prefill with adapters', async () => {
    const model = await tinyModel(QWEN2);
    const lora = attachLora(model, { rank: RANK, alpha: 8, dropout: 0, targets: 'all', seed: 3 });
    release.push(() => lora.release());
    const used = await classesUsed(model.gpu, async () => {
      await generateAll(model, lora, ids, { ...DEFAULT_SAMPLING, maxNewTokens: 2, stopIds: [] });
    });
    expectPredicted(model, { tokens: TOKENS, backward: false, loraRank: RANK, prefill: true }, used);
  });
});
