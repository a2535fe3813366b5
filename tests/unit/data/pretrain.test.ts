// Continued pre-training data against a Python rendering of LLaMA-Factory's rule
// (tests/reference/pretrain_blocks.py), with a tokenizer that adds no BOS (Qwen3) and one that
// does (Llama 3).
import { describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { pretrainSequences } from '../../../src/data/pretrain.ts';
import { prepareDataset } from '../../../src/data/pipeline.ts';
import type { Example } from '../../../src/data/types.ts';
import { lenmlTokenizer, type TokenizerName } from './helpers.ts';

const TEXTS = [
  'Call me Ishmael. Some years ago—never mind how long precisely—having little or no money in my purse.',
  '大鲸鱼在海里游，船长站在甲板上看着远方。',
  'Short.',
  'It is a way I have of driving off the spleen and regulating the circulation. Whenever I find myself growing grim about the mouth.',
];
const texts = (list = TEXTS): Example[] => list.map((text, row) => ({ kind: 'text', row, text }));

function python(
  docs: number[][],
  eos: number,
  bos: number | undefined,
  addBos: boolean,
  cutoff: number,
  packing: boolean,
) {
  const input = JSON.stringify({ docs, eos, bos: bos ?? null, add_bos: addBos, cutoff_len: cutoff, packing });
  const out = execFileSync('/usr/bin/python3', ['tests/reference/pretrain_blocks.py'], { input, encoding: 'utf8' });
  return (JSON.parse(out) as { input_ids: number[][] }).input_ids;
}

describe('continued pre-training data (stage pt)', () => {
  for (const name of ['qwen3', 'llama3', 'llama2'] as TokenizerName[]) {
    for (const [cutoff, packing] of [
      [16, true],
      [7, true],
      [64, true],
      [12, false],
      [256, false],
    ] as const) {
      it(`${name}: cutoff ${cutoff}, packing ${packing} equals LLaMA-Factory's rule`, async () => {
        const tok = await lenmlTokenizer(name);
        const r = pretrainSequences(texts(), tok, { cutoffLen: cutoff, packing });
        const docs = TEXTS.map((t) => tok.encode(t, { addSpecialTokens: false }));
        const expected = python(docs, tok.eos!.id!, tok.bos?.id, tok.addsBos, cutoff, packing);
        expect(r.sequences.map((s) => [...s.inputIds])).toEqual(expected);
        for (const s of r.sequences) expect([...s.labels]).toEqual([...s.inputIds]);
        const total = docs.reduce((n, d) => n + d.length + 1, 0);
        expect(r.totalTokens).toBe(total);
        if (packing) expect(r.droppedTokens).toBe(total % cutoff);
        expect(r.invalid).toEqual([]);
      });
    }
  }

  it('a tokenizer that adds BOS (Llama 2) gets it first in every block', async () => {
    const tok = await lenmlTokenizer('llama2');
    expect(tok.addsBos).toBe(true);
    const r = pretrainSequences(texts(), tok, { cutoffLen: 16, packing: true });
    expect(r.sequences.length).toBeGreaterThan(2);
    for (const s of r.sequences) expect(s.inputIds[0]).toBe(tok.bos!.id);
  });

  it('documents end with the end-of-text token asked for (llama3 template: <|end_of_text|>, not the chat eos)', async () => {
    const tok = await lenmlTokenizer('llama3');
    const r = pretrainSequences(texts(), tok, { cutoffLen: 16, packing: false, eosToken: '<|eot_id|>' });
    const end = tok.tokenToId('<|eot_id|>')!;
    expect(end).not.toBe(tok.eos!.id);
    expect(r.sequences.find((s) => s.row === 2)!.inputIds.at(-1)).toBe(end);
  });

  it('reports conversation rows instead of training them, and warns about the dropped tail', async () => {
    const tok = await lenmlTokenizer('qwen3');
    const chat: Example = {
      kind: 'chat',
      row: 9,
      conversation: {
        messages: [
          { role: 'user', content: 'hi' },
          { role: 'assistant', content: 'hello' },
        ],
      },
    } as Example;
    const prep = prepareDataset([...texts(), chat], tok, {
      cutoffLen: 16,
      stage: 'pt',
      packing: true,
      valSize: 1,
      seed: 1,
    });
    expect(prep.invalid).toMatchObject([{ row: 9, field: '<text>', code: 'pretrain-needs-text' }]);
    expect(prep.packed).toBeUndefined();
    expect(prep.train.length + prep.val.length).toBe(
      pretrainSequences(texts(), tok, { cutoffLen: 16, packing: true }).sequences.length,
    );
    expect(prep.val.length).toBe(1);
    expect(prep.warnings.join('\n')).toMatch(
      /pre-training: \d+ tokens make \d+ blocks of 16; the last \d+ tokens do not fill a block/,
    );
    for (const s of prep.train) expect(s.inputIds.length).toBe(16);
  });
});
