// The GPU kit's model: a random bf16 checkpoint with a real config (Qwen2.5-0.5B / 1.5B from
// KNOWN_CONFIGS, or a tiny Qwen2 for --tiny), LoRA adapters with non-zero A and B (PEFT starts B at
// zero; a non-zero B makes the first step's loss and every gradient depend on the adapters), and
// one token batch. Everything is a pure function of the config and a seed, written once by
// `prepare` and read back by both sides: our Node + Dawn step and PyTorch + PEFT
// (bench/kit/torch_peft.py), so both train the same weights on the same tokens.
import { closeSync, mkdirSync, openSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { expectedWeights, linearShape, parseModelConfig, type ModelConfig } from '../../src/engine/model/config.ts';
import { LINEAR_MODULES, modulePrefix } from '../../src/engine/model/model.ts';
import { KNOWN_CONFIGS } from '../../src/engine/plan/known-configs.ts';
import { writeSafetensors, type TensorToWrite } from '../../src/io/safetensors-writer.ts';

export const LORA_RANK = 8;
export const LORA_ALPHA = 16;

/** Tiny Qwen2 configs for --tiny: head_dim 32 and 64 stand in for 0.5B's 64 and 1.5B's 128. */
const TINY_QWEN2 = {
  architectures: ['Qwen2ForCausalLM'],
  model_type: 'qwen2',
  hidden_act: 'silu',
  rms_norm_eps: 1e-6,
  rope_theta: 1000000.0,
  max_position_embeddings: 512,
  sliding_window: 512,
  use_sliding_window: false,
  torch_dtype: 'bfloat16',
  tie_word_embeddings: true,
  num_hidden_layers: 2,
  hidden_size: 128,
  intermediate_size: 256,
  vocab_size: 512,
};

/** The models the kit measures, by the key the report uses. */
export const KIT_MODELS: Record<string, Record<string, unknown>> = {
  'qwen2.5-0.5b': KNOWN_CONFIGS['Qwen/Qwen2.5-0.5B-Instruct'],
  'qwen2.5-1.5b': KNOWN_CONFIGS['Qwen/Qwen2.5-1.5B-Instruct'],
  'tiny-qwen2-hd32': { ...TINY_QWEN2, num_attention_heads: 4, num_key_value_heads: 2 },
  'tiny-qwen2-hd64': { ...TINY_QWEN2, num_attention_heads: 2, num_key_value_heads: 1 },
};

export function kitConfig(key: string): Record<string, unknown> {
  const c = KIT_MODELS[key];
  if (!c) throw new Error(`unknown kit model "${key}"; known: ${Object.keys(KIT_MODELS).join(', ')}`);
  return c;
}

/**
 * xorshift32 uniform draws in [-bound, bound), rounded to bf16 (nearest even). Uniform rather
 * than normal: the kit times and compares steps, and this writes a 1.5B checkpoint in seconds.
 */
export function randomBf16(n: number, seed: number, bound: number, offset = 0): Uint16Array {
  let s = (seed * 2654435761) >>> 0 || 1;
  const out = new Uint16Array(n);
  const f = new Float32Array(1);
  const u = new Uint32Array(f.buffer);
  const scale = (2 * bound) / 4294967296;
  for (let i = 0; i < n; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    f[0] = offset + (s >>> 0) * scale - bound;
    const b = u[0];
    out[i] = (b + 0x7fff + ((b >>> 16) & 1)) >>> 16;
  }
  return out;
}

/** f32 uniform draws in [-bound, bound) (the LoRA matrices, stored f32 on both sides). */
export function randomF32(n: number, seed: number, bound: number): Float32Array {
  let s = (seed * 2246822519) >>> 0 || 1;
  const out = new Float32Array(n);
  const scale = (2 * bound) / 4294967296;
  for (let i = 0; i < n; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    out[i] = (s >>> 0) * scale - bound;
  }
  return out;
}

/** std 0.02 (transformers' initializer_range) as a uniform bound: 0.02·√3. */
const WEIGHT_BOUND = 0.02 * Math.sqrt(3);

function weightTensors(c: ModelConfig): TensorToWrite[] {
  return expectedWeights(c)
    .filter((w) => !w.optional)
    .map((w, i) => {
      const n = w.shape.reduce((a, b) => a * b, 1);
      const norm = w.role === 'norm' || w.role === 'qk-norm';
      return {
        name: w.name,
        dtype: 'BF16' as const,
        shape: w.shape,
        // Norm gains near 1 as trained models have; everything else ~N(0, 0.02)'s spread.
        data: () => new Uint8Array(randomBf16(n, 1000 + i, norm ? 0.1 : WEIGHT_BOUND, norm ? 1 : 0).buffer),
      };
    });
}

export interface LoraInit {
  /** HF module name (model.layers.0.self_attn.q_proj) → A [r, in], B [out, r]. */
  modules: Map<string, { A: Float32Array; B: Float32Array; inF: number; outF: number }>;
}

/** A like PEFT's Kaiming-uniform bound (1/√in), B small and non-zero; all seven linear modules, every layer. */
export function loraInit(c: ModelConfig, rank = LORA_RANK): LoraInit {
  const modules: LoraInit['modules'] = new Map();
  for (let l = 0; l < c.numLayers; l++) {
    for (const m of LINEAR_MODULES) {
      const [outF, inF] = linearShape(c, m);
      const id = l * LINEAR_MODULES.length + LINEAR_MODULES.indexOf(m);
      modules.set(modulePrefix(l, m), {
        A: randomF32(rank * inF, 7 + 2 * id, 1 / Math.sqrt(inF)),
        B: randomF32(outF * rank, 8 + 2 * id, 0.01),
        inF,
        outF,
      });
    }
  }
  return { modules };
}

/** The token batch: one row of `seq` ids spread over the vocabulary, labels = ids (HF shifts them). */
export function batchIds(vocab: number, seq: number): Int32Array {
  return new Int32Array(seq).map((_, n) => (n * 7919 + 13) % vocab);
}

export interface PreparedModel {
  dir: string;
  config: ModelConfig;
  rawConfig: Record<string, unknown>;
  seq: number;
  bytes: number;
}

async function writeFile(path: string, tensors: TensorToWrite[]): Promise<number> {
  const fd = openSync(path, 'w');
  try {
    return await writeSafetensors({ write: (chunk) => void writeSync(fd, chunk) }, tensors, { format: 'pt' });
  } finally {
    closeSync(fd);
  }
}

/** Writes config.json, model.safetensors (bf16), lora.safetensors (f32, A and B per module) and batch.json. */
export async function prepareModel(key: string, dir: string, seq: number): Promise<PreparedModel> {
  const rawConfig = kitConfig(key);
  const config = parseModelConfig(rawConfig, `${key}/config.json`);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'config.json'), JSON.stringify(rawConfig, null, 2));
  const bytes = await writeFile(join(dir, 'model.safetensors'), weightTensors(config));
  const lora: TensorToWrite[] = [];
  for (const [name, t] of loraInit(config).modules) {
    lora.push({ name: `${name}.lora_A`, dtype: 'F32', shape: [LORA_RANK, t.inF], data: new Uint8Array(t.A.buffer) });
    lora.push({ name: `${name}.lora_B`, dtype: 'F32', shape: [t.outF, LORA_RANK], data: new Uint8Array(t.B.buffer) });
  }
  await writeFile(join(dir, 'lora.safetensors'), lora);
  const ids = batchIds(config.vocabSize, seq);
  writeFileSync(
    join(dir, 'batch.json'),
    JSON.stringify({ model: key, seq, rank: LORA_RANK, alpha: LORA_ALPHA, ids: [...ids], labels: [...ids] }),
  );
  return { dir, config, rawConfig, seq, bytes };
}
