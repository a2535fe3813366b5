// An Ollama Modelfile beside an exported GGUF (ollama docs/modelfile.md): FROM the file, a TEMPLATE in
// Go's text/template syntax that renders a conversation as the model's own jinja chat template
// does, SYSTEM for the default system prompt the jinja template inserts when a conversation has
// none, and PARAMETER stop for the end-of-turn markers. Ollama walks `.Messages` (the SYSTEM prompt
// arrives there as a first "system" message when the conversation has none); llama.cpp adds the
// BOS token itself, so the templates leave it out.
import { ChatTemplate } from '../../data/template.ts';

export type ChatFamily = 'chatml' | 'llama3' | 'mistral';

/** The chat format family of a jinja chat template, by the markers it writes. */
export function chatFamily(jinja: string | null): ChatFamily | null {
  if (!jinja) return 'chatml'; // our ChatML fallback (src/data/template.ts)
  if (jinja.includes('<|im_start|>')) return 'chatml';
  if (jinja.includes('<|start_header_id|>')) return 'llama3';
  if (jinja.includes('[INST]')) return 'mistral';
  return null;
}

// Ollama templates of each family (the shapes of ollama's library templates for Qwen2, Llama 3 and
// Mistral, without tool calls).
const TEMPLATES: Record<ChatFamily, string> = {
  chatml: `{{- range .Messages }}<|im_start|>{{ .Role }}
{{ .Content }}<|im_end|>
{{ end }}<|im_start|>assistant
`,
  llama3: `{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>

{{ .Content }}<|eot_id|>
{{- end }}<|start_header_id|>assistant<|end_header_id|>

`,
  mistral: `{{- range .Messages }}
{{- if eq .Role "user" }}[INST] {{ .Content }} [/INST]
{{- else if eq .Role "assistant" }}{{ .Content }}</s>
{{- end }}
{{- end }}`,
};

const STOPS: Record<ChatFamily, string[]> = {
  chatml: ['<|im_start|>', '<|im_end|>'],
  llama3: ['<|start_header_id|>', '<|end_header_id|>', '<|eot_id|>'],
  mistral: ['[INST]', '[/INST]', '</s>'],
};

export function ollamaTemplate(family: ChatFamily): string {
  return TEMPLATES[family];
}

/** The system prompt the jinja template writes when the conversation has none (null when none). */
export function defaultSystemPrompt(jinja: string | null, family: ChatFamily): string | null {
  if (family === 'mistral') return null;
  const probe = '\u0007probe\u0007';
  const text = new ChatTemplate(jinja).renderMessages([{ role: 'user', content: probe }], {
    addGenerationPrompt: false,
  });
  const head =
    family === 'chatml'
      ? /^<\|im_start\|>system\n([\s\S]*?)<\|im_end\|>\n/.exec(text)
      : /^(?:<\|begin_of_text\|>)?<\|start_header_id\|>system<\|end_header_id\|>\n\n([\s\S]*?)<\|eot_id\|>/.exec(text);
  return head && !head[1].includes(probe) ? head[1] : null;
}

/** A Go template string literal for the Modelfile ("""…""" cannot hold three quotes in a row). */
function tripleQuoted(s: string): string {
  if (s.includes('"""')) throw new Error('a Modelfile block cannot contain """');
  return `"""${s}"""`;
}

export interface ModelfileOptions {
  /** The GGUF file name, next to the Modelfile. */
  ggufFile: string;
  /** tokenizer_config.json's chat_template (null: the model has none). */
  chatTemplate: string | null;
  /** The model's end-of-sequence token text, added to the stops when the family's do not cover it. */
  eosToken?: string | null;
}

/** The Modelfile text, and notes for the user (a chat format we cannot translate). */
export function ollamaModelfile(o: ModelfileOptions): { text: string; notes: string[] } {
  const lines = [`FROM ./${o.ggufFile}`];
  const notes: string[] = [];
  const family = chatFamily(o.chatTemplate);
  if (!family) {
    notes.push(
      'Modelfile: the chat template is none of ChatML, Llama 3 or Mistral; no TEMPLATE written (Ollama falls back to the GGUF’s tokenizer.chat_template)',
    );
    return { text: lines.join('\n') + '\n', notes };
  }
  lines.push(`TEMPLATE ${tripleQuoted(TEMPLATES[family])}`);
  const system = defaultSystemPrompt(o.chatTemplate, family);
  if (system !== null) lines.push(`SYSTEM ${tripleQuoted(system)}`);
  const stops = [...STOPS[family]];
  if (o.eosToken && !stops.includes(o.eosToken)) stops.push(o.eosToken);
  for (const s of stops) lines.push(`PARAMETER stop ${JSON.stringify(s)}`);
  return { text: lines.join('\n') + '\n', notes };
}
