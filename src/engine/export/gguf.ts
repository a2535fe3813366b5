// GGUF export for llama.cpp / Ollama: the merged model (base + LoRA, the same GPU merge path as
// the merged safetensors export, ./merged.ts mergedTensors) written as one GGUF v3 file with the
// metadata, tensor names and tokenizer llama.cpp's convert_hf_to_gguf.py produces:
// - architectures: Llama and Mistral → "llama" (q/k rows permuted from HF's rotate-half order to
//   the interleaved pairs llama.cpp's llama RoPE uses, LlamaModel.permute), Qwen2 → "qwen2",
//   Qwen3 → "qwen3" (NeoX RoPE: no permutation);
// - tensor types: 1-D tensors (norms, biases) f32; matrices in the requested type (f32, f16, bf16,
//   or q8_0, see ./gguf-quant.ts; a matrix whose rows are not a multiple of 32 falls back to f16
//   in q8_0, as the converter does); q4_k_m picks each matrix's type as llama-quantize does
//   (q4KMTensorType: Q4_K, Q6_K for the output and some attn_v / ffn_down, fallbacks for rows that
//   are not whole 256-blocks), the blocks written as ggml's reference quantizers write them
//   (./gguf-kquant.ts);
// - tensors are produced one at a time, streamed to the writer: no whole-model buffer.
import { mergedTensors, ExportError, type ExportableLora, type ExportableModel, type ExportWrite } from './merged.ts';
import type { FloatDType } from './convert.ts';
import { ELEMENT_BYTES } from './convert.ts';
import { ggufChunks, ggufLayout, gguf, type GgufKv, type GgufTensor, type GgmlTypeName } from './gguf-format.ts';
import { blockChunks, quantizeQ8_0, Q8_0_BLOCK } from './gguf-quant.ts';
import { quantizeQ4_K, quantizeQ5_0, quantizeQ6_K } from './gguf-kquant.ts';
import { ggufVocab } from './gguf-vocab.ts';
import type { ModelConfig } from '../model/config.ts';
import { ollamaModelfile } from './ollama-modelfile.ts';

export const GGUF_TYPES = ['f32', 'f16', 'bf16', 'q8_0', 'q4_k_m'] as const;
export type GgufType = (typeof GGUF_TYPES)[number];
// llama.cpp types users may ask for that we do not write yet.
const NOT_YET = ['q4_0', 'q4_1', 'q5_0', 'q5_1', 'q2_k', 'q3_k_s', 'q3_k_m', 'q3_k_l', 'q4_k_s', 'q4_k'];
const NOT_YET_ALSO = ['q5_k_s', 'q5_k_m', 'q5_k', 'q6_k', 'iq4_xs', 'iq4_nl', 'tq1_0', 'tq2_0'];

/** llama_ftype (llama.h LLAMA_FTYPE_*, gguf-py LlamaFileType) of each export type. */
export const GGUF_FILE_TYPE: Record<GgufType, number> = { f32: 0, f16: 1, q8_0: 7, q4_k_m: 15, bf16: 32 };
const MATRIX_TYPE: Record<Exclude<GgufType, 'q4_k_m'>, GgmlTypeName> = {
  f32: 'F32',
  f16: 'F16',
  bf16: 'BF16',
  q8_0: 'Q8_0',
};
const QUANTIZE: Partial<Record<GgmlTypeName, { block: number; fn: (x: Float32Array) => Uint8Array }>> = {
  Q8_0: { block: Q8_0_BLOCK, fn: quantizeQ8_0 },
  Q5_0: { block: 32, fn: quantizeQ5_0 },
  Q4_K: { block: 256, fn: quantizeQ4_K },
  Q6_K: { block: 256, fn: quantizeQ6_K },
};

/** llama-quantize's use_more_bits: the first and last eighth of the layers and every third between. */
export function useMoreBits(layer: number, nLayers: number): boolean {
  const e = Math.floor(nLayers / 8);
  return layer < e || layer >= Math.floor((7 * nLayers) / 8) || (layer - e) % 3 === 2;
}

/**
 * The ggml type llama-quantize gives a 2-D weight in a Q4_K_M file (src/llama-quant.cpp
 * llama_tensor_get_type, no importance matrix): Q4_K by default; the output matrix (or the token
 * embedding when it doubles as the output) Q6_K, or Q8_0 when its rows are not whole 256-blocks;
 * attn_v and ffn_down Q6_K on use_more_bits layers. Then tensor_type_fallback: a row length that is
 * not a multiple of the block turns Q4_K into Q5_0 and Q6_K into Q8_0, and F16 when even 32 fails.
 */
