// Where model weights come from: a folder of Hugging Face files (config.json + one
// model.safetensors or shards with model.safetensors.index.json). The loader reads one tensor at
// a time through a WeightSource, so a multi-GB checkpoint never sits in one JS buffer.
import { blobSource, bytesSource, readText, type ByteSource } from '../../io/byte-source.ts';
import { openCheckpoint, type TensorStore } from '../../io/safetensors-index.ts';
import { parseModelConfig, type ModelConfig } from './config.ts';

export interface WeightSource {
  names(): string[];
  has(name: string): boolean;
  shape(name: string): number[];
  /** safetensors dtype name: F32, F16, BF16, U8, ... */
  dtype(name: string): string;
  /** The tensor's little-endian bytes (one tensor, never the whole file). */
  read(name: string): Promise<Uint8Array>;
  /** Optional streaming of one tensor in pieces of whole elements (for tensors of hundreds of MB). */
  chunks?(name: string, chunkBytes: number): AsyncGenerator<Uint8Array>;
  /** The file holding the tensor, for error messages. */
  fileOf(name: string): string;
  close?(): Promise<void>;
}

/** A safetensors checkpoint (single file or sharded) as a WeightSource. */
export function storeWeightSource(store: TensorStore): WeightSource {
  return {
    names: () => store.names(),
    has: (n) => store.has(n),
    shape: (n) => store.info(n).shape.slice(),
    dtype: (n) => store.info(n).dtype,
    read: async (n) => (await store.readTensor(n)).bytes,
    chunks: (n, c) => store.readTensorChunks(n, c),
    fileOf: (n) => (store.has(n) ? store.info(n).shard : 'checkpoint'),
    close: () => store.close(),
  };
}

/**
 * The language model's tensors of a multimodal checkpoint under the names a ...ForCausalLM uses:
 * Gemma3ForConditionalGeneration stores them as `language_model.model.*` (checkpoints written
 * before transformers 4.52) or `model.language_model.*` (newer), with `language_model.lm_head.*` /
 * `lm_head.*` (modeling_gemma3.py `_checkpoint_conversion_mapping`). Vision tower and projector
 * tensors are left out. Any other checkpoint is returned as it is.
 */
export function languageModelWeights(source: WeightSource): WeightSource {
  const names = source.names();
  const prefixes: [string, string][] = [
    ['language_model.model.', 'model.'],
    ['model.language_model.', 'model.'],
    ['language_model.lm_head.', 'lm_head.'],
  ];
  if (!names.some((n) => prefixes.some(([from]) => n.startsWith(from)))) return source;
  const stored = new Map<string, string>();
  for (const n of names) {
    const hit = prefixes.find(([from]) => n.startsWith(from));
    if (hit) stored.set(hit[1] + n.slice(hit[0].length), n);
    else if (n.startsWith('lm_head.')) stored.set(n, n);
  }
  const at = (n: string) => stored.get(n) ?? n;
  return {
    names: () => [...stored.keys()],
    has: (n) => stored.has(n),
    shape: (n) => source.shape(at(n)),
    dtype: (n) => source.dtype(at(n)),
    read: (n) => source.read(at(n)),
    chunks: source.chunks ? (n, c) => source.chunks!(at(n), c) : undefined,
    fileOf: (n) => source.fileOf(at(n)),
    close: source.close ? () => source.close!() : undefined,
  };
}

/** Host tensors (tests, generated models) as a WeightSource. */
export function memoryWeightSource(
  tensors: ReadonlyMap<string, { dtype: string; shape: number[]; bytes: Uint8Array }>,
  file = '<memory>',
): WeightSource {
  const get = (n: string) => {
    const t = tensors.get(n);
    if (!t) throw new Error(`${file}: no tensor "${n}"`);
    return t;
  };
  return {
    names: () => [...tensors.keys()],
    has: (n) => tensors.has(n),
    shape: (n) => get(n).shape.slice(),
    dtype: (n) => get(n).dtype,
    read: async (n) => get(n).bytes,
    fileOf: () => file,
  };
}

export interface ModelFiles {
  config: ModelConfig;
  source: WeightSource;
  /** The raw config.json text (export passes it through). */
  configText: string;
  /** Every file name given (tokenizer files etc. for the caller). */
  fileNames: string[];
}

/** Opens a checkpoint folder given as file name → bytes or Blob/File (a dropped folder, IndexedDB, OPFS). */
export async function openModelFiles(files: ReadonlyMap<string, Uint8Array | Blob>): Promise<ModelFiles> {
  // Dropped folders give paths like "Qwen2.5-0.5B/config.json": match on the base name.
  const byBase = new Map<string, Uint8Array | Blob>();
  for (const [path, data] of files) byBase.set(path.split(/[\\/]/).pop()!, data);
  const toSource = (name: string, data: Uint8Array | Blob): ByteSource =>
    data instanceof Uint8Array ? bytesSource(data, name) : blobSource(data, name);
  const cfgData = byBase.get('config.json');
  if (!cfgData)
    throw new Error(`model folder: config.json is missing (files: ${[...byBase.keys()].join(', ') || 'none'})`);
  const configText = await readText(toSource('config.json', cfgData));
  const config = parseModelConfig(configText, 'config.json');
  const store = await openCheckpoint(async (name) => {
    const d = byBase.get(name.split(/[\\/]/).pop()!);
    return d ? toSource(name, d) : null;
  });
  return { config, source: storeWeightSource(store), configText, fileNames: [...byBase.keys()] };
}
