import { describe, expect, it } from 'vitest';
import {
  ModelConfigError,
  checkWeights,
  computeInvFreq,
  expectedWeights,
  parseModelConfig,
  type ModelConfig,
} from '../../src/engine/model/config.ts';
import { loadFixture } from '../reference/fixtures.ts';

// config.json files as published on the Hugging Face Hub.
const QWEN25_05B = {
  architectures: ['Qwen2ForCausalLM'],
  attention_dropout: 0.0,
  bos_token_id: 151643,
  eos_token_id: 151645,
  hidden_act: 'silu',
  hidden_size: 896,
  initializer_range: 0.02,
  intermediate_size: 4864,
  max_position_embeddings: 32768,
  max_window_layers: 21,
  model_type: 'qwen2',
  num_attention_heads: 14,
  num_hidden_layers: 24,
  num_key_value_heads: 2,
  rms_norm_eps: 1e-6,
  rope_theta: 1000000.0,
  sliding_window: 32768,
  tie_word_embeddings: true,
  torch_dtype: 'bfloat16',
  transformers_version: '4.43.1',
  use_cache: true,
  use_sliding_window: false,
  vocab_size: 151936,
};
const LLAMA32_1B_INSTRUCT = {
  architectures: ['LlamaForCausalLM'],
  attention_bias: false,
  attention_dropout: 0.0,
  bos_token_id: 128000,
  eos_token_id: [128001, 128008, 128009],
  head_dim: 64,
  hidden_act: 'silu',
  hidden_size: 2048,
  initializer_range: 0.02,
  intermediate_size: 8192,
  max_position_embeddings: 131072,
  mlp_bias: false,
  model_type: 'llama',
  num_attention_heads: 32,
  num_hidden_layers: 16,
  num_key_value_heads: 8,
  pretraining_tp: 1,
  rms_norm_eps: 1e-5,
  rope_scaling: {
    factor: 32.0,
    high_freq_factor: 4.0,
    low_freq_factor: 1.0,
    original_max_position_embeddings: 8192,
    rope_type: 'llama3',
  },
  rope_theta: 500000.0,
  tie_word_embeddings: true,
  torch_dtype: 'bfloat16',
  transformers_version: '4.45.0.dev0',
  use_cache: true,
  vocab_size: 128256,
};
const QWEN3_06B = {
  architectures: ['Qwen3ForCausalLM'],
  attention_bias: false,
  attention_dropout: 0.0,
  bos_token_id: 151643,
  eos_token_id: 151645,
  head_dim: 128,
  hidden_act: 'silu',
  hidden_size: 1024,
  initializer_range: 0.02,
  intermediate_size: 3072,
  max_position_embeddings: 40960,
  max_window_layers: 28,
  model_type: 'qwen3',
  num_attention_heads: 16,
  num_hidden_layers: 28,
  num_key_value_heads: 8,
  rms_norm_eps: 1e-6,
  rope_scaling: null,
  rope_theta: 1000000,
  sliding_window: null,
  tie_word_embeddings: true,
  torch_dtype: 'bfloat16',
  transformers_version: '4.51.0',
  use_cache: true,
  use_sliding_window: false,
  vocab_size: 151936,
};
const MISTRAL_7B_V01 = {
  architectures: ['MistralForCausalLM'],
  bos_token_id: 1,
  eos_token_id: 2,
  hidden_act: 'silu',
  hidden_size: 4096,
  initializer_range: 0.02,
  intermediate_size: 14336,
  max_position_embeddings: 32768,
  model_type: 'mistral',
  num_attention_heads: 32,
  num_hidden_layers: 32,
  num_key_value_heads: 8,
  rms_norm_eps: 1e-5,
  rope_theta: 10000.0,
  sliding_window: 4096,
  tie_word_embeddings: false,
  torch_dtype: 'bfloat16',
  transformers_version: '4.34.0.dev0',
  use_cache: true,
  vocab_size: 32000,
};

function err(cfg: unknown): ModelConfigError {
  try {
    parseModelConfig(cfg as Record<string, unknown>);
  } catch (e) {
    expect(e).toBeInstanceOf(ModelConfigError);
    return e as ModelConfigError;
  }
  throw new Error('expected a ModelConfigError');
}

