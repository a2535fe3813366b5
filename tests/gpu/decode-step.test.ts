// The KV-cache decode step (matrix-vector products, shaders/matvec.wgsl) equals the full forward
// (tiled matmul over the whole sequence): logits max|Δ| / max|logit| ≤ 1e-5, at odd widths
// (hidden 36 puts every other weight row off the 8-element octets), Qwen2 q/k/v biases, a
// LoRA adapter on every linear layer, NF4 (double-quantized) layers, the 151,936-wide head,
// a head split across buffers, and steps of one and of several tokens. Batched generation (one
// token of each of several sequences per step, each with its own cache) equals decoding each alone.
import { describe, expect, it } from 'vitest';
import { writeTensor } from '../../src/engine/gpu/index.ts';
import { parseModelConfig, expectedWeights } from '../../src/engine/model/config.ts';
import { generateAll, generateBatch } from '../../src/engine/generate/generate.ts';
import { forwardLogits, forwardLogitsRows, KvCache } from '../../src/engine/model/infer.ts';
import { loadModel, type LoadOptions } from '../../src/engine/model/load.ts';
import { attachLora, isRowSplit, type LoraSet, type Model } from '../../src/engine/model/model.ts';
import { memoryWeightSource } from '../../src/engine/model/weights.ts';
import { MATVEC_MAX_ROWS } from '../../src/engine/ops/matvec.ts';
import { relError } from '../cpu/compare.ts';
import { randn } from '../cpu/random.ts';
import { testGpu } from './context.ts';

const ODD_QWEN2 = {
  architectures: ['Qwen2ForCausalLM'],
  hidden_size: 36,
  intermediate_size: 52,
  num_hidden_layers: 2,
  num_attention_heads: 3,
  num_key_value_heads: 1,
  head_dim: 12,
  vocab_size: 151936,
  max_position_embeddings: 64,
  rms_norm_eps: 1e-6,
  rope_theta: 10000,
  tie_word_embeddings: true,
  torch_dtype: 'float32',
};

async function oddModel(over: Record<string, unknown>, load: LoadOptions): Promise<Model> {
  const c = parseModelConfig({ ...ODD_QWEN2, ...over });
  const map = new Map<string, { dtype: string; shape: number[]; bytes: Uint8Array }>();
  let s = 31;
  for (const w of expectedWeights(c)) {
    if (w.optional) continue;
    const n = w.shape.reduce((a, b) => a * b, 1);
    const v = randn(
      n,
      s++,
      w.role === 'embed' || w.role === 'lm-head' ? 1 : w.role === 'linear' ? 1.5 / Math.sqrt(w.shape[1]) : 0.1,
    );
    if (w.role === 'norm') for (let i = 0; i < n; i++) v[i] += 1;
    map.set(w.name, { dtype: 'F32', shape: [...w.shape], bytes: new Uint8Array(v.buffer) });
  }
  return loadModel(await testGpu(), c, memoryWeightSource(map, 'odd'), load);
}

function noisyLora(model: Model): LoraSet {
  const lora = attachLora(model, { rank: 3, alpha: 6, dropout: 0.1, targets: 'all', seed: 9 });
  let s = 90;
  for (const st of lora.adapters.values()) writeTensor(model.gpu, st.B, randn(st.B.shape[0] * st.B.shape[1], s++, 0.5));
  return lora;
}

/**
 * Prefills 9 tokens (> MATVEC_MAX_ROWS: the tiled path), then feeds `steps` (token counts, each
 * ≤ MATVEC_MAX_ROWS: the matrix-vector path) and compares each step's logits with the full
 * forward of the whole sequence so far (no cache, > MATVEC_MAX_ROWS tokens: the tiled path).
 */
async function expectStepsMatchFullForward(model: Model, lora: LoraSet | null, steps: number[]): Promise<void> {
  const prompt = [5, 151935, 77, 1000, 3, 42, 150000, 9, 8];
  expect(prompt.length).toBeGreaterThan(MATVEC_MAX_ROWS);
  const total = prompt.length + steps.reduce((a, b) => a + b, 0);
  const cache = new KvCache(model, total);
  try {
    await forwardLogits(model, lora, Int32Array.from(prompt), cache);
    const seq = [...prompt];
    for (const [i, n] of steps.entries()) {
      expect(n).toBeLessThanOrEqual(MATVEC_MAX_ROWS);
      const ids = Int32Array.from({ length: n }, (_, j) => (seq.length * 7919 + j * 104729) % 151936);
      const step = await forwardLogits(model, lora, ids, cache);
      seq.push(...ids);
      const full = await forwardLogits(model, lora, Int32Array.from(seq), null);
      expect(step.length).toBe(151936);
      expect(relError(step, full), `step ${i} (${n} tokens)`).toBeLessThanOrEqual(1e-5);
    }
  } finally {
    cache.release();
  }
}

