// Merged export: base + (α/r)·B·A folded into every adapted linear layer (PEFT merge_and_unload,
// src/engine/ops/merge.ts on the GPU), written as transformers' save_pretrained does:
// config.json (torch_dtype = the export dtype), generation_config.json, the tokenizer files
// passed through, and model.safetensors or model-0000k-of-0000n.safetensors shards +
// model.safetensors.index.json (transformers modeling_utils.py save_pretrained, max_shard_size).
// Tensors stream to the writer one chunk at a time: a multi-GB model never sits in one buffer.
import type { Gpu } from '../gpu/device.ts';
import { Recorder } from '../gpu/recorder.ts';
import { numelOf, type Tensor } from '../gpu/tensor.ts';
import { createTensor, readBytes, releaseTensor, tensorSpec, zerosTensor } from '../gpu/transfer.ts';
import type { LoraAdapter } from '../ops/lora.ts';
import { mergeLora, mergeRowsPerChunk } from '../ops/merge.ts';
import { isNf4, type Nf4Weight } from '../ops/nf4.ts';
import { expectedWeights, type ModelConfig } from '../model/config.ts';
import { isHostWeight, isRowSplit, type ModelWeight } from '../model/model.ts';
import {
  DEFAULT_MAX_SHARD_BYTES,
  indexJson,
  planShards,
  safetensorsChunks,
  type TensorToWrite,
} from '../../io/safetensors-writer.ts';
import { convertBytes, ELEMENT_BYTES, ST_DTYPE, TORCH_DTYPE, type FloatDType } from './convert.ts';

/** Receives one output file: whole bytes, or a stream of chunks (written in order). */
export type ExportWrite = (name: string, data: Uint8Array | AsyncIterable<Uint8Array>) => Promise<void>;

/** What export needs of a model: its config and its weights by Hugging Face name. */
export interface ExportableModel {
  gpu: Gpu;
  config: ModelConfig;
  weights: ReadonlyMap<string, ModelWeight>;
}

/** Adapters by HF module name ("model.layers.0.self_attn.q_proj"), as LoraSet.adapters. */
export interface ExportableLora {
  adapters: ReadonlyMap<string, { adapter: LoraAdapter }>;
}

export interface MergedExportOptions {
  dtype: FloatDType;
  /** Bytes of tensor data per shard (LLaMA-Factory export_size GB · 1e9); default 5 GB. */
  maxShardBytes?: number;
  /** The base model's config.json text: passed through with torch_dtype set (built from the config when absent). */
  configText?: string | null;
  /** Tokenizer files (and generation_config.json when the base has one), copied verbatim. */
  tokenizerFiles?: ReadonlyMap<string, Uint8Array>;
  write: ExportWrite;
  onProgress?: (p: { tensor: string; done: number; total: number }) => void;
  /** Things the user should know (e.g. merging into 4-bit weights). */
  onNote?: (note: string) => void;
  signal?: AbortSignal;
}

/** File names a tokenizer may consist of (transformers tokenization_utils_base + chat_template files). */
export const TOKENIZER_FILE_NAMES = [
  'tokenizer.json',
  'tokenizer_config.json',
  'special_tokens_map.json',
  'added_tokens.json',
  'vocab.json',
  'merges.txt',
  'tokenizer.model',
  'chat_template.jinja',
  'chat_template.json',
] as const;

const READ_CHUNK = 32 << 20;

export class ExportError extends Error {
  override readonly name = 'ExportError';
}

function jsonBytes(x: unknown): Uint8Array {
  return new TextEncoder().encode(JSON.stringify(x, null, 2) + '\n');
}

/** config.json for the merged model: the original with torch_dtype updated and any quantization_config dropped. */
export function mergedConfigJson(
  c: ModelConfig,
  dtype: FloatDType,
  configText?: string | null,
): Record<string, unknown> {
  let raw: Record<string, unknown>;
  const original = configText ? (JSON.parse(configText) as Record<string, unknown>) : null;
  // A Gemma3ForConditionalGeneration checkpoint's language model is exported alone: the
  // Gemma3ForCausalLM it is (its text_config), not the multimodal config.
  if (original && original.text_config && typeof original.text_config === 'object') configText = null;
  if (configText) {
    raw = original!;
    delete raw.quantization_config; // merged weights are dense
    if ('dtype' in raw) raw.dtype = TORCH_DTYPE[dtype];
  } else raw = configFromModel(c);
  raw.torch_dtype = TORCH_DTYPE[dtype];
  return raw;
}

