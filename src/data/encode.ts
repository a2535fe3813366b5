// Template → token ids → labels. Assistant spans come from rendering message prefixes: the text the
// template produces for messages[:k] with the generation prompt ends where assistant turn k begins,
// and the text for messages[:k+1] ends after its end-of-turn. Each (prompt, answer) piece is tokenized
// separately, as LLaMA-Factory's Template.encode_multiturn does, and cut to cutoff_len with
// LLaMA-Factory's infer_seqlen (src/llamafactory/data/processor/processor_utils.py), turn by turn as in
// SupervisedDatasetProcessor._encode_data_example (src/llamafactory/data/processor/supervised.py).
import type { DataMessageCode, DataMessageParams } from './messages.ts';
import type { ChatTemplate } from './template.ts';
import type { TextTokenizer } from './tokenizer.ts';
import { IGNORE_INDEX, type Conversation, type EncodedExample, type Example } from './types.ts';

export interface EncodeOptions {
  /** Maximum tokens per example (LLaMA-Factory cutoff_len, default 2048). */
  cutoffLen: number;
  /** Also train on prompt tokens (LLaMA-Factory train_on_prompt). */
  trainOnPrompt?: boolean;
  /** Train only on the last assistant turn (LLaMA-Factory mask_history). */
  maskHistory?: boolean;
}

export interface TextPair {
  source: string;
  target: string;
}

export interface Segments {
  /** One (prompt, answer) pair per assistant-side turn; their concatenation is `text`. */
  pairs: TextPair[];
  text: string;
  /** 'prefix': every prefix render is a prefix of the whole render (exact boundaries).
   *  'search': the template rewrites earlier turns (e.g. Qwen3 drops <think> from history), so
   *  answers are located in the whole render by their content and the template's turn suffix. */
  mode: 'prefix' | 'search';
}

export class EncodeError extends Error {
  /** The row issue's code: its English text is "chat template: " + message. */
  constructor(
    readonly field: string,
    message: string,
    readonly code: DataMessageCode,
    readonly params?: DataMessageParams,
  ) {
    super(message);
  }
}

const ANSWER_ROLES = new Set(['assistant', 'function_call']);

/** Splits a rendered conversation into (prompt, answer) text pairs. */
export function conversationSegments(conv: Conversation, template: ChatTemplate): Segments {
  const targets: number[] = [];
  conv.messages.forEach((m, k) => {
    if (ANSWER_ROLES.has(m.role)) targets.push(k);
  });
  if (!targets.length) throw new EncodeError('messages', 'no assistant turn to train on', 'template-no-answer');
  const full = template.render(conv);
  const prefix = prefixPairs(conv, template, targets, full);
  if (prefix) return { pairs: prefix, text: full, mode: 'prefix' };
  return { pairs: searchPairs(conv, template, targets, full), text: full, mode: 'search' };
}

function prefixPairs(conv: Conversation, template: ChatTemplate, targets: number[], full: string): TextPair[] | null {
  const pairs: TextPair[] = [];
  let prevEnd = 0;
  for (const k of targets) {
    const p = template.render(conv, { upTo: k, addGenerationPrompt: true });
    const e = template.render(conv, { upTo: k + 1 });
    if (p.length < prevEnd || e.length < p.length || !full.startsWith(p) || !full.startsWith(e)) return null;
    const target = full.slice(p.length, e.length);
    checkCallRendered(conv, k, target);
    pairs.push({ source: full.slice(prevEnd, p.length), target });
    prevEnd = e.length;
  }
  return withTrailing(pairs, full.slice(prevEnd), conv, template);
}

// Some templates ignore `tool_calls` and render a function_call turn as an empty assistant turn;
// training on that would teach the model to answer tool requests with nothing.
function checkCallRendered(conv: Conversation, k: number, target: string): void {
  if (conv.messages[k].role === 'function_call' && !target.includes(needleOf(conv, k))) {
    const rendered = JSON.stringify(target.slice(0, 40));
    throw new EncodeError(
      `messages[${k}]`,
      `the chat template does not render tool calls (function_call turn ${k} renders as ${rendered})`,
      'template-tool-calls-not-rendered',
      { turn: k, rendered },
    );
  }
}

function needleOf(conv: Conversation, k: number): string {
  const m = conv.messages[k];
  if (m.role === 'function_call') {
    const v = JSON.parse(m.content) as { name: string } | { name: string }[];
    return Array.isArray(v) ? v[0].name : v.name;
  }
  return m.content.trim();
}

function commonPrefixLen(a: string, b: string, bStart: number): number {
  let i = 0;
  while (i < a.length && bStart + i < b.length && a.charCodeAt(i) === b.charCodeAt(bStart + i)) i++;
  return i;
}

