// Export pieces that need no GPU: dtype conversion, config.json / generation_config.json for the
// merged model, tensor order and checks of mergedTensors, adapter_config.json fields.
import { describe, expect, it } from 'vitest';
import { convertBytes } from '../../src/engine/export/convert.ts';
import {
  configFromModel,
  generationConfigFrom,
  mergedConfigJson,
  mergedTensors,
  type ExportableModel,
} from '../../src/engine/export/merged.ts';
import { parseModelConfig, expectedWeights } from '../../src/engine/model/config.ts';
import { planShards } from '../../src/io/safetensors-writer.ts';

const bytes = (a: Float32Array | Uint16Array) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

describe('convertBytes', () => {
  it('f32 → bf16 / f16 round to nearest even like torch .to()', () => {
    // 1 + 2^-8 is exactly halfway between two bf16 values: ties to even (1.0); 1 + 3·2^-9 rounds up.
    const x = Float32Array.from([1 + 2 ** -8, 1 + 3 * 2 ** -9, -2.5, 65520, 1e-8, NaN]);
    const bf = new Uint16Array(convertBytes(bytes(x), 'f32', 'bf16').slice().buffer);
    expect(Array.from(bf.slice(0, 4))).toEqual([0x3f80, 0x3f81, 0xc020, 0x4780]);
    expect(bf[5] & 0x7f80).toBe(0x7f80);
    const h = new Uint16Array(convertBytes(bytes(x), 'f32', 'f16').slice().buffer);
    expect(h[2]).toBe(0xc100); // -2.5
    expect(h[3]).toBe(0x7c00); // 65520 overflows to +inf in f16 (torch agrees)
    expect(h[4]).toBe(0x0000); // 1e-8 underflows
  });
  it('16-bit → f32 is exact, 16 → 16 goes through f32, same dtype is returned as is', () => {
    const bf = Uint16Array.from([0x3f80, 0xc020, 0x0001]);
    const f = new Float32Array(convertBytes(bytes(bf), 'bf16', 'f32').slice().buffer);
    expect(Array.from(f.slice(0, 2))).toEqual([1, -2.5]);
    expect(f[2]).toBe(new Float32Array(new Uint32Array([0x00010000]).buffer)[0]);
    const h = new Uint16Array(convertBytes(bytes(Uint16Array.from([0x3f80, 0xc020])), 'bf16', 'f16').slice().buffer);
    expect(Array.from(h)).toEqual([0x3c00, 0xc100]);
    const same = bytes(bf);
    expect(convertBytes(same, 'bf16', 'bf16')).toBe(same);
    expect(() => convertBytes(new Uint8Array(3), 'bf16', 'f32')).toThrow(/whole number/);
  });
  it('handles views at odd byte offsets', () => {
    const buf = new Uint8Array(9);
    buf.set(bytes(Float32Array.from([3, -1])), 1);
    const out = new Uint16Array(convertBytes(buf.subarray(1), 'f32', 'bf16').slice().buffer);
    expect(Array.from(out)).toEqual([0x4040, 0xbf80]);
  });
});

const llama3 = {
  architectures: ['LlamaForCausalLM'],
  model_type: 'llama',
  hidden_size: 64,
  intermediate_size: 128,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  vocab_size: 300,
  max_position_embeddings: 8192,
  rms_norm_eps: 1e-5,
  rope_theta: 500000,
  tie_word_embeddings: false,
  rope_scaling: {
    rope_type: 'llama3',
    factor: 8,
    low_freq_factor: 1,
    high_freq_factor: 4,
    original_max_position_embeddings: 2048,
  },
  bos_token_id: 1,
  eos_token_id: [2, 3],
  torch_dtype: 'bfloat16',
  attention_bias: false,
  mlp_bias: false,
};
const qwen3 = {
  architectures: ['Qwen3ForCausalLM'],
  model_type: 'qwen3',
  hidden_size: 64,
  intermediate_size: 96,
  num_hidden_layers: 1,
  num_attention_heads: 4,
  num_key_value_heads: 1,
  head_dim: 32,
  vocab_size: 200,
  rms_norm_eps: 1e-6,
  rope_theta: 1e6,
  tie_word_embeddings: true,
  eos_token_id: 5,
  pad_token_id: 0,
};

