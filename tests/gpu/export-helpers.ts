// Tiny random Hugging Face model folders for the export / generate / CLI tests (Node only: they
// write under tests/artifacts/). Weights are seeded, so every run writes the same bytes.
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { toBf16 } from '../../src/engine/numeric/half.ts';
import { parseModelConfig, expectedWeights } from '../../src/engine/model/config.ts';
import { serializeSafetensors } from '../../src/io/safetensors-writer.ts';
import { randn } from '../cpu/random.ts';

export type Tensors = Map<string, { dtype: 'F32' | 'BF16'; shape: number[]; bytes: Uint8Array }>;

export function tinyLlamaConfig(over: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    architectures: ['LlamaForCausalLM'],
    model_type: 'llama',
    hidden_size: 64,
    intermediate_size: 112,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    vocab_size: 300,
    max_position_embeddings: 256,
    rms_norm_eps: 1e-5,
    rope_theta: 10000.0,
    tie_word_embeddings: false,
    torch_dtype: 'bfloat16',
    bos_token_id: 1,
    eos_token_id: 2,
    hidden_act: 'silu',
    ...over,
  };
}

export function tinyQwen2Config(over: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    architectures: ['Qwen2ForCausalLM'],
    model_type: 'qwen2',
    hidden_size: 48,
    intermediate_size: 96,
    num_hidden_layers: 2,
    num_attention_heads: 6,
    num_key_value_heads: 2,
    vocab_size: 320,
    max_position_embeddings: 256,
    rms_norm_eps: 1e-6,
    rope_theta: 1000000.0,
    tie_word_embeddings: true,
    torch_dtype: 'float32',
    bos_token_id: 0,
    eos_token_id: 3,
    hidden_act: 'silu',
    use_sliding_window: false,
    ...over,
  };
}

/** SmolLM3: Llama's block, tied, with every second layer NoPE here (no_rope_layer_interval 2). */
export function tinySmolLM3Config(over: Record<string, unknown> = {}): Record<string, unknown> {
  return tinyLlamaConfig({
    architectures: ['SmolLM3ForCausalLM'],
    model_type: 'smollm3',
    num_hidden_layers: 4,
    rope_theta: 2000000.0,
    no_rope_layer_interval: 2,
    tie_word_embeddings: true,
    ...over,
  });
}

/**
 * Phi-3 (configuration_phi3.py): fused qkv_proj / gate_up_proj, LongRoPE whose long factors a
 * 10-token pass reaches (original_max_position_embeddings 8), RoPE on 12 of 16 head dims.
 */
export function tinyPhi3Config(over: Record<string, unknown> = {}): Record<string, unknown> {
  return tinyLlamaConfig({
    architectures: ['Phi3ForCausalLM'],
    model_type: 'phi3',
    max_position_embeddings: 32,
    original_max_position_embeddings: 8,
    partial_rotary_factor: 0.75,
    rope_scaling: {
      type: 'longrope',
      short_factor: [1.0, 1.1, 1.3, 1.6, 2.0, 2.5],
      long_factor: [1.2, 2.0, 3.5, 6.0, 9.0, 14.0],
    },
    sliding_window: 256,
    ...over,
  });
}

/**
 * Gemma 3 (configuration_gemma3.py): sliding, global, sliding layers with a window of 4 (the
 * 10-token check runs past it), local RoPE base 100 vs global 10000, query_pre_attn_scalar 24,
 * q/k norms, tied; hidden 48 ≠ heads·head_dim 64.
 */
export function tinyGemma3Config(over: Record<string, unknown> = {}): Record<string, unknown> {
  return tinyLlamaConfig({
    architectures: ['Gemma3ForCausalLM'],
    model_type: 'gemma3_text',
    hidden_size: 48,
    num_hidden_layers: 3,
    head_dim: 16,
    query_pre_attn_scalar: 24,
    rms_norm_eps: 1e-6,
    rope_local_base_freq: 100.0,
    sliding_window: 4,
    layer_types: ['sliding_attention', 'full_attention', 'sliding_attention'],
    hidden_activation: 'gelu_pytorch_tanh',
    hidden_act: 'gelu_pytorch_tanh',
    attn_logit_softcapping: null,
    final_logit_softcapping: null,
    tie_word_embeddings: true,
    torch_dtype: 'float32',
    ...over,
  });
}

/** Gemma 2 (configuration_gemma2.py): window 4 on layer 0, soft-capping that bends (3 and 5). */
export function tinyGemma2Config(over: Record<string, unknown> = {}): Record<string, unknown> {
  return tinyGemma3Config({
    architectures: ['Gemma2ForCausalLM'],
    model_type: 'gemma2',
    num_hidden_layers: 2,
    layer_types: undefined,
    rope_local_base_freq: undefined,
    query_pre_attn_scalar: 20,
    attn_logit_softcapping: 3.0,
    final_logit_softcapping: 5.0,
    ...over,
  });
}

/** Random weights for every tensor the config needs: norms ≈ 1, the rest N(0, 0.02..0.3). */
export function tinyWeights(raw: Record<string, unknown>, dtype: 'F32' | 'BF16', seed: number): Tensors {
  const c = parseModelConfig(raw);
  const out: Tensors = new Map();
  let s = seed;
  for (const w of expectedWeights(c)) {
    if (w.optional) continue; // tied lm_head
    const n = w.shape.reduce((a, b) => a * b, 1);
    const scale =
      w.role === 'embed' || w.role === 'lm-head' ? 0.3 : w.role === 'linear' ? 1 / Math.sqrt(w.shape[1]) : 0.1;
    const v = randn(n, s++, scale);
    if (w.role === 'norm' || w.role === 'qk-norm') for (let i = 0; i < n; i++) v[i] += 1;
    const bytes = dtype === 'F32' ? new Uint8Array(v.buffer) : new Uint8Array(toBf16(v).buffer);
    out.set(w.name, { dtype, shape: [...w.shape], bytes });
  }
  return out;
}

/** Writes config.json + model.safetensors (+ extra files) into `dir` (emptied first). */
export async function writeModelFolder(
  dir: string,
  raw: Record<string, unknown>,
  tensors: Tensors,
  extra: Record<string, string | Uint8Array> = {},
): Promise<void> {
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'config.json'), JSON.stringify(raw, null, 2));
  const bytes = await serializeSafetensors(
    [...tensors].map(([name, t]) => ({ name, dtype: t.dtype, shape: t.shape, data: t.bytes })),
    { format: 'pt' },
  );
  writeFileSync(join(dir, 'model.safetensors'), bytes);
  for (const [name, v] of Object.entries(extra)) writeFileSync(join(dir, name), v);
}
