// Row converters: alpaca / sharegpt / OpenAI messages / plain text → canonical Conversation. The
// semantics follow LLaMA-Factory's converters (src/llamafactory/data/converter.py) with one difference
// that is the point of this module: where LLaMA-Factory logs "Invalid role tag" and silently empties
// the example, every problem here comes back as a named field and reason.
import {
  coded,
  jsonErrorMessage,
  stripJsonPosition,
  type DataMessage,
  type DataMessageCode,
  type DataMessageParams,
} from './messages.ts';
import { convertPair, type PreferencePair } from './preference.ts';
import type { ColumnName, Conversation, DatasetFormat, DatasetInfoEntry, Message, Role, TagName } from './types.ts';

/** `reason` is the English text of `code` with `params` (messages.ts). */
export interface FieldIssue extends DataMessage {
  field: string;
  reason: string;
}

const issue = (field: string, code: DataMessageCode, params?: DataMessageParams): FieldIssue => ({
  field,
  ...coded(code, params),
});

export type Converted =
  | { ok: true; conversation: Conversation }
  | { ok: true; text: string }
  | { ok: true; pair: PreferencePair }
  | { ok: false; issues: FieldIssue[] };

/** Resolved column and tag names (LLaMA-Factory DatasetAttr defaults, overridable by dataset_info.json). */
export interface ColumnSpec {
  format: 'alpaca' | 'sharegpt' | 'openai' | 'text';
  columns: Record<ColumnName, string | undefined> & { text?: string };
  tags: Record<TagName, string>;
  /** Preference rows (dataset_info.json "ranking": true, or chosen/rejected keys): preference.ts converts them. */
  ranking?: boolean;
}

const SHAREGPT_TAGS: Record<TagName, string> = {
  role_tag: 'from',
  content_tag: 'value',
  user_tag: 'human',
  assistant_tag: 'gpt',
  observation_tag: 'observation',
  function_tag: 'function_call',
  system_tag: 'system',
};
const OPENAI_TAGS: Record<TagName, string> = {
  role_tag: 'role',
  content_tag: 'content',
  user_tag: 'user',
  assistant_tag: 'assistant',
  observation_tag: 'tool',
  function_tag: 'function_call',
  system_tag: 'system',
};

function noColumns(): ColumnSpec['columns'] {
  return {
    prompt: undefined,
    query: undefined,
    response: undefined,
    history: undefined,
    messages: undefined,
    system: undefined,
    tools: undefined,
    images: undefined,
    videos: undefined,
    audios: undefined,
    chosen: undefined,
    rejected: undefined,
    kto_tag: undefined,
  };
}

/** The column spec for a format, with dataset_info.json `columns` / `tags` applied on top. */
export function columnSpec(format: 'alpaca' | 'sharegpt' | 'openai' | 'text', entry?: DatasetInfoEntry): ColumnSpec {
  const columns = noColumns() as ColumnSpec['columns'];
  // With a dataset_info.json entry, LLaMA-Factory's DatasetAttr defaults apply exactly: history,
  // system and tools are read only when `columns` names them. Auto-detected files read them by name.
  const extra = entry ? {} : { system: 'system', tools: 'tools' };
  if (format === 'alpaca')
    Object.assign(columns, {
      prompt: 'instruction',
      query: 'input',
      response: 'output',
      ...(entry ? {} : { history: 'history' }),
      ...extra,
    });
  else if (format === 'sharegpt') Object.assign(columns, { messages: 'conversations', ...extra });
  else if (format === 'openai') Object.assign(columns, { messages: 'messages', ...extra });
  else columns.text = 'text';
  if (entry?.columns) {
    for (const [k, v] of Object.entries(entry.columns))
      if (typeof v === 'string') (columns as Record<string, string>)[k] = v;
    // LLaMA-Factory reads pre-training text from the `prompt` column.
    if (format === 'text' && entry.columns.prompt) columns.text = entry.columns.prompt;
  }
  const tags = { ...(format === 'openai' ? OPENAI_TAGS : SHAREGPT_TAGS) };
  if (entry?.tags) for (const [k, v] of Object.entries(entry.tags)) if (typeof v === 'string') tags[k as TagName] = v;
  return { format, columns, tags };
}

const typeName = (v: unknown) => (v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v);

function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

// CSV cells are strings; list-valued columns may hold JSON text.
function maybeJson(v: unknown): unknown {
  if (typeof v === 'string') {
    const t = v.trim();
    if (t.startsWith('[') || t.startsWith('{')) {
      try {
        return JSON.parse(t);
      } catch {
        return v;
      }
    }
  }
  return v;
}