function searchPairs(conv: Conversation, template: ChatTemplate, targets: number[], full: string): TextPair[] {
  const pairs: TextPair[] = [];
  let cursor = 0;
  for (const k of targets) {
    const without = template.render(conv, { upTo: k });
    const withGen = template.render(conv, { upTo: k, addGenerationPrompt: true });
    const header = withGen.startsWith(without) ? withGen.slice(without.length) : '';
    const needle = needleOf(conv, k);
    // Anchor on the prompt turn just before: a tool name also appears in the tools listing.
    const prev = conv.messages[k - 1]?.content.trim() ?? '';
    const prevAt = prev ? full.indexOf(prev, cursor) : -1;
    const from = prevAt >= 0 ? prevAt + prev.length : cursor;
    const pos = needle ? full.indexOf(needle, from) : -1;
    if (pos < 0)
      throw new EncodeError(
        `messages[${k}]`,
        `the chat template does not render assistant turn ${k} verbatim: cannot locate it for label masking`,
        'template-answer-not-verbatim',
        { turn: k },
      );
    let start = pos;
    // The generation header ends the prompt; a header with a reasoning opener ("…assistant\n<think>\n")
    // may appear only in its first line in earlier turns.
    const nl = header.indexOf('\n');
    for (const hd of nl >= 0 && nl < header.length - 1 ? [header, header.slice(0, nl + 1)] : [header]) {
      if (!hd) continue;
      const h = full.lastIndexOf(hd, pos);
      if (h >= cursor && h + hd.length <= pos) {
        start = h + hd.length;
        break;
      }
    }
    const own = template.render(conv, { upTo: k + 1 });
    const at = own.lastIndexOf(needle);
    const suffix = at >= 0 ? own.slice(at + needle.length) : '';
    let common = commonPrefixLen(suffix, full, pos + needle.length);
    // A partial match ("<|" of "<|return|>" vs "<|end|>") stops at the last complete marker.
    if (common < suffix.length) while (common > 0 && !'>\n]}'.includes(suffix[common - 1])) common--;
    const end = pos + needle.length + common;
    pairs.push({ source: full.slice(cursor, start), target: full.slice(start, end) });
    cursor = end;
  }
  return withTrailing(pairs, full.slice(cursor), conv, template);
}

// Text after the last answer: a template's closing tokens are trained with the last answer, but a
// generation header that a template emits whatever add_generation_prompt says (the original Llama 3
// release template does) is prompt, not answer.
function withTrailing(pairs: TextPair[], trailing: string, conv: Conversation, template: ChatTemplate): TextPair[] {
  if (!trailing) return pairs;
  const n = conv.messages.length;
  const plain = template.render(conv, { upTo: n });
  const gen = template.render(conv, { upTo: n, addGenerationPrompt: true });
  const header = gen.startsWith(plain) ? gen.slice(plain.length) : '';
  const probe = template.render({ ...conv, messages: [{ role: 'user', content: 'x' }] });
  const alwaysHeader = !header && /assistant/.test(trailing) && probe.endsWith(trailing);
  if (alwaysHeader || (header && trailing.includes(header))) pairs.push({ source: trailing, target: '' });
  else pairs[pairs.length - 1].target += trailing;
  return pairs;
}

/**
 * LLaMA-Factory infer_seqlen: how many source and target tokens survive a budget of `cutoffLen`.
 * A short target keeps its length; else a short source does; else both shrink in proportion.
 */
export function inferSeqlen(sourceLen: number, targetLen: number, cutoffLen: number): [number, number] {
  let maxTargetLen: number;
  if (targetLen * 2 < cutoffLen) maxTargetLen = cutoffLen;
  else if (sourceLen * 2 < cutoffLen) maxTargetLen = cutoffLen - sourceLen;
  else maxTargetLen = Math.trunc(cutoffLen * (targetLen / (sourceLen + targetLen)));
  const newTargetLen = Math.min(maxTargetLen, targetLen);
  const maxSourceLen = Math.max(cutoffLen - newTargetLen, 0);
  const newSourceLen = Math.min(maxSourceLen, sourceLen);
  return [newSourceLen, newTargetLen];
}

export interface TokenPair {
  source: number[];
  target: number[];
}

export function tokenizePairs(pairs: TextPair[], tok: TextTokenizer): TokenPair[] {
  // The template writes BOS itself where the model wants it, so no special tokens are added here.
  return pairs.map((p) => ({
    source: p.source ? tok.encode(p.source) : [],
    target: p.target ? tok.encode(p.target) : [],
  }));
}

