// The GGUF v3 container (llama.cpp gguf-py/gguf/constants.py + ggml/include/gguf.h): "GGUF",
// version 3, tensor count and KV count (u64); typed key/values; tensor infos (name, dims innermost
// first, ggml type, data offset); zero padding to `general.alignment`; then each tensor's data,
// each starting at a multiple of the alignment. Little-endian throughout. The header is built in
// memory (a vocabulary is a few MB at most); tensor data streams through, one tensor at a time.

export const GGUF_MAGIC = 0x46554747; // "GGUF" read as a little-endian u32
export const GGUF_VERSION = 3;
export const GGUF_DEFAULT_ALIGNMENT = 32;

/** gguf_type (GGUFValueType). */
export const GgufValueType = {
  UINT8: 0,
  INT8: 1,
  UINT16: 2,
  INT16: 3,
  UINT32: 4,
  INT32: 5,
  FLOAT32: 6,
  BOOL: 7,
  STRING: 8,
  ARRAY: 9,
  UINT64: 10,
  INT64: 11,
  FLOAT64: 12,
} as const;
export type GgufScalarKind = Exclude<keyof typeof GgufValueType, 'ARRAY'>;

/** ggml_type values of the tensor types we write. */
export const GgmlType = { F32: 0, F16: 1, Q5_0: 6, Q8_0: 8, Q4_K: 12, Q6_K: 14, BF16: 30 } as const;
export type GgmlTypeName = keyof typeof GgmlType;

/** Elements per block and bytes per block (ggml type traits). */
export const GGML_BLOCK: Record<GgmlTypeName, { elements: number; bytes: number }> = {
  F32: { elements: 1, bytes: 4 },
  F16: { elements: 1, bytes: 2 },
  BF16: { elements: 1, bytes: 2 },
  Q5_0: { elements: 32, bytes: 22 },
  Q8_0: { elements: 32, bytes: 34 },
  Q4_K: { elements: 256, bytes: 144 },
  Q6_K: { elements: 256, bytes: 210 },
};

export type GgufScalar = { kind: GgufScalarKind; value: number | bigint | boolean | string };
export type GgufValue = GgufScalar | { kind: 'ARRAY'; of: GgufScalarKind; values: ArrayLike<unknown> };
export interface GgufKv {
  key: string;
  value: GgufValue;
}

// Small constructors so metadata reads like the converter's add_* calls.
export const gguf = {
  u8: (value: number): GgufScalar => ({ kind: 'UINT8', value }),
  i8: (value: number): GgufScalar => ({ kind: 'INT8', value }),
  u16: (value: number): GgufScalar => ({ kind: 'UINT16', value }),
  i16: (value: number): GgufScalar => ({ kind: 'INT16', value }),
  u32: (value: number): GgufScalar => ({ kind: 'UINT32', value }),
  i32: (value: number): GgufScalar => ({ kind: 'INT32', value }),
  u64: (value: number | bigint): GgufScalar => ({ kind: 'UINT64', value }),
  i64: (value: number | bigint): GgufScalar => ({ kind: 'INT64', value }),
  f32: (value: number): GgufScalar => ({ kind: 'FLOAT32', value }),
  f64: (value: number): GgufScalar => ({ kind: 'FLOAT64', value }),
  bool: (value: boolean): GgufScalar => ({ kind: 'BOOL', value }),
  str: (value: string): GgufScalar => ({ kind: 'STRING', value }),
  arr: (of: GgufScalarKind, values: ArrayLike<unknown>): GgufValue => ({ kind: 'ARRAY', of, values }),
};

export interface GgufTensor {
  name: string;
  /** Dimensions innermost first (ne[0] is the row length), as GGUF stores them. */
  dims: readonly number[];
  type: GgmlTypeName;
  /** The tensor's bytes in order; their total must equal ggufTensorBytes(dims, type). */
  data: () => AsyncIterable<Uint8Array>;
}

export class GgufError extends Error {
  override readonly name = 'GgufError';
}

export function ggufTensorBytes(dims: readonly number[], type: GgmlTypeName): number {
  const n = dims.reduce((a, b) => a * b, 1);
  const b = GGML_BLOCK[type];
  if (dims[0] % b.elements !== 0)
    throw new GgufError(`a ${type} tensor's rows must hold a multiple of ${b.elements} elements, got ${dims[0]}`);
  return (n / b.elements) * b.bytes;
}