describe('merged config files', () => {
  it('passes config.json through with torch_dtype (and dtype) set and quantization_config dropped', () => {
    const text = JSON.stringify({
      ...llama3,
      quantization_config: { load_in_4bit: true },
      dtype: 'bfloat16',
      custom_field: 7,
    });
    const c = parseModelConfig(text);
    const out = mergedConfigJson(c, 'f16', text);
    expect(out.torch_dtype).toBe('float16');
    expect(out.dtype).toBe('float16');
    expect(out.quantization_config).toBeUndefined();
    expect(out.custom_field).toBe(7);
    expect(Object.keys(out).slice(0, 3)).toEqual(['architectures', 'model_type', 'hidden_size']);
  });
  it('a config built from the parsed one parses back to the same model', () => {
    for (const raw of [llama3, qwen3]) {
      const c = parseModelConfig(raw);
      const rebuilt = mergedConfigJson(c, 'bf16', null);
      const back = parseModelConfig(rebuilt);
      expect({ ...back, notes: [] }).toEqual({ ...c, torchDtype: 'bfloat16', notes: [] });
    }
    expect(configFromModel(parseModelConfig(qwen3)).head_dim).toBe(32);
  });
  it('generation_config.json as GenerationConfig.from_model_config', () => {
    expect(generationConfigFrom(parseModelConfig(llama3))).toEqual({
      _from_model_config: true,
      bos_token_id: 1,
      eos_token_id: [2, 3],
    });
    expect(generationConfigFrom(parseModelConfig(qwen3))).toEqual({
      _from_model_config: true,
      eos_token_id: 5,
      pad_token_id: 0,
    });
  });
});

// Weights stand-ins: mergedTensors only reads shapes and kinds until a producer runs.
function fakeModel(raw: Record<string, unknown>, skip: string[] = []): ExportableModel {
  const config = parseModelConfig(raw);
  const weights = new Map<string, never>();
  for (const w of expectedWeights(config)) {
    if (skip.includes(w.name)) continue;
    weights.set(w.name, { buf: {}, dtype: 'bf16', shape: w.shape, label: w.name } as never);
  }
  return { gpu: {} as never, config, weights };
}

describe('mergedTensors', () => {
  it('lists every tensor in transformers order with the export dtype; a tied head is not saved', () => {
    const untied = mergedTensors(fakeModel(llama3), null, 'bf16');
    expect(untied.map((t) => t.name)).toEqual(expectedWeights(parseModelConfig(llama3)).map((w) => w.name));
    expect(untied.every((t) => t.dtype === 'BF16')).toBe(true);
    const tied = mergedTensors(fakeModel(qwen3), null, 'f32');
    expect(tied.some((t) => t.name === 'lm_head.weight')).toBe(false);
    expect(tied.map((t) => t.name)).toContain('model.layers.0.self_attn.q_norm.weight');
    expect(tied[0]).toMatchObject({ name: 'model.embed_tokens.weight', dtype: 'F32', shape: [200, 64] });
  });
  it('refuses a model with missing weights and adapters for modules it lacks', () => {
    expect(() => mergedTensors(fakeModel(llama3, ['model.norm.weight']), null, 'f32')).toThrow(
      /no weight "model.norm.weight"/,
    );
    const lora = { adapters: new Map([['model.layers.9.self_attn.q_proj', { adapter: {} as never }]]) };
    expect(() => mergedTensors(fakeModel(llama3), lora, 'f32')).toThrow(/model.layers.9.self_attn.q_proj/);
  });
  it('shards by data size with transformers file names', () => {
    const ts = mergedTensors(fakeModel(llama3), null, 'f32');
    const plan = planShards(ts, 100_000);
    expect(plan.shards.length).toBeGreaterThan(2);
    expect(plan.shards[0].file).toMatch(/^model-00001-of-000\d\d\.safetensors$/);
    expect(Object.keys(plan.index!.weight_map).length).toBe(ts.length);
  });
});