export function q4KMTensorType(
  name: string,
  rowLength: number,
  nLayers: number,
  tiedEmbeddings: boolean,
): GgmlTypeName {
  let t: GgmlTypeName = 'Q4_K';
  const layer = /^blk\.(\d+)\./.exec(name);
  if (name === 'output.weight' || (tiedEmbeddings && name === 'token_embd.weight'))
    t = rowLength % 256 !== 0 ? 'Q8_0' : 'Q6_K';
  else if (layer && /\.(attn_v|ffn_down)\.weight$/.test(name) && useMoreBits(Number(layer[1]), nLayers)) t = 'Q6_K';
  const block = t === 'Q8_0' ? 32 : 256;
  if (rowLength % block !== 0) {
    t = t === 'Q4_K' ? 'Q5_0' : t === 'Q6_K' ? 'Q8_0' : 'F16';
    if (t !== 'F16' && rowLength % 32 !== 0) t = 'F16';
  }
  return t;
}

/** The export type, or a clear error for anything else (before any work). */
export function checkGgufType(type: string): GgufType {
  const t = type.toLowerCase();
  if ((GGUF_TYPES as readonly string[]).includes(t)) return t as GgufType;
  if (NOT_YET.includes(t) || NOT_YET_ALSO.includes(t))
    throw new ExportError(
      `GGUF type ${type} is not yet supported; use one of ${GGUF_TYPES.join(', ')} (quantize further with llama.cpp's llama-quantize)`,
    );
  throw new ExportError(`unknown GGUF type ${type}; use one of ${GGUF_TYPES.join(', ')}`);
}

/** llama.cpp's architecture name for the model (LLM_ARCH names in src/llama-arch.cpp). */
export function ggufArchitecture(c: ModelConfig): 'llama' | 'qwen2' | 'qwen3' {
  switch (c.architecture) {
    case 'LlamaForCausalLM':
    case 'MistralForCausalLM':
      return 'llama';
    case 'Qwen2ForCausalLM':
      return 'qwen2';
    case 'Qwen3ForCausalLM':
      return 'qwen3';
    case 'Gemma3ForCausalLM':
    case 'Gemma2ForCausalLM':
      // llama.cpp's gemma3 / gemma2 (src/llama-arch.cpp; convert_hf_to_gguf.py Gemma3Model /
      // Gemma2Model) store the norms with the +1 of Gemma's (1 + w) folded in, add the
      // post-attention / post-feed-forward norm tensors and the per-layer window and soft-capping
      // metadata: a layout this writer does not produce.
      throw new ExportError(
        `GGUF export does not support ${c.architecture}: llama.cpp's ${c.architecture === 'Gemma3ForCausalLM' ? 'gemma3' : 'gemma2'} architecture needs norms stored as 1 + w, the post-attention and post-feed-forward norms and the sliding-window and soft-capping metadata, which this writer does not produce; export merged safetensors and convert them with llama.cpp's convert_hf_to_gguf.py`,
      );
    case 'Phi3ForCausalLM':
      // llama.cpp's phi3 (src/llama-arch.cpp LLM_ARCH_PHI3, convert_hf_to_gguf.py Phi3MiniModel) keeps
      // attn_qkv / ffn_up fused, and LongRoPE needs rope_factors_long / rope_factors_short tensors
      // and the partial rotary dimension count: a layout this writer does not produce.
      throw new ExportError(
        `GGUF export does not support Phi3ForCausalLM: llama.cpp's phi3 architecture takes fused attn_qkv / ffn_up tensors and LongRoPE's rope_factors_long / rope_factors_short tensors, which this writer does not produce; export merged safetensors and convert them with llama.cpp's convert_hf_to_gguf.py`,
      );
    default:
      throw new ExportError(
        `GGUF export does not support architecture ${String(c.architecture)} (it writes Llama, Mistral, Qwen2/2.5 and Qwen3): export merged safetensors and convert them with llama.cpp's convert_hf_to_gguf.py`,
      );
  }
}

/** `<name>-<type>.gguf` with the name reduced to file-safe characters. */
export function ggufFileName(name: string, type: GgufType): string {
  const safe = name.replace(/[^A-Za-z0-9._-]+/g, '-').replace(/^[-.]+|-+$/g, '') || 'model';
  return `${safe}-${type}.gguf`;
}

