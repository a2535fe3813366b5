// Chat in the Worker: the base model or the active run's tuned model (A/B), streamed text.
import { generate } from '../engine/generate/generate.ts';
import type { DecodeResult } from '../engine/generate/decode.ts';
import type { LoraSet, Model } from '../engine/model/model.ts';
import { methodOf } from '../engine/train/method.ts';
import { chatTemplateFor, type Conversation, type HfTokenizer } from '../data/index.ts';
import type { GpuModelCache } from './gpu-model.ts';
import type { RunSession } from './run-session.ts';
import { UserError } from './user-error.ts';

export interface ChatRequest {
  system: string;
  messages: { role: 'user' | 'assistant'; content: string }[];
  target: 'base' | 'tuned';
  temperature: number;
  topP: number;
  topK: number;
  repetitionPenalty: number;
  doSample: boolean;
  maxNewTokens: number;
  seed: number;
}

export interface ChatReply {
  text: string;
  tokens: number;
  reason: DecodeResult['reason'];
  promptTokens: number;
  tokensPerSecond: number;
}

/**
 * End-of-turn ids: the model config's eos ids, the tokenizer's eos token and generation_config.json's
 * eos ids (`generationEos`, as the CLI's stopIdsFor reads them).
 */
export function stopIdsOf(model: Model, tok: HfTokenizer, generationEos: readonly number[] = []): number[] {
  return [
    ...new Set([...model.config.eosTokenIds, ...(tok.eos?.id !== undefined ? [tok.eos.id] : []), ...generationEos]),
  ];
}

export class ChatSession {
  private abort: AbortController | null = null;

  constructor(
    private readonly models: GpuModelCache,
    private readonly runs: RunSession,
  ) {}

  private async target(target: 'base' | 'tuned'): Promise<{ model: Model; lora: LoraSet | null; tok: HfTokenizer }> {
    const tok = this.models.session().tokenizer!;
    const a = this.runs.idleRun('chat');
    if (a) {
      const full = methodOf(a.record.config) === 'full';
      if (target === 'base' && full) {
        throw new UserError(
          'full-ft',
          'full fine-tuning changed the base weights in place: the base model is not kept on the GPU; compare with a LoRA run instead',
        );
      }
      return { model: a.training.trainer.model, lora: target === 'tuned' ? a.training.lora : null, tok };
    }
    if (target === 'tuned')
      throw new UserError(
        'no-run',
        'no tuned model yet: train a run in the Train step (or open a stored run there) first',
      );
    return {
      model: await this.models.get({ computeDType: 'stored' }, () => this.runs.releaseActive()),
      lora: null,
      tok,
    };
  }

  async chat(req: ChatRequest, onText: (text: string) => void): Promise<ChatReply> {
    const { model, lora, tok } = await this.target(req.target);
    const conv: Conversation = {
      system: req.system || undefined,
      messages: req.messages.map((x) => ({ role: x.role, content: x.content })),
    };
    const promptIds = tok.encode(chatTemplateFor(tok).render(conv, { addGenerationPrompt: true }));
    this.abort?.abort();
    const ctl = (this.abort = new AbortController());
    const ids: number[] = [];
    const it = generate(model, lora, Int32Array.from(promptIds), {
      maxNewTokens: req.maxNewTokens,
      stopIds: stopIdsOf(model, tok, this.models.session().generationEos),
      temperature: req.temperature,
      topP: req.topP,
      topK: req.topK,
      repetitionPenalty: req.repetitionPenalty,
      doSample: req.doSample,
      seed: req.seed,
      signal: ctl.signal,
    });
    let res: DecodeResult;
    let lastSent = 0;
    for (;;) {
      const n = await it.next();
      if (n.done) {
        res = n.value;
        break;
      }
      ids.push(n.value);
      const now = performance.now();
      if (now - lastSent > 50) {
        onText(tok.decode(ids, { skipSpecialTokens: true }));
        lastSent = now;
      }
    }
    const text = tok.decode(ids, { skipSpecialTokens: true });
    onText(text);
    return {
      text,
      tokens: ids.length,
      reason: res.reason,
      promptTokens: res.promptTokens,
      tokensPerSecond: res.decodeMs > 0 ? (1000 * ids.length) / res.decodeMs : 0,
    };
  }

  stop(): void {
    this.abort?.abort();
  }
}