function optString(row: Record<string, unknown>, col: string | undefined, issues: FieldIssue[]): string {
  if (!col) return '';
  const v = row[col];
  if (v === undefined || v === null) return '';
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  if (typeof v !== 'string') {
    issues.push(issue(col, 'wrong-type-string', { got: typeName(v) }));
    return '';
  }
  return v;
}

/** tools: JSON text (or an array) of function schemas; returns the normalised JSON text. */
function readTools(row: Record<string, unknown>, col: string | undefined, issues: FieldIssue[]): string | undefined {
  if (!col) return undefined;
  const v = row[col];
  if (v === undefined || v === null || v === '') return undefined;
  let parsed: unknown = v;
  if (typeof v === 'string') {
    try {
      parsed = JSON.parse(v);
    } catch (e) {
      const detail = (e as Error).message;
      issues.push({ ...issue(col, 'tools-bad-json', { detail }), cause: jsonErrorMessage(stripJsonPosition(detail)) });
      return undefined;
    }
  }
  if (isObject(parsed)) parsed = [parsed];
  if (!Array.isArray(parsed)) {
    issues.push(issue(col, 'tools-not-list', { got: typeName(parsed) }));
    return undefined;
  }
  for (let i = 0; i < parsed.length; i++) {
    const t = parsed[i];
    const fn = isObject(t) && isObject(t.function) ? t.function : t;
    if (!isObject(fn) || typeof fn.name !== 'string') {
      issues.push(issue(`${col}[${i}]`, 'tool-no-name'));
      return undefined;
    }
  }
  return parsed.length ? JSON.stringify(parsed) : undefined;
}

/** function_call content must be JSON {name, arguments} or a list of them (LLaMA-Factory FunctionFormatter). */
export function checkFunctionCall(content: string): DataMessageCode | null {
  let v: unknown;
  try {
    v = JSON.parse(content);
  } catch {
    return 'function-call-not-json';
  }
  const calls = Array.isArray(v) ? v : [v];
  if (!calls.length) return 'function-call-empty';
  for (const c of calls) {
    if (!isObject(c) || typeof c.name !== 'string') return 'function-call-bad-shape';
  }
  return null;
}

export function convertAlpaca(value: unknown, spec: ColumnSpec): Converted {
  if (!isObject(value)) return { ok: false, issues: [issue('<row>', 'wrong-type-object', { got: typeName(value) })] };
  const c = spec.columns;
  const issues: FieldIssue[] = [];
  const messages: Message[] = [];
  if (c.history && value[c.history] !== undefined && value[c.history] !== null && value[c.history] !== '') {
    const h = maybeJson(value[c.history]);
    if (!Array.isArray(h)) issues.push(issue(c.history, 'history-not-list', { got: typeName(h) }));
    else {
      h.forEach((pair, i) => {
        if (!Array.isArray(pair) || pair.length !== 2 || typeof pair[0] !== 'string' || typeof pair[1] !== 'string') {
          issues.push(issue(`${c.history}[${i}]`, 'history-item-not-pair'));
        } else if (!pair[0].trim() || !pair[1].trim()) {
          issues.push(issue(`${c.history}[${i}]`, !pair[0].trim() ? 'history-empty-question' : 'history-empty-answer'));
        } else {
          messages.push({ role: 'user', content: pair[0] }, { role: 'assistant', content: pair[1] });
        }
      });
    }
  }
  const instruction = optString(value, c.prompt, issues);
  const input = optString(value, c.query, issues);
  const rawOut = c.response ? value[c.response] : undefined;
  let output = '';
  if (Array.isArray(rawOut)) issues.push(issue(c.response!, 'output-is-list'));
  else if (rawOut === undefined || rawOut === null) issues.push(issue(c.response ?? 'output', 'missing-output'));
  else if (typeof rawOut !== 'string' && typeof rawOut !== 'number')
    issues.push(issue(c.response!, 'wrong-type-string', { got: typeName(rawOut) }));
  else {
    output = String(rawOut);
    if (!output.trim()) issues.push(issue(c.response!, 'empty-output'));
  }
  // LLaMA-Factory AlpacaDatasetConverter: query = instruction + "\n" + input when both are non-empty.
  const query = [instruction, input].filter((s) => s !== '').join('\n');
  const typeErr = issues.some((i) => i.field === c.prompt || i.field === c.query);
  if (!query.trim() && !typeErr) issues.push(issue(c.prompt ?? 'instruction', 'empty-instruction'));
  const system = optString(value, c.system, issues);
  const tools = readTools(value, c.tools, issues);
  if (issues.length) return { ok: false, issues };
  messages.push({ role: 'user', content: query }, { role: 'assistant', content: output });
  const conv: Conversation = { messages };
  if (system) conv.system = system;
  if (tools) conv.tools = tools;
  return { ok: true, conversation: conv };
}

