// The Ollama Modelfile written beside a GGUF: its TEMPLATE, rendered by a small renderer of the Go
// text/template subset it uses (written here from the text/template docs: actions, `{{-`/`-}}` trim
// markers, range, if / else if / else, eq, fields), gives the same text as the model's own jinja chat
// template (rendered by @huggingface/jinja as transformers does) for two-turn conversations, with the
// SYSTEM default Ollama inserts when the conversation has no system message.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ChatTemplate, type TemplateMessage } from '../../src/data/template.ts';
import {
  chatFamily,
  defaultSystemPrompt,
  ollamaModelfile,
  ollamaTemplate,
} from '../../src/engine/export/ollama-modelfile.ts';

type Node =
  | { kind: 'text'; text: string }
  | { kind: 'field'; path: string[] }
  | { kind: 'range'; path: string[]; body: Node[] }
  | { kind: 'if'; branches: { cond: string | null; body: Node[] }[] };

/** Splits into text and actions, applying the trim markers (which eat adjacent white space). */
function lex(src: string): ({ text: string } | { action: string })[] {
  const out: ({ text: string } | { action: string })[] = [];
  let at = 0;
  let trimNext = false;
  while (at < src.length) {
    const open = src.indexOf('{{', at);
    let text = src.slice(at, open < 0 ? src.length : open);
    if (trimNext) text = text.replace(/^\s+/, '');
    if (open < 0) {
      out.push({ text });
      break;
    }
    const close = src.indexOf('}}', open);
    let action = src.slice(open + 2, close);
    if (action.startsWith('- ')) {
      text = text.replace(/\s+$/, '');
      action = action.slice(2);
    }
    trimNext = action.endsWith(' -');
    if (trimNext) action = action.slice(0, -2);
    out.push({ text }, { action: action.trim() });
    at = close + 2;
  }
  return out;
}

function parse(src: string): Node[] {
  const items = lex(src);
  let i = 0;
  const block = (): { nodes: Node[]; stop: string } => {
    const nodes: Node[] = [];
    while (i < items.length) {
      const it = items[i++];
      if ('text' in it) {
        if (it.text) nodes.push({ kind: 'text', text: it.text });
        continue;
      }
      const a = it.action;
      if (a === 'end' || a === 'else' || a.startsWith('else if ')) return { nodes, stop: a };
      if (a.startsWith('range ')) {
        const body = block();
        if (body.stop !== 'end') throw new Error('range without end');
        nodes.push({ kind: 'range', path: a.slice(6).trim().slice(1).split('.'), body: body.nodes });
      } else if (a.startsWith('if ')) {
        const branches: { cond: string | null; body: Node[] }[] = [];
        let cond: string | null = a.slice(3);
        for (;;) {
          const b = block();
          branches.push({ cond, body: b.nodes });
          if (b.stop === 'end') break;
          cond = b.stop === 'else' ? null : b.stop.slice(8);
        }
        nodes.push({ kind: 'if', branches });
      } else if (a.startsWith('.')) nodes.push({ kind: 'field', path: a.slice(1).split('.') });
      else throw new Error(`unsupported action {{${a}}}`);
    }
    return { nodes, stop: '' };
  };
  return block().nodes;
}

function field(dot: Record<string, unknown>, path: string[]): unknown {
  return path.reduce<unknown>((v, k) => (v as Record<string, unknown>)[k], dot);
}

function truthy(cond: string, dot: Record<string, unknown>): boolean {
  const eq = /^eq \.(\w+) "([^"]*)"$/.exec(cond);
  if (eq) return field(dot, [eq[1]]) === eq[2];
  if (cond.startsWith('.')) return !!field(dot, cond.slice(1).split('.'));
  throw new Error(`unsupported condition ${cond}`);
}

function exec(nodes: Node[], dot: Record<string, unknown>): string {
  let out = '';
  for (const n of nodes) {
    if (n.kind === 'text') out += n.text;
    else if (n.kind === 'field') out += String(field(dot, n.path));
    else if (n.kind === 'range')
      for (const item of field(dot, n.path) as Record<string, unknown>[]) out += exec(n.body, item);
    else {
      const b = n.branches.find((br) => br.cond === null || truthy(br.cond, dot));
      if (b) out += exec(b.body, dot);
    }
  }
  return out;
}

/** What Ollama sends: the Modelfile's SYSTEM as a first system message when there is none. */
function ollamaRender(template: string, system: string | null, messages: TemplateMessage[]): string {
  const msgs =
    system !== null && messages[0]?.role !== 'system' ? [{ role: 'system', content: system }, ...messages] : messages;
  return exec(parse(template), { Messages: msgs.map((m) => ({ Role: m.role, Content: m.content })) });
}