const alignUp = (n: number, a: number) => Math.ceil(n / a) * a;

/** A growable little-endian byte buffer. */
class Bytes {
  private buf = new Uint8Array(1 << 16);
  private view = new DataView(this.buf.buffer);
  length = 0;
  private room(n: number) {
    if (this.length + n <= this.buf.length) return;
    let cap = this.buf.length * 2;
    while (cap < this.length + n) cap *= 2;
    const next = new Uint8Array(cap);
    next.set(this.buf.subarray(0, this.length));
    this.buf = next;
    this.view = new DataView(next.buffer);
  }
  u8(x: number) {
    this.room(1);
    this.view.setUint8(this.length, x);
    this.length += 1;
  }
  i8(x: number) {
    this.room(1);
    this.view.setInt8(this.length, x);
    this.length += 1;
  }
  u16(x: number) {
    this.room(2);
    this.view.setUint16(this.length, x, true);
    this.length += 2;
  }
  i16(x: number) {
    this.room(2);
    this.view.setInt16(this.length, x, true);
    this.length += 2;
  }
  u32(x: number) {
    this.room(4);
    this.view.setUint32(this.length, x, true);
    this.length += 4;
  }
  i32(x: number) {
    this.room(4);
    this.view.setInt32(this.length, x, true);
    this.length += 4;
  }
  u64(x: number | bigint) {
    this.room(8);
    this.view.setBigUint64(this.length, BigInt(x), true);
    this.length += 8;
  }
  i64(x: number | bigint) {
    this.room(8);
    this.view.setBigInt64(this.length, BigInt(x), true);
    this.length += 8;
  }
  f32(x: number) {
    this.room(4);
    this.view.setFloat32(this.length, x, true);
    this.length += 4;
  }
  f64(x: number) {
    this.room(8);
    this.view.setFloat64(this.length, x, true);
    this.length += 8;
  }
  raw(b: Uint8Array) {
    this.room(b.length);
    this.buf.set(b, this.length);
    this.length += b.length;
  }
  /** gguf_string: u64 byte length + UTF-8 bytes (no terminator). */
  str(s: string) {
    const b = utf8.encode(s);
    this.u64(b.length);
    this.raw(b);
  }
  pad(to: number) {
    const n = alignUp(this.length, to) - this.length;
    this.room(n);
    this.buf.fill(0, this.length, this.length + n);
    this.length += n;
  }
  bytes(): Uint8Array {
    return this.buf.slice(0, this.length);
  }
}

const utf8 = new TextEncoder();

function checkInt(key: string, kind: GgufScalarKind, v: unknown, lo: number, hi: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < lo || v > hi)
    throw new GgufError(`${key}: ${kind} value out of range: ${String(v)}`);
  return v;
}

function writeScalar(out: Bytes, key: string, kind: GgufScalarKind, v: unknown) {
  switch (kind) {
    case 'UINT8':
      return out.u8(checkInt(key, kind, v, 0, 0xff));
    case 'INT8':
      return out.i8(checkInt(key, kind, v, -0x80, 0x7f));
    case 'UINT16':
      return out.u16(checkInt(key, kind, v, 0, 0xffff));
    case 'INT16':
      return out.i16(checkInt(key, kind, v, -0x8000, 0x7fff));
    case 'UINT32':
      return out.u32(checkInt(key, kind, v, 0, 0xffffffff));
    case 'INT32':
      return out.i32(checkInt(key, kind, v, -0x80000000, 0x7fffffff));
    case 'UINT64':
    case 'INT64':
      if (typeof v !== 'bigint' && (typeof v !== 'number' || !Number.isSafeInteger(v)))
        throw new GgufError(`${key}: ${kind} value must be an integer, got ${String(v)}`);
      return kind === 'UINT64' ? out.u64(v) : out.i64(v);
    case 'FLOAT32':
    case 'FLOAT64':
      if (typeof v !== 'number') throw new GgufError(`${key}: ${kind} value must be a number, got ${String(v)}`);
      return kind === 'FLOAT32' ? out.f32(v) : out.f64(v);
    case 'BOOL':
      if (typeof v !== 'boolean') throw new GgufError(`${key}: BOOL value must be a boolean, got ${String(v)}`);
      return out.u8(v ? 1 : 0);
    case 'STRING':
      if (typeof v !== 'string') throw new GgufError(`${key}: STRING value must be a string`);
      return out.str(v);
  }
}

