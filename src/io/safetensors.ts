// safetensors reader: header first, then tensors one at a time by byte range.
// Format and validation rules: huggingface/safetensors `README.md` and `safetensors/src/tensor.rs`
// (u64 LE header length N, N bytes of UTF-8 JSON, then a contiguous little-endian data block;
// offsets relative to the data start, contiguous, no holes, header ≤ 100 MB).
import { readFully, type ByteSource } from './byte-source.ts';

export const SAFETENSORS_DTYPES = [
  'F64',
  'F32',
  'F16',
  'BF16',
  'I64',
  'I32',
  'I16',
  'I8',
  'U8',
  'U16',
  'U32',
  'U64',
  'BOOL',
  'F8_E4M3',
  'F8_E5M2',
] as const;
export type SafetensorsDtype = (typeof SAFETENSORS_DTYPES)[number];

export const DTYPE_BYTES: Readonly<Record<SafetensorsDtype, number>> = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U8: 1,
  U16: 2,
  U32: 4,
  U64: 8,
  BOOL: 1,
  F8_E4M3: 1,
  F8_E5M2: 1,
};

/** tensor.rs MAX_HEADER_SIZE. */
export const MAX_HEADER_BYTES = 100_000_000;

export function isSafetensorsDtype(x: unknown): x is SafetensorsDtype {
  return typeof x === 'string' && Object.prototype.hasOwnProperty.call(DTYPE_BYTES, x);
}

export type SafetensorsErrorKind =
  | 'truncated'
  | 'header-too-large'
  | 'header-encoding'
  | 'header-json'
  | 'header-entry'
  | 'dtype'
  | 'shape'
  | 'offsets'
  | 'size-mismatch'
  | 'metadata'
  | 'unknown-tensor'
  | 'index'
  | 'missing-shard';

export class SafetensorsError extends Error {
  override readonly name = 'SafetensorsError';
  constructor(
    readonly kind: SafetensorsErrorKind,
    /** The file (or index file) at fault. */
    readonly file: string,
    detail: string,
    /** The tensor at fault, when one is. */
    readonly tensor?: string,
    /** Absolute byte offset in the file, when useful. */
    readonly offset?: number,
  ) {
    super(
      `${file}: ${tensor !== undefined ? `tensor "${tensor}": ` : ''}${detail}${offset !== undefined ? ` (at byte ${offset})` : ''}`,
    );
  }
}

export interface TensorInfo {
  name: string;
  dtype: SafetensorsDtype;
  shape: number[];
  numel: number;
  /** data_offsets as written, relative to the start of the data block. */
  begin: number;
  end: number;
  /** Absolute position of the first byte in the file. */
  fileOffset: number;
  byteLength: number;
}

export interface SafetensorsHeader {
  file: string;
  fileSize: number;
  /** N, the JSON length (without the 8-byte prefix). */
  headerLength: number;
  /** 8 + N: where tensor data starts. */
  dataStart: number;
  /** Tensors in data order (ascending offsets). */
  tensors: TensorInfo[];
  byName: Map<string, TensorInfo>;
  metadata: Record<string, string> | null;
}

export interface RawTensor {
  name: string;
  dtype: SafetensorsDtype;
  shape: number[];
  /** Little-endian bytes, row-major. May be a view into a larger buffer; may be unaligned. */
  bytes: Uint8Array;
}

const MAX_SAFE = Number.MAX_SAFE_INTEGER;

function describe(x: unknown): string {
  if (x === null) return 'null';
  if (Array.isArray(x)) return 'an array';
  if (typeof x === 'string') return `the string ${JSON.stringify(x.length > 40 ? x.slice(0, 40) + '…' : x)}`;
  return typeof x === 'object' ? 'an object' : `${typeof x} ${String(x)}`;
}

function isPlainObject(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}

