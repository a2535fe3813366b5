// Sharded checkpoints: `model.safetensors.index.json` = {"metadata": {"total_size": N},
// "weight_map": {tensor: shard file}} beside `model-0000k-of-0000n.safetensors` (transformers
// `modeling_utils.py` save_pretrained / huggingface_hub `serialization/_torch.py`). Presents the
// shards as one store after checking that the index and the shards agree.
import { readText, type ByteSource } from './byte-source.ts';
import { SafetensorsError, SafetensorsFile, type RawTensor, type TensorInfo } from './safetensors.ts';

export const SAFE_WEIGHTS_NAME = 'model.safetensors';
export const SAFE_WEIGHTS_INDEX_NAME = 'model.safetensors.index.json';

export interface SafetensorsIndex {
  file: string;
  /** metadata.total_size when present (bytes of tensor data over all shards). */
  totalSize: number | null;
  metadata: Record<string, unknown>;
  /** tensor name → shard file name, in index order. */
  weightMap: Map<string, string>;
  /** Shard files, sorted by name. */
  shards: string[];
}

export interface ShardedTensorInfo extends TensorInfo {
  /** The file that holds the tensor. */
  shard: string;
}

/** What the loader needs, whether the checkpoint is one file or many. */
export interface TensorStore {
  /** Tensor names (data order within each shard, shards in index order). */
  names(): string[];
  has(name: string): boolean;
  info(name: string): ShardedTensorInfo;
  readTensor(name: string): Promise<RawTensor>;
  readTensorChunks(name: string, chunkBytes?: number): AsyncGenerator<Uint8Array>;
  tensors(): AsyncGenerator<RawTensor>;
  /** __metadata__ of the (first) file. */
  readonly metadata: Record<string, string> | null;
  /** Non-fatal findings (e.g. tensors in a shard that the index does not list). */
  readonly warnings: string[];
  close(): Promise<void>;
}

function isPlainObject(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}

export function parseIndex(text: string, file: string = SAFE_WEIGHTS_INDEX_NAME): SafetensorsIndex {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new SafetensorsError('index', file, `not valid JSON: ${(e as Error).message}`);
  }
  if (!isPlainObject(raw)) throw new SafetensorsError('index', file, 'must be a JSON object with "weight_map"');
  const wm = raw.weight_map;
  if (!isPlainObject(wm))
    throw new SafetensorsError('index', file, '"weight_map" must be an object {tensor name: shard file}');
  const meta = raw.metadata ?? {};
  if (!isPlainObject(meta)) throw new SafetensorsError('index', file, '"metadata" must be an object');
  let totalSize: number | null = null;
  if (meta.total_size !== undefined && meta.total_size !== null) {
    const ts = meta.total_size;
    if (typeof ts !== 'number' || !Number.isSafeInteger(ts) || ts < 0) {
      throw new SafetensorsError(
        'index',
        file,
        `metadata.total_size must be a non-negative integer, got ${JSON.stringify(ts)}`,
      );
    }
    totalSize = ts;
  }
  const weightMap = new Map<string, string>();
  const shards: string[] = [];
  for (const [name, shard] of Object.entries(wm)) {
    if (typeof shard !== 'string' || shard.length === 0) {
      throw new SafetensorsError(
        'index',
        file,
        `weight_map value must be a shard file name, got ${JSON.stringify(shard)}`,
        name,
      );
    }
    if (shard.startsWith('/') || shard.split(/[\\/]/).includes('..')) {
      throw new SafetensorsError('index', file, `shard path "${shard}" must stay inside the checkpoint folder`, name);
    }
    weightMap.set(name, shard);
    if (!shards.includes(shard)) shards.push(shard);
  }
  if (weightMap.size === 0) throw new SafetensorsError('index', file, '"weight_map" lists no tensors');
  // model-00001-of-0000n first: the zero-padded names sort in shard order.
  shards.sort();
  return { file, totalSize, metadata: meta, weightMap, shards };
}

/** Opens `fileName` next to the index; resolves null when the file is not there. */
export type OpenFile = (fileName: string) => Promise<ByteSource | null>;

export class ShardedSafetensors implements TensorStore {
  readonly warnings: string[] = [];
  private readonly where = new Map<string, SafetensorsFile>();
  private readonly order: string[] = [];