/** A transformers config.json from the parsed config (when the original text is not at hand). */
export function configFromModel(c: ModelConfig): Record<string, unknown> {
  const rope: Record<string, unknown> | null =
    c.rope.type === 'default'
      ? null
      : c.rope.type === 'linear'
        ? { rope_type: 'linear', factor: c.rope.factor }
        : c.rope.type === 'dynamic'
          ? {
              rope_type: 'dynamic',
              factor: c.rope.factor,
              ...(c.rope.originalMaxPositionEmbeddings
                ? { original_max_position_embeddings: c.rope.originalMaxPositionEmbeddings }
                : {}),
            }
          : c.rope.type === 'llama3'
            ? {
                rope_type: 'llama3',
                factor: c.rope.factor,
                low_freq_factor: c.rope.lowFreqFactor,
                high_freq_factor: c.rope.highFreqFactor,
                original_max_position_embeddings: c.rope.originalMaxPositionEmbeddings,
              }
            : {
                // The attention factor written out, so a reader need not re-derive it.
                rope_type: 'longrope',
                short_factor: c.rope.shortFactor,
                long_factor: c.rope.longFactor,
                attention_factor: c.rope.attentionFactor,
              };
  const out: Record<string, unknown> = {
    architectures: [c.architecture],
    model_type: c.modelType,
    hidden_size: c.hiddenSize,
    intermediate_size: c.intermediateSize,
    num_hidden_layers: c.numLayers,
    num_attention_heads: c.numHeads,
    num_key_value_heads: c.numKvHeads,
    head_dim: c.headDim,
    vocab_size: c.vocabSize,
    max_position_embeddings: c.maxPositionEmbeddings,
    rms_norm_eps: c.rmsNormEps,
    rope_theta: c.ropeTheta,
    rope_scaling: rope,
    hidden_act: 'silu',
    tie_word_embeddings: c.tieWordEmbeddings,
  };
  if (c.architecture !== 'Qwen2ForCausalLM' && c.architecture !== 'MistralForCausalLM') out.attention_bias = c.qkvBias;
  if (c.architecture === 'LlamaForCausalLM' || c.architecture === 'SmolLM3ForCausalLM') out.mlp_bias = c.mlpBias;
  // configuration_smollm3.py: 1 = RoPE, 0 = NoPE, one entry per layer.
  if (c.architecture === 'SmolLM3ForCausalLM')
    out.no_rope_layers = Array.from({ length: c.numLayers }, (_, l) => (c.noRopeLayers.includes(l) ? 0 : 1));
  // configuration_phi3.py keeps the pre-training length and the partial rotary factor at the top level.
  if (c.rope.type === 'longrope') out.original_max_position_embeddings = c.rope.originalMaxPositionEmbeddings;
  if (c.rotaryDim !== c.headDim) out.partial_rotary_factor = c.rotaryDim / c.headDim;
  if (c.slidingWindow !== null) {
    out.sliding_window = c.slidingWindow;
    if (c.architecture !== 'MistralForCausalLM' && c.architecture !== 'Phi3ForCausalLM') out.use_sliding_window = true;
  }
  // configuration_gemma3.py / configuration_gemma2.py: the MLP reads hidden_activation; one
  // layer_types entry per layer; the windows need no use_sliding_window.
  if (c.gemma) {
    out.hidden_act = out.hidden_activation = 'gelu_pytorch_tanh';
    out.query_pre_attn_scalar = c.gemma.queryPreAttnScalar;
    out.attn_logit_softcapping = c.gemma.attnSoftcap;
    out.final_logit_softcapping = c.gemma.finalSoftcap;
    out.layer_types = Array.from({ length: c.numLayers }, (_, l) =>
      c.slidingLayers?.includes(l) ? 'sliding_attention' : 'full_attention',
    );
    if (c.gemma.ropeLocalTheta !== null) out.rope_local_base_freq = c.gemma.ropeLocalTheta;
    delete out.use_sliding_window;
    delete out.mlp_bias;
  }
  if (c.bosTokenId !== null) out.bos_token_id = c.bosTokenId;
  if (c.eosTokenIds.length) out.eos_token_id = c.eosTokenIds.length === 1 ? c.eosTokenIds[0] : c.eosTokenIds;
  if (c.padTokenId !== null) out.pad_token_id = c.padTokenId;
  return out;
}