/** HF tensor name → llama.cpp tensor name (gguf-py constants.py TENSOR_NAMES). */
export function ggufTensorName(hf: string): string {
  if (hf === 'model.embed_tokens.weight') return 'token_embd.weight';
  if (hf === 'model.norm.weight') return 'output_norm.weight';
  if (hf === 'lm_head.weight') return 'output.weight';
  const m = /^model\.layers\.(\d+)\.(.+)\.(weight|bias)$/.exec(hf);
  const part = m
    ? {
        input_layernorm: 'attn_norm',
        'self_attn.q_proj': 'attn_q',
        'self_attn.k_proj': 'attn_k',
        'self_attn.v_proj': 'attn_v',
        'self_attn.o_proj': 'attn_output',
        'self_attn.q_norm': 'attn_q_norm',
        'self_attn.k_norm': 'attn_k_norm',
        post_attention_layernorm: 'ffn_norm',
        'mlp.gate_proj': 'ffn_gate',
        'mlp.up_proj': 'ffn_up',
        'mlp.down_proj': 'ffn_down',
      }[m[2]]
    : undefined;
  if (!m || !part) throw new ExportError(`no GGUF name for tensor ${hf}`);
  return `blk.${m[1]}.${part}.${m[3]}`;
}

/**
 * convert_hf_to_gguf LlamaModel.permute on rows: within each head of D rows, new row 2i+j takes
 * old row j·D/2 + i (HF's rotate-half halves → llama.cpp's interleaved pairs).
 */
export function permuteHeadRows(bytes: Uint8Array, rows: number, nHead: number): Uint8Array {
  if (rows % nHead !== 0 || (rows / nHead) % 2 !== 0)
    throw new ExportError(`cannot permute ${rows} rows into ${nHead} heads of even size`);
  const rowBytes = bytes.byteLength / rows;
  const d = rows / nHead;
  const half = d / 2;
  const out = new Uint8Array(bytes.byteLength);
  for (let h = 0; h < nHead; h++)
    for (let i = 0; i < half; i++)
      for (let j = 0; j < 2; j++) {
        const from = h * d + j * half + i;
        const to = h * d + 2 * i + j;
        out.set(bytes.subarray(from * rowBytes, (from + 1) * rowBytes), to * rowBytes);
      }
  return out;
}

async function collect(src: AsyncIterable<Uint8Array>): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  let n = 0;
  for await (const c of src) {
    parts.push(c);
    n += c.byteLength;
  }
  if (parts.length === 1) return parts[0];
  const out = new Uint8Array(n);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.byteLength;
  }
  return out;
}

/** llama3 RoPE as llama.cpp applies it: per-frequency divisors in a rope_freqs tensor (LlamaModel.generate_extra_tensors). */
export function llama3RopeFactors(c: ModelConfig): Float32Array {
  if (c.rope.type !== 'llama3') throw new Error('not llama3 RoPE');
  const { factor, lowFreqFactor, highFreqFactor, originalMaxPositionEmbeddings: old } = c.rope;
  const dim = c.headDim;
  const lowWavelen = old / lowFreqFactor;
  const highWavelen = old / highFreqFactor;
  const out = new Float32Array(dim / 2);
  for (let k = 0; k < dim / 2; k++) {
    const freq = Math.fround(1 / Math.fround(c.ropeTheta ** Math.fround((2 * k) / dim)));
    const wavelen = (2 * Math.PI) / freq;
    if (wavelen < highWavelen) out[k] = 1;
    else if (wavelen > lowWavelen) out[k] = factor;
    else {
      const smooth = (old / wavelen - lowFreqFactor) / (highFreqFactor - lowFreqFactor);
      out[k] = 1 / ((1 - smooth) / factor + smooth);
    }
  }
  return out;
}

export interface GgufExportOptions {
  /** f32 | f16 | bf16 | q8_0 | q4_k_m (anything else is an error before any work). */
  type: string;
  /** general.name, and the file name `<name>-<type>.gguf`. */
  name: string;
  /** tokenizer.json, tokenizer_config.json (chat template, special tokens), … as bytes. */
  tokenizerFiles: ReadonlyMap<string, Uint8Array>;
  write: ExportWrite;
  /** Overrides the file name. */
  fileName?: string;
  onProgress?: (p: { tensor: string; done: number; total: number }) => void;
  onNote?: (note: string) => void;
  signal?: AbortSignal;
  /** Also write an Ollama `Modelfile` beside the GGUF (default true). */
  modelfile?: boolean;
}

