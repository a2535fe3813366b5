// Parsed examples → training tensors: max_samples, template + tokenization + masking + truncation,
// val split, optional packing, statistics. Rows that fail here (e.g. a template that rejects a
// conversation) are reported like parse errors: none disappears.
import { EncodeError, encodeExample, type EncodeOptions, type EncodedWithText } from './encode.ts';
import { packExamples } from './pack.ts';
import { encodePair } from './preference.ts';
import { pretrainSequences } from './pretrain.ts';
import { splitTrainVal, takeMaxSamples } from './split.ts';
import { tokenStats, type TokenStats } from './stats.ts';
import { ChatTemplate } from './template.ts';
import type { TextTokenizer } from './tokenizer.ts';
import { addWarning, coded, dataMessage, englishText, type DataMessage, type WarningList } from './messages.ts';
import type { EncodedExample, Example, PackedSequence, RowIssue } from './types.ts';

export interface PrepareOptions extends EncodeOptions {
  maxSamples?: number;
  /** Fraction (< 1) or number of rows (≥ 1) held out for evaluation. */
  valSize?: number;
  seed?: number;
  packing?: boolean;
  /** 'pt': continued pre-training on raw text (pretrain.ts); 'dpo': preference pairs (preference.ts); default 'sft'. */
  stage?: 'sft' | 'pt' | 'dpo';
  /** pt: the end-of-text token joining documents (default the tokenizer's eos). */
  pretrainEos?: string;
  /** Qwen3-style templates: passed to the template as `enable_thinking`. */
  enableThinking?: boolean;
  onProgress?: (done: number, total: number) => void;
}

export interface PreparedDataset {
  train: EncodedExample[];
  val: EncodedExample[];
  /** Present when `packing` is on: the train examples packed into cutoffLen sequences. */
  packed?: PackedSequence[];
  /** Rows that could not be encoded (field and reason), in addition to the parse report. */
  invalid: RowIssue[];
  warnings: string[];
  /** `warnings` as codes (messages.ts), in the same order. */
  warningCodes: DataMessage[];
  stats: TokenStats;
  /** How assistant spans were found: 'prefix' for all rows, or the number of rows that needed 'search'. */
  searchModeRows: number;
}

export function chatTemplateFor(
  tok: TextTokenizer,
  opts: { enableThinking?: boolean; template?: string | null } = {},
): ChatTemplate {
  const t = new ChatTemplate(opts.template !== undefined ? opts.template : tok.chatTemplate, {
    bos_token: tok.bos?.content,
    eos_token: tok.eos?.content,
    pad_token: tok.pad?.content,
    unk_token: tok.unk?.content,
    enable_thinking: opts.enableThinking,
  });
  try {
    const probe = { messages: [{ role: 'user' as const, content: 'x' }] };
    if (t.render(probe) === t.render(probe, { addGenerationPrompt: true })) {
      addWarning(t, 'warn-template-ignores-generation-prompt');
    }
  } catch {
    // a template that rejects this probe (e.g. requires a system message) reports on real rows
  }
  return t;
}

function stripText(e: EncodedWithText): EncodedExample {
  const out: EncodedExample = {
    row: e.row,
    inputIds: e.inputIds,
    labels: e.labels,
    fullLength: e.fullLength,
    truncated: e.truncated,
  };
  if (e.rejected) out.rejected = e.rejected;
  return out;
}

/** A row of the wrong kind for the stage: preference rows need stage dpo, and stage dpo needs them. */
function wrongKind(ex: Example, stage: PrepareOptions['stage']): RowIssue | null {
  if (stage === 'dpo' && ex.kind !== 'pair')
    return { row: ex.row, line: ex.line, field: '<row>', ...coded('dpo-needs-pair') };
  if (stage !== 'dpo' && ex.kind === 'pair')
    return { row: ex.row, line: ex.line, field: '<row>', ...coded('pair-needs-dpo') };
  return null;
}

