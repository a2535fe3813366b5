// safetensors writer: single files or shards + index, produced as a stream of chunks so a
// multi-GB export never sits in one buffer. Layout per huggingface/safetensors README.md:
// u64 LE header length, JSON header padded with spaces to a multiple of 8, contiguous data.
// Shard names and index follow huggingface_hub `serialization/_base.py`
// (split_state_dict_into_shards_factory) and transformers save_pretrained.
import { DTYPE_BYTES, SafetensorsError, type SafetensorsDtype } from './safetensors.ts';

/** Tensor bytes: given directly, or produced on demand (once) when the writer reaches them. */
export type TensorBytes =
  Uint8Array | (() => Promise<Uint8Array | AsyncIterable<Uint8Array>> | Uint8Array | AsyncIterable<Uint8Array>);

export interface TensorToWrite {
  name: string;
  dtype: SafetensorsDtype;
  shape: readonly number[];
  data: TensorBytes;
}

export interface ByteSink {
  write(chunk: Uint8Array): Promise<void> | void;
  close?(): Promise<void> | void;
}

export function tensorByteLength(dtype: SafetensorsDtype, shape: readonly number[]): number {
  let n = DTYPE_BYTES[dtype];
  for (const d of shape) {
    if (!Number.isSafeInteger(d) || d < 0)
      throw new Error(`shape [${shape.join(', ')}] must hold non-negative integers`);
    n *= d;
  }
  return n;
}

export interface HeaderPlan {
  /** 8-byte length prefix + padded JSON. */
  prefix: Uint8Array;
  /** Bytes of tensor data after the prefix. */
  dataLength: number;
  /** Per tensor, [begin, end) within the data block (same order as the input). */
  offsets: [number, number][];
}

/** Builds the header for tensors written in the given order. */
export function buildHeader(
  file: string,
  tensors: readonly Pick<TensorToWrite, 'name' | 'dtype' | 'shape'>[],
  metadata?: Record<string, string> | null,
): HeaderPlan {
  const seen = new Set<string>();
  const parts: string[] = [];
  if (metadata) {
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== 'string') throw new SafetensorsError('metadata', file, `__metadata__["${k}"] must be a string`);
    }
    parts.push(`"__metadata__":${JSON.stringify(metadata)}`);
  }
  const offsets: [number, number][] = [];
  let at = 0;
  for (const t of tensors) {
    if (t.name === '__metadata__')
      throw new SafetensorsError('header-entry', file, 'the name "__metadata__" is reserved', t.name);
    if (seen.has(t.name)) throw new SafetensorsError('header-entry', file, 'tensor name appears twice', t.name);
    seen.add(t.name);
    if (!(t.dtype in DTYPE_BYTES))
      throw new SafetensorsError('dtype', file, `unknown dtype ${String(t.dtype)}`, t.name);
    let len: number;
    try {
      len = tensorByteLength(t.dtype, t.shape);
    } catch (e) {
      throw new SafetensorsError('shape', file, (e as Error).message, t.name);
    }
    offsets.push([at, at + len]);
    // Keys are serialized one by one so integer-like names keep their order.
    parts.push(
      `${JSON.stringify(t.name)}:{"dtype":"${t.dtype}","shape":[${t.shape.join(',')}],"data_offsets":[${at},${at + len}]}`,
    );
    at += len;
  }
  const json = new TextEncoder().encode(`{${parts.join(',')}}`);
  const padded = Math.ceil(json.byteLength / 8) * 8;
  const prefix = new Uint8Array(8 + padded).fill(0x20, 8);
  new DataView(prefix.buffer).setBigUint64(0, BigInt(padded), true);
  prefix.set(json, 8);
  return { prefix, dataLength: at, offsets };
}

async function* dataChunks(file: string, t: TensorToWrite, expected: number): AsyncGenerator<Uint8Array> {
  const produced = typeof t.data === 'function' ? await t.data() : t.data;
  let got = 0;
  const check = (n: number) => {
    got += n;
    if (got > expected)
      throw new SafetensorsError(
        'size-mismatch',
        file,
        `data source produced more than the ${expected} bytes that ${t.dtype} [${t.shape.join(', ')}] needs`,
        t.name,
      );
  };
  if (produced instanceof Uint8Array) {
    check(produced.byteLength);
    if (produced.byteLength > 0) yield produced;
  } else {
    for await (const chunk of produced) {
      check(chunk.byteLength);
      if (chunk.byteLength > 0) yield chunk;
    }
  }
  if (got !== expected)
    throw new SafetensorsError(
      'size-mismatch',
      file,
      `data source produced ${got} bytes but ${t.dtype} [${t.shape.join(', ')}] needs ${expected}`,
      t.name,
    );
}

/** The whole file as a sequence of chunks: the header, then each tensor's bytes in order. */
export async function* safetensorsChunks(
  tensors: readonly TensorToWrite[],
  metadata?: Record<string, string> | null,
  file = 'model.safetensors',
): AsyncGenerator<Uint8Array> {
  const plan = buildHeader(file, tensors, metadata);
  yield plan.prefix;
  for (let i = 0; i < tensors.length; i++) {
    const [b, e] = plan.offsets[i];
    yield* dataChunks(file, tensors[i], e - b);
  }
}