/** Reads the 8-byte prefix; checks it against the file size and the 100 MB limit. */
export function parseHeaderLength(prefix: Uint8Array, file: string, fileSize: number): number {
  if (fileSize < 8 || prefix.byteLength < 8) {
    throw new SafetensorsError(
      'truncated',
      file,
      `file is ${fileSize} bytes; a safetensors file starts with an 8-byte header length`,
    );
  }
  const n = new DataView(prefix.buffer, prefix.byteOffset, 8).getBigUint64(0, true);
  if (n > BigInt(MAX_HEADER_BYTES)) {
    throw new SafetensorsError(
      'header-too-large',
      file,
      `header length ${n} bytes exceeds the ${MAX_HEADER_BYTES}-byte limit (not a safetensors file, or corrupt)`,
      undefined,
      0,
    );
  }
  const len = Number(n);
  if (8 + len > fileSize) {
    throw new SafetensorsError(
      'truncated',
      file,
      `header length ${len} bytes runs past the end of the ${fileSize}-byte file (truncated download?)`,
      undefined,
      0,
    );
  }
  return len;
}

function parseShape(v: unknown, file: string, name: string): number[] {
  if (!Array.isArray(v))
    throw new SafetensorsError(
      'shape',
      file,
      `shape must be an array of non-negative integers, got ${describe(v)}`,
      name,
    );
  const shape: number[] = [];
  for (let i = 0; i < v.length; i++) {
    const d = v[i];
    if (typeof d !== 'number' || !Number.isSafeInteger(d) || d < 0) {
      throw new SafetensorsError('shape', file, `shape[${i}] must be a non-negative integer, got ${describe(d)}`, name);
    }
    shape.push(d);
  }
  return shape;
}

function parseOffsets(v: unknown, file: string, name: string): [number, number] {
  if (!Array.isArray(v) || v.length !== 2) {
    throw new SafetensorsError('offsets', file, `data_offsets must be [begin, end], got ${describe(v)}`, name);
  }
  const [b, e] = v;
  for (const x of [b, e]) {
    if (typeof x !== 'number' || !Number.isSafeInteger(x) || x < 0) {
      throw new SafetensorsError(
        'offsets',
        file,
        `data_offsets must hold non-negative integers, got ${describe(x)}`,
        name,
      );
    }
  }
  if (e < b) throw new SafetensorsError('offsets', file, `data_offsets [${b}, ${e}] end before they begin`, name);
  return [b, e];
}

function parseMetadata(v: unknown, file: string): Record<string, string> | null {
  if (v === null) return null;
  if (!isPlainObject(v))
    throw new SafetensorsError('metadata', file, `__metadata__ must be an object of strings, got ${describe(v)}`);
  const out: Record<string, string> = {};
  for (const [k, x] of Object.entries(v)) {
    if (typeof x !== 'string')
      throw new SafetensorsError('metadata', file, `__metadata__["${k}"] must be a string, got ${describe(x)}`);
    out[k] = x;
  }
  return out;
}

/**
 * Parses and validates the JSON header (`json` = the N header bytes) of a file of `fileSize`
 * bytes. Pure and synchronous: every failure is a SafetensorsError.
 */
