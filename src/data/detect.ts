// Format auto-detection from a sample of rows, with the reason spelled out for the report.
import { columnSpec, type ColumnSpec } from './convert.ts';
import type { DatasetFormat, DatasetInfoEntry, FileKind } from './types.ts';

export interface Detection {
  format: DatasetFormat;
  because: string;
  spec?: ColumnSpec;
  unsupported?: string;
}

const isObj = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);

function msgList(v: unknown): Record<string, unknown>[] | null {
  if (typeof v === 'string' && v.trim().startsWith('[')) { try { v = JSON.parse(v); } catch { return null; } }
  return Array.isArray(v) && v.length > 0 && v.every(isObj) ? (v as Record<string, unknown>[]) : null;
}

const pct = (n: number, d: number) => `${d ? Math.round((100 * n) / d) : 0} %`;

export const RANKING_UNSUPPORTED =
  'ranking (preference) data with chosen/rejected answers is for DPO/ORPO/RM training, which Tabtune does not do: it cannot be used for SFT';

export function detectFormat(sample: unknown[], kind: FileKind, entry?: DatasetInfoEntry): Detection {
  if (entry) {
    if (entry.ranking) return { format: 'ranking', because: "dataset_info.json: \"ranking\": true", unsupported: RANKING_UNSUPPORTED };
    const f = entry.formatting ?? 'alpaca';
    const spec = columnSpec(f, entry);
    // LLaMA-Factory pre-training data: alpaca formatting whose only column is prompt → "text".
    if (f === 'alpaca' && entry.columns && Object.keys(entry.columns).length === 1 && entry.columns.prompt) {
      return { format: 'text', because: `dataset_info.json: columns {prompt: '${entry.columns.prompt}'} only (pre-training text)`, spec: columnSpec('text', entry) };
    }
    return { format: f, because: `dataset_info.json: "formatting": "${f}"${entry.columns ? ' with custom columns' : ''}${entry.tags ? ' and tags' : ''}`, spec };
  }
  if (kind === 'txt') return { format: 'text', because: 'plain text file: one row per line', spec: columnSpec('text') };
  const objs = sample.filter(isObj);
  const n = sample.length;
  if (n === 0) return { format: 'unknown', because: 'the file has no readable rows' };
  const count = (pred: (o: Record<string, unknown>) => boolean) => objs.filter(pred).length;
  const shareFromValue = count((o) => !!msgList(o.conversations)?.every((m) => 'from' in m && 'value' in m));
  const shareRoleContent = count((o) => !!msgList(o.messages)?.every((m) => 'role' in m));
  const shareMsgFromValue = count((o) => !!msgList(o.messages)?.every((m) => 'from' in m && 'value' in m));
  const convRoleContent = count((o) => !!msgList(o.conversations)?.every((m) => 'role' in m && 'content' in m));
  const ranking = count((o) => 'chosen' in o && 'rejected' in o);
  const alpaca = count((o) => 'output' in o && ('instruction' in o || 'input' in o));
  const alpacaLoose = count((o) => 'instruction' in o || 'output' in o);
  const text = count((o) => typeof o.text === 'string');
  const candidates: [number, Detection][] = [
    [ranking, { format: 'ranking', because: `keys 'chosen' and 'rejected' in ${pct(ranking, n)} of rows`, unsupported: RANKING_UNSUPPORTED }],
    [shareFromValue, { format: 'sharegpt', because: `key 'conversations' with from/value in ${pct(shareFromValue, n)} of rows`, spec: columnSpec('sharegpt') }],
    [shareRoleContent, { format: 'openai', because: `key 'messages' with role/content in ${pct(shareRoleContent, n)} of rows`, spec: columnSpec('openai') }],
    [shareMsgFromValue, { format: 'sharegpt', because: `key 'messages' with from/value in ${pct(shareMsgFromValue, n)} of rows`, spec: columnSpec('sharegpt', { columns: { messages: 'messages' } }) }],
    [convRoleContent, { format: 'openai', because: `key 'conversations' with role/content in ${pct(convRoleContent, n)} of rows`, spec: columnSpec('openai', { columns: { messages: 'conversations' } }) }],
    [alpaca, { format: 'alpaca', because: `keys 'instruction'/'input' and 'output' in ${pct(alpaca, n)} of rows`, spec: columnSpec('alpaca') }],
    [alpacaLoose, { format: 'alpaca', because: `key 'instruction' or 'output' in ${pct(alpacaLoose, n)} of rows`, spec: columnSpec('alpaca') }],
    [text, { format: 'text', because: `key 'text' in ${pct(text, n)} of rows (pre-training text)`, spec: columnSpec('text') }],
  ];
  let best: [number, Detection] | null = null;
  for (const c of candidates) if (c[0] > 0 && (!best || c[0] > best[0])) best = c;
  if (!best) {
    const keys = new Set<string>();
    for (const o of objs.slice(0, 50)) for (const k of Object.keys(o)) keys.add(k);
    const what = objs.length ? `found keys ${[...keys].slice(0, 12).map((k) => `'${k}'`).join(', ') || '(none)'}` : `rows are ${typeof sample[0] === 'string' ? 'strings' : 'not objects'}`;
    return {
      format: 'unknown',
      because: `no known format: ${what}; expected alpaca (instruction/input/output), sharegpt (conversations of from/value), OpenAI (messages of role/content) or text, or a dataset_info.json entry with columns`,
    };
  }
  best[1].because += ` (first ${n} rows)`;
  return best[1];
}