const PROMPT_SIDE = new Set<Role>(['user', 'observation']);

// OpenAI content may be a list of parts; only text parts carry training text.
function openaiContent(v: unknown, field: string, issues: FieldIssue[]): string | null {
  if (typeof v === 'string') return v;
  if (v === null || v === undefined) return '';
  if (Array.isArray(v)) {
    let out = '';
    for (let i = 0; i < v.length; i++) {
      const p = v[i];
      if (isObject(p) && p.type === 'text' && typeof p.text === 'string') out += p.text;
      else {
        issues.push(
          isObject(p) && typeof p.type === 'string'
            ? issue(`${field}[${i}]`, 'content-part-unsupported-type', { type: p.type })
            : issue(`${field}[${i}]`, 'content-part-unsupported'),
        );
        return null;
      }
    }
    return out;
  }
  issues.push(issue(field, 'wrong-type-string', { got: typeName(v) }));
  return null;
}

export function convertSharegpt(value: unknown, spec: ColumnSpec): Converted {
  if (!isObject(value)) return { ok: false, issues: [issue('<row>', 'wrong-type-object', { got: typeName(value) })] };
  const col = spec.columns.messages ?? 'conversations';
  const t = spec.tags;
  const openai = spec.format === 'openai';
  const issues: FieldIssue[] = [];
  const raw = maybeJson(value[col]);
  if (raw === undefined) {
    const keys = Object.keys(value)
      .map((k) => `'${k}'`)
      .join(', ');
    return {
      ok: false,
      issues: [
        keys
          ? issue(col, 'missing-column', { column: col, keys })
          : issue(col, 'missing-column-no-keys', { column: col }),
      ],
    };
  }
  if (!Array.isArray(raw))
    return { ok: false, issues: [issue(col, 'wrong-type-message-list', { got: typeName(raw) })] };
  const tagToRole = new Map<string, Role>([
    [t.user_tag, 'user'],
    [t.assistant_tag, 'assistant'],
    [t.observation_tag, 'observation'],
    [t.function_tag, 'function_call'],
    [t.system_tag, 'system'],
  ]);
  if (openai) {
    tagToRole.set('tool', 'observation');
    tagToRole.set('developer', 'system');
    tagToRole.set('function', 'observation');
  }
  const known = [...tagToRole.keys()].join(', ');
  const messages: Message[] = [];
  let system = '';
  for (let i = 0; i < raw.length; i++) {
    const m = raw[i];
    const f = `${col}[${i}]`;
    if (!isObject(m)) {
      issues.push(issue(f, 'wrong-type-message', { got: typeName(m) }));
      continue;
    }
    const tag = m[t.role_tag];
    if (typeof tag !== 'string') {
      issues.push(
        tag === undefined
          ? issue(`${f}.${t.role_tag}`, 'missing-key', { key: t.role_tag })
          : issue(`${f}.${t.role_tag}`, 'wrong-type-string', { got: typeName(tag) }),
      );
      continue;
    }
    const role = tagToRole.get(tag);
    if (!role) {
      issues.push(issue(`${f}.${t.role_tag}`, 'unknown-tag', { tag, known }));
      continue;
    }
    let content: string | null;
    if (openai && role === 'assistant' && Array.isArray(m.tool_calls) && m.tool_calls.length) {
      // OpenAI tool calls become one function_call turn, as LLaMA-Factory's OpenAI converter does.
      const calls: { name: unknown; arguments: unknown }[] = [];
      for (const tc of m.tool_calls) {
        const fn = isObject(tc) && isObject(tc.function) ? tc.function : tc;
        if (!isObject(fn) || typeof fn.name !== 'string') {
          issues.push(issue(`${f}.tool_calls`, 'tool-call-no-name'));
          break;
        }
        let args: unknown = fn.arguments ?? {};
        if (typeof args === 'string') {
          try {
            args = JSON.parse(args);
          } catch {
            /* keep the string */
          }
        }
        calls.push({ name: fn.name, arguments: args });
      }
      content = JSON.stringify(calls.length === 1 ? calls[0] : calls);
      messages.push({ role: 'function_call', content });
      continue;
    }
    const cv = m[t.content_tag];
    if (cv === undefined) {
      issues.push(issue(`${f}.${t.content_tag}`, 'missing-key', { key: t.content_tag }));
      continue;
    }
    content = openai ? openaiContent(cv, `${f}.${t.content_tag}`, issues) : typeof cv === 'string' ? cv : null;
    if (content === null) {
      if (!openai) issues.push(issue(`${f}.${t.content_tag}`, 'wrong-type-string', { got: typeName(cv) }));
      continue;
    }
    if (role === 'system') {
      if (messages.length === 0 && !system && i === 0) {
        system = content;
        continue;
      }
      issues.push(issue(f, 'system-not-first', { index: i }));
      continue;
    }
    if (!content.trim()) {
      issues.push(issue(`${f}.${t.content_tag}`, 'empty-message', { index: i, tag }));
      continue;
    }
    if (role === 'function_call') {
      const bad = checkFunctionCall(content);
      if (bad) {
        issues.push(issue(`${f}.${t.content_tag}`, bad));
        continue;
      }
    }
    messages.push({ role, content });
  }
  if (issues.length) return { ok: false, issues };
  // Alternation as in LLaMA-Factory's SharegptDatasetConverter: prompt side on even turns, answer side on odd.
  for (let k = 0; k < messages.length; k++) {
    const promptSide = PROMPT_SIDE.has(messages[k].role);
    if (promptSide !== (k % 2 === 0)) {
      const want = k % 2 === 0 ? `${t.user_tag}/${t.observation_tag}` : `${t.assistant_tag}/${t.function_tag}`;
      const offset = system && raw.length > messages.length ? 1 : 0;
      issues.push(
        issue(`${col}[${k + offset}]`, 'non-alternating', {
          turn: k + offset,
          tag: roleTag(messages[k].role, t),
          expected: want,
        }),
      );
      return { ok: false, issues };
    }
  }
  if (messages.length === 0) return { ok: false, issues: [issue(col, 'no-messages')] };
  if (messages.length % 2 !== 0) {
    return {
      ok: false,
      issues: [
        issue(`${col}[${raw.length - 1}]`, 'no-final-answer', { tag: roleTag(messages[messages.length - 1].role, t) }),
      ],
    };
  }
  const sysCol = spec.columns.system;
  if (!system && sysCol) system = optString(value, sysCol, issues);
  const tools = readTools(value, spec.columns.tools, issues);
  if (issues.length) return { ok: false, issues };
  const conv: Conversation = { messages };
  if (system) conv.system = system;
  if (tools) conv.tools = tools;
  return { ok: true, conversation: conv };
}

