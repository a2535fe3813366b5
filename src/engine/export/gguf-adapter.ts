// A LoRA adapter as a GGUF adapter file for llama.cpp's `--lora` (and Ollama's ADAPTER), laid out as
// llama.cpp's convert_lora_to_gguf.py writes one and src/llama-adapter.cpp reads it:
// - metadata: general.architecture (must equal the base GGUF's), general.type = "adapter",
//   adapter.type = "lora", adapter.lora.alpha; no tokenizer, no hyper-parameters;
// - per adapted weight W (out × in): `<W's GGUF name>.lora_a` with GGUF dims [in, r] (PEFT lora_A,
//   [r, in] row-major) and `.lora_b` with dims [r, out] (PEFT lora_B, [out, r]);
// - llama's q/k rows are permuted for its RoPE layout; in W = B·A those are B's rows, so lora_b
//   gets the same permutation as the merged weight (convert_lora_to_gguf's LoraTorchTensor.permute).
// llama.cpp scales each product by alpha / r, r read from lora_a; PEFT's scale is α/r, or α/√r with
// rsLoRA, so the written alpha is scale · r: the same product either way.
import { readF32 } from '../gpu/transfer.ts';
import { ExportError, type ExportableLora, type ExportableModel, type ExportWrite } from './merged.ts';
import { convertBytes, type FloatDType } from './convert.ts';
import { ggufChunks, ggufLayout, gguf, type GgufKv, type GgufTensor, type GgmlTypeName } from './gguf-format.ts';
import { ggufArchitecture, ggufTensorName, GGUF_FILE_TYPE, permuteHeadRows } from './gguf.ts';

export const GGUF_ADAPTER_TYPES = ['f32', 'f16', 'bf16'] as const;
export type GgufAdapterType = (typeof GGUF_ADAPTER_TYPES)[number];
const GGML: Record<GgufAdapterType, GgmlTypeName> = { f32: 'F32', f16: 'F16', bf16: 'BF16' };

export function checkGgufAdapterType(type: string): GgufAdapterType {
  const t = type.toLowerCase();
  if ((GGUF_ADAPTER_TYPES as readonly string[]).includes(t)) return t as GgufAdapterType;
  throw new ExportError(
    `a GGUF LoRA adapter is written as ${GGUF_ADAPTER_TYPES.join(', ')}, not ${type} (its small matrices gain nothing from quantization)`,
  );
}

/** `<name>-lora-<type>.gguf` with the name reduced to file-safe characters. */
export function ggufAdapterFileName(name: string, type: GgufAdapterType): string {
  const safe = name.replace(/[^A-Za-z0-9._-]+/g, '-').replace(/^[-.]+|-+$/g, '') || 'adapter';
  return `${safe}-lora-${type}.gguf`;
}

export interface GgufAdapterOptions {
  type: string;
  /** general.name, and the file name `<name>-lora-<type>.gguf`. */
  name: string;
  write: ExportWrite;
  fileName?: string;
  onProgress?: (p: { tensor: string; done: number; total: number }) => void;
  signal?: AbortSignal;
}

export interface GgufAdapterPlan {
  fileName: string;
  type: GgufAdapterType;
  arch: string;
  alpha: number;
  kv: GgufKv[];
  tensors: GgufTensor[];
  bytes: number;
}

/** Checks the adapter and lays out the file (no GPU reads yet). */
export function planGgufAdapter(
  model: ExportableModel,
  lora: ExportableLora,
  opts: Omit<GgufAdapterOptions, 'write'>,
): GgufAdapterPlan {
  const type = checkGgufAdapterType(opts.type);
  const c = model.config;
  const arch = ggufArchitecture(c);
  if (lora.adapters.size === 0) throw new ExportError('the LoRA adapter has no adapted modules');
  const modules = [...lora.adapters.entries()].sort(([a], [b]) => moduleOrder(a) - moduleOrder(b) || (a < b ? -1 : 1));
  // One alpha for the whole file: every module must have the same scale · r.
  const [firstName, first] = modules[0];
  const alpha = first.adapter.scale * first.adapter.r;
  for (const [name, { adapter }] of modules)
    if (Math.abs(adapter.scale * adapter.r - alpha) > 1e-6 * Math.abs(alpha))
      throw new ExportError(
        `${name}: scale·rank ${adapter.scale * adapter.r} differs from ${firstName}'s ${alpha}; a GGUF adapter has one alpha`,
      );
  const dt: FloatDType = type;
  const tensors: GgufTensor[] = [];
  for (const [moduleName, { adapter }] of modules) {
    const base = ggufTensorName(`${moduleName}.weight`);
    const { r, inFeatures, outFeatures } = adapter;
    const isQ = moduleName.endsWith('.self_attn.q_proj');
    const isK = moduleName.endsWith('.self_attn.k_proj');
    tensors.push({
      name: `${base}.lora_a`,
      dims: [inFeatures, r],
      type: GGML[type],
      data: async function* () {
        const a = await readF32(model.gpu, adapter.a);
        yield convertBytes(new Uint8Array(a.buffer, a.byteOffset, a.byteLength), 'f32', dt);
      },
    });
    tensors.push({
      name: `${base}.lora_b`,
      dims: [r, outFeatures],
      type: GGML[type],
      data: async function* () {
        const b = await readF32(model.gpu, adapter.b);
        let bytes = new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
        if (arch === 'llama' && (isQ || isK))
          bytes = permuteHeadRows(bytes, outFeatures, isQ ? c.numHeads : c.numKvHeads);
        yield convertBytes(bytes, 'f32', dt);
      },
    });
  }
  const kv: GgufKv[] = [
    { key: 'general.architecture', value: gguf.str(arch) },
    { key: 'general.type', value: gguf.str('adapter') },
    { key: 'general.name', value: gguf.str(opts.name) },
    { key: 'general.file_type', value: gguf.u32(GGUF_FILE_TYPE[type]) },
    { key: 'general.quantization_version', value: gguf.u32(2) },
    { key: 'general.alignment', value: gguf.u32(32) },
    { key: 'adapter.type', value: gguf.str('lora') },
    { key: 'adapter.lora.alpha', value: gguf.f32(alpha) },
  ];
  const layout = ggufLayout(kv, tensors);
  return {
    fileName: opts.fileName ?? ggufAdapterFileName(opts.name, type),
    type,
    arch,
    alpha,
    kv,
    tensors,
    bytes: layout.fileBytes,
  };
}

/** Layer-major order (layer 10 after layer 9), as the converter writes tensors. */
function moduleOrder(name: string): number {
  const m = /\.layers\.(\d+)\./.exec(name);
  return m ? Number(m[1]) : -1;
}

/** Writes `<name>-lora-<type>.gguf`; returns the file name and its size. */
export async function exportGgufAdapter(
  model: ExportableModel,
  lora: ExportableLora,
  opts: GgufAdapterOptions,
): Promise<{ fileName: string; bytes: number; alpha: number }> {
  const plan = planGgufAdapter(model, lora, opts);
  if (opts.signal?.aborted) throw new ExportError('export was cancelled');
  const total = plan.tensors.length;
  await opts.write(
    plan.fileName,
    ggufChunks(plan.kv, plan.tensors, (t, i) => {
      if (opts.signal?.aborted) throw new ExportError('export was cancelled');
      opts.onProgress?.({ tensor: t.name, done: i + 1, total });
    }),
  );
  return { fileName: plan.fileName, bytes: plan.bytes, alpha: plan.alpha };
}
