// Continued pre-training data (LLaMA-Factory stage pt, src/llamafactory/data/processor/pretrain.py):
// each document is its text followed by the end-of-text token. With packing (pt's default) the
// documents are joined and cut into cutoff_len blocks — not cut per document — and the tail that
// does not fill a block is dropped; a tokenizer that adds BOS gets it as the first token of every
// block. Without packing each document is one sequence, BOS first, truncated at cutoff_len. Every
// token is trained (labels = inputs).
import { coded } from './messages.ts';
import type { TextTokenizer } from './tokenizer.ts';
import type { EncodedExample, Example, RowIssue } from './types.ts';

export interface PretrainOptions {
  cutoffLen: number;
  packing: boolean;
  /** The end-of-text token (LLaMA-Factory uses <|end_of_text|> for the llama3 template, else the tokenizer's eos). */
  eosToken?: string;
}

export interface PretrainResult {
  sequences: EncodedExample[];
  invalid: RowIssue[];
  /** Packing: tokens after the last full block, dropped. */
  droppedTokens: number;
  totalTokens: number;
}

function endOfText(tok: TextTokenizer, opts: PretrainOptions): number {
  const id = opts.eosToken !== undefined ? tok.tokenToId(opts.eosToken) : tok.eos?.id;
  if (id === undefined) throw new Error(`the tokenizer has no end-of-text token ${opts.eosToken ?? '(eos_token)'}`);
  return id;
}

const sequence = (row: number, ids: number[], fullLength: number): EncodedExample => ({
  row,
  inputIds: Int32Array.from(ids),
  labels: Int32Array.from(ids),
  fullLength,
  truncated: fullLength > ids.length,
});

/** Pre-training sequences of the text rows; rows of other kinds are reported, not trained. */
export function pretrainSequences(examples: Example[], tok: TextTokenizer, opts: PretrainOptions): PretrainResult {
  const eos = endOfText(tok, opts);
  const bos = tok.addsBos ? tok.bos?.id : undefined;
  const invalid: RowIssue[] = [];
  const docs: { row: number; ids: number[] }[] = [];
  for (const ex of examples) {
    if (ex.kind !== 'text') {
      invalid.push({ row: ex.row, line: ex.line, field: '<text>', ...coded('pretrain-needs-text', {}) });
      continue;
    }
    docs.push({ row: ex.row, ids: [...tok.encode(ex.text, { addSpecialTokens: false }), eos] });
  }
  const totalTokens = docs.reduce((n, d) => n + d.ids.length, 0);
  if (!opts.packing) {
    const sequences = docs.map((d) => {
      const all = bos === undefined ? d.ids : [bos, ...d.ids];
      return sequence(d.row, all.slice(0, opts.cutoffLen), all.length);
    });
    return { sequences, invalid, droppedTokens: 0, totalTokens };
  }
  const block = opts.cutoffLen;
  const sequences: EncodedExample[] = [];
  let cur: number[] = [];
  let startRow = docs[0]?.row ?? 0;
  for (const d of docs) {
    for (const id of d.ids) {
      if (!cur.length) startRow = d.row;
      cur.push(id);
      if (cur.length === block) {
        if (bos !== undefined) cur[0] = bos;
        sequences.push(sequence(startRow, cur, block));
        cur = [];
      }
    }
  }
  return { sequences, invalid, droppedTokens: cur.length, totalTokens };
}