export function parseHeader(json: Uint8Array, file: string, fileSize: number): SafetensorsHeader {
  const headerLength = json.byteLength;
  const dataStart = 8 + headerLength;
  const dataLength = fileSize - dataStart;
  if (dataLength < 0)
    throw new SafetensorsError(
      'truncated',
      file,
      `header of ${headerLength} bytes does not fit in the ${fileSize}-byte file`,
    );

  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(json);
  } catch {
    throw new SafetensorsError(
      'header-encoding',
      file,
      `header (bytes 8..${dataStart}) is not valid UTF-8`,
      undefined,
      8,
    );
  }
  // tensor.rs rejects headers that do not start with '{' (InvalidHeaderStart).
  if (!text.startsWith('{')) {
    throw new SafetensorsError(
      'header-json',
      file,
      `header must start with "{", got ${JSON.stringify(text.slice(0, 12))}`,
      undefined,
      8,
    );
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (e) {
    throw new SafetensorsError('header-json', file, `header is not valid JSON: ${(e as Error).message}`, undefined, 8);
  }
  if (!isPlainObject(parsed))
    throw new SafetensorsError(
      'header-json',
      file,
      `header must be a JSON object, got ${describe(parsed)}`,
      undefined,
      8,
    );

  let metadata: Record<string, string> | null = null;
  const tensors: TensorInfo[] = [];
  for (const [name, entry] of Object.entries(parsed)) {
    if (name === '__metadata__') {
      metadata = parseMetadata(entry, file);
      continue;
    }
    if (!isPlainObject(entry)) {
      throw new SafetensorsError(
        'header-entry',
        file,
        `entry must be an object {dtype, shape, data_offsets}, got ${describe(entry)}`,
        name,
      );
    }
    const dtype = entry.dtype;
    if (!isSafetensorsDtype(dtype)) {
      throw new SafetensorsError(
        'dtype',
        file,
        `unknown dtype ${describe(dtype)}; supported: ${SAFETENSORS_DTYPES.join(', ')}`,
        name,
      );
    }
    const shape = parseShape(entry.shape, file, name);
    const [begin, end] = parseOffsets(entry.data_offsets, file, name);
    let numel = 1;
    for (const d of shape) {
      numel *= d;
      if (numel > MAX_SAFE)
        throw new SafetensorsError('shape', file, `shape [${shape.join(', ')}] has too many elements`, name);
    }
    const byteLength = numel * DTYPE_BYTES[dtype];
    if (byteLength > MAX_SAFE)
      throw new SafetensorsError('shape', file, `shape [${shape.join(', ')}] is too large`, name);
    if (end > dataLength) {
      throw new SafetensorsError(
        'truncated',
        file,
        `data_offsets [${begin}, ${end}] run past the end of the data block (${dataLength} bytes; truncated file?)`,
        name,
        dataStart + begin,
      );
    }
    if (end - begin !== byteLength) {
      throw new SafetensorsError(
        'size-mismatch',
        file,
        `data_offsets [${begin}, ${end}] hold ${end - begin} bytes but ${dtype} [${shape.join(', ')}] needs ${numel} × ${DTYPE_BYTES[dtype]} = ${byteLength}`,
        name,
        dataStart + begin,
      );
    }
    tensors.push({ name, dtype, shape, numel, begin, end, fileOffset: dataStart + begin, byteLength });
  }

  tensors.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let cursor = 0;
  let prev: TensorInfo | null = null;
  for (const t of tensors) {
    if (t.begin < cursor) {
      throw new SafetensorsError(
        'offsets',
        file,
        `data_offsets [${t.begin}, ${t.end}] overlap tensor "${prev!.name}" [${prev!.begin}, ${prev!.end}]`,
        t.name,
        dataStart + t.begin,
      );
    }
    if (t.begin > cursor) {
      const after = prev
        ? `after tensor "${prev.name}" (ends at ${prev.end})`
        : 'at the start of the data block (offsets must start at 0)';
      throw new SafetensorsError(
        'offsets',
        file,
        `data_offsets [${t.begin}, ${t.end}] leave a hole of ${t.begin - cursor} bytes ${after}`,
        t.name,
        dataStart + cursor,
      );
    }
    cursor = t.end;
    prev = t;
  }
  if (cursor !== dataLength) {
    throw new SafetensorsError(
      'offsets',
      file,
      `tensors cover ${cursor} bytes of data but the file holds ${dataLength} bytes after the header (${dataLength - cursor} trailing bytes; corrupt or wrongly concatenated file)`,
      undefined,
      dataStart + cursor,
    );
  }
  const byName = new Map<string, TensorInfo>();
  for (const t of tensors) byName.set(t.name, t);
  return { file, fileSize, headerLength, dataStart, tensors, byName, metadata };
}

/** Reads and validates the header of a source: 8 bytes, then N bytes; nothing else. */
export async function readHeader(src: ByteSource): Promise<SafetensorsHeader> {
  const prefix = await readFully(src, 0, Math.min(8, src.size));
  const n = parseHeaderLength(prefix, src.name, src.size);
  const json = await readFully(src, 8, n);
  if (json.byteLength !== n)
    throw new SafetensorsError(
      'truncated',
      src.name,
      `could read only ${json.byteLength} of the ${n} header bytes`,
      undefined,
      8,
    );
  return parseHeader(json, src.name, src.size);
}

/** A validated safetensors file; tensors are read on demand by byte range. */
export class SafetensorsFile {
  private constructor(
    readonly source: ByteSource,
    readonly header: SafetensorsHeader,
  ) {}

