// Random-access byte sources, so readers fetch only the ranges they need and a multi-GB
// checkpoint never sits in one JS buffer. Node file handles live in node-fs.ts (kept apart so
// the browser bundle never imports node:fs).

export interface ByteSource {
  /** Shown in every error message (file name or path). */
  readonly name: string;
  /** Total size in bytes. */
  readonly size: number;
  /** Reads [offset, offset+length). May return fewer bytes only at the end of the source. */
  read(offset: number, length: number): Promise<Uint8Array>;
  close?(): Promise<void>;
}

/** An in-memory buffer (tests, small downloads). Reads are zero-copy views. */
export function bytesSource(bytes: Uint8Array, name = '<memory>'): ByteSource {
  return {
    name,
    size: bytes.byteLength,
    async read(offset, length) {
      const start = Math.min(Math.max(0, offset), bytes.byteLength);
      return bytes.subarray(start, Math.min(bytes.byteLength, start + Math.max(0, length)));
    },
  };
}

/** A browser File or Blob: Blob.slice + arrayBuffer reads only the requested range. */
export function blobSource(blob: Blob, name?: string): ByteSource {
  const label = name ?? ((blob as File).name || '<blob>');
  return {
    name: label,
    size: blob.size,
    async read(offset, length) {
      const start = Math.min(Math.max(0, offset), blob.size);
      const end = Math.min(blob.size, start + Math.max(0, length));
      return new Uint8Array(await blob.slice(start, end).arrayBuffer());
    },
  };
}

/** Reads exactly `length` bytes or returns what the source had (callers check the length). */
export async function readFully(src: ByteSource, offset: number, length: number): Promise<Uint8Array> {
  const first = await src.read(offset, length);
  if (first.byteLength >= length) return first.byteLength === length ? first : first.subarray(0, length);
  // Some sources (fs handles) may return short reads before the end: keep reading.
  const out = new Uint8Array(length);
  out.set(first, 0);
  let got = first.byteLength;
  while (got < length) {
    const more = await src.read(offset + got, length - got);
    if (more.byteLength === 0) return out.subarray(0, got);
    out.set(more, got);
    got += more.byteLength;
  }
  return out;
}

/** The whole source decoded as UTF-8 text (for small JSON files such as index files). */
export async function readText(src: ByteSource): Promise<string> {
  const bytes = await readFully(src, 0, src.size);
  return new TextDecoder('utf-8').decode(bytes);
}