export interface GgufPlan {
  fileName: string;
  type: GgufType;
  arch: string;
  kv: GgufKv[];
  tensors: GgufTensor[];
  notes: string[];
  /** The file's size in bytes. */
  bytes: number;
}

/** Checks everything and lays out the file (no tensor data is produced yet). */
export function planGguf(model: ExportableModel, lora: ExportableLora | null, opts: GgufExportOptions): GgufPlan {
  const type = checkGgufType(opts.type);
  const c = model.config;
  const arch = ggufArchitecture(c);
  const notes: string[] = [];
  if (c.rope.type === 'dynamic')
    throw new ExportError('dynamic NTK RoPE scaling (rope_scaling type dynamic) is not supported by llama.cpp');
  if (c.rope.type === 'llama3' && arch !== 'llama')
    throw new ExportError(`llama3 RoPE scaling is only written for the llama architecture, not ${arch}`);
  if (c.slidingWindow !== null && c.slidingWindow < c.maxPositionEmbeddings)
    notes.push(
      `llama.cpp's ${arch} architecture attends over the whole context: the ${c.slidingWindow}-token sliding window is not applied`,
    );
  const vocab = ggufVocab(c, opts.tokenizerFiles);
  notes.push(...vocab.notes);

  const lists = new Map<FloatDType, ReturnType<typeof mergedTensors>>();
  const listFor = (d: FloatDType) => {
    let l = lists.get(d);
    if (!l) {
      l = mergedTensors(model, lora, d, d === 'f32' ? notes : []);
      lists.set(d, l);
    }
    return l;
  };
  const base = listFor('f32');
  const fallback: string[] = [];
  const mix = new Map<GgmlTypeName, number>();
  const tied = !base.some((t) => t.name === 'lm_head.weight');
  const tensors: GgufTensor[] = base.map((t, i) => {
    const name = ggufTensorName(t.name);
    const shape = t.shape;
    const dims = [...shape].reverse();
    let ggml: GgmlTypeName;
    if (shape.length === 1) ggml = 'F32';
    else if (type === 'q4_k_m') {
      ggml = q4KMTensorType(name, dims[0], c.numLayers, tied);
      mix.set(ggml, (mix.get(ggml) ?? 0) + 1);
    } else {
      ggml = MATRIX_TYPE[type];
      if (ggml === 'Q8_0' && dims[0] % Q8_0_BLOCK !== 0) {
        ggml = 'F16';
        fallback.push(name);
      }
    }
    const src: FloatDType = ggml === 'F16' ? 'f16' : ggml === 'BF16' ? 'bf16' : 'f32';
    const producer = listFor(src)[i];
    if (producer.name !== t.name) throw new Error(`tensor order differs: ${producer.name} vs ${t.name}`);
    const raw = producer.data as () => AsyncIterable<Uint8Array>;
    const isQ = /\.self_attn\.q_proj\.(weight|bias)$/.test(t.name);
    const isK = /\.self_attn\.k_proj\.(weight|bias)$/.test(t.name);
    let bytes: () => AsyncIterable<Uint8Array> = raw;
    if (arch === 'llama' && (isQ || isK)) {
      const nHead = isQ ? c.numHeads : c.numKvHeads;
      bytes = async function* () {
        const all = await collect(raw());
        if (all.byteLength !== shape.reduce((a, b) => a * b, 1) * ELEMENT_BYTES[src])
          throw new ExportError(`${t.name}: unexpected size while permuting`);
        yield permuteHeadRows(all, shape[0], nHead);
      };
    }
    const q = QUANTIZE[ggml];
    const data = q ? () => blockChunks(bytes(), q.block, q.fn) : bytes;
    return { name, dims, type: ggml, data };
  });
  if (mix.size)
    notes.push(
      `q4_k_m: ${[...mix].map(([t, n]) => `${n} ${t}`).join(', ')} matrices (llama-quantize's Q4_K_M recipe; rows that are not whole 256-blocks fall back to Q5_0 / Q8_0 / F16)`,
    );
  if (fallback.length)
    notes.push(
      `q8_0 needs rows of a multiple of 32 values: ${fallback.length} tensor(s) written as f16 (${fallback.slice(0, 3).join(', ')}${fallback.length > 3 ? ', …' : ''})`,
    );
  if (c.rope.type === 'llama3') {
    const f = llama3RopeFactors(c);
    tensors.push({
      name: 'rope_freqs.weight',
      dims: [f.length],
      type: 'F32',
      data: async function* () {
        yield new Uint8Array(f.buffer.slice(0));
      },
    });
  }

  const a = (k: string) => `${arch}.${k}`;
  const kv: GgufKv[] = [
    { key: 'general.architecture', value: gguf.str(arch) },
    { key: 'general.name', value: gguf.str(opts.name) },
    { key: 'general.file_type', value: gguf.u32(GGUF_FILE_TYPE[type]) },
    { key: 'general.quantization_version', value: gguf.u32(2) },
    { key: 'general.alignment', value: gguf.u32(32) },
    { key: a('vocab_size'), value: gguf.u32(c.vocabSize) },
    { key: a('context_length'), value: gguf.u32(c.maxPositionEmbeddings) },
    { key: a('embedding_length'), value: gguf.u32(c.hiddenSize) },
    { key: a('block_count'), value: gguf.u32(c.numLayers) },
    { key: a('feed_forward_length'), value: gguf.u32(c.intermediateSize) },
    { key: a('rope.dimension_count'), value: gguf.u32(c.headDim) },
    { key: a('attention.head_count'), value: gguf.u32(c.numHeads) },
    { key: a('attention.head_count_kv'), value: gguf.u32(c.numKvHeads) },
    { key: a('attention.layer_norm_rms_epsilon'), value: gguf.f32(c.rmsNormEps) },
    { key: a('rope.freq_base'), value: gguf.f32(c.ropeTheta) },
  ];
  if (c.headDim * c.numHeads !== c.hiddenSize) {
    kv.push({ key: a('attention.key_length'), value: gguf.u32(c.headDim) });
    kv.push({ key: a('attention.value_length'), value: gguf.u32(c.headDim) });
  }
  if (c.rope.type === 'linear') {
    kv.push({ key: a('rope.scaling.type'), value: gguf.str('linear') });
    kv.push({ key: a('rope.scaling.factor'), value: gguf.f32(c.rope.factor) });
  }
  kv.push(...vocab.kv);
  const layout = ggufLayout(kv, tensors);
  return {
    fileName: opts.fileName ?? ggufFileName(opts.name, type),
    type,
    arch,
    kv,
    tensors,
    notes,
    bytes: layout.fileBytes,
  };
}