describe('config.json parsing', () => {
  it('Qwen2.5-0.5B: q/k/v bias, GQA 14/2, tied, sliding window off', () => {
    const c = parseModelConfig(JSON.stringify(QWEN25_05B));
    expect(c).toMatchObject({
      architecture: 'Qwen2ForCausalLM',
      hiddenSize: 896,
      intermediateSize: 4864,
      numLayers: 24,
      numHeads: 14,
      numKvHeads: 2,
      headDim: 64,
      vocabSize: 151936,
      ropeTheta: 1e6,
      rope: { type: 'default' },
      tieWordEmbeddings: true,
      qkvBias: true,
      oBias: false,
      qkNorm: false,
      slidingWindow: null,
      torchDtype: 'bfloat16',
      bosTokenId: 151643,
      eosTokenIds: [151645],
      rmsNormEps: 1e-6,
    });
    expect(c.notes).toEqual([]);
  });

  it('Llama 3.2 1B Instruct: explicit head_dim, llama3 rope_scaling, several eos ids', () => {
    const c = parseModelConfig(LLAMA32_1B_INSTRUCT);
    expect(c.rope).toEqual({
      type: 'llama3',
      factor: 32,
      lowFreqFactor: 1,
      highFreqFactor: 4,
      originalMaxPositionEmbeddings: 8192,
    });
    expect(c).toMatchObject({
      headDim: 64,
      numKvHeads: 8,
      qkvBias: false,
      oBias: false,
      mlpBias: false,
      tieWordEmbeddings: true,
      eosTokenIds: [128001, 128008, 128009],
    });
  });

  it('Qwen3-0.6B: head_dim 128 ≠ hidden/heads, q_norm/k_norm', () => {
    const c = parseModelConfig(QWEN3_06B);
    expect(c).toMatchObject({
      headDim: 128,
      numHeads: 16,
      hiddenSize: 1024,
      qkNorm: true,
      qkvBias: false,
      slidingWindow: null,
      rope: { type: 'default' },
    });
  });

  it('Mistral 7B v0.1: a sliding window on every layer, applied by the attention kernels', () => {
    const c = parseModelConfig(MISTRAL_7B_V01);
    expect(c.slidingWindow).toBe(4096);
    expect(c.slidingLayers).toBeNull();
    expect(c.notes[0]).toMatch(/sliding-window attention \(window 4096\); the attention kernels apply it/);
    expect(parseModelConfig({ ...MISTRAL_7B_V01, sliding_window: null }).slidingWindow).toBeNull();
  });

  it('use_sliding_window: Qwen slides on layers ≥ max_window_layers, SmolLM3 on its NoPE layers, Llama never', () => {
    const qwen = parseModelConfig({
      ...QWEN3_06B,
      use_sliding_window: true,
      sliding_window: 64,
      max_window_layers: 20,
    });
    expect(qwen.slidingWindow).toBe(64);
    expect(qwen.slidingLayers).toEqual([20, 21, 22, 23, 24, 25, 26, 27]);
    expect(qwen.notes.join('\n')).toMatch(/window 64 on 8 of 28 layers/);
    // max_window_layers defaults to 28 (configuration_qwen2.py): no layer of a 24-layer model slides.
    const { max_window_layers: _, ...noMax } = QWEN25_05B;
    const qwen2 = parseModelConfig({ ...noMax, use_sliding_window: true, sliding_window: 64 });
    expect(qwen2.slidingLayers).toEqual([]);
    const types = Array.from({ length: 28 }, (_, l) => (l % 2 ? 'sliding_attention' : 'full_attention'));
    expect(
      parseModelConfig({ ...QWEN3_06B, use_sliding_window: true, sliding_window: 64, layer_types: types })
        .slidingLayers,
    ).toEqual(Array.from({ length: 14 }, (_, i) => 2 * i + 1));
    const smol = {
      architectures: ['SmolLM3ForCausalLM'],
      hidden_size: 64,
      intermediate_size: 128,
      num_hidden_layers: 8,
      num_attention_heads: 4,
      num_key_value_heads: 2,
      vocab_size: 300,
      use_sliding_window: true,
      sliding_window: 16,
    };
    expect(parseModelConfig(smol).slidingLayers).toEqual([3, 7]); // configuration_smollm3.py: NoPE layers
    const llama = parseModelConfig({ ...smol, architectures: ['LlamaForCausalLM'] });
    expect(llama.slidingWindow).toBeNull();
    expect(llama.slidingLayers).toBeNull();
  });

  it('SmolLM3: NoPE layers from no_rope_layers or the interval, tied and rope_theta 2M by default', () => {
    const base = {
      architectures: ['SmolLM3ForCausalLM'],
      hidden_size: 64,
      intermediate_size: 128,
      num_hidden_layers: 8,
      num_attention_heads: 4,
      num_key_value_heads: 2,
      vocab_size: 300,
    };
    const c = parseModelConfig(base);
    expect(c.noRopeLayers).toEqual([3, 7]); // no_rope_layer_interval 4: every fourth layer
    expect(c.tieWordEmbeddings).toBe(true);
    expect(c.ropeTheta).toBe(2e6);
    expect(parseModelConfig({ ...base, no_rope_layer_interval: 2 }).noRopeLayers).toEqual([1, 3, 5, 7]);
    expect(parseModelConfig({ ...base, no_rope_layers: [1, 0, 1, 1, 0, 1, 1, 1, 0] }).noRopeLayers).toEqual([1, 4]);
    expect(parseModelConfig({ ...base, tie_word_embeddings: false, rope_theta: 5e6 })).toMatchObject({
      tieWordEmbeddings: false,
      ropeTheta: 5e6,
    });
    expect(parseModelConfig({ model_type: 'smollm3', ...base, architectures: undefined }).architecture).toBe(
      'SmolLM3ForCausalLM',
    );
    // Llama and the others rope every layer, whatever stray keys say.
    expect(
      parseModelConfig({ ...base, architectures: ['LlamaForCausalLM'], no_rope_layers: [0] }).noRopeLayers,
    ).toEqual([]);
    const bad = (over: Record<string, unknown>) => {
      try {
        parseModelConfig({ ...base, ...over });
      } catch (e) {
        return (e as Error).message;
      }
      return 'parsed';
    };
    expect(bad({ no_rope_layers: [1, 1, 0] })).toBe(
      'config.json: no_rope_layers: has 3 entries for 8 layers (num_hidden_layers)',
    );
    expect(bad({ no_rope_layers: [1, 1, 2, 1, 1, 1, 1, 1] })).toBe(
      'config.json: no_rope_layers[2]: must be 0 (no RoPE) or 1 (RoPE), got 2',
    );
    expect(bad({ no_rope_layers: 'all' })).toMatch(/no_rope_layers: must be a list of 0 and 1/);
    expect(bad({ no_rope_layer_interval: 0 })).toMatch(/no_rope_layer_interval: must be ≥ 1/);
  });

  it('reads the newer rope_parameters layout and dtype key', () => {
    const { rope_scaling, rope_theta, torch_dtype, ...rest } = LLAMA32_1B_INSTRUCT;
    const c = parseModelConfig({ ...rest, dtype: 'bfloat16', rope_parameters: { ...rope_scaling, rope_theta } });
    expect(c.ropeTheta).toBe(500000);
    expect(c.rope.type).toBe('llama3');
    expect(c.torchDtype).toBe('bfloat16');
    void torch_dtype;
    const d = parseModelConfig({
      ...QWEN25_05B,
      rope_theta: undefined,
      rope_parameters: { rope_type: 'default', rope_theta: 1e6 },
    });
    expect(d.ropeTheta).toBe(1e6);
  });

  it('accepts legacy `type` for rope scaling and defaults', () => {
    const c = parseModelConfig({ ...MISTRAL_7B_V01, rope_scaling: { type: 'linear', factor: 2.0 } });
    expect(c.rope).toEqual({ type: 'linear', factor: 2 });
    const d = parseModelConfig({ ...MISTRAL_7B_V01, rope_scaling: { type: 'dynamic', factor: 2.0 } });
    expect(d.rope).toEqual({ type: 'dynamic', factor: 2, originalMaxPositionEmbeddings: null });
    const { num_key_value_heads, ...noKv } = MISTRAL_7B_V01;
    void num_key_value_heads;
    expect(parseModelConfig(noKv).numKvHeads).toBe(32);
    expect(parseModelConfig({ ...MISTRAL_7B_V01, rope_theta: undefined }).ropeTheta).toBe(10000);
  });

  it('explains unsupported architectures and bad fields, naming config.json and the field', () => {
    expect(err({ ...QWEN25_05B, architectures: ['GPT2LMHeadModel'] }).message).toBe(
      'config.json: architectures: unsupported architecture GPT2LMHeadModel; supported: LlamaForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM, MistralForCausalLM, Gemma3ForCausalLM, Gemma2ForCausalLM, SmolLM3ForCausalLM, Phi3ForCausalLM',
    );
    expect(err({ ...QWEN25_05B, num_key_value_heads: 3 }).message).toBe(
      'config.json: num_key_value_heads: num_attention_heads (14) must be divisible by num_key_value_heads (3)',
    );
    expect(err({ ...QWEN25_05B, hidden_size: 900 }).field).toBe('hidden_size');
    expect(err({ ...QWEN25_05B, hidden_size: undefined }).message).toBe('config.json: hidden_size: missing (required)');
    expect(err({ ...QWEN25_05B, num_hidden_layers: 2.5 }).message).toMatch(
      /num_hidden_layers: must be an integer, got 2.5/,
    );
    expect(err({ ...QWEN25_05B, vocab_size: '151936' }).field).toBe('vocab_size');
    expect(err({ ...QWEN25_05B, rms_norm_eps: 0 }).field).toBe('rms_norm_eps');
    expect(err({ ...QWEN25_05B, tie_word_embeddings: 'yes' }).field).toBe('tie_word_embeddings');
    expect(err({ ...QWEN25_05B, torch_dtype: 'float8' }).message).toMatch(/torch_dtype: unsupported dtype "float8"/);
    expect(err({ ...QWEN25_05B, eos_token_id: 999999 }).message).toMatch(
      /eos_token_id: token id 999999 is outside the vocabulary/,
    );
    expect(err({ ...QWEN25_05B, hidden_act: 'gelu' }).field).toBe('hidden_act');
    expect(err({ ...QWEN25_05B, head_dim: 63 }).field).toBe('head_dim');
    expect(err({ ...LLAMA32_1B_INSTRUCT, rope_scaling: { rope_type: 'yarn', factor: 4.0 } }).message).toMatch(
      /rope_scaling\.rope_type: RoPE scaling "yarn" is not supported/,
    );
    expect(
      err({
        ...LLAMA32_1B_INSTRUCT,
        rope_scaling: { rope_type: 'llama3', factor: 8.0, low_freq_factor: 1.0, high_freq_factor: 4.0 },
      }).field,
    ).toBe('rope_scaling.original_max_position_embeddings');
    expect(
      err({ ...LLAMA32_1B_INSTRUCT, rope_scaling: { ...LLAMA32_1B_INSTRUCT.rope_scaling, high_freq_factor: 0.5 } })
        .field,
    ).toBe('rope_scaling.high_freq_factor');
    expect(err({ ...LLAMA32_1B_INSTRUCT, rope_scaling: { rope_type: 'linear' } }).field).toBe('rope_scaling.factor');
    expect(err('{"a":').message).toMatch(/^config\.json: not valid JSON/);
    expect(err([]).message).toBe('config.json: must be a JSON object');
    const noArch = { ...QWEN3_06B, architectures: undefined };
    expect(parseModelConfig(noArch).architecture).toBe('Qwen3ForCausalLM');
  });
});

