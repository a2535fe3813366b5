// LLaMA-Factory dataset_info.json: { name: { file_name, formatting, ranking, columns, tags, … } }
// (data/README.md and src/llamafactory/data/parser.py in hiyouga/LLaMA-Factory).
import { coded, type DataMessage, type DataMessageCode, type DataMessageParams } from './messages.ts';
import type { DatasetInfoEntry } from './types.ts';

/** A dataset_info.json entry that cannot be read; `reason` is the English text of `code`. */
export interface DatasetInfoError extends DataMessage {
  name: string;
  reason: string;
}

export interface DatasetInfo {
  entries: Record<string, DatasetInfoEntry>;
  /** Problems with entries; such entries are left out of `entries` and named here. */
  errors: DatasetInfoError[];
}

const COLUMN_KEYS = new Set([
  'prompt',
  'query',
  'response',
  'history',
  'messages',
  'system',
  'tools',
  'images',
  'videos',
  'audios',
  'chosen',
  'rejected',
  'kto_tag',
]);
const TAG_KEYS = new Set([
  'role_tag',
  'content_tag',
  'user_tag',
  'assistant_tag',
  'observation_tag',
  'function_tag',
  'system_tag',
]);

export function parseDatasetInfo(text: string, file = 'dataset_info.json'): DatasetInfo {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new Error(`${file}: bad JSON: ${(e as Error).message}`);
  }
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw))
    throw new Error(`${file}: expected an object of dataset entries`);
  const entries: Record<string, DatasetInfoEntry> = {};
  const errors: DatasetInfo['errors'] = [];
  for (const [name, e] of Object.entries(raw as Record<string, unknown>)) {
    const bad = (code: DataMessageCode, params?: DataMessageParams) => errors.push({ name, ...coded(code, params) });
    if (e === null || typeof e !== 'object' || Array.isArray(e)) {
      bad('info-not-object');
      continue;
    }
    const ent = e as Record<string, unknown>;
    if (typeof ent.file_name !== 'string') {
      bad(ent.hf_hub_url || ent.ms_hub_url || ent.script_url ? 'info-hub-dataset' : 'info-missing-file-name');
      continue;
    }
    if (ent.formatting !== undefined && !['alpaca', 'sharegpt', 'openai'].includes(ent.formatting as string)) {
      bad('info-unknown-formatting', { formatting: String(ent.formatting) });
      continue;
    }
    const cols = ent.columns;
    if (
      cols !== undefined &&
      (typeof cols !== 'object' ||
        cols === null ||
        Object.entries(cols).some(([k, v]) => !COLUMN_KEYS.has(k) || typeof v !== 'string'))
    ) {
      bad('info-bad-columns', { keys: [...COLUMN_KEYS].join('/') });
      continue;
    }
    const tags = ent.tags;
    if (
      tags !== undefined &&
      (typeof tags !== 'object' ||
        tags === null ||
        Object.entries(tags).some(([k, v]) => !TAG_KEYS.has(k) || typeof v !== 'string'))
    ) {
      bad('info-bad-tags', { keys: [...TAG_KEYS].join('/') });
      continue;
    }
    entries[name] = ent as DatasetInfoEntry;
  }
  return { entries, errors };
}