function roleTag(role: Role, t: Record<TagName, string>): string {
  return role === 'user'
    ? t.user_tag
    : role === 'assistant'
      ? t.assistant_tag
      : role === 'function_call'
        ? t.function_tag
        : role === 'system'
          ? t.system_tag
          : t.observation_tag;
}

export function convertText(value: unknown, spec: ColumnSpec): Converted {
  const col = spec.columns.text ?? 'text';
  if (typeof value === 'string')
    return value.trim() ? { ok: true, text: value } : { ok: false, issues: [issue('<row>', 'empty-text')] };
  if (!isObject(value))
    return { ok: false, issues: [issue('<row>', 'wrong-type-text-object', { column: col, got: typeName(value) })] };
  const v = value[col];
  if (v === undefined) return { ok: false, issues: [issue(col, 'missing-key', { key: col })] };
  if (typeof v !== 'string') return { ok: false, issues: [issue(col, 'wrong-type-string', { got: typeName(v) })] };
  if (!v.trim()) return { ok: false, issues: [issue(col, 'empty-text')] };
  return { ok: true, text: v };
}

export function convertRow(value: unknown, spec: ColumnSpec): Converted {
  if (spec.ranking) return convertPair(value, spec);
  switch (spec.format) {
    case 'alpaca':
      return convertAlpaca(value, spec);
    case 'sharegpt':
    case 'openai':
      return convertSharegpt(value, spec);
    case 'text':
      return convertText(value, spec);
  }
}

export type SftFormat = Exclude<DatasetFormat, 'ranking' | 'unknown'>;