describe('expected weights', () => {
  it('Qwen2.5-0.5B: names, shapes, biases, tied lm_head optional', () => {
    const c = parseModelConfig(QWEN25_05B);
    const w = expectedWeights(c);
    const get = (n: string) => w.find((x) => x.name === n);
    expect(get('model.embed_tokens.weight')!.shape).toEqual([151936, 896]);
    expect(get('model.layers.0.self_attn.q_proj.weight')!.shape).toEqual([896, 896]);
    expect(get('model.layers.0.self_attn.k_proj.weight')!.shape).toEqual([128, 896]);
    expect(get('model.layers.0.self_attn.k_proj.bias')!.shape).toEqual([128]);
    expect(get('model.layers.0.self_attn.o_proj.bias')).toBeUndefined();
    expect(get('model.layers.23.mlp.down_proj.weight')!.shape).toEqual([896, 4864]);
    expect(get('lm_head.weight')!.optional).toBe(true);
    expect(w.length).toBe(1 + 24 * (2 + 4 + 3 + 3) + 1 + 1);
  });

  it('Qwen3: q_norm/k_norm [head_dim]; q_proj [heads·head_dim, hidden]', () => {
    const c = parseModelConfig(QWEN3_06B);
    const w = expectedWeights(c);
    expect(w.find((x) => x.name === 'model.layers.5.self_attn.q_norm.weight')!.shape).toEqual([128]);
    expect(w.find((x) => x.name === 'model.layers.5.self_attn.q_proj.weight')!.shape).toEqual([2048, 1024]);
    expect(w.find((x) => x.name === 'model.layers.5.self_attn.o_proj.weight')!.shape).toEqual([1024, 2048]);
  });

  function tinyLlama(): ModelConfig {
    return parseModelConfig({
      ...LLAMA32_1B_INSTRUCT,
      hidden_size: 16,
      head_dim: 4,
      num_attention_heads: 4,
      num_key_value_heads: 2,
      intermediate_size: 24,
      num_hidden_layers: 2,
      vocab_size: 50,
      tie_word_embeddings: false,
      bos_token_id: 1,
      eos_token_id: 2,
    });
  }

  it('checkWeights reports missing, unexpected and mis-shaped tensors by name', () => {
    const c = tinyLlama();
    const avail = new Map(expectedWeights(c).map((w) => [w.name, w.shape] as [string, number[]]));
    expect(checkWeights(c, avail).problems).toEqual([]);
    avail.delete('model.layers.1.mlp.up_proj.weight');
    avail.set('model.layers.0.self_attn.k_proj.weight', [16, 16]);
    avail.set('model.layers.0.self_attn.rotary_emb.inv_freq', [2]);
    avail.set('model.layers.9.mlp.up_proj.weight', [24, 16]);
    const r = checkWeights(c, avail);
    expect(r.problems).toEqual([
      'tensor "model.layers.0.self_attn.k_proj.weight" has shape [16, 16] but config.json implies [8, 16]',
      'missing tensor "model.layers.1.mlp.up_proj.weight" (expected shape [24, 16])',
      'unexpected tensor "model.layers.9.mlp.up_proj.weight" (not part of a LlamaForCausalLM with this config.json)',
    ]);
    expect(r.ignored).toEqual(['model.layers.0.self_attn.rotary_emb.inv_freq']);
  });

  it('checkWeights accepts bitsandbytes 4-bit weights with their companions', () => {
    const c = tinyLlama();
    const avail = new Map(expectedWeights(c).map((w) => [w.name, w.shape] as [string, number[]]));
    const q = 'model.layers.0.mlp.gate_proj.weight';
    avail.set(q, [(24 * 16) / 2, 1]);
    for (const s of ['.absmax', '.quant_map', '.nested_absmax', '.nested_quant_map', '.quant_state.bitsandbytes__nf4'])
      avail.set(q + s, [6]);
    const r = checkWeights(c, avail);
    expect(r.problems).toEqual([]);
    expect(r.quantized).toEqual([q]);
    avail.set(q, [10, 1]);
    expect(checkWeights(c, avail).problems[0]).toMatch(/4-bit packed size 10 bytes does not hold \[24, 16\]/);
  });
});

