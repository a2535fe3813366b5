// The one training loop of a run, shared by the studio's Worker and the CLI: step, log a window
// every logging_steps (HF Trainer logs the mean loss since the last log and the next step's
// learning rate), evaluate at each log when there is held-out data, save every save_steps and at
// the end. Where things go (IndexedDB or checkpoint-N/ folders, a chart or trainer_log.jsonl) is
// the caller's, through hooks.
import type { MicroBatch } from '../model/batch.ts';
import { meanMetrics } from './preference-loss.ts';
import type { StepResult, Trainer } from './trainer.ts';

export interface LogWindow {
  step: number;
  epoch: number;
  /** Mean training loss over the steps since the last log. */
  loss: number;
  /** The learning rate of the next update (what transformers logs). */
  lr: number;
  gradNorm: number;
  /** Input tokens per second of step time over the window. */
  tokensPerSecond: number;
  steps: number;
  /** Preference tuning: the mean over the window's steps of TRL's metrics (rewards/*, logps/*), as LLaMA-Factory logs them. */
  metrics?: Record<string, number>;
}

export type BeforeStep = 'go' | 'stop' | 'abandon';
export type RunOutcome = 'done' | 'stopped' | 'abandoned';

export interface RunHooks {
  /** Before each step (may wait while a run is paused): 'stop' ends with a checkpoint, 'abandon' without (a lost device). */
  beforeStep?(): BeforeStep | Promise<BeforeStep>;
  afterStep?(s: StepResult, seconds: number): void | Promise<void>;
  onLog?(w: LogWindow): void | Promise<void>;
  beforeEval?(): void;
  onEval?(step: number, loss: number, epoch: number): void | Promise<void>;
  /** After the step's log, evaluation and checkpoint. */
  stepDone?(s: StepResult): void | Promise<void>;
  /** Writes a checkpoint of the trainer at `step`. */
  save(step: number): Promise<void>;
}

export interface DriveOptions {
  totalSteps: number;
  loggingSteps: number;
  saveSteps: number;
  evalBatches: readonly MicroBatch[];
  /** Step of the checkpoint the trainer was restored from (null: none). */
  savedStep?: number | null;
}

export class RunDriver {
  savedStep: number | null;
  private epoch = 0;

  constructor(
    readonly trainer: Trainer,
    readonly opts: DriveOptions,
    private readonly hooks: RunHooks,
  ) {
    this.savedStep = opts.savedStep ?? null;
  }

  /** Saves unless the last checkpoint is of the current step. */
  async checkpoint(): Promise<void> {
    const step = this.trainer.stepCount;
    if (this.savedStep === step) return;
    await this.hooks.save(step);
    this.savedStep = step;
  }

  async run(): Promise<RunOutcome> {
    const { totalSteps, loggingSteps, saveSteps, evalBatches } = this.opts;
    let window = { loss: 0, steps: 0, tokens: 0, seconds: 0 };
    let metrics: Record<string, number>[] = [];
    while (this.trainer.stepCount < totalSteps) {
      const go = (await this.hooks.beforeStep?.()) ?? 'go';
      if (go === 'abandon') return 'abandoned';
      if (go === 'stop') break;
      const t0 = performance.now();
      const s = await this.trainer.step();
      const seconds = (performance.now() - t0) / 1000;
      this.epoch = s.epoch ?? this.epoch;
      window = {
        loss: window.loss + s.loss,
        steps: window.steps + 1,
        tokens: window.tokens + s.tokens,
        seconds: window.seconds + seconds,
      };
      if (s.metrics) metrics.push(s.metrics);
      await this.hooks.afterStep?.(s, seconds);
      if (s.step % loggingSteps === 0 || s.step === totalSteps) {
        const tps = window.seconds > 0 ? window.tokens / window.seconds : 0;
        await this.hooks.onLog?.({
          step: s.step,
          epoch: this.epoch,
          loss: window.loss / window.steps,
          lr: s.nextLr,
          gradNorm: s.gradNorm,
          tokensPerSecond: tps,
          steps: window.steps,
          ...(metrics.length ? { metrics: meanMetrics(metrics) } : {}),
        });
        window = { loss: 0, steps: 0, tokens: 0, seconds: 0 };
        metrics = [];
        if (evalBatches.length) {
          this.hooks.beforeEval?.();
          await this.hooks.onEval?.(s.step, await this.trainer.evaluate([...evalBatches]), this.epoch);
        }
      }
      if (s.step % saveSteps === 0) await this.checkpoint();
      await this.hooks.stepDone?.(s);
    }
    await this.checkpoint();
    return this.trainer.stepCount >= totalSteps ? 'done' : 'stopped';
  }
}
