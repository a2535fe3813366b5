// Evaluation of the active run in the Worker: validation loss and perplexity, and generated
// answers for held-out rows scored with BLEU-4 and ROUGE-L (LLaMA-Factory's do_predict metrics).
import { generateBatch } from '../engine/generate/generate.ts';
import { DEFAULT_SAMPLING } from '../engine/generate/sample.ts';
import { chatTemplateFor, type Conversation, type Example } from '../data/index.ts';
import { stopIdsOf } from './chat-session.ts';
import type { GpuModelCache } from './gpu-model.ts';
import { perplexity, similarity, sentenceBleu4, rougeL, charTokens, wordTokens } from './metrics.ts';
import type { RunSession } from './run-session.ts';
import { UserError } from './user-error.ts';

export interface EvalRow {
  dataset: string;
  row: number;
  prompt: string;
  reference: string;
  prediction: string;
  bleu4: number;
  rougeL: number;
}

export interface EvalResult {
  runId: string;
  step: number;
  /** Mean token loss; for a preference run the mean pair loss (DPO, ORPO, … as trained). */
  valLoss: number | null;
  /** exp(valLoss) of a token loss; null for a preference run, whose loss is no token loss. */
  perplexity: number | null;
  /** Preference run with held-out pairs: TRL's metrics over them (rewards/accuracies, rewards/margins, …). */
  preference: Record<string, number> | null;
  bleu4: number;
  rougeL: number;
  rows: EvalRow[];
  note: string | null;
}

const NO_HELD_OUT =
  'no held-out rows (Validation size is 0): predictions below are on training rows, which says little about generalisation — set Validation size > 0 in the Method step and train again';

function scored(base: Omit<EvalRow, 'bleu4' | 'rougeL'>): EvalRow {
  const h = wordTokens(base.prediction);
  const r = wordTokens(base.reference);
  return {
    ...base,
    bleu4: 100 * sentenceBleu4(charTokens(base.reference), charTokens(base.prediction)),
    rougeL: h.length && r.length ? 100 * rougeL(r, h) : 0,
  };
}

/**
 * The conversation to answer and the answer it is scored against: a chat row's last assistant
 * turn, or a preference pair's chosen answer (what preference tuning should make more likely).
 */
function askOf(ex: Example): { conv: Conversation; prompt: string; reference: string } | null {
  if (ex.kind === 'pair')
    return {
      conv: ex.conversation,
      prompt: ex.conversation.messages.at(-1)?.content ?? '',
      reference: ex.chosen.content,
    };
  if (ex.kind !== 'chat') return null;
  const msgs = ex.conversation.messages;
  let last = msgs.length - 1;
  while (last >= 0 && msgs[last].role !== 'assistant') last--;
  if (last < 0) return null;
  return {
    conv: { ...ex.conversation, messages: msgs.slice(0, last) },
    prompt: msgs[last - 1]?.content ?? '',
    reference: msgs[last].content,
  };
}

export class EvalSession {
  constructor(
    private readonly models: GpuModelCache,
    private readonly runs: RunSession,
  ) {}

  async evaluate(
    o: { rows: number; maxNewTokens: number },
    onRow: (done: number, total: number) => void,
  ): Promise<EvalResult> {
    const a = this.runs.idleRun('evaluate');
    if (!a)
      throw new UserError('no-run', 'no run to evaluate: train one in the Train step, or open a stored run there');
    const tok = this.models.session().tokenizer!;
    const { trainer, lora } = a.training;
    const pairs = a.record.config.stage === 'dpo';
    let valLoss: number | null = null;
    let preference: Record<string, number> | null = null;
    if (a.valBatches.length && pairs)
      ({ loss: valLoss, metrics: preference } = await trainer.evaluatePairs(a.valBatches));
    else if (a.valBatches.length) valLoss = await trainer.evaluate(a.valBatches);
    const held = a.prepared.val;
    const picked = (held.length ? held : a.prepared.train).slice(0, Math.max(1, o.rows));
    const tpl = chatTemplateFor(tok);
    const stopIds = stopIdsOf(trainer.model, tok, this.models.session().generationEos);
    // Rows with an answer to predict; their prompts decode together (generateBatch: one read of
    // each weight per step serves a group of rows), greedy as LLaMA-Factory's do_predict default.
    const asks: { base: Omit<EvalRow, 'bleu4' | 'rougeL' | 'prediction'>; prompt: Int32Array }[] = [];
    for (const enc of picked) {
      const { dataset, ex } = a.examples[enc.row];
      const ask = askOf(ex);
      if (!ask) continue;
      asks.push({
        base: { dataset, row: ex.row, prompt: ask.prompt, reference: ask.reference },
        prompt: Int32Array.from(tok.encode(tpl.render(ask.conv, { addGenerationPrompt: true }))),
      });
    }
    onRow(0, picked.length);
    const results = await generateBatch(
      trainer.model,
      lora,
      asks.map((q) => q.prompt),
      { ...DEFAULT_SAMPLING, maxNewTokens: o.maxNewTokens, stopIds },
      (done) => onRow(Math.round((done / Math.max(1, asks.length)) * picked.length), picked.length),
    );
    const out = asks.map((q, i) =>
      scored({ ...q.base, prediction: tok.decode([...results[i].tokens], { skipSpecialTokens: true }).trim() }),
    );
    onRow(picked.length, picked.length);
    const sim = similarity(out.map((x) => ({ reference: x.reference, prediction: x.prediction })));
    return {
      runId: a.record.id,
      step: a.record.step,
      valLoss,
      perplexity: valLoss !== null && !pairs ? perplexity(valLoss) : null,
      preference,
      bleu4: sim.bleu4,
      rougeL: sim.rougeL,
      rows: out,
      note: held.length ? null : NO_HELD_OUT,
    };
  }
}
