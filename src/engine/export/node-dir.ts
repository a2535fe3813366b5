// Node-only: export files into a folder on disk (CLI, tests). The browser writes to OPFS / downloads.
import { existsSync } from 'node:fs';
import { mkdir, open, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { nodeFileSource } from '../../io/node-fs.ts';
import { openCheckpoint, type TensorStore } from '../../io/safetensors-index.ts';
import type { ExportWrite } from './merged.ts';

export function nodeDirWriter(dir: string): ExportWrite {
  return async (name, data) => {
    if (name.includes('/') || name.includes('\\'))
      throw new Error(`export file name "${name}" must be a plain file name`);
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

/** A PEFT adapter folder on disk (adapter_config.json + adapter_model.safetensors). Close the store when done. */
export async function openAdapterFolder(dir: string): Promise<{ configText: string; store: TensorStore }> {
  const cfgPath = join(dir, 'adapter_config.json');
  if (!existsSync(cfgPath)) throw new Error(`${dir}: no adapter_config.json (is this a PEFT LoRA adapter folder?)`);
  const configText = await readFile(cfgPath, 'utf8');
  const store = await openCheckpoint(
    async (n) => (existsSync(join(dir, n)) ? nodeFileSource(join(dir, n)) : null),
    'adapter_model',
  );
  return { configText, store };
}