describe('one-token decode step equals the full forward', () => {
  it('f32 Qwen2 with biases, LoRA on every linear layer, tied 151,936-wide head: steps of 1 and 5 tokens', async () => {
    const model = await oddModel({}, {});
    const lora = noisyLora(model);
    try {
      await expectStepsMatchFullForward(model, lora, [1, 1, 5]);
      await expectStepsMatchFullForward(model, null, [1]);
    } finally {
      lora.release();
      model.release();
    }
  });

  it('NF4 layers (double quantization) with an untied head split across storage buffers, 8-token step', async () => {
    const model = await oddModel(
      { tie_word_embeddings: false },
      { quantize: 'nf4', doubleQuant: true, maxBindingBytes: 8 << 20 },
    );
    const lora = noisyLora(model);
    try {
      expect(isRowSplit(model.lmHead)).toBe(true);
      await expectStepsMatchFullForward(model, lora, [1, 8]);
    } finally {
      lora.release();
      model.release();
    }
  });
});

describe('batched decode (evaluation rows generating together)', () => {
  const prompts = [
    [1, 2, 3],
    [7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17],
    [42],
    [5, 6],
    [299, 0, 150],
    [9, 9, 9, 9],
    [3],
    [250, 251],
    [77, 78, 79],
  ];

  it('one step of several sequences gives each row the logits of its own one-token step', async () => {
    const model = await oddModel({ vocab_size: 300 }, {});
    const lora = noisyLora(model);
    const alone = prompts.slice(0, 4).map((p) => new KvCache(model, p.length + 2));
    const together = prompts.slice(0, 4).map((p) => new KvCache(model, p.length + 2));
    try {
      for (const [i, p] of prompts.slice(0, 4).entries()) {
        await forwardLogits(model, lora, Int32Array.from(p), alone[i]);
        await forwardLogits(model, lora, Int32Array.from(p), together[i]);
      }
      const next = Int32Array.from([11, 200, 3, 299]);
      for (let step = 0; step < 2; step++) {
        const rows = await forwardLogitsRows(model, lora, next, together);
        for (const [i, cache] of alone.entries()) {
          const want = await forwardLogits(model, lora, next.subarray(i, i + 1), cache);
          expect(relError(rows.subarray(i * 300, (i + 1) * 300), want), `step ${step} row ${i}`).toBeLessThanOrEqual(
            1e-6,
          );
          expect(together[i].length).toBe(cache.length);
        }
      }
      await expect(
        forwardLogitsRows(model, lora, next, [together[0], together[0], together[1], together[2]]),
      ).rejects.toThrow(/distinct cache/);
      await expect(forwardLogitsRows(model, lora, next.subarray(0, 3), together)).rejects.toThrow(
        /one token per cache/,
      );
    } finally {
      [...alone, ...together].forEach((c) => c.release());
      lora.release();
      model.release();
    }
  });

  it('generateBatch gives every prompt the tokens generate() gives it alone: greedy with a stop id, and seeded sampling', async () => {
    const model = await oddModel({ vocab_size: 300 }, {});
    const lora = noisyLora(model);
    try {
      const greedy = { doSample: false, temperature: 1, topK: 0, topP: 1, repetitionPenalty: 1.1, maxNewTokens: 4 };
      const first = await generateAll(model, lora, prompts[0], { ...greedy, stopIds: [] });
      // A stop id that ends the first row early while the others run on.
      const stopIds = [first.tokens[1]];
      const groups: number[] = [];
      const batch = await generateBatch(model, lora, prompts, { ...greedy, stopIds }, (done) => groups.push(done));
      expect(groups).toEqual([8, 9]);
      expect(batch[0].reason).toBe('stop');
      for (const [i, p] of prompts.entries()) {
        const alone = await generateAll(model, lora, p, { ...greedy, stopIds });
        expect(Array.from(batch[i].tokens), `prompt ${i}`).toEqual(Array.from(alone.tokens));
        expect(batch[i].reason).toBe(alone.reason);
      }
      const sampled = {
        doSample: true,
        temperature: 0.9,
        topK: 50,
        topP: 0.95,
        repetitionPenalty: 1,
        maxNewTokens: 3,
        seed: 4,
        stopIds: [],
      };
      const some = prompts.slice(0, 3);
      const batchSampled = await generateBatch(model, lora, some, sampled);
      for (const [i, p] of some.entries())
        expect(Array.from(batchSampled[i].tokens)).toEqual(
          Array.from((await generateAll(model, lora, p, sampled)).tokens),
        );
    } finally {
      lora.release();
      model.release();
    }
  });
});
