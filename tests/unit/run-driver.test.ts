import { describe, expect, it } from 'vitest';
import { RunDriver, type BeforeStep, type RunHooks } from '../../src/engine/train/run-driver.ts';
import type { StepResult, Trainer } from '../../src/engine/train/trainer.ts';
import type { MicroBatch } from '../../src/engine/model/batch.ts';

/** A trainer whose step k has loss k and 10·k tokens (what the driver does with them is the test). */
function fakeTrainer(start = 0) {
  const t = {
    stepCount: start,
    evals: 0,
    async step(): Promise<StepResult> {
      const step = ++t.stepCount;
      return {
        step,
        loss: step,
        gradNorm: step / 10,
        lr: 1e-3,
        nextLr: 100 * step,
        tokens: 10 * step,
        labelTokens: 5,
        skipped: false,
        dispatches: 1,
        readbacks: 1,
        epoch: step / 4,
      };
    },
    async evaluate(): Promise<number> {
      t.evals++;
      return 0.5;
    },
  };
  return t;
}

function record(
  trainer: ReturnType<typeof fakeTrainer>,
  opts: { total: number; log: number; save: number; evalBatches?: number; savedStep?: number | null },
  before?: () => BeforeStep,
) {
  const seen: string[] = [];
  const hooks: RunHooks = {
    beforeStep: before,
    onLog: (w) => void seen.push(`log ${w.step} loss ${w.loss} lr ${w.lr} steps ${w.steps}`),
    onEval: (step, loss) => void seen.push(`eval ${step} ${loss}`),
    save: async (step) => void seen.push(`save ${step}`),
  };
  const batches = Array.from({ length: opts.evalBatches ?? 0 }, () => ({}) as MicroBatch);
  const driver = new RunDriver(
    trainer as unknown as Trainer,
    {
      totalSteps: opts.total,
      loggingSteps: opts.log,
      saveSteps: opts.save,
      evalBatches: batches,
      savedStep: opts.savedStep,
    },
    hooks,
  );
  return { driver, seen };
}

describe('run driver (shared by the studio Worker and the CLI)', () => {
  it('logs the mean loss of each window and the next lr, evaluates at each log, saves at save_steps and at the end', async () => {
    const t = fakeTrainer();
    const { driver, seen } = record(t, { total: 7, log: 3, save: 4, evalBatches: 2 });
    expect(await driver.run()).toBe('done');
    expect(seen).toEqual([
      'log 3 loss 2 lr 300 steps 3',
      'eval 3 0.5',
      'save 4',
      'log 6 loss 5 lr 600 steps 3',
      'eval 6 0.5',
      'log 7 loss 7 lr 700 steps 1',
      'eval 7 0.5',
      'save 7',
    ]);
  });

  it('does not save twice when the last step is a save step, nor when resumed at the end', async () => {
    const { driver, seen } = record(fakeTrainer(), { total: 4, log: 10, save: 2 });
    await driver.run();
    expect(seen.filter((s) => s.startsWith('save'))).toEqual(['save 2', 'save 4']);
    const resumed = record(fakeTrainer(4), { total: 4, log: 1, save: 1, savedStep: 4 });
    expect(await resumed.driver.run()).toBe('done');
    expect(resumed.seen).toEqual([]);
  });

  it('stop ends with a checkpoint; abandon (a lost device) ends without one', async () => {
    let n = 0;
    const stopped = record(fakeTrainer(), { total: 10, log: 100, save: 100 }, () => (++n > 3 ? 'stop' : 'go'));
    expect(await stopped.driver.run()).toBe('stopped');
    expect(stopped.seen).toEqual(['save 3']);
    n = 0;
    const lost = record(fakeTrainer(), { total: 10, log: 100, save: 100 }, () => (++n > 3 ? 'abandon' : 'go'));
    expect(await lost.driver.run()).toBe('abandoned');
    expect(lost.seen).toEqual([]);
  });
});
