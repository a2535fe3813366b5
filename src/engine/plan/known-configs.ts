// config.json of well-known checkpoints (the fields the planner reads), copied from their public
// Hugging Face repos (Qwen/Qwen2.5-{0.5B,1.5B,3B,7B}-Instruct config.json; SmolLM3-3B below), so the studio and the
// benchmark can plan memory for a model before downloading it.
import { parseModelConfig, type ModelConfig } from '../model/config.ts';

const QWEN25_COMMON = {
  architectures: ['Qwen2ForCausalLM'],
  model_type: 'qwen2',
  hidden_act: 'silu',
  rms_norm_eps: 1e-6,
  rope_theta: 1000000.0,
  max_position_embeddings: 32768,
  sliding_window: 32768,
  use_sliding_window: false,
  torch_dtype: 'bfloat16',
  bos_token_id: 151643,
  eos_token_id: 151645,
};

export const KNOWN_CONFIGS: Record<string, Record<string, unknown>> = {
  'Qwen/Qwen2.5-0.5B-Instruct': {
    ...QWEN25_COMMON,
    hidden_size: 896,
    intermediate_size: 4864,
    num_hidden_layers: 24,
    num_attention_heads: 14,
    num_key_value_heads: 2,
    vocab_size: 151936,
    tie_word_embeddings: true,
  },
  'Qwen/Qwen2.5-1.5B-Instruct': {
    ...QWEN25_COMMON,
    hidden_size: 1536,
    intermediate_size: 8960,
    num_hidden_layers: 28,
    num_attention_heads: 12,
    num_key_value_heads: 2,
    vocab_size: 151936,
    tie_word_embeddings: true,
  },
  'Qwen/Qwen2.5-3B-Instruct': {
    ...QWEN25_COMMON,
    hidden_size: 2048,
    intermediate_size: 11008,
    num_hidden_layers: 36,
    num_attention_heads: 16,
    num_key_value_heads: 2,
    vocab_size: 151936,
    tie_word_embeddings: true,
  },
  'Qwen/Qwen2.5-7B-Instruct': {
    ...QWEN25_COMMON,
    hidden_size: 3584,
    intermediate_size: 18944,
    num_hidden_layers: 28,
    num_attention_heads: 28,
    num_key_value_heads: 4,
    vocab_size: 152064,
    tie_word_embeddings: false,
    max_position_embeddings: 32768,
    sliding_window: 131072,
  },
  // HuggingFaceTB/SmolLM3-3B: the shape its model card and SmolLM3Config give (36 layers, GQA 16/4,
  // 128,256-token Llama 3 vocabulary, tied), NoPE on every fourth layer, rope_theta 5M.
  'HuggingFaceTB/SmolLM3-3B': {
    architectures: ['SmolLM3ForCausalLM'],
    model_type: 'smollm3',
    hidden_act: 'silu',
    hidden_size: 2048,
    intermediate_size: 11008,
    num_hidden_layers: 36,
    num_attention_heads: 16,
    num_key_value_heads: 4,
    vocab_size: 128256,
    max_position_embeddings: 65536,
    rms_norm_eps: 1e-6,
    rope_theta: 5000000.0,
    no_rope_layer_interval: 4,
    tie_word_embeddings: true,
    torch_dtype: 'bfloat16',
  },
};

export function knownConfig(name: string): ModelConfig {
  const raw = KNOWN_CONFIGS[name];
  if (!raw) throw new Error(`no built-in config for "${name}"; known: ${Object.keys(KNOWN_CONFIGS).join(', ')}`);
  return parseModelConfig(raw, `${name}/config.json`);
}