/** generation_config.json as GenerationConfig.from_model_config writes it. */
export function generationConfigFrom(c: ModelConfig): Record<string, unknown> {
  const g: Record<string, unknown> = { _from_model_config: true };
  if (c.bosTokenId !== null) g.bos_token_id = c.bosTokenId;
  if (c.eosTokenIds.length) g.eos_token_id = c.eosTokenIds.length === 1 ? c.eosTokenIds[0] : c.eosTokenIds;
  if (c.padTokenId !== null) g.pad_token_id = c.padTokenId;
  return g;
}

function denseDType(t: Tensor): FloatDType {
  if (t.dtype === 'f32' || t.dtype === 'bf16' || t.dtype === 'f16') return t.dtype;
  throw new ExportError(`weight ${t.label} has dtype ${t.dtype}; only f32/bf16/f16 (or NF4) weights can be exported`);
}

/** A dense GPU tensor's bytes in `to`, read back in chunks. */
async function* denseChunks(gpu: Gpu, t: Tensor, to: FloatDType): AsyncGenerator<Uint8Array> {
  const from = denseDType(t);
  const total = numelOf(t.shape) * ELEMENT_BYTES[from];
  for (let at = 0; at < total; at += READ_CHUNK) {
    const n = Math.min(READ_CHUNK, total - at);
    const bytes = new Uint8Array(await readBytes(gpu, t.buf.buffer, at, n, t.label));
    yield convertBytes(bytes, from, to);
  }
}

/** Rows of W (+ s·B·A) in `to`, merged on the GPU chunk by chunk (NF4 bases are dequantized by the same kernel). */
async function* mergedChunks(
  gpu: Gpu,
  name: string,
  base: Tensor | Nf4Weight,
  adapter: LoraAdapter | null,
  to: FloatDType,
): AsyncGenerator<Uint8Array> {
  const shape = isNf4(base) ? base.shape : base.shape;
  const [outF, inF] = [shape[0], shape[1]];
  let zero: { a: Tensor; b: Tensor } | null = null;
  let ad = adapter;
  if (!ad) {
    // An NF4 weight without an adapter: a zero rank-1 update through the same dequantizing kernel.
    zero = {
      a: zerosTensor(gpu, tensorSpec('f32', [1, inF], 'scratch', `${name}.zeroA`)),
      b: zerosTensor(gpu, tensorSpec('f32', [outF, 1], 'scratch', `${name}.zeroB`)),
    };
    ad = { a: zero.a, b: zero.b, r: 1, inFeatures: inF, outFeatures: outF, scale: 0 };
  }
  const rowsPer = Math.min(outF, mergeRowsPerChunk(inF));
  const delta = createTensor(gpu, tensorSpec('f32', [rowsPer * inF], 'scratch', `${name}.mergeDelta`));
  try {
    for (let r0 = 0; r0 < outF; r0 += rowsPer) {
      const rows = Math.min(rowsPer, outF - r0);
      const out = createTensor(gpu, tensorSpec(to, [rows, inF], 'scratch', `${name}.merged[${r0}]`));
      try {
        const rec = new Recorder(gpu, `merge ${name}`);
        await mergeLora(rec, { base, adapter: ad, rowStart: r0, rows, out, delta });
        await rec.submit();
        yield new Uint8Array(await readBytes(gpu, out.buf.buffer, 0, rows * inF * ELEMENT_BYTES[to], out.label));
      } finally {
        releaseTensor(gpu, out);
      }
    }
  } finally {
    releaseTensor(gpu, delta);
    if (zero) {
      releaseTensor(gpu, zero.a);
      releaseTensor(gpu, zero.b);
    }
  }
}

