// Node-only ByteSource / ByteSink over file handles (positional reads, appending writes).
// Imported by the CLI and tests only; the browser uses blobSource / OPFS.
import { open, type FileHandle } from 'node:fs/promises';
import type { ByteSource } from './byte-source.ts';
import type { ByteSink } from './safetensors-writer.ts';

export async function nodeFileSource(path: string): Promise<ByteSource> {
  const fh: FileHandle = await open(path, 'r');
  const { size } = await fh.stat();
  return {
    name: path,
    size,
    async read(offset, length) {
      const start = Math.min(Math.max(0, offset), size);
      const n = Math.min(size - start, Math.max(0, length));
      const buf = new Uint8Array(n);
      let got = 0;
      while (got < n) {
        const { bytesRead } = await fh.read(buf, got, n - got, start + got);
        if (bytesRead === 0) break;
        got += bytesRead;
      }
      return got === n ? buf : buf.subarray(0, got);
    },
    async close() {
      await fh.close();
    },
  };
}

export async function nodeFileSink(path: string): Promise<ByteSink> {
  const fh: FileHandle = await open(path, 'w');
  return {
    async write(chunk) {
      let done = 0;
      while (done < chunk.byteLength) {
        const { bytesWritten } = await fh.write(chunk, done, chunk.byteLength - done);
        done += bytesWritten;
      }
    },
    async close() {
      await fh.close();
    },
  };
}
