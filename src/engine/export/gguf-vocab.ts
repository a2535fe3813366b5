// Tokenizer metadata for GGUF from the Hugging Face tokenizer files, as llama.cpp's
// convert_hf_to_gguf.py writes it (and src/llama-vocab.cpp reads it):
// - byte-level BPE (tokenizer.json model BPE without byte_fallback): tokenizer.ggml.model "gpt2",
//   tokens (the byte-level strings of the vocabulary), token_type, merges ("a b"), and
//   tokenizer.ggml.pre, the pre-tokenizer llama.cpp must apply (told from the Split regex);
// - SentencePiece-style BPE (byte_fallback, ▁ pieces, <0xNN> byte tokens): "llama", with tokens,
//   scores and token_type;
// - special token ids, add_bos/add_eos, and tokenizer.chat_template from tokenizer_config.json.
// The token list is padded to the model's vocab_size with [PADn] tokens of type UNUSED.
import type { ModelConfig } from '../model/config.ts';
import { gguf, type GgufKv } from './gguf-format.ts';
import { ExportError } from './merged.ts';

/** llama.cpp llama_token_type (gguf-py TokenType). */
export const TokenType = { NORMAL: 1, UNKNOWN: 2, CONTROL: 3, USER_DEFINED: 4, UNUSED: 5, BYTE: 6 } as const;

type Json = Record<string, unknown>;
const isObj = (x: unknown): x is Json => typeof x === 'object' && x !== null && !Array.isArray(x);

interface AddedToken {
  id: number;
  content: string;
  special: boolean;
}

export interface GgufVocab {
  kv: GgufKv[];
  model: 'gpt2' | 'llama';
  pre: string | null;
  notes: string[];
}

// Pre-tokenizer regexes llama.cpp knows by name (llama-vocab.cpp), told apart by their distinctive parts.
const LLAMA3_DIGITS = '\\p{N}{1,3}';
const QWEN2_LETTERS = '[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}|';
const GPT2_REGEX = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

function splitRegexes(pre: unknown, out: string[] = [], byteLevelRegex = { used: false }) {
  if (!isObj(pre)) return { regexes: out, byteLevelRegex };
  if (pre.type === 'Sequence' && Array.isArray(pre.pretokenizers))
    for (const p of pre.pretokenizers) splitRegexes(p, out, byteLevelRegex);
  if (pre.type === 'Split' && isObj(pre.pattern) && typeof pre.pattern.Regex === 'string') out.push(pre.pattern.Regex);
  if (pre.type === 'ByteLevel' && pre.use_regex !== false) byteLevelRegex.used = true;
  return { regexes: out, byteLevelRegex };
}

/** The llama.cpp pre-tokenizer name for a byte-level BPE tokenizer.json, or null when we cannot tell. */
export function bpePreTokenizer(tok: Json): string | null {
  const { regexes, byteLevelRegex } = splitRegexes(tok.pre_tokenizer);
  const all = regexes.join('\n');
  if (all.includes(LLAMA3_DIGITS) && all.includes('[^\\r\\n\\p{L}\\p{N}]?\\p{L}+')) return 'llama-bpe';
  if (all.includes(QWEN2_LETTERS)) return 'qwen2';
  if (!regexes.length && byteLevelRegex.used) return 'gpt2';
  if (regexes.length === 1 && regexes[0] === GPT2_REGEX) return 'gpt2';
  return null;
}

function tokenContent(x: unknown): string | null {
  if (typeof x === 'string') return x;
  if (isObj(x) && typeof x.content === 'string') return x.content;
  return null;
}

/** add_bos/add_eos as tokenizers' TemplateProcessing post-processor would add them. */
function postProcessorAdds(post: unknown, token: string | null): boolean | null {
  if (!token || !isObj(post)) return null;
  if (post.type === 'Sequence' && Array.isArray(post.processors)) {
    for (const p of post.processors) {
      const r = postProcessorAdds(p, token);
      if (r !== null) return r;
    }
    return null;
  }
  if (post.type !== 'TemplateProcessing' || !Array.isArray(post.single)) return null;
  return post.single.some((p) => isObj(p) && isObj(p.SpecialToken) && p.SpecialToken.id === token);
}