export function prepareDataset(
  examples: Example[],
  tok: TextTokenizer,
  opts: PrepareOptions,
  template?: ChatTemplate,
): PreparedDataset {
  const tpl = template ?? chatTemplateFor(tok, { enableThinking: opts.enableThinking });
  const w: WarningList = { warnings: [...tpl.warnings], warningCodes: [...tpl.warningCodes] };
  const chosen = takeMaxSamples(examples, opts.maxSamples);
  if (chosen.length < examples.length)
    addWarning(w, 'warn-max-samples', { max: String(opts.maxSamples), used: chosen.length, total: examples.length });
  if (opts.stage === 'pt') return preparePretrain(chosen, tok, opts, w);
  const encoded: EncodedExample[] = [];
  const invalid: RowIssue[] = [];
  let searchModeRows = 0;
  chosen.forEach((ex, i) => {
    const wrong = wrongKind(ex, opts.stage);
    if (wrong) {
      invalid.push(wrong);
      return;
    }
    try {
      const e =
        ex.kind === 'pair' ? encodePair(ex.row, ex, tok, tpl, opts.cutoffLen) : encodeExample(ex, tok, tpl, opts);
      if (e.mode === 'search') searchModeRows++;
      if (!e.labels.some((l) => l !== -100)) {
        invalid.push({
          row: ex.row,
          line: ex.line,
          field: '<labels>',
          ...coded('no-trained-token', { cutoff: opts.cutoffLen }),
        });
        return;
      }
      encoded.push(stripText(e));
    } catch (err) {
      const field = err instanceof EncodeError ? err.field : '<template>';
      const reason = `chat template: ${(err as Error).message}`;
      let m =
        err instanceof EncodeError
          ? dataMessage(err.code, err.params)
          : dataMessage('template-error', { message: (err as Error).message });
      // The English text is the thrown message; a code whose text differs would show the studio another message.
      if (englishText(m) !== reason) m = dataMessage('template-error', { message: (err as Error).message });
      invalid.push({ row: ex.row, line: ex.line, field, reason, ...m });
    }
    if (opts.onProgress && (i % 256 === 0 || i === chosen.length - 1)) opts.onProgress(i + 1, chosen.length);
  });
  if (searchModeRows) {
    addWarning(w, 'warn-search-mode', { n: searchModeRows });
  }
  const { train, val } = splitTrainVal(encoded, opts.valSize, opts.seed ?? 42);
  const stats = tokenStats(encoded, opts.cutoffLen);
  const out: PreparedDataset = {
    train,
    val,
    invalid,
    warnings: w.warnings,
    warningCodes: w.warningCodes,
    stats,
    searchModeRows,
  };
  if (opts.packing && opts.stage !== 'dpo') {
    const padId = tok.pad?.id ?? tok.eos?.id ?? 0;
    out.packed = packExamples(train, opts.cutoffLen, padId);
  }
  return out;
}

/** Stage pt: blocks (or documents) of raw text, every token trained; the split is over the sequences, as LLaMA-Factory splits after preprocessing. */
function preparePretrain(
  examples: Example[],
  tok: TextTokenizer,
  opts: PrepareOptions,
  w: WarningList,
): PreparedDataset {
  const packing = opts.packing ?? true;
  const r = pretrainSequences(examples, tok, { cutoffLen: opts.cutoffLen, packing, eosToken: opts.pretrainEos });
  if (r.droppedTokens)
    addWarning(w, 'warn-pretrain-tail', {
      tokens: r.totalTokens,
      blocks: r.sequences.length,
      cutoff: opts.cutoffLen,
      dropped: r.droppedTokens,
    });
  opts.onProgress?.(examples.length, examples.length);
  const { train, val } = splitTrainVal(r.sequences, opts.valSize, opts.seed ?? 42);
  return {
    train,
    val,
    invalid: r.invalid,
    warnings: w.warnings,
    warningCodes: w.warningCodes,
    stats: tokenStats(r.sequences, opts.cutoffLen),
    searchModeRows: 0,
  };
}
