// Gemma 3 / Gemma 2 config.json parsing (transformers configuration_gemma3.py, configuration_gemma2.py),
// the real configs of gemma-3-270m-it, gemma-3-1b-it and gemma-2-2b-it (weight names, planMemory),
// a Gemma3ForConditionalGeneration checkpoint's language model (config and tensor names), and the
// embedding scale in the checkpoint's dtype.
import { describe, expect, it } from 'vitest';
import {
  checkWeights,
  embeddingScale,
  expectedWeights,
  layerWindow,
  parseModelConfig,
} from '../../src/engine/model/config.ts';
import { ggufArchitecture } from '../../src/engine/export/gguf.ts';
import { configFromModel, mergedConfigJson } from '../../src/engine/export/merged.ts';
import { languageModelWeights, memoryWeightSource } from '../../src/engine/model/weights.ts';
import { isTargeted, loraKey, parseLoraKey } from '../../src/io/peft.ts';
import { knownConfig } from '../../src/engine/plan/known-configs.ts';
import { planMemory } from '../../src/engine/plan/plan.ts';
import { guessTemplate } from '../../src/engine/train/method.ts';

const TINY3 = {
  architectures: ['Gemma3ForCausalLM'],
  model_type: 'gemma3_text',
  hidden_size: 64,
  intermediate_size: 128,
  num_hidden_layers: 8,
  num_attention_heads: 4,
  num_key_value_heads: 1,
  head_dim: 32,
  vocab_size: 300,
  sliding_window: 16,
};

function err(raw: Record<string, unknown>): string {
  try {
    parseModelConfig(raw);
  } catch (e) {
    return (e as Error).message;
  }
  return 'parsed';
}

/** A checkpoint's names → shapes for checkWeights, from the config's own expectation. */
function checkpointNames(c: ReturnType<typeof knownConfig>): Map<string, number[]> {
  return new Map(
    expectedWeights(c)
      .filter((w) => !w.optional)
      .map((w) => [w.name, w.shape]),
  );
}

