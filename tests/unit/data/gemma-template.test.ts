// Gemma 3's and Gemma 2's own chat templates (tests/fixtures/templates, see its README) rendered by
// src/data/template.ts as transformers' apply_chat_template renders them: Gemma 3 has no system role
// and folds a system prompt into the first user turn ("<system>\n\n<user>"); Gemma 2 raises
// "System role not supported", which the data pipeline reports as an invalid row, named, instead
// of training on it. The (prompt, answer) split agrees with LLaMA-Factory's `gemma3` / `gemma`
// templates (src/llamafactory/data/template.py: user "<start_of_turn>user\n{{content}}<end_of_turn>\n
// <start_of_turn>model\n", assistant "{{content}}<end_of_turn>\n", gemma3's system "{{content}}\n\n"
// before the first user message, prefix bos).
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { describe, expect, test } from 'vitest';
import { ChatTemplate, chatTemplateFor, conversationSegments, prepareDataset } from '../../../src/data/index.ts';
import { MULTI, SYSTEM } from './conversations.ts';
import { lenmlTokenizer, ROOT } from './helpers.ts';

const fixture = (name: string) => readFileSync(resolve(ROOT, `tests/fixtures/templates/${name}.jinja`), 'utf8');
const GEMMA3 = fixture('google-gemma-3-1b-it');
const GEMMA2 = fixture('google-gemma-2-2b-it');
// tokenizer_config.json of both: bos <bos>, eos <eos> (the turn ends with <end_of_turn>).
const ctx = { bos_token: '<bos>', eos_token: '<eos>' };

/** LLaMA-Factory's gemma / gemma3 template applied to a conversation. */
function llamaFactoryGemma(system: string | undefined, turns: [string, string][]): string {
  return (
    '<bos>' +
    turns
      .map(
        ([u, a], k) =>
          `<start_of_turn>user\n${k === 0 && system ? `${system}\n\n` : ''}${u}<end_of_turn>\n<start_of_turn>model\n${a}<end_of_turn>\n`,
      )
      .join('')
  );
}

function turnsOf(conv: typeof MULTI): [string, string][] {
  const out: [string, string][] = [];
  for (let i = 0; i + 1 < conv.messages.length; i += 2)
    out.push([conv.messages[i].content, conv.messages[i + 1].content]);
  return out;
}

describe("Gemma 3's chat template", () => {
  const t = new ChatTemplate(GEMMA3, ctx);

  test('folds the system prompt into the first user turn, then the generation prompt', () => {
    expect(t.render(SYSTEM)).toBe(
      '<bos><start_of_turn>user\nYou are terse.\n\nCapital of France?<end_of_turn>\n<start_of_turn>model\nParis.<end_of_turn>\n',
    );
    expect(t.render(SYSTEM, { upTo: 1, addGenerationPrompt: true })).toBe(
      '<bos><start_of_turn>user\nYou are terse.\n\nCapital of France?<end_of_turn>\n<start_of_turn>model\n',
    );
    expect(t.render(MULTI)).toBe(llamaFactoryGemma(undefined, turnsOf(MULTI)));
  });

  test("splits into prompt and answer pieces that match LLaMA-Factory's gemma3 template", () => {
    for (const conv of [MULTI, SYSTEM]) {
      const seg = conversationSegments(conv, t);
      expect(seg.text).toBe(llamaFactoryGemma(conv.system, turnsOf(conv)));
      expect(seg.pairs.map((p) => p.source + p.target).join('')).toBe(seg.text);
      seg.pairs.forEach((p, k) => expect(p.target).toBe(`${turnsOf(conv)[k][1]}<end_of_turn>\n`));
    }
  });
});

describe("Gemma 2's chat template", () => {
  const t = new ChatTemplate(GEMMA2, ctx);

  test('renders user / model turns; a system message raises as in transformers', () => {
    expect(t.render(MULTI)).toBe(llamaFactoryGemma(undefined, turnsOf(MULTI)));
    expect(() => t.render(SYSTEM)).toThrow('System role not supported');
  });

  test('the data pipeline reports a row with a system prompt as invalid, naming the row, and keeps the others', async () => {
    const tok = await lenmlTokenizer('qwen3');
    const row = (n: number, conversation: typeof MULTI) => ({
      kind: 'chat' as const,
      row: n,
      line: n + 2,
      conversation,
    });
    const p = prepareDataset(
      [row(0, MULTI), row(1, SYSTEM)],
      tok,
      { cutoffLen: 256 },
      chatTemplateFor(tok, { template: GEMMA2 }),
    );
    expect(p.train.length + p.val.length).toBe(1);
    expect(p.invalid).toEqual([
      {
        row: 1,
        line: 3,
        field: '<template>',
        reason: 'chat template: System role not supported',
        code: 'template-error',
        params: { message: 'System role not supported' },
      },
    ]);
  });
});
