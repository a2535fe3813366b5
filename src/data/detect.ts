// Format auto-detection from a sample of rows, with the reason spelled out for the report.
import { columnSpec, type ColumnSpec } from './convert.ts';
import {
  dataMessage,
  englishText,
  type DataMessage,
  type DataMessageCode,
  type DataMessageParams,
} from './messages.ts';
import type { DatasetFormat, DatasetInfoEntry, FileKind } from './types.ts';

export interface Detection {
  format: DatasetFormat;
  because: string;
  becauseCode: DataMessage;
  spec?: ColumnSpec;
  unsupported?: string;
  unsupportedCode?: DataMessage;
}

// `because` and `becauseCode` from one code.
function why(code: DataMessageCode, params?: DataMessageParams): { because: string; becauseCode: DataMessage } {
  const m = dataMessage(code, params);
  return { because: englishText(m), becauseCode: m };
}

const isObj = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);

function msgList(v: unknown): Record<string, unknown>[] | null {
  if (typeof v === 'string' && v.trim().startsWith('[')) {
    try {
      v = JSON.parse(v);
    } catch {
      return null;
    }
  }
  return Array.isArray(v) && v.length > 0 && v.every(isObj) ? (v as Record<string, unknown>[]) : null;
}

const pct = (n: number, d: number) => (d ? Math.round((100 * n) / d) : 0);

/** The column spec of preference rows: the message list of sharegpt / OpenAI rows, else alpaca. */
function rankingSpec(objs: Record<string, unknown>[]): ColumnSpec {
  const has = (k: string, pred: (m: Record<string, unknown>) => boolean) =>
    objs.some((o) => !!msgList(o[k])?.every(pred));
  const fromValue = (m: Record<string, unknown>) => 'from' in m && 'value' in m;
  const roleContent = (m: Record<string, unknown>) => 'role' in m;
  let spec: ColumnSpec;
  if (has('conversations', fromValue)) spec = columnSpec('sharegpt');
  else if (has('messages', roleContent)) spec = columnSpec('openai');
  else if (has('messages', fromValue)) spec = columnSpec('sharegpt', { columns: { messages: 'messages' } });
  else if (has('conversations', roleContent)) spec = columnSpec('openai', { columns: { messages: 'conversations' } });
  else spec = columnSpec('alpaca');
  return { ...spec, ranking: true };
}

export function detectFormat(sample: unknown[], kind: FileKind, entry?: DatasetInfoEntry): Detection {
  if (entry) {
    if (entry.ranking)
      return {
        format: 'ranking',
        ...why('detect-info-ranking'),
        spec: { ...columnSpec(entry.formatting ?? 'alpaca', entry), ranking: true },
      };
    const f = entry.formatting ?? 'alpaca';
    const spec = columnSpec(f, entry);
    // LLaMA-Factory pre-training data: alpaca formatting whose only column is prompt → "text".
    if (f === 'alpaca' && entry.columns && Object.keys(entry.columns).length === 1 && entry.columns.prompt) {
      return {
        format: 'text',
        ...why('detect-info-text', { column: entry.columns.prompt }),
        spec: columnSpec('text', entry),
      };
    }
    const code = entry.columns
      ? entry.tags
        ? 'detect-info-formatting-columns-tags'
        : 'detect-info-formatting-columns'
      : entry.tags
        ? 'detect-info-formatting-tags'
        : 'detect-info-formatting';
    return { format: f, ...why(code, { format: f }), spec };
  }
  if (kind === 'txt') return { format: 'text', ...why('detect-plain-text'), spec: columnSpec('text') };
  const objs = sample.filter(isObj);
  const n = sample.length;
  if (n === 0) return { format: 'unknown', ...why('detect-no-rows') };
  const count = (pred: (o: Record<string, unknown>) => boolean) => objs.filter(pred).length;
  const shareFromValue = count((o) => !!msgList(o.conversations)?.every((m) => 'from' in m && 'value' in m));
  const shareRoleContent = count((o) => !!msgList(o.messages)?.every((m) => 'role' in m));
  const shareMsgFromValue = count((o) => !!msgList(o.messages)?.every((m) => 'from' in m && 'value' in m));
  const convRoleContent = count((o) => !!msgList(o.conversations)?.every((m) => 'role' in m && 'content' in m));
  // A row with only one of the two answers is still a preference row (validation names the missing one).
  const ranking = count((o) => 'chosen' in o || 'rejected' in o);
  const alpaca = count((o) => 'output' in o && ('instruction' in o || 'input' in o));
  const alpacaLoose = count((o) => 'instruction' in o || 'output' in o);
  const text = count((o) => typeof o.text === 'string');
  const share = (code: DataMessageCode, k: number) => why(code, { pct: pct(k, n), n });
  const candidates: [number, Detection][] = [
    [ranking, { format: 'ranking', ...share('detect-ranking', ranking), spec: rankingSpec(objs) }],
    [shareFromValue, { format: 'sharegpt', ...share('detect-sharegpt', shareFromValue), spec: columnSpec('sharegpt') }],
    [shareRoleContent, { format: 'openai', ...share('detect-openai', shareRoleContent), spec: columnSpec('openai') }],
    [
      shareMsgFromValue,
      {
        format: 'sharegpt',
        ...share('detect-sharegpt-messages', shareMsgFromValue),
        spec: columnSpec('sharegpt', { columns: { messages: 'messages' } }),
      },
    ],
    [
      convRoleContent,
      {
        format: 'openai',
        ...share('detect-openai-conversations', convRoleContent),
        spec: columnSpec('openai', { columns: { messages: 'conversations' } }),
      },
    ],
    [alpaca, { format: 'alpaca', ...share('detect-alpaca', alpaca), spec: columnSpec('alpaca') }],
    [alpacaLoose, { format: 'alpaca', ...share('detect-alpaca-loose', alpacaLoose), spec: columnSpec('alpaca') }],
    [text, { format: 'text', ...share('detect-text', text), spec: columnSpec('text') }],
  ];
  let best: [number, Detection] | null = null;
  for (const c of candidates) if (c[0] > 0 && (!best || c[0] > best[0])) best = c;
  if (!best) {
    const keys = new Set<string>();
    for (const o of objs.slice(0, 50)) for (const k of Object.keys(o)) keys.add(k);
    if (objs.length && keys.size)
      return {
        format: 'unknown',
        ...why('detect-unknown-keys', {
          keys: [...keys]
            .slice(0, 12)
            .map((k) => `'${k}'`)
            .join(', '),
        }),
      };
    if (objs.length) return { format: 'unknown', ...why('detect-unknown-no-keys') };
    return {
      format: 'unknown',
      ...why(typeof sample[0] === 'string' ? 'detect-unknown-strings' : 'detect-unknown-not-objects'),
    };
  }
  return best[1];
}
