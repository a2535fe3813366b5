// Generation on a tiny model: KV-cache decode equals recomputing the whole sequence each step,
// adapter on / off differ (A/B chat), stop tokens, max_new_tokens, abort, seeded sampling.
// And planMemory against the memory ledger's measured peak of a real training step.
import { describe, expect, it } from 'vitest';
import { writeTensor } from '../../src/engine/gpu/index.ts';
import { generate, generateAll } from '../../src/engine/generate/generate.ts';
import { argmax as argmaxOf } from '../../src/engine/generate/sample.ts';
import { parseModelConfig } from '../../src/engine/model/config.ts';
import { loadModel, type LoadOptions } from '../../src/engine/model/load.ts';
import { attachLora, type LoraSet, type Model } from '../../src/engine/model/model.ts';
import { forwardLogits } from '../../src/engine/model/infer.ts';
import { randn } from '../cpu/random.ts';
import { testGpu } from './context.ts';
import { randomWeightSource } from './engine-util.ts';
import { expectPlanMatchesPeak, PLAN_RUN, twoStepPeak } from './plan-util.ts';

// Built in memory (no files), so it runs in Node and in Chromium.
function tinyConfig(): Record<string, unknown> {
  return {
    architectures: ['Qwen2ForCausalLM'],
    hidden_size: 32,
    intermediate_size: 64,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    vocab_size: 64,
    max_position_embeddings: 64,
    rms_norm_eps: 1e-6,
    rope_theta: 10000,
    tie_word_embeddings: true,
    torch_dtype: 'float32',
    eos_token_id: 63,
  };
}

async function tinyModel(qlora = false, over: Record<string, unknown> = {}, load: LoadOptions = {}): Promise<Model> {
  const gpu = await testGpu();
  const c = parseModelConfig({ ...tinyConfig(), ...over });
  return loadModel(gpu, c, randomWeightSource(c, 'tiny'), {
    ...(qlora ? { quantize: 'nf4', doubleQuant: true } : {}),
    ...load,
  });
}

function noisyLora(model: Model): LoraSet {
  const lora = attachLora(model, { rank: 4, alpha: 16, dropout: 0, targets: 'all', seed: 5 });
  let s = 70;
  for (const st of lora.adapters.values()) writeTensor(model.gpu, st.B, randn(st.B.shape[0] * st.B.shape[1], s++, 0.5));
  return lora;
}

const greedy = { doSample: false, temperature: 1, topK: 0, topP: 1, repetitionPenalty: 1 };

