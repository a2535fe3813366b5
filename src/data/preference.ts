// Preference (ranking) rows for stage dpo: a prompt and two answers, chosen and rejected, as
// LLaMA-Factory reads them (data/README.md "Preference Dataset"; src/llamafactory/data/converter.py
// with dataset_attr.ranking): alpaca rows with instruction/input (+ history, system) and string
// `chosen` / `rejected` columns; sharegpt / OpenAI rows whose message list ends with a user turn and
// whose `chosen` / `rejected` are assistant messages. Encoding follows PairwiseDatasetProcessor
// (src/llamafactory/data/processor/pairwise.py): both answers share the prompt's tokens, labels mask
// the prompt, and infer_seqlen(prompt, longer answer, cutoff_len) cuts the prompt and both answers.
import { convertAlpaca, convertSharegpt, type ColumnSpec, type Converted, type FieldIssue } from './convert.ts';
import { EncodeError, conversationSegments, inferSeqlen, tokenizeSegments, type EncodedWithText } from './encode.ts';
import { coded, type DataMessageCode, type DataMessageParams } from './messages.ts';
import type { ChatTemplate } from './template.ts';
import type { TextTokenizer } from './tokenizer.ts';
import { IGNORE_INDEX, type Conversation, type Message } from './types.ts';

/** A parsed preference row: `conversation` is the prompt (it ends with a user-side turn). */
export interface PreferencePair {
  conversation: Conversation;
  chosen: Message;
  rejected: Message;
}

const issue = (field: string, code: DataMessageCode, params?: DataMessageParams): FieldIssue => ({
  field,
  ...coded(code, params),
});

const isObject = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);
const typeName = (v: unknown) => (v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v);

function parsedList(v: unknown): unknown {
  if (typeof v === 'string' && v.trim().startsWith('[')) {
    try {
      return JSON.parse(v);
    } catch {
      return v;
    }
  }
  return v;
}

function answerColumns(spec: ColumnSpec): [string, string] {
  return [spec.columns.chosen ?? 'chosen', spec.columns.rejected ?? 'rejected'];
}

function identical(pair: PreferencePair, rejectedCol: string): FieldIssue[] {
  return pair.chosen.content.trim() === pair.rejected.content.trim() && pair.chosen.role === pair.rejected.role
    ? [issue(rejectedCol, 'pair-identical')]
    : [];
}

/** alpaca: string answers; the prompt side is validated by the SFT converter with `chosen` as the response. */
function convertAlpacaPair(value: Record<string, unknown>, spec: ColumnSpec): Converted {
  const issues: FieldIssue[] = [];
  const cols = answerColumns(spec);
  const answers: string[] = [];
  for (const col of cols) {
    const v = value[col];
    if (v === undefined || v === null) issues.push(issue(col, 'pair-missing-answer', { column: col }));
    else if (typeof v !== 'string' && typeof v !== 'number')
      issues.push(issue(col, 'wrong-type-string', { got: typeName(v) }));
    else if (!String(v).trim()) issues.push(issue(col, 'pair-empty-answer', { column: col }));
    else answers.push(String(v));
  }
  const prompt = convertAlpaca(
    { ...value, [cols[0]]: answers[0] ?? 'x' },
    {
      ...spec,
      columns: { ...spec.columns, response: cols[0] },
    },
  );
  if (!prompt.ok) issues.push(...prompt.issues);
  if (issues.length || !prompt.ok || !('conversation' in prompt)) return { ok: false, issues };
  const messages = prompt.conversation.messages.slice(0, -1);
  const pair: PreferencePair = {
    conversation: { ...prompt.conversation, messages },
    chosen: { role: 'assistant', content: answers[0] },
    rejected: { role: 'assistant', content: answers[1] },
  };
  const same = identical(pair, cols[1]);
  return same.length ? { ok: false, issues: same } : { ok: true, pair };
}

/** sharegpt / OpenAI: each answer is appended to the prompt's messages and checked by the SFT converter. */
function convertMessagesPair(value: Record<string, unknown>, spec: ColumnSpec): Converted {
  const col = spec.columns.messages ?? (spec.format === 'openai' ? 'messages' : 'conversations');
  const t = spec.tags;
  const raw = parsedList(value[col]);
  if (!Array.isArray(raw)) return convertSharegpt(value, spec); // names the missing / mistyped column
  const issues: FieldIssue[] = [];
  const last = raw[raw.length - 1];
  if (isObject(last) && (last[t.role_tag] === t.assistant_tag || last[t.role_tag] === t.function_tag))
    return { ok: false, issues: [issue(`${col}[${raw.length - 1}]`, 'pair-prompt-ends-with-answer')] };
  const convs: Conversation[] = [];
  for (const name of answerColumns(spec)) {
    let v = parsedList(value[name]);
    if (typeof v === 'string' || typeof v === 'number')
      v = { [t.role_tag]: t.assistant_tag, [t.content_tag]: String(v) };
    if (v === undefined || v === null) {
      issues.push(issue(name, 'pair-missing-answer', { column: name }));
      continue;
    }
    if (!isObject(v)) {
      issues.push(issue(name, 'wrong-type-message', { got: typeName(v) }));
      continue;
    }
    if (typeof v[t.content_tag] === 'string' && !(v[t.content_tag] as string).trim()) {
      issues.push(issue(name, 'pair-empty-answer', { column: name }));
      continue;
    }
    const c = convertSharegpt({ ...value, [col]: [...raw, v] }, spec);
    if (c.ok && 'conversation' in c) convs.push(c.conversation);
    else if (!c.ok) {
      // Issues on the appended message are the answer's: name its column.
      const at = `${col}[${raw.length}]`;
      for (const i of c.issues) {
        const own = i.field.startsWith(at);
        if (own || !issues.some((j) => j.field === i.field && j.code === i.code))
          issues.push(own ? { ...i, field: name + i.field.slice(at.length) } : i);
      }
    }
  }
  if (issues.length || convs.length !== 2) return { ok: false, issues };
  const [c, r] = convs;
  const pair: PreferencePair = {
    conversation: { ...c, messages: c.messages.slice(0, -1) },
    chosen: c.messages[c.messages.length - 1],
    rejected: r.messages[r.messages.length - 1],
  };
  const same = identical(pair, answerColumns(spec)[1]);
  return same.length ? { ok: false, issues: same } : { ok: true, pair };
}

