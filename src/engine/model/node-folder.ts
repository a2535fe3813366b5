// Node-only: a model folder on disk as a WeightSource (CLI, tests, benchmarks). Kept apart so
// the browser bundle never imports node:fs.
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { nodeFileSource } from '../../io/node-fs.ts';
import { openCheckpoint } from '../../io/safetensors-index.ts';
import { parseModelConfig } from './config.ts';
import { storeWeightSource, type ModelFiles } from './weights.ts';

export async function openModelFolder(dir: string): Promise<ModelFiles> {
  const fileNames = await readdir(dir);
  if (!fileNames.includes('config.json'))
    throw new Error(`${dir}: no config.json in this folder (files: ${fileNames.join(', ') || 'none'})`);
  const configText = await readFile(join(dir, 'config.json'), 'utf8');
  const config = parseModelConfig(configText, join(dir, 'config.json'));
  const store = await openCheckpoint(async (name) =>
    fileNames.includes(name) ? nodeFileSource(join(dir, name)) : null,
  );
  return { config, source: storeWeightSource(store), configText, fileNames };
}
