// Evaluation of the active run in the Worker: validation loss and perplexity, and generated
// answers for held-out rows scored with BLEU-4 and ROUGE-L (LLaMA-Factory's do_predict metrics).
import { generate } from '../engine/generate/generate.ts';
import { chatTemplateFor, type Conversation } from '../data/index.ts';
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
  valLoss: number | null;
  perplexity: number | null;
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
    const valLoss = a.valBatches.length ? await trainer.evaluate(a.valBatches) : null;
    const held = a.prepared.val;
    const picked = (held.length ? held : a.prepared.train).slice(0, Math.max(1, o.rows));
    const tpl = chatTemplateFor(tok);
    const stopIds = stopIdsOf(trainer.model, tok);
    const out: EvalRow[] = [];
    for (const [i, enc] of picked.entries()) {
      const { dataset, ex } = a.examples[enc.row];
      onRow(i, picked.length);
      if (ex.kind !== 'chat') continue;
      const msgs = ex.conversation.messages;
      let last = msgs.length - 1;
      while (last >= 0 && msgs[last].role !== 'assistant') last--;
      if (last < 0) continue;
      const conv: Conversation = { ...ex.conversation, messages: msgs.slice(0, last) };
      const prompt = Int32Array.from(tok.encode(tpl.render(conv, { addGenerationPrompt: true })));
      const ids: number[] = [];
      const it = generate(trainer.model, lora, prompt, {
        maxNewTokens: o.maxNewTokens,
        stopIds,
        temperature: 1,
        topP: 1,
        topK: 0,
        repetitionPenalty: 1,
        doSample: false,
      });
      for (let n = await it.next(); !n.done; n = await it.next()) ids.push(n.value);
      const prediction = tok.decode(ids, { skipSpecialTokens: true }).trim();
      out.push(
        scored({
          dataset,
          row: ex.row,
          prompt: msgs[last - 1]?.content ?? '',
          reference: msgs[last].content,
          prediction,
        }),
      );
    }
    onRow(picked.length, picked.length);
    const sim = similarity(out.map((x) => ({ reference: x.reference, prediction: x.prediction })));
    return {
      runId: a.record.id,
      step: a.record.step,
      valLoss,
      perplexity: valLoss !== null ? perplexity(valLoss) : null,
      bleu4: sim.bleu4,
      rougeL: sim.rougeL,
      rows: out,
      note: held.length ? null : NO_HELD_OUT,
    };
  }
}