/** A ranking row → prompt + chosen + rejected, or the issues naming each bad field. */
export function convertPair(value: unknown, spec: ColumnSpec): Converted {
  if (!isObject(value)) return { ok: false, issues: [issue('<row>', 'wrong-type-object', { got: typeName(value) })] };
  if (spec.format === 'text') return { ok: false, issues: [issue('<row>', 'dpo-needs-pair')] };
  return spec.format === 'alpaca' ? convertAlpacaPair(value, spec) : convertMessagesPair(value, spec);
}

/** Prompt ids and answer ids of the conversation + answer (LLaMA-Factory Template.encode_oneturn). */
function oneTurn(
  pair: PreferencePair,
  answer: Message,
  tok: TextTokenizer,
  template: ChatTemplate,
): { prompt: number[]; answer: number[]; text: string } {
  const conv: Conversation = { ...pair.conversation, messages: [...pair.conversation.messages, answer] };
  const seg = conversationSegments(conv, template);
  const { pairs } = tokenizeSegments(seg, tok);
  // The last piece with answer tokens is the response; everything before it is prompt (earlier
  // turns included). A trailing generation header after it is neither (encode_oneturn has none).
  let k = pairs.length - 1;
  while (k > 0 && !pairs[k].target.length) k--;
  const prompt: number[] = [];
  for (let i = 0; i < k; i++) prompt.push(...pairs[i].source, ...pairs[i].target);
  prompt.push(...pairs[k].source);
  return { prompt, answer: pairs[k].target, text: seg.text };
}

/**
 * Pairwise encoding: chosen = prompt + chosen answer, rejected = prompt + rejected answer, labels
 * −100 on the prompt; infer_seqlen(len(prompt), max(len(chosen), len(rejected)), cutoff_len).
 */
export function encodePair(
  row: number,
  pair: PreferencePair,
  tok: TextTokenizer,
  template: ChatTemplate,
  cutoffLen: number,
): EncodedWithText {
  const c = oneTurn(pair, pair.chosen, tok, template);
  const r = oneTurn(pair, pair.rejected, tok, template);
  const build = pairwiseSequences(c.prompt, c.answer, r.answer, cutoffLen);
  if (!build.chosenLabels.some((l) => l !== IGNORE_INDEX) || !build.rejectedLabels.some((l) => l !== IGNORE_INDEX))
    throw new EncodeError('<labels>', `no trained token left after cutoff_len ${cutoffLen}`, 'no-trained-token', {
      cutoff: cutoffLen,
    });
  const fullChosen = c.prompt.length + c.answer.length;
  return {
    row,
    text: c.text,
    mode: 'prefix',
    inputIds: Int32Array.from(build.chosenIds),
    labels: Int32Array.from(build.chosenLabels),
    fullLength: fullChosen,
    truncated: build.truncated,
    rejected: {
      inputIds: Int32Array.from(build.rejectedIds),
      labels: Int32Array.from(build.rejectedLabels),
      fullLength: c.prompt.length + r.answer.length,
    },
  };
}

/** The token rule of PairwiseDatasetProcessor._encode_data_example on ids (tested against a Python rendering). */
export function pairwiseSequences(prompt: number[], chosen: number[], rejected: number[], cutoffLen: number) {
  const [sourceLen, targetLen] = inferSeqlen(prompt.length, Math.max(chosen.length, rejected.length), cutoffLen);
  const p = prompt.slice(0, sourceLen);
  const c = chosen.slice(0, targetLen);
  const r = rejected.slice(0, targetLen);
  const mask = new Array<number>(sourceLen).fill(IGNORE_INDEX);
  return {
    chosenIds: [...p, ...c],
    chosenLabels: [...mask, ...c],
    rejectedIds: [...p, ...r],
    rejectedLabels: [...mask, ...r],
    truncated: sourceLen < prompt.length || c.length < chosen.length || r.length < rejected.length,
  };
}
