// Node-only: export files into a folder on disk (CLI, tests). The browser writes to OPFS / downloads.
import { mkdir, open } from 'node:fs/promises';
import { join } from 'node:path';
import type { ExportWrite } from './merged.ts';

export function nodeDirWriter(dir: string): ExportWrite {
  return async (name, data) => {
    if (name.includes('/') || name.includes('\\')) throw new Error(`export file name "${name}" must be a plain file name`);
    await mkdir(dir, { recursive: true });
    const fh = await open(join(dir, name), 'w');
    try {
      const chunks: AsyncIterable<Uint8Array> | Uint8Array[] = data instanceof Uint8Array ? [data] : data;
      for await (const chunk of chunks) {
        let done = 0;
        while (done < chunk.byteLength) done += (await fh.write(chunk, done, chunk.byteLength - done)).bytesWritten;
      }
    } finally {
      await fh.close();
    }
  };
}
