// Tokenizer wrapper over @huggingface/tokenizers: encode/decode, the special tokens from
// tokenizer_config.json (plain strings or AddedToken objects {content, …}), the chat template, and a
// stable hash for cache keys.
import { Tokenizer } from '@huggingface/tokenizers';
import { sha256Hex } from './hash.ts';

type Json = Record<string, unknown>;

export interface SpecialToken {
  content: string;
  id: number | undefined;
}

export interface TextTokenizer {
  encode(text: string, opts?: { addSpecialTokens?: boolean }): number[];
  decode(ids: ArrayLike<number>, opts?: { skipSpecialTokens?: boolean }): string;
  tokenToId(token: string): number | undefined;
  readonly bos?: SpecialToken;
  readonly eos?: SpecialToken;
  readonly pad?: SpecialToken;
  readonly unk?: SpecialToken;
  /** Whether plain-text encoding should start with BOS (tokenizer_config add_bos_token / post-processor). */
  readonly addsBos: boolean;
  readonly chatTemplate: string | null;
  /** sha256 over tokenizer.json and the config fields that change tokens; stable across loads. */
  readonly hash: string;
}

/** tokenizer_config.json token fields are either strings or AddedToken dicts. */
export function tokenContent(v: unknown): string | undefined {
  if (typeof v === 'string') return v;
  if (v && typeof v === 'object' && typeof (v as Json).content === 'string') return (v as Json).content as string;
  return undefined;
}

/** chat_template may be a string or a list of {name, template}; picks 'default' (or 'tool_use' when asked). */
export function pickChatTemplate(config: Json, name?: string): string | null {
  const t = config.chat_template;
  if (typeof t === 'string') return t;
  if (Array.isArray(t)) {
    const byName = new Map<string, string>();
    for (const e of t)
      if (e && typeof e === 'object' && typeof e.name === 'string' && typeof e.template === 'string')
        byName.set(e.name, e.template);
    return byName.get(name ?? 'default') ?? byName.get('default') ?? [...byName.values()][0] ?? null;
  }
  return null;
}

// Fields of tokenizer_config.json that change token ids or the rendered template.
const HASHED_CONFIG_KEYS = [
  'bos_token',
  'eos_token',
  'pad_token',
  'unk_token',
  'add_bos_token',
  'add_eos_token',
  'chat_template',
  'legacy',
  'add_prefix_space',
];

export interface LoadTokenizerOptions {
  /** Pre-computed text of tokenizer.json; hashing it avoids re-serialising an 11 MB object. */
  tokenizerJsonText?: string;
  /** Overrides the chat template of the config. */
  chatTemplate?: string | null;
}

export class HfTokenizer implements TextTokenizer {
  readonly bos?: SpecialToken;
  readonly eos?: SpecialToken;
  readonly pad?: SpecialToken;
  readonly unk?: SpecialToken;
  readonly addsBos: boolean;
  readonly chatTemplate: string | null;
  private constructor(
    private readonly tok: Tokenizer,
    readonly config: Json,
    readonly hash: string,
    chatTemplate: string | null,
  ) {
    const special = (key: string): SpecialToken | undefined => {
      const content = tokenContent(config[key]);
      return content === undefined ? undefined : { content, id: tok.token_to_id(content) };
    };
    this.bos = special('bos_token');
    this.eos = special('eos_token');
    this.pad = special('pad_token');
    this.unk = special('unk_token');
    this.chatTemplate = chatTemplate;
    // Llama 3 has no add_bos_token but its post-processor adds <|begin_of_text|>; ask the tokenizer.
    const probe = tok.encode('a', { add_special_tokens: true }).ids;
    this.addsBos = this.bos?.id !== undefined && probe[0] === this.bos.id;
  }

  static async create(
    tokenizerJson: Json | string,
    tokenizerConfig: Json | string,
    opts: LoadTokenizerOptions = {},
  ): Promise<HfTokenizer> {
    const jsonText =
      typeof tokenizerJson === 'string' ? tokenizerJson : (opts.tokenizerJsonText ?? JSON.stringify(tokenizerJson));
    const json = typeof tokenizerJson === 'string' ? (JSON.parse(tokenizerJson) as Json) : tokenizerJson;
    const config = typeof tokenizerConfig === 'string' ? (JSON.parse(tokenizerConfig) as Json) : tokenizerConfig;
    const tok = new Tokenizer(json, config);
    const chatTemplate = opts.chatTemplate !== undefined ? opts.chatTemplate : pickChatTemplate(config);
    const relevant: Json = {};
    for (const k of HASHED_CONFIG_KEYS) if (config[k] !== undefined) relevant[k] = config[k];
    relevant.chat_template = chatTemplate;
    const hash = await sha256Hex(`${await sha256Hex(jsonText)}\n${JSON.stringify(relevant)}`);
    return new HfTokenizer(tok, config, hash, chatTemplate);
  }

  encode(text: string, opts: { addSpecialTokens?: boolean } = {}): number[] {
    return this.tok.encode(text, { add_special_tokens: opts.addSpecialTokens ?? false }).ids;
  }

  decode(ids: ArrayLike<number>, opts: { skipSpecialTokens?: boolean } = {}): string {
    if (ids.length === 0) return '';
    return this.tok.decode(Array.from(ids), { skip_special_tokens: opts.skipSpecialTokens ?? false });
  }

  tokenToId(token: string): number | undefined {
    return this.tok.token_to_id(token);
  }

  get vocabSize(): number {
    return this.tok.get_vocab(true).size;
  }
}

export function loadTokenizer(
  tokenizerJson: Json | string,
  tokenizerConfig: Json | string,
  opts?: LoadTokenizerOptions,
): Promise<HfTokenizer> {
  return HfTokenizer.create(tokenizerJson, tokenizerConfig, opts);
}
