// Every chat template of tests/fixtures/shared/chat-templates rendered with @huggingface/jinja on a
// multi-turn, a system-prompt and a tool-calling conversation, and split into (prompt, answer) pieces.
// A template either renders and splits correctly, or is listed below with the reason it cannot.
import { describe, expect, test } from 'vitest';
import { readdirSync } from 'node:fs';
import { CHATML_TEMPLATE, ChatTemplate, conversationSegments, type Conversation } from '../../../src/data/index.ts';
import { MULTI, SYSTEM, TOOLS } from './conversations.ts';
import { TEMPLATES_DIR, template } from './helpers.ts';

const CONVS = { multi: MULTI, system: SYSTEM, tools: TOOLS };
type Kind = keyof typeof CONVS;

const JINJA_GAP = /filter|not a function|keys must be strings|unpack/;
const NO_TOOL_CALLS = /does not render tool calls/;
const NEEDS_TOOLS = /Expected iterable|undefined values|NullValue|UndefinedValue/;
/** Templates that cannot be used for a kind of conversation, and why. */
const KNOWN: Record<string, Partial<Record<Kind, RegExp>>> = {
  // @huggingface/jinja 0.5.11 lacks a feature these templates use (Python's `string`/`min` filters,
  // integer dict keys, `.format()`-style calls); transformers renders them.
  'Apriel-1.6-15b-Thinker-fixed': { tools: JINJA_GAP },
  'ByteDance-Seed-OSS': { multi: JINJA_GAP, system: JINJA_GAP, tools: JINJA_GAP },
  'openbmb-MiniCPM5-1B': { tools: JINJA_GAP },
  'tencent-Hy3': { multi: JINJA_GAP, system: JINJA_GAP, tools: JINJA_GAP },
  'Kimi-K2-Instruct': { tools: JINJA_GAP },
  'Kimi-K2-Thinking': { tools: JINJA_GAP },
  // Tool-use-only variants: they iterate `tools`/`functions` unconditionally (Python's Jinja fails the
  // same way without tools) or expect tool schemas with fields our example omits.
  'CohereForAI-c4ai-command-r-plus-tool_use': { multi: NEEDS_TOOLS, system: NEEDS_TOOLS },
  'NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use': { multi: NEEDS_TOOLS, system: NEEDS_TOOLS },
  'NousResearch-Hermes-3-Llama-3.1-8B-tool_use': { multi: NEEDS_TOOLS, system: NEEDS_TOOLS },
  'meetkai-functionary-medium-v3.2': { tools: JINJA_GAP },
  // These render an assistant turn's `tool_calls` as nothing: such rows are reported, not trained.
  'LFM2-8B-A1B': { tools: NO_TOOL_CALLS },
  'LFM2.5-Instruct': { tools: NO_TOOL_CALLS },
  'ibm-granite-granite-3.3-2B-Instruct': { tools: NO_TOOL_CALLS },
  'llama-cpp-rwkv-world': { tools: NO_TOOL_CALLS },
  'fireworks-ai-llama-3-firefunction-v2': { multi: NEEDS_TOOLS, system: NEEDS_TOOLS, tools: NEEDS_TOOLS },
  'meetkai-functionary-medium-v3.1': { multi: NEEDS_TOOLS, system: NEEDS_TOOLS },
  'unsloth-Apriel-1.5': { multi: NEEDS_TOOLS, system: NEEDS_TOOLS, tools: JINJA_GAP },
  // Renders tool calls without the function name in a way we can locate: the row is reported invalid.
  'deepseek-ai-DeepSeek-R1-Distill-Llama-8B': { tools: /cannot locate it for label masking/ },
};

const names = readdirSync(TEMPLATES_DIR)
  .filter((f) => f.endsWith('.jinja'))
  .map((f) => f.slice(0, -6))
  .sort();