function parseJson(files: ReadonlyMap<string, Uint8Array>, name: string): Json | null {
  const b = files.get(name);
  if (!b) return null;
  try {
    const j = JSON.parse(new TextDecoder().decode(b)) as unknown;
    if (!isObj(j)) throw new Error('not a JSON object');
    return j;
  } catch (e) {
    throw new ExportError(`${name} cannot be read: ${(e as Error).message}`);
  }
}

/** Checks the tokenizer can be written and builds its GGUF metadata (no tensor work). */
export function ggufVocab(c: ModelConfig, files: ReadonlyMap<string, Uint8Array>): GgufVocab {
  const notes: string[] = [];
  const tok = parseJson(files, 'tokenizer.json');
  const cfg = parseJson(files, 'tokenizer_config.json') ?? {};
  if (!tok) {
    if (files.has('tokenizer.model'))
      throw new ExportError(
        'GGUF export of a SentencePiece tokenizer.model without tokenizer.json is not yet supported; add the fast tokenizer (tokenizer.json)',
      );
    throw new ExportError('GGUF export needs the tokenizer (tokenizer.json); the model has none');
  }
  const model = tok.model;
  if (!isObj(model) || model.type !== 'BPE' || !isObj(model.vocab))
    throw new ExportError(
      `GGUF export supports BPE tokenizers (byte-level or SentencePiece-style); tokenizer.json has model type ${isObj(model) ? String(model.type) : 'none'}`,
    );
  const spm = model.byte_fallback === true;
  const vocab = model.vocab as Record<string, number>;
  const added: AddedToken[] = Array.isArray(tok.added_tokens)
    ? (tok.added_tokens as Json[]).map((t) => ({
        id: Number(t.id),
        content: String(t.content),
        special: t.special === true,
      }))
    : [];
  const tokens: (string | null)[] = [];
  const put = (id: number, s: string) => {
    if (!Number.isInteger(id) || id < 0) throw new ExportError(`tokenizer.json: bad token id ${id} for ${s}`);
    tokens[id] = s;
  };
  for (const [s, id] of Object.entries(vocab)) put(id, s);
  const addedById = new Map<number, AddedToken>();
  for (const a of added) {
    put(a.id, a.content);
    addedById.set(a.id, a);
  }
  if (tokens.length > c.vocabSize)
    throw new ExportError(
      `the tokenizer has ${tokens.length} tokens but the model's vocab_size is ${c.vocabSize}; llama.cpp needs one row per token`,
    );
  const n = c.vocabSize;
  const texts: string[] = new Array<string>(n);
  const types = new Int32Array(n);
  const scores = new Float32Array(n);
  let padded = 0;
  for (let i = 0; i < n; i++) {
    const s = tokens[i];
    if (s === undefined || s === null) {
      texts[i] = `[PAD${i}]`;
      types[i] = TokenType.UNUSED;
      padded++;
      continue;
    }
    texts[i] = s;
    const a = addedById.get(i);
    if (a) {
      // convert_hf_to_gguf does_token_look_special: <|...|> and similar count as control tokens.
      const looksSpecial =
        /^<\|.*\|>$/.test(s) || /^<｜.*｜>$/.test(s) || (s.startsWith('<') && s.endsWith('>') && spm);
      types[i] = a.special || looksSpecial ? TokenType.CONTROL : TokenType.USER_DEFINED;
    } else if (spm && /^<0x[0-9A-Fa-f]{2}>$/.test(s)) {
      types[i] = TokenType.BYTE;
    } else {
      types[i] = TokenType.NORMAL;
      // SentencePiece BPE pieces are ranked by merge order, which the vocabulary order follows.
      if (spm) scores[i] = -i;
    }
  }
  if (padded) notes.push(`${padded} ids past the tokenizer's vocabulary are written as unused [PADn] tokens`);

  const kv: GgufKv[] = [];
  let pre: string | null = null;
  if (spm) {
    kv.push({ key: 'tokenizer.ggml.model', value: gguf.str('llama') });
    kv.push({ key: 'tokenizer.ggml.pre', value: gguf.str('default') });
    kv.push({ key: 'tokenizer.ggml.tokens', value: gguf.arr('STRING', texts) });
    kv.push({ key: 'tokenizer.ggml.scores', value: gguf.arr('FLOAT32', scores) });
    kv.push({ key: 'tokenizer.ggml.token_type', value: gguf.arr('INT32', types) });
  } else {
    pre = bpePreTokenizer(tok);
    if (!pre) {
      pre = 'default';
      notes.push(
        "the tokenizer's pre-tokenizer is not one llama.cpp knows by name (llama-bpe, qwen2, gpt2); written as 'default', so llama.cpp may split text differently",
      );
    }
    const merges = Array.isArray(model.merges)
      ? (model.merges as unknown[]).map((m) => (Array.isArray(m) ? m.join(' ') : String(m)))
      : [];
    kv.push({ key: 'tokenizer.ggml.model', value: gguf.str('gpt2') });
    kv.push({ key: 'tokenizer.ggml.pre', value: gguf.str(pre) });
    kv.push({ key: 'tokenizer.ggml.tokens', value: gguf.arr('STRING', texts) });
    kv.push({ key: 'tokenizer.ggml.token_type', value: gguf.arr('INT32', types) });
    kv.push({ key: 'tokenizer.ggml.merges', value: gguf.arr('STRING', merges) });
  }

  const idOf = (s: string | null): number | null => {
    if (s === null) return null;
    const i = texts.indexOf(s);
    return i >= 0 ? i : null;
  };
  const bosText = tokenContent(cfg.bos_token);
  const eosText = tokenContent(cfg.eos_token);
  const bos = idOf(bosText) ?? c.bosTokenId;
  const eos = idOf(eosText) ?? c.eosTokenIds[0] ?? null;
  const pad = idOf(tokenContent(cfg.pad_token)) ?? c.padTokenId;
  const unk = idOf(tokenContent(cfg.unk_token)) ?? idOf(typeof model.unk_token === 'string' ? model.unk_token : null);
  const special: [string, number | null][] = [
    ['bos_token_id', bos],
    ['eos_token_id', eos],
    ['unknown_token_id', unk],
    ['padding_token_id', pad],
  ];
  for (const [k, id] of special)
    if (id !== null && id >= 0 && id < n) kv.push({ key: `tokenizer.ggml.${k}`, value: gguf.u32(id) });
  const addBos =
    typeof cfg.add_bos_token === 'boolean'
      ? cfg.add_bos_token
      : (postProcessorAdds(tok.post_processor, bosText ?? (bos !== null ? texts[bos] : null)) ?? false);
  kv.push({ key: 'tokenizer.ggml.add_bos_token', value: gguf.bool(addBos) });
  if (typeof cfg.add_eos_token === 'boolean')
    kv.push({ key: 'tokenizer.ggml.add_eos_token', value: gguf.bool(cfg.add_eos_token) });

  let template: unknown = cfg.chat_template;
  if (template === undefined || template === null) {
    const jinja = files.get('chat_template.jinja');
    if (jinja) template = new TextDecoder().decode(jinja);
    else {
      const cj = parseJson(files, 'chat_template.json');
      if (cj) template = cj.chat_template;
    }
  }
  if (typeof template === 'string') kv.push({ key: 'tokenizer.chat_template', value: gguf.str(template) });
  else if (Array.isArray(template)) {
    // [{name, template}, ...]: "default" is the chat template, the others tokenizer.chat_template.<name>.
    for (const t of template) {
      if (!isObj(t) || typeof t.name !== 'string' || typeof t.template !== 'string') continue;
      const key = t.name === 'default' ? 'tokenizer.chat_template' : `tokenizer.chat_template.${t.name}`;
      kv.push({ key, value: gguf.str(t.template) });
    }
  }
  return { kv, model: spm ? 'llama' : 'gpt2', pre, notes };
}