/** The Ollama Modelfile for a planned GGUF: its chat template and end-of-sequence token from the metadata. */
export function modelfileFor(plan: GgufPlan): { text: string; notes: string[] } {
  const kv = new Map(plan.kv.map((e) => [e.key, e.value]));
  const template = kv.get('tokenizer.chat_template');
  const tokens = kv.get('tokenizer.ggml.tokens');
  const eosId = kv.get('tokenizer.ggml.eos_token_id');
  const eos =
    tokens?.kind === 'ARRAY' && eosId?.kind === 'UINT32' ? (tokens.values[eosId.value as number] as string) : null;
  return ollamaModelfile({
    ggufFile: plan.fileName,
    chatTemplate: template?.kind === 'STRING' ? (template.value as string) : null,
    eosToken: eos,
  });
}

/** Writes `<name>-<type>.gguf` (and a `Modelfile`); returns the file names, the GGUF's size and the notes. */
export async function exportGguf(
  model: ExportableModel,
  lora: ExportableLora | null,
  opts: GgufExportOptions,
): Promise<{ fileName: string; bytes: number; notes: string[]; files: string[] }> {
  const plan = planGguf(model, lora, opts);
  const modelfile = opts.modelfile === false ? null : modelfileFor(plan);
  if (modelfile) plan.notes.push(...modelfile.notes);
  plan.notes.forEach((n) => opts.onNote?.(n));
  if (opts.signal?.aborted) throw new ExportError('export was cancelled');
  const total = plan.tensors.length;
  await opts.write(
    plan.fileName,
    ggufChunks(plan.kv, plan.tensors, (t, i) => {
      if (opts.signal?.aborted) throw new ExportError('export was cancelled');
      opts.onProgress?.({ tensor: t.name, done: i + 1, total });
    }),
  );
  const files = [plan.fileName];
  if (modelfile) {
    await opts.write('Modelfile', new TextEncoder().encode(modelfile.text));
    files.push('Modelfile');
  }
  return { fileName: plan.fileName, bytes: plan.bytes, notes: plan.notes, files };
}
