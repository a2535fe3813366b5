// Chat templates: the tokenizer's own jinja `chat_template` rendered with @huggingface/jinja, as
// transformers' apply_chat_template does (special tokens in the context, add_generation_prompt, tools,
// enable_thinking), and a ChatML fallback with a visible warning for models that have none.
import { Template } from '@huggingface/jinja';
import { addWarning, type DataMessage } from './messages.ts';
import type { Conversation, Message } from './types.ts';

/** ChatML, as used by Qwen and LLaMA-Factory's "chatml" template. */
export const CHATML_TEMPLATE = [
  '{%- if tools %}',
  "{{- '<|im_start|>system\\n' }}",
  "{%- if messages[0].role == 'system' %}{{- messages[0].content + '\\n\\n' }}{%- endif %}",
  "{{- '# Tools\\n\\nYou may call one or more functions. Function signatures:\\n<tools>' }}",
  "{%- for tool in tools %}{{- '\\n' + (tool | tojson) }}{%- endfor %}",
  "{{- '\\n</tools><|im_end|>\\n' }}",
  "{%- elif messages[0].role == 'system' %}",
  "{{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}",
  '{%- endif %}',
  '{%- for message in messages %}',
  "{%- if message.role == 'system' %}",
  "{%- if not loop.first %}{{- '<|im_start|>system\\n' + message.content + '<|im_end|>\\n' }}{%- endif %}",
  "{%- elif message.role == 'assistant' and message.tool_calls %}",
  "{{- '<|im_start|>assistant\\n' }}",
  "{%- for tc in message.tool_calls %}{{- '<tool_call>\\n' + (tc.function | tojson) + '\\n</tool_call>' }}{%- endfor %}",
  "{{- '<|im_end|>\\n' }}",
  '{%- else %}',
  "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}",
  '{%- endif %}',
  '{%- endfor %}',
  "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}",
].join('');

/** A message as chat templates expect it (OpenAI / transformers shape). */
export interface TemplateMessage {
  role: 'system' | 'user' | 'assistant' | 'tool';
  content: string;
  tool_calls?: { id: string; type: 'function'; function: { name: string; arguments: unknown } }[];
  /** On tool results: the id of the call answered (Mistral templates require it). */
  tool_call_id?: string;
}

export interface TemplateContext {
  bos_token?: string;
  eos_token?: string;
  pad_token?: string;
  unk_token?: string;
  /** Passed only when set: Qwen3 tests `enable_thinking is defined and enable_thinking is false`. */
  enable_thinking?: boolean;
  /** Extra variables (e.g. date_string for Llama 3.1); `strftime_now` is deliberately not provided so
   *  training data does not depend on today's date. */
  extra?: Record<string, unknown>;
}

export class ChatTemplate {
  readonly isFallback: boolean;
  readonly warnings: string[] = [];
  /** `warnings` as codes (messages.ts), in the same order. */
  readonly warningCodes: DataMessage[] = [];
  private readonly tpl: Template;
  constructor(
    readonly source: string | null,
    private readonly ctx: TemplateContext = {},
  ) {
    this.isFallback = !source;
    if (!source) {
      addWarning(this, 'warn-no-chat-template');
    }
    try {
      this.tpl = new Template(source ?? CHATML_TEMPLATE);
    } catch (e) {
      throw new Error(`chat template does not parse: ${(e as Error).message}`);
    }
  }

  /** Renders template messages exactly as given. */
  renderMessages(messages: TemplateMessage[], opts: { addGenerationPrompt?: boolean; tools?: unknown[] } = {}): string {
    const vars: Record<string, unknown> = {
      messages,
      add_generation_prompt: opts.addGenerationPrompt ?? false,
      bos_token: this.ctx.bos_token ?? '',
      eos_token: this.ctx.eos_token ?? '',
      pad_token: this.ctx.pad_token ?? '',
      unk_token: this.ctx.unk_token ?? '',
      ...this.ctx.extra,
    };
    if (opts.tools && opts.tools.length) vars.tools = opts.tools;
    if (this.ctx.enable_thinking !== undefined) vars.enable_thinking = this.ctx.enable_thinking;
    return this.tpl.render(vars);
  }

  /** Renders a canonical conversation (all messages, or the first `upTo` of them). */
  render(conv: Conversation, opts: { addGenerationPrompt?: boolean; upTo?: number } = {}): string {
    const msgs = toTemplateMessages(conv, opts.upTo);
    return this.renderMessages(msgs, { addGenerationPrompt: opts.addGenerationPrompt, tools: toolsOf(conv) });
  }
}

/** Function schemas in the {type:'function', function:{…}} shape templates iterate over. */
export function toolsOf(conv: Conversation): unknown[] | undefined {
  if (!conv.tools) return undefined;
  const list = JSON.parse(conv.tools) as unknown[];
  return list.map((t) =>
    t && typeof t === 'object' && 'function' in (t as object) ? t : { type: 'function', function: t },
  );
}

// Deterministic 9-character alphanumeric call ids (the format Mistral templates insist on), so the
// rendered text, and therefore the tokens and their cache key, never vary between runs.
function callId(turn: number, k: number): string {
  return `call${String(turn).padStart(3, '0')}${String(k).padStart(2, '0')}`.slice(-9);
}

function toolCalls(content: string, turn: number): NonNullable<TemplateMessage['tool_calls']> {
  const v = JSON.parse(content) as unknown;
  const calls = (Array.isArray(v) ? v : [v]) as { name: string; arguments?: unknown }[];
  return calls.map((c, k) => {
    let args = c.arguments ?? {};
    if (typeof args === 'string') {
      try {
        args = JSON.parse(args);
      } catch {
        /* template gets the string */
      }
    }
    return { id: callId(turn, k), type: 'function' as const, function: { name: c.name, arguments: args } };
  });
}

/** Canonical → template messages: system first, function_call → assistant tool_calls, observation → tool. */
export function toTemplateMessages(conv: Conversation, upTo?: number): TemplateMessage[] {
  const out: TemplateMessage[] = [];
  if (conv.system) out.push({ role: 'system', content: conv.system });
  const msgs = upTo === undefined ? conv.messages : conv.messages.slice(0, upTo);
  let pendingIds: string[] = [];
  msgs.forEach((m, turn) => {
    const t = templateMessage(m, turn);
    if (t.tool_calls) pendingIds = t.tool_calls.map((c) => c.id);
    // Observations answer the calls of the function_call turn before them, in order.
    if (t.role === 'tool') t.tool_call_id = pendingIds.shift() ?? callId(turn, 0);
    out.push(t);
  });
  return out;
}

function templateMessage(m: Message, turn: number): TemplateMessage {
  switch (m.role) {
    case 'function_call':
      return { role: 'assistant', content: '', tool_calls: toolCalls(m.content, turn) };
    case 'observation':
    case 'tool':
      return { role: 'tool', content: m.content };
    default:
      return { role: m.role, content: m.content };
  }
}