export interface GgufLayout {
  /** Header + KV + tensor infos + padding: the file's first bytes. */
  header: Uint8Array;
  /** Offset of each tensor's data relative to the start of the data section. */
  offsets: number[];
  /** Bytes of each tensor's data (without padding). */
  sizes: number[];
  /** Total file size (the last tensor padded to the alignment too). */
  fileBytes: number;
  alignment: number;
}

/** Lays out a GGUF file: the header bytes and where every tensor's data goes. */
export function ggufLayout(kv: readonly GgufKv[], tensors: readonly Omit<GgufTensor, 'data'>[]): GgufLayout {
  const keys = new Set<string>();
  let alignment = GGUF_DEFAULT_ALIGNMENT;
  for (const { key, value } of kv) {
    if (keys.has(key)) throw new GgufError(`duplicate GGUF key ${key}`);
    keys.add(key);
    if (key === 'general.alignment') {
      if (value.kind !== 'UINT32' || typeof value.value !== 'number' || value.value <= 0 || value.value % 8 !== 0)
        throw new GgufError('general.alignment must be a UINT32 multiple of 8');
      alignment = value.value;
    }
  }
  const names = new Set<string>();
  const out = new Bytes();
  out.u32(GGUF_MAGIC);
  out.u32(GGUF_VERSION);
  out.u64(tensors.length);
  out.u64(kv.length);
  for (const { key, value } of kv) {
    out.str(key);
    out.u32(GgufValueType[value.kind]);
    if (value.kind === 'ARRAY') {
      out.u32(GgufValueType[value.of]);
      out.u64(value.values.length);
      for (let i = 0; i < value.values.length; i++) writeScalar(out, key, value.of, value.values[i]);
    } else writeScalar(out, key, value.kind, value.value);
  }
  const offsets: number[] = [];
  const sizes: number[] = [];
  let at = 0;
  for (const t of tensors) {
    if (names.has(t.name)) throw new GgufError(`duplicate tensor name ${t.name}`);
    names.add(t.name);
    if (utf8.encode(t.name).length >= 64) throw new GgufError(`tensor name ${t.name} is 64 bytes or longer`);
    if (t.dims.length < 1 || t.dims.length > 4) throw new GgufError(`${t.name}: GGUF tensors have 1 to 4 dimensions`);
    const size = ggufTensorBytes(t.dims, t.type);
    out.str(t.name);
    out.u32(t.dims.length);
    for (const d of t.dims) out.u64(d);
    out.u32(GgmlType[t.type]);
    out.u64(at);
    offsets.push(at);
    sizes.push(size);
    at = alignUp(at + size, alignment);
  }
  out.pad(alignment);
  const header = out.bytes();
  // `at` is already past the last tensor's padding (the converter pads the last tensor too).
  return { header, offsets, sizes, fileBytes: header.length + at, alignment };
}

/**
 * The whole file as a stream: the header, then each tensor's data (checked against its declared
 * size), each padded with zeros to the alignment. `onTensor` fires as each tensor's data starts.
 */
export async function* ggufChunks(
  kv: readonly GgufKv[],
  tensors: readonly GgufTensor[],
  onTensor?: (t: GgufTensor, index: number) => void,
): AsyncGenerator<Uint8Array> {
  const layout = ggufLayout(kv, tensors);
  yield layout.header;
  let written = 0; // within the data section
  for (let i = 0; i < tensors.length; i++) {
    const t = tensors[i];
    if (written < layout.offsets[i]) {
      yield new Uint8Array(layout.offsets[i] - written);
      written = layout.offsets[i];
    }
    onTensor?.(t, i);
    let n = 0;
    for await (const chunk of t.data()) {
      n += chunk.byteLength;
      if (n > layout.sizes[i]) throw new GgufError(`${t.name}: more data than its ${layout.sizes[i]} bytes`);
      if (chunk.byteLength) yield chunk;
    }
    if (n !== layout.sizes[i]) throw new GgufError(`${t.name}: ${n} bytes of data, expected ${layout.sizes[i]}`);
    written += n;
  }
  const end = layout.fileBytes - layout.header.length;
  if (written < end) yield new Uint8Array(end - written);
}
