// A tiny random model folder for the e2e tests: config.json, model.safetensors and the demo
// model's tokenizer (so chat templates and special tokens are real).
import { copyFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { mulberry32 } from '../../src/data/hash.ts';
import { expectedWeights, parseModelConfig } from '../../src/engine/model/config.ts';
import { serializeSafetensors } from '../../src/io/safetensors-writer.ts';

const root = join(import.meta.dirname, '../..');

export interface TinyModel {
  dir: string;
  architecture:
    | 'LlamaForCausalLM'
    | 'Qwen2ForCausalLM'
    | 'Gemma3ForCausalLM'
    | 'Gemma2ForCausalLM'
    | 'Phi3ForCausalLM'
    | 'SmolLM3ForCausalLM';
  hidden: number;
  intermediate: number;
  dtype: 'F32' | 'BF16';
  seed: number;
  /** Linear and embedding weights are uniform in ±scale/2; norms are 1. */
  scale: number;
}

const MODEL_TYPE: Record<TinyModel['architecture'], string> = {
  LlamaForCausalLM: 'llama',
  Qwen2ForCausalLM: 'qwen2',
  Gemma3ForCausalLM: 'gemma3_text',
  Gemma2ForCausalLM: 'gemma2',
  Phi3ForCausalLM: 'phi3',
  SmolLM3ForCausalLM: 'smollm3',
};

/** What each family adds (head_dim given): every feature on, a window shorter than the rows. */
const FAMILY: Record<TinyModel['architecture'], (headDim: number) => Record<string, unknown>> = {
  LlamaForCausalLM: () => ({}),
  Qwen2ForCausalLM: () => ({}),
  Gemma3ForCausalLM: (d) => ({
    head_dim: d,
    query_pre_attn_scalar: d,
    sliding_window: 8,
    layer_types: ['sliding_attention', 'full_attention'],
    rope_local_base_freq: 10000,
    hidden_activation: 'gelu_pytorch_tanh',
  }),
  Gemma2ForCausalLM: (d) => ({
    head_dim: d,
    query_pre_attn_scalar: d,
    sliding_window: 8,
    attn_logit_softcapping: 50,
    final_logit_softcapping: 30,
    hidden_activation: 'gelu_pytorch_tanh',
  }),
  Phi3ForCausalLM: () => ({ partial_rotary_factor: 0.5 }),
  SmolLM3ForCausalLM: () => ({ no_rope_layers: [1, 0] }),
};

/** Writes the folder and returns its four file paths. */
export async function writeTinyModel(m: TinyModel): Promise<string[]> {
  mkdirSync(m.dir, { recursive: true });
  const config = {
    architectures: [m.architecture],
    model_type: MODEL_TYPE[m.architecture],
    ...FAMILY[m.architecture](m.hidden / 4),
    hidden_size: m.hidden,
    intermediate_size: m.intermediate,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    vocab_size: 6144,
    max_position_embeddings: 256,
    rms_norm_eps: 1e-6,
    rope_theta: 10000,
    tie_word_embeddings: true,
    torch_dtype: m.dtype === 'F32' ? 'float32' : 'bfloat16',
    eos_token_id: 6142,
    pad_token_id: 6141,
  };
  const text = JSON.stringify(config, null, 2);
  writeFileSync(join(m.dir, 'config.json'), text);
  const rnd = mulberry32(m.seed);
  const tensors = expectedWeights(parseModelConfig(text))
    .filter((w) => !w.optional)
    .map((w) => {
      const n = w.shape.reduce((a, b) => a * b, 1);
      const f = new Float32Array(n).map(() => (w.role === 'norm' ? 1 : (rnd() - 0.5) * m.scale));
      const u32 = new Uint32Array(f.buffer);
      // BF16 by truncation: the top half of each f32.
      const data =
        m.dtype === 'F32'
          ? new Uint8Array(f.buffer)
          : new Uint8Array(new Uint16Array(n).map((_, i) => u32[i] >>> 16).buffer);
      return { name: w.name, dtype: m.dtype, shape: w.shape, data };
    });
  writeFileSync(join(m.dir, 'model.safetensors'), await serializeSafetensors(tensors));
  for (const f of ['tokenizer.json', 'tokenizer_config.json'])
    copyFileSync(join(root, 'public/demo-model', f), join(m.dir, f));
  return ['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json'].map((f) => join(m.dir, f));
}