/** The tensors of the merged checkpoint in transformers' order, with lazy data producers. */
export function mergedTensors(
  model: ExportableModel,
  lora: ExportableLora | null,
  dtype: FloatDType,
  notes: string[] = [],
): TensorToWrite[] {
  const c = model.config;
  const out: TensorToWrite[] = [];
  const used = new Set<string>();
  let nf4Seen = false;
  for (const w of expectedWeights(c)) {
    // Tied heads are not saved (save_pretrained drops shared tensors); the config says tie_word_embeddings.
    if (w.role === 'lm-head' && c.tieWordEmbeddings) continue;
    const weight = model.weights.get(w.name);
    if (!weight) {
      if (w.optional) continue;
      throw new ExportError(`the model has no weight "${w.name}" loaded; cannot export a complete checkpoint`);
    }
    const moduleName = w.name.replace(/\.weight$/, '');
    const ad = w.role === 'linear' ? (lora?.adapters.get(moduleName)?.adapter ?? null) : null;
    if (ad) used.add(moduleName);
    const gpu = model.gpu;
    let data: () => AsyncIterable<Uint8Array>;
    if (isHostWeight(weight)) {
      // The embedding kept in host memory: the checkpoint's own bytes, converted chunk by chunk.
      if (ad) throw new ExportError(`${w.name} is kept in host memory and cannot carry an adapter`);
      data = async function* () {
        for (let at = 0; at < weight.bytes.byteLength; at += READ_CHUNK)
          yield convertBytes(weight.bytes.subarray(at, at + READ_CHUNK), weight.dtype, dtype);
      };
    } else if (isRowSplit(weight)) {
      if (ad) throw new ExportError(`${w.name} is split by rows and cannot carry an adapter`);
      data = async function* () {
        for (const p of weight.parts) yield* denseChunks(gpu, p.tensor, dtype);
      };
    } else if (isNf4(weight)) {
      nf4Seen = true;
      data = () => mergedChunks(gpu, moduleName, weight, ad, dtype);
    } else if (ad) {
      data = () => mergedChunks(gpu, moduleName, weight, ad, dtype);
    } else {
      data = () => denseChunks(gpu, weight, dtype);
    }
    out.push({ name: w.name, dtype: ST_DTYPE[dtype], shape: w.shape, data });
  }
  if (lora) {
    const unused = [...lora.adapters.keys()].filter((k) => !used.has(k));
    if (unused.length) throw new ExportError(`adapters for modules the model does not have: ${unused.join(', ')}`);
  }
  if (nf4Seen) {
    notes.push(
      'the base weights are 4-bit (NF4): the merged model holds the dequantized weights, which differ from the original 16-bit ones by the quantization error; load the base without quantization before exporting to merge into the original weights (as LLaMA-Factory requires)',
    );
  }
  return out;
}

/** Writes the merged model; returns the file names written (in order). */
export async function exportMerged(
  model: ExportableModel,
  lora: ExportableLora | null,
  opts: MergedExportOptions,
): Promise<string[]> {
  const notes: string[] = [];
  const tensors = mergedTensors(model, lora, opts.dtype, notes);
  notes.forEach((n) => opts.onNote?.(n));
  const files: string[] = [];
  const put = async (name: string, data: Uint8Array | AsyncIterable<Uint8Array>) => {
    if (opts.signal?.aborted) throw new ExportError('export was cancelled');
    await opts.write(name, data);
    files.push(name);
  };
  const plan = planShards(tensors, opts.maxShardBytes ?? DEFAULT_MAX_SHARD_BYTES);
  let done = 0;
  const progress = (t: TensorToWrite) => {
    done++;
    opts.onProgress?.({ tensor: t.name, done, total: tensors.length });
  };
  for (const shard of plan.shards) {
    // Report progress as each tensor's producer starts (the writer pulls them in order).
    const watched = shard.tensors.map((t) => ({
      ...t,
      data: async () => {
        if (opts.signal?.aborted) throw new ExportError('export was cancelled');
        const d = await (t.data as () => AsyncIterable<Uint8Array>)();
        progress(t);
        return d;
      },
    }));
    await put(shard.file, safetensorsChunks(watched, { format: 'pt' }, shard.file));
  }
  if (plan.index) await put('model.safetensors.index.json', new TextEncoder().encode(indexJson(plan.index)));
  await put('config.json', jsonBytes(mergedConfigJson(model.config, opts.dtype, opts.configText)));
  const extra = opts.tokenizerFiles ?? new Map<string, Uint8Array>();
  if (!extra.has('generation_config.json'))
    await put('generation_config.json', jsonBytes(generationConfigFrom(model.config)));
  for (const [name, bytes] of extra) {
    if (name.includes('/') || name.includes('\\') || name === '..')
      throw new ExportError(`tokenizer file name "${name}" must be a plain file name`);
    if (files.includes(name)) throw new ExportError(`"${name}" would overwrite a file the export writes itself`);
    await put(name, bytes);
  }
  return files;
}