  private constructor(
    readonly index: SafetensorsIndex,
    readonly files: Map<string, SafetensorsFile>,
  ) {
    // Tensors a shard holds must be listed for that shard, and only once over all shards.
    const seen = new Map<string, string>();
    for (const shard of index.shards) {
      const f = files.get(shard)!;
      for (const name of f.names()) {
        const other = seen.get(name);
        if (other !== undefined) {
          throw new SafetensorsError(
            'index',
            index.file,
            `tensor is stored in two shards, "${other}" and "${shard}"`,
            name,
          );
        }
        seen.set(name, shard);
        const listed = index.weightMap.get(name);
        if (listed === undefined) {
          this.warnings.push(`${shard}: tensor "${name}" is not listed in ${index.file}; ignored`);
        } else if (listed !== shard) {
          const inListed = files.get(listed)?.has(name);
          throw new SafetensorsError(
            'index',
            index.file,
            inListed
              ? `tensor is stored in two shards, "${listed}" and "${shard}"`
              : `listed for shard "${listed}" but stored in "${shard}"`,
            name,
          );
        }
      }
    }
    let total = 0;
    for (const [name, shard] of index.weightMap) {
      const f = files.get(shard)!;
      if (!f.has(name)) {
        throw new SafetensorsError(
          'index',
          index.file,
          `listed for shard "${shard}" but that file has no such tensor`,
          name,
        );
      }
      total += f.info(name).byteLength;
    }
    for (const shard of index.shards) {
      for (const name of files.get(shard)!.names()) {
        if (index.weightMap.get(name) === shard) {
          this.where.set(name, files.get(shard)!);
          this.order.push(name);
        }
      }
    }
    if (index.totalSize !== null && index.totalSize !== total) {
      // Pre-quantized checkpoints often record a size that is not the byte sum: warn, not fail.
      this.warnings.push(
        `${index.file}: metadata.total_size is ${index.totalSize} but the listed tensors hold ${total} bytes`,
      );
    }
  }

  /** Validates the index, opens every shard it names (all headers), and cross-checks them. */
  static async open(indexText: string, indexFile: string, openFile: OpenFile): Promise<ShardedSafetensors> {
    const index = parseIndex(indexText, indexFile);
    const opened = await Promise.all(index.shards.map(async (s) => [s, await openFile(s)] as const));
    const missing = opened.filter(([, src]) => src === null).map(([s]) => s);
    if (missing.length > 0) {
      for (const [, src] of opened) await src?.close?.();
      const detail = missing
        .map((s) => {
          const names = [...index.weightMap].filter(([, f]) => f === s).map(([n]) => n);
          return `"${s}" (${names.length} tensors, e.g. "${names[0]}")`;
        })
        .join(', ');
      throw new SafetensorsError(
        'missing-shard',
        indexFile,
        `missing shard file${missing.length > 1 ? 's' : ''} ${detail}`,
      );
    }
    const files = new Map<string, SafetensorsFile>();
    try {
      for (const [s, src] of opened) files.set(s, await SafetensorsFile.open(src!));
      return new ShardedSafetensors(index, files);
    } catch (e) {
      for (const [, src] of opened) await src?.close?.();
      throw e;
    }
  }

  get metadata(): Record<string, string> | null {
    return this.files.get(this.index.shards[0])!.metadata;
  }
  names(): string[] {
    return this.order.slice();
  }
  has(name: string): boolean {
    return this.where.has(name);
  }
  private fileOf(name: string): SafetensorsFile {
    const f = this.where.get(name);
    if (!f)
      throw new SafetensorsError(
        'unknown-tensor',
        this.index.file,
        `no such tensor in the checkpoint (${this.order.length} tensors)`,
        name,
      );
    return f;
  }
  info(name: string): ShardedTensorInfo {
    const f = this.fileOf(name);
    return { ...f.info(name), shard: this.index.weightMap.get(name)! };
  }
  readTensor(name: string): Promise<RawTensor> {
    return this.fileOf(name).readTensor(name);
  }
  readTensorChunks(name: string, chunkBytes?: number): AsyncGenerator<Uint8Array> {
    return this.fileOf(name).readTensorChunks(name, chunkBytes);
  }
  async *tensors(): AsyncGenerator<RawTensor> {
    for (const name of this.order) yield await this.readTensor(name);
  }
  async close(): Promise<void> {
    for (const f of this.files.values()) await f.close();
  }
}

/** A single file presented through the same interface as a sharded checkpoint. */
export class SingleFileStore implements TensorStore {
  readonly warnings: string[] = [];
  constructor(readonly file: SafetensorsFile) {}
  get metadata(): Record<string, string> | null {
    return this.file.metadata;
  }
  names(): string[] {
    return this.file.names();
  }
  has(name: string): boolean {
    return this.file.has(name);
  }
  info(name: string): ShardedTensorInfo {
    return { ...this.file.info(name), shard: this.file.file };
  }
  readTensor(name: string): Promise<RawTensor> {
    return this.file.readTensor(name);
  }
  readTensorChunks(name: string, chunkBytes?: number): AsyncGenerator<Uint8Array> {
    return this.file.readTensorChunks(name, chunkBytes);
  }
  tensors(): AsyncGenerator<RawTensor> {
    return this.file.tensors();
  }
  close(): Promise<void> {
    return this.file.close();
  }
}

/**
 * Opens a checkpoint folder through `openFile`: the index (`<prefix>.safetensors.index.json`)
 * when present, else the single `<prefix>.safetensors`.
 */
export async function openCheckpoint(openFile: OpenFile, prefix = 'model'): Promise<TensorStore> {
  const indexName = `${prefix}.safetensors.index.json`;
  const indexSrc = await openFile(indexName);
  if (indexSrc) {
    const text = await readText(indexSrc);
    await indexSrc.close?.();
    return ShardedSafetensors.open(text, indexName, openFile);
  }
  const single = await openFile(`${prefix}.safetensors`);
  if (!single) {
    throw new SafetensorsError(
      'missing-shard',
      `${prefix}.safetensors`,
      `checkpoint has neither ${prefix}.safetensors nor ${indexName}`,
    );
  }
  return new SingleFileStore(await SafetensorsFile.open(single));
}