/** Builds input ids and labels from token pairs, truncating turn by turn like LLaMA-Factory. */
export function buildSupervised(
  pairs: TokenPair[],
  opts: EncodeOptions,
): { inputIds: number[]; labels: number[]; fullLength: number } {
  const cutoff = opts.cutoffLen;
  let fullLength = 0;
  for (const p of pairs) fullLength += p.source.length + p.target.length;
  const ordered = opts.maskHistory ? [...pairs].reverse() : pairs; // mask_history: last turns first
  const chunks: { ids: number[]; labels: number[] }[] = [];
  let total = 0;
  for (let turn = 0; turn < ordered.length; turn++) {
    if (total >= cutoff) break;
    const { source, target } = ordered[turn];
    const [sLen, tLen] = inferSeqlen(source.length, target.length, cutoff - total);
    const s = source.slice(0, sLen);
    const t = target.slice(0, tLen);
    total += sLen + tLen;
    const sLabel = opts.trainOnPrompt ? s : new Array<number>(sLen).fill(IGNORE_INDEX);
    const tLabel = opts.maskHistory && turn !== 0 ? new Array<number>(tLen).fill(IGNORE_INDEX) : t;
    chunks.push({ ids: [...s, ...t], labels: [...sLabel, ...tLabel] });
  }
  if (opts.maskHistory) chunks.reverse();
  const inputIds: number[] = [];
  const labels: number[] = [];
  for (const c of chunks) {
    inputIds.push(...c.ids);
    labels.push(...c.labels);
  }
  return { inputIds, labels, fullLength };
}

export interface EncodedWithText extends EncodedExample {
  /** The rendered text (chat) or the raw text (pre-training), before truncation. */
  text: string;
  mode: Segments['mode'] | 'text';
}

/** Pre-training text: [bos] text eos, all trained (LLaMA-Factory PretrainDatasetProcessor). */
export function encodeText(row: number, text: string, tok: TextTokenizer, opts: EncodeOptions): EncodedWithText {
  const ids = tok.encode(text);
  const all = [
    ...(tok.addsBos && tok.bos?.id !== undefined ? [tok.bos.id] : []),
    ...ids,
    ...(tok.eos?.id !== undefined ? [tok.eos.id] : []),
  ];
  const kept = all.slice(0, opts.cutoffLen);
  return {
    row,
    text,
    mode: 'text',
    inputIds: Int32Array.from(kept),
    labels: Int32Array.from(kept),
    fullLength: all.length,
    truncated: all.length > kept.length,
  };
}

function sameIds(pairs: TokenPair[], whole: number[]): boolean {
  let o = 0;
  for (const p of pairs) {
    for (const id of p.source) if (whole[o++] !== id) return false;
    for (const id of p.target) if (whole[o++] !== id) return false;
  }
  return o === whole.length;
}

/**
 * Splits the ids of the whole text at the pieces' character boundaries. Used when tokenizing the
 * pieces separately gives other ids than the whole text: SentencePiece tokenizers with a "Prepend ▁"
 * normalizer (Llama 2, Mistral v0.1-v0.3) add '▁' at the start of every piece, so "[/INST]" + "Hello"
 * would become "…]", "▁Hello" instead of "…]", "Hello". The model then trains on what it sees at
 * inference. A token that straddles a boundary goes to the later piece.
 */
export function splitWholeIds(pairs: TextPair[], whole: number[], tok: TextTokenizer): TokenPair[] {
  const text = pairs.map((p) => p.source + p.target).join('');
  const cuts: number[] = [];
  let chars = 0;
  for (const p of pairs) {
    chars += p.source.length;
    cuts.push(chars);
    chars += p.target.length;
    cuts.push(chars);
  }
  const tokenCuts = cuts.map((c, i) => {
    if (i === cuts.length - 1 || c >= text.length) return whole.length;
    const prefix = tok.encode(text.slice(0, c));
    let n = 0;
    while (n < prefix.length && n < whole.length && prefix[n] === whole[n]) n++;
    return n;
  });
  for (let i = 1; i < tokenCuts.length; i++) tokenCuts[i] = Math.max(tokenCuts[i], tokenCuts[i - 1]);
  const out: TokenPair[] = [];
  let prev = 0;
  for (let k = 0; k < pairs.length; k++) {
    const s = tokenCuts[2 * k],
      t = tokenCuts[2 * k + 1];
    out.push({ source: whole.slice(prev, s), target: whole.slice(s, t) });
    prev = t;
  }
  return out;
}

/** Token pairs whose concatenation is always exactly the whole rendered text's ids. */
export function tokenizeSegments(seg: Segments, tok: TextTokenizer): { pairs: TokenPair[]; piecewiseExact: boolean } {
  const pieces = tokenizePairs(seg.pairs, tok);
  const whole = tok.encode(seg.text);
  if (sameIds(pieces, whole)) return { pairs: pieces, piecewiseExact: true };
  return { pairs: splitWholeIds(seg.pairs, whole, tok), piecewiseExact: false };
}

export function encodeExample(
  ex: Example,
  tok: TextTokenizer,
  template: ChatTemplate,
  opts: EncodeOptions,
): EncodedWithText {
  if (ex.kind === 'text') return encodeText(ex.row, ex.text, tok, opts);
  const seg = conversationSegments(ex.conversation, template);
  const built = buildSupervised(tokenizeSegments(seg, tok).pairs, opts);
  return {
    row: ex.row,
    text: seg.text,
    mode: seg.mode,
    inputIds: Int32Array.from(built.inputIds),
    labels: Int32Array.from(built.labels),
    fullLength: built.fullLength,
    truncated: built.fullLength > built.inputIds.length,
  };
}
