// Byte sources the parsers accept: a string, bytes, a Blob/File (browser, Worker, Node ≥ 20), a WHATWG
// ReadableStream or any AsyncIterable of bytes (Node streams are async iterable).

export type ByteSource = string | Uint8Array | Blob | ReadableStream<Uint8Array> | AsyncIterable<Uint8Array>;

export interface OpenedSource {
  chunks: AsyncIterable<Uint8Array>;
  totalBytes?: number;
}

// Big strings and byte arrays are fed in slices so progress is reported and the event loop breathes.
const SLICE = 1 << 20;

export function openSource(src: ByteSource): OpenedSource {
  if (typeof src === 'string') {
    const bytes = new TextEncoder().encode(src);
    return { chunks: sliced(bytes), totalBytes: bytes.byteLength };
  }
  if (src instanceof Uint8Array) return { chunks: sliced(src), totalBytes: src.byteLength };
  if (typeof Blob !== 'undefined' && src instanceof Blob) {
    return { chunks: streamChunks(src.stream() as ReadableStream<Uint8Array>), totalBytes: src.size };
  }
  if (typeof (src as ReadableStream<Uint8Array>).getReader === 'function') {
    return { chunks: streamChunks(src as ReadableStream<Uint8Array>) };
  }
  if (typeof (src as AsyncIterable<Uint8Array>)[Symbol.asyncIterator] === 'function') {
    return { chunks: toBytes(src as AsyncIterable<Uint8Array>) };
  }
  throw new TypeError(
    'unsupported data source: expected a string, Uint8Array, Blob, ReadableStream or async iterable of bytes',
  );
}

async function* sliced(bytes: Uint8Array): AsyncGenerator<Uint8Array> {
  for (let i = 0; i < bytes.byteLength; i += SLICE) yield bytes.subarray(i, Math.min(bytes.byteLength, i + SLICE));
}

async function* streamChunks(stream: ReadableStream<Uint8Array>): AsyncGenerator<Uint8Array> {
  const reader = stream.getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return;
      if (value && value.byteLength) yield value;
    }
  } finally {
    reader.releaseLock();
  }
}

// Node streams yield Buffers (a Uint8Array subclass) or, with an encoding set, strings.
async function* toBytes(it: AsyncIterable<Uint8Array | string>): AsyncGenerator<Uint8Array> {
  const enc = new TextEncoder();
  for await (const c of it) {
    const bytes = typeof c === 'string' ? enc.encode(c) : c;
    if (bytes.byteLength) yield bytes;
  }
}

/** Reads a whole source as text (for small files such as dataset_info.json). */
export async function readText(src: ByteSource): Promise<string> {
  if (typeof src === 'string') return src;
  const dec = new TextDecoder();
  let out = '';
  for await (const c of openSource(src).chunks) out += dec.decode(c, { stream: true });
  return out + dec.decode();
}