describe('RoPE inverse frequencies vs transformers formulas (torch fixture)', () => {
  it('default, llama3, linear, dynamic, longrope (short and long, partial rotary) match to f32 rounding', async () => {
    const fx = await loadFixture('rope_freqs');
    const names = Object.keys(fx.meta);
    expect(names.length).toBeGreaterThanOrEqual(8);
    for (const name of names) {
      const m = fx.meta[name];
      // LongRoPE cases carry Phi-3's fields (architecture, original length, partial rotary, heads).
      const { seq_len: _, ...fields } = m;
      const c = parseModelConfig({ ...LLAMA32_1B_INSTRUCT, num_key_value_heads: undefined, ...fields });
      const got = computeInvFreq(c, m.seq_len);
      const want = fx.f32(name);
      expect(got.length, name).toBe(want.length);
      let worst = 0;
      for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(got[i] - want[i]) / want[i]);
      expect(worst, `${name}: max relative error`).toBeLessThan(2.5e-7); // ≤ 2 ulp
    }
  });

  it('llama3 keeps high frequencies, divides low ones by factor, blends the middle', () => {
    const c = parseModelConfig(LLAMA32_1B_INSTRUCT);
    const base = computeInvFreq({ ...c, rope: { type: 'default' } });
    const scaled = computeInvFreq(c);
    expect(scaled[0]).toBe(base[0]);
    expect(scaled[31]).toBeCloseTo(base[31] / 32, 12);
    const mids = Array.from(scaled).filter((x, i) => x !== base[i] && Math.abs(x - base[i] / 32) > 1e-12 * base[i]);
    expect(mids.length).toBeGreaterThan(0);
  });

  it('dynamic NTK equals default up to max_position_embeddings and stretches beyond', () => {
    const c = parseModelConfig({
      ...MISTRAL_7B_V01,
      max_position_embeddings: 2048,
      rope_scaling: { rope_type: 'dynamic', factor: 2.0 },
    });
    const plain = computeInvFreq({ ...c, rope: { type: 'default' } });
    expect(computeInvFreq(c, 1000)).toEqual(plain);
    const long = computeInvFreq(c, 8192);
    expect(long[0]).toBe(1);
    expect(long[60]).toBeLessThan(plain[60]);
  });
});