describe('chat templates: render and split on multi-turn, system and tool conversations', () => {
  test('the fixture folder has many templates', () => expect(names.length).toBeGreaterThan(50));
  test.each(names)('%s', (name) => {
    const t = new ChatTemplate(template(name), { bos_token: '<s>', eos_token: '</s>' });
    for (const [kind, conv] of Object.entries(CONVS) as [Kind, Conversation][]) {
      const known = KNOWN[name]?.[kind];
      let seg;
      try {
        seg = conversationSegments(conv, t);
      } catch (e) {
        expect(known, `${name}/${kind} failed: ${(e as Error).message}`).toBeDefined();
        expect((e as Error).message).toMatch(known!);
        continue;
      }
      expect(known, `${name}/${kind} is listed as failing but works`).toBeUndefined();
      // the pieces are the whole rendered text, in order
      expect(seg.pairs.map((p) => p.source + p.target).join('')).toBe(seg.text);
      const answers = conv.messages.filter((m) => m.role === 'assistant' || m.role === 'function_call');
      expect(seg.pairs).toHaveLength(answers.length);
      seg.pairs.forEach((p, k) => {
        const m = answers[k];
        if (m.role === 'assistant') expect(p.target, `${name}/${kind} answer ${k}`).toContain(m.content);
        else expect(p.target, `${name}/${kind} call ${k}`).toContain('get_weather');
      });
      // prompt-side text is never in an answer
      for (const m of conv.messages.filter((x) => x.role === 'user')) {
        for (const p of seg.pairs) expect(p.target).not.toContain(m.content);
      }
      if (conv.system) expect(seg.pairs[0].source).toContain(conv.system);
    }
  });
});

describe('context variables', () => {
  test('bos/eos tokens, add_generation_prompt and tools reach the template', () => {
    const t = new ChatTemplate(template('meta-llama-Llama-3.1-8B-Instruct'), {
      bos_token: '<|begin_of_text|>',
      eos_token: '<|eot_id|>',
    });
    const noGen = t.render(SYSTEM, { upTo: 1 });
    const gen = t.render(SYSTEM, { upTo: 1, addGenerationPrompt: true });
    expect(noGen.startsWith('<|begin_of_text|>')).toBe(true);
    expect(gen).toBe(`${noGen}<|start_header_id|>assistant<|end_header_id|>\n\n`);
    const withTools = t.render(TOOLS);
    expect(withTools).toContain('"name": "get_weather"');
    expect(withTools).toContain('Today Date: 26 Jul 2024'); // no strftime_now: data never depends on today
  });

  test('enable_thinking reaches Qwen3', () => {
    const conv = { messages: [{ role: 'user' as const, content: 'Hi' }] };
    const off = new ChatTemplate(template('Qwen-Qwen3-0.6B'), { enable_thinking: false }).render(conv, {
      addGenerationPrompt: true,
    });
    const on = new ChatTemplate(template('Qwen-Qwen3-0.6B'), {}).render(conv, { addGenerationPrompt: true });
    expect(off).toBe('<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n');
    expect(on).toBe('<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n');
  });

  test('tool calls get 9-character ids and tool results point to them (Mistral)', () => {
    const t = new ChatTemplate(template('Mistral-Small-3.2-24B-Instruct-2506'), {
      bos_token: '<s>',
      eos_token: '</s>',
    });
    const text = t.render(TOOLS);
    const id = /\[CALL_ID\]([A-Za-z0-9]+)\[ARGS\]/.exec(text)?.[1];
    expect(id).toHaveLength(9);
    expect(text).toContain('[TOOL_RESULTS]');
  });

  test('ChatML fallback: a warning, and the expected text', () => {
    const t = new ChatTemplate(null);
    expect(t.isFallback).toBe(true);
    expect(t.warnings[0]).toMatch(/no chat_template: using ChatML/);
    expect(t.render(SYSTEM)).toBe(
      '<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nCapital of France?<|im_end|>\n<|im_start|>assistant\nParis.<|im_end|>\n',
    );
    const seg = conversationSegments(TOOLS, t);
    expect(seg.mode).toBe('prefix');
    expect(seg.pairs[0].target).toBe(
      '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>\n',
    );
    expect(seg.pairs[1].source).toBe('<|im_start|>tool\n{"temp": 18}<|im_end|>\n<|im_start|>assistant\n');
    expect(CHATML_TEMPLATE).toContain('<|im_start|>');
  });
});