/** Writes one safetensors file to `sink`; returns its size in bytes. Does not close the sink. */
export async function writeSafetensors(
  sink: ByteSink,
  tensors: readonly TensorToWrite[],
  metadata?: Record<string, string> | null,
  file = 'model.safetensors',
): Promise<number> {
  let size = 0;
  for await (const chunk of safetensorsChunks(tensors, metadata, file)) {
    await sink.write(chunk);
    size += chunk.byteLength;
  }
  return size;
}

/** Concatenates the chunks (tests and small adapters only). */
export async function serializeSafetensors(
  tensors: readonly TensorToWrite[],
  metadata?: Record<string, string> | null,
): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  let n = 0;
  for await (const c of safetensorsChunks(tensors, metadata)) {
    chunks.push(c);
    n += c.byteLength;
  }
  const out = new Uint8Array(n);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.byteLength;
  }
  return out;
}

export interface ShardPlan {
  /** Shard file name → tensors in it (input order). */
  shards: { file: string; tensors: TensorToWrite[]; dataBytes: number }[];
  /** The index JSON object; null when everything fits in one file (no index is written then). */
  index: { metadata: { total_size: number }; weight_map: Record<string, string> } | null;
  totalSize: number;
}

/** Default max shard size: 5 GB, as transformers' save_pretrained and LLaMA-Factory export_size. */
export const DEFAULT_MAX_SHARD_BYTES = 5_000_000_000;

/**
 * Splits tensors into shards of at most `maxShardBytes` of tensor data, in order: a tensor that
 * would overflow the current shard starts a new one; a tensor larger than the limit gets a shard
 * of its own (huggingface_hub split_state_dict_into_shards_factory).
 */
export function planShards(
  tensors: readonly TensorToWrite[],
  maxShardBytes = DEFAULT_MAX_SHARD_BYTES,
  prefix = 'model',
): ShardPlan {
  if (!(maxShardBytes > 0)) throw new Error(`max shard size must be positive, got ${maxShardBytes}`);
  const groups: { tensors: TensorToWrite[]; dataBytes: number }[] = [];
  let cur: { tensors: TensorToWrite[]; dataBytes: number } | null = null;
  let total = 0;
  for (const t of tensors) {
    const len = tensorByteLength(t.dtype, t.shape);
    total += len;
    if (cur === null || (cur.tensors.length > 0 && cur.dataBytes + len > maxShardBytes)) {
      cur = { tensors: [], dataBytes: 0 };
      groups.push(cur);
    }
    cur.tensors.push(t);
    cur.dataBytes += len;
  }
  if (groups.length <= 1) {
    return {
      shards: [{ file: `${prefix}.safetensors`, tensors: groups[0]?.tensors ?? [], dataBytes: total }],
      index: null,
      totalSize: total,
    };
  }
  const n = groups.length;
  const pad = (i: number) => String(i).padStart(5, '0');
  const shards = groups.map((g, i) => ({ file: `${prefix}-${pad(i + 1)}-of-${pad(n)}.safetensors`, ...g }));
  const weight_map: Record<string, string> = {};
  for (const s of shards) for (const t of s.tensors) weight_map[t.name] = s.file;
  return { shards, index: { metadata: { total_size: total }, weight_map }, totalSize: total };
}

export interface WrittenCheckpoint {
  /** File names written, shards first, then the index when there is one. */
  files: string[];
  indexFile: string | null;
  totalSize: number;
}

/**
 * Writes a checkpoint as one file or as shards + `<prefix>.safetensors.index.json`.
 * `openSink(fileName)` gives a sink per file; each is closed after writing.
 */
export async function writeShardedSafetensors(
  tensors: readonly TensorToWrite[],
  openSink: (fileName: string) => Promise<ByteSink> | ByteSink,
  options: {
    maxShardBytes?: number;
    metadata?: Record<string, string>;
    prefix?: string;
    onProgress?: (bytesWritten: number, totalBytes: number) => void;
  } = {},
): Promise<WrittenCheckpoint> {
  const prefix = options.prefix ?? 'model';
  const metadata = options.metadata ?? { format: 'pt' };
  const plan = planShards(tensors, options.maxShardBytes ?? DEFAULT_MAX_SHARD_BYTES, prefix);
  const files: string[] = [];
  let written = 0;
  for (const shard of plan.shards) {
    const sink = await openSink(shard.file);
    try {
      for await (const chunk of safetensorsChunks(shard.tensors, metadata, shard.file)) {
        await sink.write(chunk);
        written += chunk.byteLength;
        options.onProgress?.(written, plan.totalSize);
      }
    } finally {
      await sink.close?.();
    }
    files.push(shard.file);
  }
  let indexFile: string | null = null;
  if (plan.index) {
    indexFile = `${prefix}.safetensors.index.json`;
    const sink = await openSink(indexFile);
    try {
      await sink.write(new TextEncoder().encode(indexJson(plan.index)));
    } finally {
      await sink.close?.();
    }
    files.push(indexFile);
  }
  return { files, indexFile, totalSize: plan.totalSize };
}

/** Index text as transformers writes it: 2-space indent, weight_map sorted by name, trailing newline. */
export function indexJson(index: NonNullable<ShardPlan['index']>): string {
  // Keys written one by one: building a sorted object would move integer-like names first.
  const body = Object.keys(index.weight_map)
    .sort()
    .map((k) => `    ${JSON.stringify(k)}: ${JSON.stringify(index.weight_map[k])}`)
    .join(',\n');
  return `{\n  "metadata": {\n    "total_size": ${index.metadata.total_size}\n  },\n  "weight_map": {\n${body}\n  }\n}\n`;
}
