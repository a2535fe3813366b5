// Phi-3.5-mini-instruct's own chat template (tests/fixtures/templates, see its README) rendered by
// src/data/template.ts: the text transformers' apply_chat_template gives, the (prompt, answer)
// split masking uses, and agreement with LLaMA-Factory's `phi` template (src/llamafactory/data/
// template.py: user "<|user|>\n{{content}}<|end|>\n<|assistant|>\n", assistant "{{content}}<|end|>\n",
// system "<|system|>\n{{content}}<|end|>\n"), which guessTemplate picks for Phi-3 / Phi-3.5.
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { describe, expect, test } from 'vitest';
import { ChatTemplate, conversationSegments } from '../../../src/data/index.ts';
import { MULTI, SYSTEM } from './conversations.ts';
import { ROOT } from './helpers.ts';

const PHI35 = readFileSync(resolve(ROOT, 'tests/fixtures/templates/microsoft-Phi-3.5-mini-instruct.jinja'), 'utf8');
// tokenizer_config.json of Phi-3.5-mini-instruct: bos <s>, eos <|endoftext|>.
const t = new ChatTemplate(PHI35, { bos_token: '<s>', eos_token: '<|endoftext|>' });

/** LLaMA-Factory's `phi` template applied to a conversation (no bos: format_prefix is empty). */
function llamaFactoryPhi(system: string | undefined, turns: [string, string][]): string {
  const sys = system ? `<|system|>\n${system}<|end|>\n` : '';
  return sys + turns.map(([u, a]) => `<|user|>\n${u}<|end|>\n<|assistant|>\n${a}<|end|>\n`).join('');
}

describe("Phi-3.5-mini-instruct's chat template", () => {
  test('renders system, user and assistant turns, then eos (or the generation prompt)', () => {
    expect(t.render(SYSTEM)).toBe(
      '<|system|>\nYou are terse.<|end|>\n<|user|>\nCapital of France?<|end|>\n<|assistant|>\nParis.<|end|>\n<|endoftext|>',
    );
    expect(t.render(SYSTEM, { upTo: 1, addGenerationPrompt: true })).toBe(
      '<|system|>\nYou are terse.<|end|>\n<|user|>\nCapital of France?<|end|>\n<|assistant|>\n',
    );
    // An empty system prompt renders nothing (`message['role'] == 'system' and message['content']`).
    expect(t.render({ ...SYSTEM, system: '' })).toBe(t.render({ messages: SYSTEM.messages }));
  });

  test("splits into prompt and answer pieces that match LLaMA-Factory's phi template", () => {
    for (const conv of [MULTI, SYSTEM]) {
      const seg = conversationSegments(conv, t);
      expect(seg.pairs.map((p) => p.source + p.target).join('')).toBe(seg.text);
      const msgs = conv.messages;
      const turns: [string, string][] = [];
      for (let i = 0; i + 1 < msgs.length; i += 2) turns.push([msgs[i].content, msgs[i + 1].content]);
      // Every answer is its text and <|end|>\n; the eos after the last one belongs to the last answer.
      seg.pairs.forEach((p, k) =>
        expect(p.target).toBe(`${turns[k][1]}<|end|>\n${k === turns.length - 1 ? '<|endoftext|>' : ''}`),
      );
      expect(seg.text).toBe(llamaFactoryPhi(conv.system, turns) + '<|endoftext|>');
    }
  });
});