describe('generate (prefill + KV-cache decode)', () => {
  it('dynamic NTK RoPE rescales the base once a pass reaches past max_position_embeddings', async () => {
    const maxPos = 8;
    const dynamic = await tinyModel(false, {
      max_position_embeddings: maxPos,
      rope_scaling: { rope_type: 'dynamic', factor: 2 },
    });
    const plain = await tinyModel(false, { max_position_embeddings: maxPos });
    // transformers _compute_dynamic_ntk_parameters with seq_len = 13, head_dim 8.
    const seq = 13,
      d = 8;
    const stretched = await tinyModel(false, {
      max_position_embeddings: maxPos,
      rope_theta: 10000 * Math.pow((2 * seq) / maxPos - 1, d / (d - 2)),
    });
    try {
      const ids = Int32Array.from({ length: seq }, (_, i) => (i * 7 + 3) % 60);
      const short = ids.slice(0, maxPos);
      const rel = (a: Float32Array, b: Float32Array) =>
        Math.max(...a.map((x, i) => Math.abs(x - b[i]))) / Math.max(...b.map(Math.abs));
      expect(rel(await forwardLogits(dynamic, null, short, null), await forwardLogits(plain, null, short, null))).toBe(
        0,
      );
      const long = await forwardLogits(dynamic, null, ids, null);
      expect(rel(long, await forwardLogits(stretched, null, ids, null))).toBeLessThan(1e-6);
      expect(rel(long, await forwardLogits(plain, null, ids, null))).toBeGreaterThan(1e-3);
      // Generation may run past the trained length (up to max_position_embeddings × factor = 16).
      expect(
        (await generateAll(dynamic, null, [1, 2, 3, 4, 5, 6], { ...greedy, maxNewTokens: 20, stopIds: [] })).tokens
          .length,
      ).toBe(10);
      expect(
        (await generateAll(plain, null, [1, 2, 3, 4, 5, 6], { ...greedy, maxNewTokens: 20, stopIds: [] })).tokens
          .length,
      ).toBe(2);
    } finally {
      for (const m of [dynamic, plain, stretched]) m.release();
    }
  });

  it('greedy decode with the cache equals argmax over full recomputation, adapter on and off', async () => {
    const model = await tinyModel();
    const lora = noisyLora(model);
    try {
      const prompt = [3, 14, 15, 9, 26];
      for (const l of [null, lora]) {
        const r = await generateAll(model, l, prompt, { ...greedy, maxNewTokens: 8, stopIds: [] });
        expect(r.reason).toBe('length');
        expect(r.tokens.length).toBe(8);
        const seq = [...prompt];
        for (let i = 0; i < 8; i++) {
          const logits = await forwardLogits(model, l, Int32Array.from(seq), null);
          seq.push(argmaxOf(logits));
        }
        expect(Array.from(r.tokens)).toEqual(seq.slice(prompt.length));
      }
      const a = await generateAll(model, null, prompt, { ...greedy, maxNewTokens: 8, stopIds: [] });
      const b = await generateAll(model, lora, prompt, { ...greedy, maxNewTokens: 8, stopIds: [] });
      expect(Array.from(a.tokens)).not.toEqual(Array.from(b.tokens)); // A/B: the adapter changes the answer
    } finally {
      lora.release();
      model.release();
    }
  });

  it('stops at a stop id, streams through the iterator and the callback, aborts, and replays a seeded sample', async () => {
    const model = await tinyModel();
    try {
      const prompt = [1, 2, 3];
      const full = await generateAll(model, null, prompt, { ...greedy, maxNewTokens: 6, stopIds: [] });
      const stopAt = full.tokens[2];
      const firstIdx = Array.from(full.tokens).indexOf(stopAt);
      const streamed: number[] = [];
      const cb: number[] = [];
      const it = generate(model, null, prompt, {
        ...greedy,
        maxNewTokens: 6,
        stopIds: [stopAt],
        onToken: (id) => cb.push(id),
      });
      let res;
      for (;;) {
        const n = await it.next();
        if (n.done) {
          res = n.value;
          break;
        }
        streamed.push(n.value);
      }
      expect(res.reason).toBe('stop');
      expect(res.stopId).toBe(stopAt);
      expect(streamed).toEqual(Array.from(full.tokens.slice(0, firstIdx)));
      expect(cb).toEqual(streamed);

      const ac = new AbortController();
      const got: number[] = [];
      const r2 = await generateAll(model, null, prompt, {
        ...greedy,
        maxNewTokens: 6,
        stopIds: [],
        signal: ac.signal,
        onToken: (id) => {
          got.push(id);
          if (got.length === 2) ac.abort();
        },
      });
      expect(r2.reason).toBe('abort');
      expect(r2.tokens.length).toBe(2);

      const sample = {
        doSample: true,
        temperature: 30,
        topK: 40,
        topP: 0.99,
        repetitionPenalty: 1.3,
        maxNewTokens: 10,
        stopIds: [] as number[],
      };
      const s1 = await generateAll(model, null, prompt, { ...sample, seed: 1 });
      const s2 = await generateAll(model, null, prompt, { ...sample, seed: 1 });
      const s3 = await generateAll(model, null, prompt, { ...sample, seed: 2 });
      expect(Array.from(s1.tokens)).toEqual(Array.from(s2.tokens));
      expect(Array.from(s1.tokens)).not.toEqual(Array.from(s3.tokens));
    } finally {
      model.release();
    }
  });

  it('caps generation at max_position_embeddings and refuses a prompt that fills it', async () => {
    const model = await tinyModel();
    try {
      const prompt = Array.from({ length: 60 }, (_, i) => i % 60);
      const r = await generateAll(model, null, prompt, { ...greedy, maxNewTokens: 50, stopIds: [] });
      expect(r.tokens.length).toBe(4);
      await expect(
        generateAll(
          model,
          null,
          Array.from({ length: 64 }, () => 1),
          { ...greedy, maxNewTokens: 5, stopIds: [] },
        ),
      ).rejects.toThrow(/at most 64 positions/);
    } finally {
      model.release();
    }
  });
});

describe('planMemory against the ledger', () => {
  for (const [method, ckpt, precision, load, untied] of [
    ['lora', false, 'f32', {}, false],
    ['lora', true, 'f32', {}, false],
    ['qlora', true, 'f32', {}, false],
    ['qlora', true, 'bf16', {}, false],
    ['qlora', true, 'bf16', { head: 'nf4' }, false],
    ['lora', true, 'f32', { embeddingOnHost: true, head: 'nf4' }, true],
  ] as const) {
    const memory = Object.keys(load).length ? ` ${JSON.stringify(load)}${untied ? ' untied' : ''}` : '';
    it(`two training steps of a tiny Qwen2 (${method} all, gradient checkpointing ${ckpt ? `on, ${precision} checkpoints` : 'off'}${memory}): predicted peak within 5 %`, async () => {
      const { planMemory } = await import('../../src/engine/plan/plan.ts');
      const gpu = await testGpu();
      gpu.pool.trim();
      const model = await tinyModel(
        method === 'qlora',
        untied ? { tie_word_embeddings: false } : {},
        load as LoadOptions,
      );
      try {
        const peak = await twoStepPeak(model, { gradientCheckpointing: ckpt, checkpointPrecision: precision });
        const plan = planMemory(model.config, {
          method,
          doubleQuant: true,
          ...PLAN_RUN,
          gradientCheckpointing: ckpt,
          checkpointPrecision: precision,
          headPrecision: 'head' in load ? load.head : undefined,
          embeddingOnHost: 'embeddingOnHost' in load ? load.embeddingOnHost : undefined,
          storageOffsetAlignment: gpu.limits.minStorageBufferOffsetAlignment,
        });
        const { measured, lines } = expectPlanMatchesPeak(plan, peak);
        if (typeof process !== 'undefined' && process.env?.TABTUNE_PLAN_REPORT)
          console.log(`checkpointing ${ckpt}: total planned ${plan.total} measured ${measured}\n${lines.join('\n')}`);
      } finally {
        model.release();
      }
    });
  }
});