  static async open(src: ByteSource): Promise<SafetensorsFile> {
    return new SafetensorsFile(src, await readHeader(src));
  }

  get file(): string {
    return this.header.file;
  }
  get metadata(): Record<string, string> | null {
    return this.header.metadata;
  }
  /** Tensor names in data order. */
  names(): string[] {
    return this.header.tensors.map((t) => t.name);
  }
  has(name: string): boolean {
    return this.header.byName.has(name);
  }
  info(name: string): TensorInfo {
    const t = this.header.byName.get(name);
    if (!t)
      throw new SafetensorsError(
        'unknown-tensor',
        this.file,
        `no such tensor in this file (${this.header.tensors.length} tensors)`,
        name,
      );
    return t;
  }

  /** Reads one tensor's bytes (byteLength bytes, one read). */
  async readTensor(name: string): Promise<RawTensor> {
    const t = this.info(name);
    const bytes = await readFully(this.source, t.fileOffset, t.byteLength);
    if (bytes.byteLength !== t.byteLength) {
      throw new SafetensorsError(
        'truncated',
        this.file,
        `could read only ${bytes.byteLength} of ${t.byteLength} bytes (file changed or truncated)`,
        name,
        t.fileOffset + bytes.byteLength,
      );
    }
    return { name: t.name, dtype: t.dtype, shape: t.shape.slice(), bytes };
  }

  /** Streams one tensor in pieces of at most `chunkBytes` (rounded down to whole elements). */
  async *readTensorChunks(name: string, chunkBytes = 64 << 20): AsyncGenerator<Uint8Array> {
    const t = this.info(name);
    const elem = DTYPE_BYTES[t.dtype];
    const step = Math.max(elem, Math.floor(chunkBytes / elem) * elem);
    for (let at = 0; at < t.byteLength; at += step) {
      const len = Math.min(step, t.byteLength - at);
      const bytes = await readFully(this.source, t.fileOffset + at, len);
      if (bytes.byteLength !== len) {
        throw new SafetensorsError(
          'truncated',
          this.file,
          `could read only ${at + bytes.byteLength} of ${t.byteLength} bytes`,
          name,
          t.fileOffset + at + bytes.byteLength,
        );
      }
      yield bytes;
    }
  }

  /** Every tensor in data order, one read each. */
  async *tensors(): AsyncGenerator<RawTensor> {
    for (const t of this.header.tensors) yield await this.readTensor(t.name);
  }

  async close(): Promise<void> {
    await this.source.close?.();
  }
}

export type TypedTensorData =
  | Float64Array
  | Float32Array
  | Uint16Array
  | BigInt64Array
  | BigUint64Array
  | Int32Array
  | Uint32Array
  | Int16Array
  | Int8Array
  | Uint8Array;

/**
 * The tensor's elements as a typed array (copied only when the bytes are unaligned).
 * F16/BF16 come back as raw Uint16Array bits; F8 and BOOL as Uint8Array bytes.
 */
export function typedData(t: RawTensor): TypedTensorData {
  const size = DTYPE_BYTES[t.dtype];
  const aligned = t.bytes.byteOffset % size === 0 ? t.bytes : new Uint8Array(t.bytes); // not slice(): a view on Node Buffers
  const { buffer, byteOffset } = aligned;
  const n = aligned.byteLength / size;
  switch (t.dtype) {
    case 'F64':
      return new Float64Array(buffer, byteOffset, n);
    case 'F32':
      return new Float32Array(buffer, byteOffset, n);
    case 'F16':
    case 'BF16':
    case 'U16':
      return new Uint16Array(buffer, byteOffset, n);
    case 'I64':
      return new BigInt64Array(buffer, byteOffset, n);
    case 'U64':
      return new BigUint64Array(buffer, byteOffset, n);
    case 'I32':
      return new Int32Array(buffer, byteOffset, n);
    case 'U32':
      return new Uint32Array(buffer, byteOffset, n);
    case 'I16':
      return new Int16Array(buffer, byteOffset, n);
    case 'I8':
      return new Int8Array(buffer, byteOffset, n);
    default:
      return new Uint8Array(buffer, byteOffset, n);
  }
}