const TWO_TURNS: TemplateMessage[] = [
  { role: 'user', content: 'Who are you?' },
  { role: 'assistant', content: 'I am Tabby, made by the Tabtune team.' },
  { role: 'user', content: '你能做什么？' },
];
const WITH_SYSTEM: TemplateMessage[] = [{ role: 'system', content: 'Answer in one line.' }, ...TWO_TURNS];

const fixture = (name: string) => readFileSync(`tests/fixtures/shared/chat-templates/${name}.jinja`, 'utf8');
const demoTemplate = () =>
  (JSON.parse(readFileSync('public/demo-model/tokenizer_config.json', 'utf8')) as { chat_template: string })
    .chat_template;
// meta-llama/Meta-Llama-3-8B-Instruct's chat_template (tokenizer_config.json).
const LLAMA3 =
  "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}";
// mistralai/Mistral-7B-Instruct-v0.2's chat_template.
const MISTRAL =
  "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}";

describe('Ollama Modelfile', () => {
  const cases: { name: string; jinja: string; eos: string; convs: TemplateMessage[][] }[] = [
    {
      name: 'demo model (ChatML, default system)',
      jinja: demoTemplate(),
      eos: '<|im_end|>',
      convs: [TWO_TURNS, WITH_SYSTEM],
    },
    {
      name: 'Qwen2.5 (ChatML)',
      jinja: fixture('Qwen-Qwen2.5-7B-Instruct'),
      eos: '<|im_end|>',
      convs: [TWO_TURNS, WITH_SYSTEM],
    },
    { name: 'Llama 3', jinja: LLAMA3, eos: '<|eot_id|>', convs: [TWO_TURNS, WITH_SYSTEM] },
    // Llama 3.2 opens every system turn with its knowledge-date preamble: equal without a system message.
    { name: 'Llama 3.2', jinja: fixture('meta-llama-Llama-3.2-3B-Instruct'), eos: '<|eot_id|>', convs: [TWO_TURNS] },
    { name: 'Mistral', jinja: MISTRAL, eos: '</s>', convs: [TWO_TURNS] },
  ];
  for (const c of cases)
    it(`${c.name}: TEMPLATE + SYSTEM render a two-turn conversation like the jinja template`, () => {
      const family = chatFamily(c.jinja);
      expect(family).not.toBeNull();
      const template = ollamaTemplate(family!);
      const system = defaultSystemPrompt(c.jinja, family!);
      const bos = family === 'chatml' ? '' : family === 'llama3' ? '<|begin_of_text|>' : '<s>';
      const jinja = new ChatTemplate(c.jinja, { bos_token: bos, eos_token: c.eos });
      for (const conv of c.convs) {
        // llama.cpp adds BOS itself (tokenizer.ggml.add_bos_token), so the Modelfile leaves it out.
        const expected = jinja.renderMessages(conv, { addGenerationPrompt: family !== 'mistral' });
        expect(bos + ollamaRender(template, system, conv)).toBe(expected.startsWith(bos) ? expected : bos + expected);
      }
    });

  it('writes FROM, TEMPLATE, SYSTEM and the end-of-turn stops', () => {
    const { text, notes } = ollamaModelfile({
      ggufFile: 'tabby-q4_k_m.gguf',
      chatTemplate: demoTemplate(),
      eosToken: '<|im_end|>',
    });
    expect(notes).toEqual([]);
    expect(text.split('\n')[0]).toBe('FROM ./tabby-q4_k_m.gguf');
    expect(text).toContain('TEMPLATE """{{- range .Messages }}<|im_start|>{{ .Role }}\n');
    expect(text).toContain('SYSTEM """You are a helpful assistant."""\n');
    expect(text).toContain('PARAMETER stop "<|im_start|>"\nPARAMETER stop "<|im_end|>"\n');
    expect(defaultSystemPrompt(LLAMA3, 'llama3')).toBeNull();
    const llama = ollamaModelfile({ ggufFile: 'x.gguf', chatTemplate: LLAMA3, eosToken: '<|end_of_text|>' }).text;
    expect(llama).toContain('PARAMETER stop "<|eot_id|>"\nPARAMETER stop "<|end_of_text|>"\n');
    expect(llama).not.toContain('SYSTEM');
  });

  it('says so when the chat format is none it knows, and writes no TEMPLATE', () => {
    const { text, notes } = ollamaModelfile({ ggufFile: 'x.gguf', chatTemplate: fixture('google-gemma-4-31B-it') });
    expect(text).toBe('FROM ./x.gguf\n');
    expect(notes[0]).toMatch(/none of ChatML, Llama 3 or Mistral/);
  });
});