describe('Gemma config.json', () => {
  it('gemma-3-270m-it: layer_types (global at 5, 11, 17), window 512, local and global RoPE bases, tied', () => {
    const c = knownConfig('google/gemma-3-270m-it');
    expect(c).toMatchObject({
      architecture: 'Gemma3ForCausalLM',
      hiddenSize: 640,
      numLayers: 18,
      numHeads: 4,
      numKvHeads: 1,
      headDim: 256,
      vocabSize: 262144,
      tieWordEmbeddings: true,
      qkNorm: true,
      slidingWindow: 512,
      ropeTheta: 1e6,
      rope: { type: 'default' },
      eosTokenIds: [1, 106],
    });
    expect(c.gemma).toEqual({
      queryPreAttnScalar: 256,
      attentionScale: 1 / 16,
      attnSoftcap: null,
      finalSoftcap: null,
      ropeLocalTheta: 10000,
    });
    expect(c.slidingLayers).toEqual([0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 12, 13, 14, 15, 16]);
    expect(layerWindow(c, 4)).toBe(512);
    expect(layerWindow(c, 5)).toBeNull();
    // A checkpoint of this shape: embed, 18 × (4 norms + q/k norms + 7 linears), final norm; tied head not stored.
    const names = checkpointNames(c);
    expect(names.size).toBe(1 + 18 * 13 + 1);
    expect(names.has('model.layers.3.pre_feedforward_layernorm.weight')).toBe(true);
    expect(names.has('model.layers.3.post_feedforward_layernorm.weight')).toBe(true);
    expect(checkWeights(c, names).problems).toEqual([]);
    // bf16 checkpoints scale the embeddings by bf16(√640) = 25.25, f32 ones by f32(√640).
    expect(embeddingScale(c, 'bf16')).toBe(25.25);
    expect(embeddingScale(c, 'f32')).toBe(Math.fround(Math.sqrt(640)));
  });

  it('gemma-3-1b-it: sliding_window_pattern 6 without layer_types; bf16(√1152) = 34', () => {
    const c = knownConfig('google/gemma-3-1b-it');
    expect(c.numLayers).toBe(26);
    expect(c.slidingLayers!.length).toBe(26 - 4);
    expect([0, 1, 2, 3, 4, 5, 6, 11, 17, 23, 25].map((l) => layerWindow(c, l))).toEqual([
      512,
      512,
      512,
      512,
      512,
      null,
      512,
      null,
      null,
      null,
      512,
    ]);
    expect(embeddingScale(c, 'bf16')).toBe(34);
    expect(embeddingScale(c, 'f16')).toBe(33.9375);
    expect(checkWeights(c, checkpointNames(c)).problems).toEqual([]);
  });

  it('gemma-2-2b-it: alternating windows, soft-capping 50 / 30, no q/k norms, one RoPE base', () => {
    const c = knownConfig('google/gemma-2-2b-it');
    expect(c).toMatchObject({
      architecture: 'Gemma2ForCausalLM',
      qkNorm: false,
      slidingWindow: 4096,
      vocabSize: 256000,
    });
    expect(c.gemma).toEqual({
      queryPreAttnScalar: 256,
      attentionScale: 1 / 16,
      attnSoftcap: 50,
      finalSoftcap: 30,
      ropeLocalTheta: null,
    });
    expect(c.slidingLayers).toEqual(Array.from({ length: 13 }, (_, i) => 2 * i));
    expect(embeddingScale(c, 'f32')).toBe(48);
    const names = checkpointNames(c);
    expect(names.size).toBe(1 + 26 * 11 + 1);
    expect(checkWeights(c, names).problems).toEqual([]);
  });

  it('planMemory: QLoRA at cutoff 1024 for Gemma 3 270M and 1B (rank 8, batch 1, checkpointing, double quant)', () => {
    const sizes: Record<string, number> = {};
    for (const id of ['google/gemma-3-270m-it', 'google/gemma-3-1b-it']) {
      const c = knownConfig(id);
      const p = planMemory(c, {
        method: 'qlora',
        batchSize: 1,
        seqLen: 1024,
        loraRank: 8,
        gradientCheckpointing: true,
        doubleQuant: true,
      });
      const H = c.hiddenSize;
      const linear = c.numLayers * (2 * H * c.numHeads * 256 + 2 * H * c.numKvHeads * 256 + 3 * H * c.intermediateSize);
      const embed = 2 * c.vocabSize * H; // bf16, tied: the head is the embedding
      // NF4 codes (½ byte) + 8-bit absmax per 64 and the bf16 norms on top of the embedding.
      expect(p.byCategory.weights).toBeGreaterThan(embed + linear / 2);
      expect(p.byCategory.weights).toBeLessThan(1.05 * (embed + linear / 2) + 0.05 * linear);
      sizes[id] = p.total;
      console.log(
        `${id} QLoRA bs1 cutoff 1024 r8: ${(p.total / 1e6).toFixed(1)} MB planned (${Object.entries(p.byCategory)
          .map(([k, v]) => `${k} ${(v / 1e6).toFixed(1)}`)
          .join(', ')})`,
      );
    }
    expect(sizes['google/gemma-3-1b-it']).toBeGreaterThan(sizes['google/gemma-3-270m-it']);
  });

  it('fills Gemma3TextConfig / Gemma2Config defaults and reads model_type without architectures', () => {
    const c = parseModelConfig({ model_type: 'gemma3_text', hidden_size: 64, num_hidden_layers: 12 });
    expect(c).toMatchObject({
      architecture: 'Gemma3ForCausalLM',
      vocabSize: 262208,
      numHeads: 8,
      numKvHeads: 4,
      headDim: 256,
      slidingWindow: 4096,
      tieWordEmbeddings: true,
      ropeTheta: 1e6,
      bosTokenId: 2,
      eosTokenIds: [1],
    });
    expect(c.slidingLayers).toEqual([0, 1, 2, 3, 4, 6, 7, 8, 9, 10]);
    const g2 = parseModelConfig({ model_type: 'gemma2', num_hidden_layers: 4 });
    expect(g2.architecture).toBe('Gemma2ForCausalLM');
    expect(g2.gemma).toMatchObject({ attnSoftcap: 50, finalSoftcap: 30 });
    expect(g2.slidingLayers).toEqual([0, 2]);
  });

  it("Gemma 3's newer rope_parameters per layer type: global scaling and the local base", () => {
    const c = parseModelConfig({
      ...TINY3,
      rope_parameters: {
        full_attention: { rope_type: 'linear', factor: 8.0, rope_theta: 1e6 },
        sliding_attention: { rope_type: 'default', rope_theta: 10000 },
      },
    });
    expect(c.rope).toEqual({ type: 'linear', factor: 8 });
    expect(c.ropeTheta).toBe(1e6);
    expect(c.gemma!.ropeLocalTheta).toBe(10000);
    expect(
      err({ ...TINY3, rope_parameters: { sliding_attention: { rope_type: 'linear', factor: 2, rope_theta: 1 } } }),
    ).toBe(
      `config.json: rope_parameters.sliding_attention.rope_type: the sliding layers' RoPE must be "default", got "linear"`,
    );
  });

  it('explains bad Gemma fields, naming the field', () => {
    expect(err({ ...TINY3, layer_types: ['sliding_attention'] })).toBe(
      'config.json: layer_types: has 1 entries for 8 layers (num_hidden_layers)',
    );
    expect(err({ ...TINY3, layer_types: Array(8).fill('chunked_attention') })).toBe(
      'config.json: layer_types[0]: must be "sliding_attention" or "full_attention", got "chunked_attention"',
    );
    expect(err({ ...TINY3, hidden_activation: 'gelu' })).toBe(
      'config.json: hidden_activation: only gelu_pytorch_tanh is supported for Gemma, got "gelu"',
    );
    expect(err({ ...TINY3, query_pre_attn_scalar: 0 })).toBe('config.json: query_pre_attn_scalar: must be > 0, got 0');
    expect(err({ ...TINY3, use_bidirectional_attention: true })).toMatch(
      /^config.json: use_bidirectional_attention: bidirectional attention \(an embedding model such as EmbeddingGemma\) is not supported/,
    );
  });

  it('Gemma3ForConditionalGeneration: the language model from text_config, errors named under it', () => {
    const multimodal = {
      architectures: ['Gemma3ForConditionalGeneration'],
      model_type: 'gemma3',
      eos_token_id: [1, 106],
      text_config: {
        model_type: 'gemma3_text',
        hidden_size: 2560,
        intermediate_size: 10240,
        num_hidden_layers: 34,
        num_attention_heads: 8,
        num_key_value_heads: 4,
        rope_scaling: { factor: 8.0, rope_type: 'linear' },
        sliding_window: 1024,
      },
      vision_config: { model_type: 'siglip_vision_model', hidden_size: 1152 },
      torch_dtype: 'bfloat16',
    };
    const c = parseModelConfig(multimodal);
    expect(c.languageModelOf).toBe('Gemma3ForConditionalGeneration');
    expect(c).toMatchObject({
      architecture: 'Gemma3ForCausalLM',
      hiddenSize: 2560,
      vocabSize: 262208,
      slidingWindow: 1024,
      rope: { type: 'linear', factor: 8 },
      eosTokenIds: [1, 106],
      torchDtype: 'bfloat16',
    });
    expect(err({ ...multimodal, text_config: { ...multimodal.text_config, num_key_value_heads: 3 } })).toBe(
      'config.json: text_config.num_key_value_heads: num_attention_heads (8) must be divisible by num_key_value_heads (3)',
    );
    expect(err({ ...multimodal, text_config: undefined })).toBe(
      'config.json: text_config: missing: Gemma 3 keeps its language model config there',
    );
  });

  it("a multimodal checkpoint's tensors: language_model.model.* or model.language_model.* read as model.*, vision left out", async () => {
    const t = (shape: number[]) => ({ dtype: 'F32', shape, bytes: new Uint8Array(4 * shape.reduce((a, b) => a * b)) });
    for (const [prefix, head] of [
      ['language_model.model.', 'language_model.lm_head.weight'],
      ['model.language_model.', 'lm_head.weight'],
    ]) {
      const src = memoryWeightSource(
        new Map([
          [`${prefix}embed_tokens.weight`, t([4, 2])],
          [`${prefix}layers.0.self_attn.q_norm.weight`, t([2])],
          [head, t([4, 2])],
          [prefix.startsWith('model.') ? 'model.vision_tower.x.weight' : 'vision_tower.x.weight', t([3])],
          [prefix.startsWith('model.') ? 'model.multi_modal_projector.w' : 'multi_modal_projector.w', t([1])],
        ]),
      );
      const view = languageModelWeights(src);
      expect(view.names().sort()).toEqual([
        'lm_head.weight',
        'model.embed_tokens.weight',
        'model.layers.0.self_attn.q_norm.weight',
      ]);
      expect(view.shape('model.embed_tokens.weight')).toEqual([4, 2]);
      expect((await view.read('model.layers.0.self_attn.q_norm.weight')).byteLength).toBe(8);
    }
    // A text-only checkpoint is read as it is.
    const plain = memoryWeightSource(new Map([['model.embed_tokens.weight', t([4, 2])]]));
    expect(languageModelWeights(plain)).toBe(plain);
  });

  it('merged export config: the Gemma fields round-trip; a multimodal base exports its language model', () => {
    for (const id of ['google/gemma-3-270m-it', 'google/gemma-3-1b-it', 'google/gemma-2-2b-it']) {
      const c = knownConfig(id);
      const back = parseModelConfig(configFromModel(c));
      expect(back.gemma, id).toEqual(c.gemma);
      expect(back.slidingLayers, id).toEqual(c.slidingLayers);
      expect(back.slidingWindow, id).toBe(c.slidingWindow);
      expect([back.ropeTheta, back.rope, back.headDim, back.tieWordEmbeddings]).toEqual([
        c.ropeTheta,
        c.rope,
        c.headDim,
        c.tieWordEmbeddings,
      ]);
    }
    const multimodal = {
      architectures: ['Gemma3ForConditionalGeneration'],
      model_type: 'gemma3',
      text_config: { model_type: 'gemma3_text', hidden_size: 64, num_hidden_layers: 6, sliding_window: 16 },
      vision_config: { model_type: 'siglip_vision_model' },
    };
    const c = parseModelConfig(multimodal);
    const out = mergedConfigJson(c, 'bf16', JSON.stringify(multimodal));
    expect(out).toMatchObject({
      architectures: ['Gemma3ForCausalLM'],
      model_type: 'gemma3_text',
      torch_dtype: 'bfloat16',
    });
    expect(out.text_config).toBeUndefined();
    expect(parseModelConfig(out).slidingLayers).toEqual(c.slidingLayers);
  });

  it('GGUF export refuses Gemma with the reason and the way out', () => {
    expect(() => ggufArchitecture(knownConfig('google/gemma-3-1b-it'))).toThrow(
      /does not support Gemma3ForCausalLM: llama.cpp's gemma3 architecture needs norms stored as 1 \+ w.*convert_hf_to_gguf.py/,
    );
    expect(() => ggufArchitecture(knownConfig('google/gemma-2-2b-it'))).toThrow(/llama.cpp's gemma2 architecture/);
  });

  it("PEFT keys of a multimodal base's language model: written under model.language_model, read in both layouts", () => {
    expect(loraKey(3, 'q_proj', 'A', 'model.language_model')).toBe(
      'base_model.model.model.language_model.layers.3.self_attn.q_proj.lora_A.weight',
    );
    for (const key of [
      'base_model.model.model.language_model.layers.3.mlp.down_proj.lora_B.weight',
      'base_model.model.language_model.model.layers.3.mlp.down_proj.lora_B.weight',
      'base_model.model.model.layers.3.mlp.down_proj.lora_B.weight',
    ])
      expect(parseLoraKey(key), key).toEqual({ layer: 3, module: 'down_proj', which: 'B' });
    // The vision tower's projections are not decoder layers.
    expect(
      parseLoraKey('base_model.model.model.vision_tower.vision_model.encoder.layers.0.self_attn.q_proj.lora_A.weight'),
    ).toBeNull();
    const regex = 'model\\.language_model\\.layers\\.\\d+\\.(?:self_attn|mlp)\\.(?:q_proj|v_proj)';
    const cfg = { targetModules: regex, layersToTransform: null };
    expect(isTargeted(cfg, 2, 'v_proj', 'model.language_model')).toBe(true);
    expect(isTargeted(cfg, 2, 'k_proj', 'model.language_model')).toBe(false);
    expect(
      isTargeted({ targetModules: ['q_proj'], layersToTransform: null }, 2, 'q_proj', 'model.language_model'),
    ).toBe(true);
    expect(parseModelConfig({ ...TINY3 }).languageModelOf).toBeNull();
  });

  it('template guesses: gemma3 for Gemma 3, gemma for Gemma 2', () => {
    expect(guessTemplate('google/gemma-3-270m-it', 'Gemma3ForCausalLM')).toBe('gemma3');
    expect(guessTemplate('my-finetune', 'Gemma3ForCausalLM')).toBe('gemma3');
    expect(guessTemplate('google/gemma-2-2b-it', 'Gemma2ForCausalLM')).toBe('gemma');
  });
});
