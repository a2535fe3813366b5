// Training runs inside the Worker: start, pause, resume (after a reload, a crash or a lost GPU
// device), stop and open stored runs. Runs are built by the engine's run builder and stepped by
// its run driver, as in the CLI; this session keeps the record and checkpoints in IndexedDB and
// reports progress to the UI.
import type { LedgerReport } from '../engine/gpu/ledger.ts';
import type { MicroBatch } from '../engine/model/batch.ts';
import type { TrainConfig } from '../engine/train/llamafactory-config.ts';
import { checkTrainConfig, problemText, runConfig } from '../engine/train/method.ts';
import {
  evalBatchesOf,
  planRun,
  startTraining,
  tuneKernelsForRun,
  type RunPlan,
  type Training,
} from '../engine/train/run-builder.ts';
import { browserKernelStore } from './kernel-store.ts';
import { fitRunToBudget, isOutOfMemory, smallerRun, type FittedRun } from '../engine/train/memory-fit.ts';
import { RunDriver, type BeforeStep } from '../engine/train/run-driver.ts';
import type { Example, PreparedDataset } from '../data/index.ts';
import type { DataSession } from './data-session.ts';
import type { GpuModelCache } from './gpu-model.ts';
import type { AdapterSession } from './adapter-session.ts';
import {
  listRuns,
  loadCheckpointRecord,
  loadRun,
  saveCheckpointRecord,
  saveRun,
  deleteRun,
  type MemoryStep,
  type RunRecord,
} from './runs.ts';
import { UserError } from './user-error.ts';

export interface RunProgress {
  run: RunRecord;
  /** Seconds left at the recent speed, or null. */
  etaSeconds: number | null;
  tokensPerSecond: number;
  memory: LedgerReport | null;
  phase: 'loading' | 'preparing' | 'training' | 'evaluating' | 'saving' | 'idle';
  /** False once the run's GPU device is lost (its state lives on only in the checkpoint). */
  onGpu: boolean;
  loadProgress?: { loaded: number; total: number };
}

/** A run whose adapters and trainer are on the GPU (training, paused, or opened for chat/eval/export). */
export interface ActiveRun {
  record: RunRecord;
  plan: RunPlan;
  training: Training;
  prepared: PreparedDataset;
  examples: { dataset: string; ex: Example }[];
  valBatches: MicroBatch[];
  paused: boolean;
  stop: boolean;
  /** Its GPU device was lost (the reason): resuming rebuilds it from the stored checkpoint. */
  lost: string | false;
  loop: Promise<void> | null;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const LOST_GRACE_MS = 5000;

export class RunSession {
  private run: ActiveRun | null = null;
  private listener: ((p: RunProgress) => void) | null = null;
  private phase: RunProgress['phase'] = 'idle';
  private recentSteps: { t: number; tokens: number }[] = [];
  /** Longest training sequence of the run built last (the memory plan's sequence length). */
  private seqLen: number | null = null;

  constructor(
    private readonly models: GpuModelCache,
    private readonly data: DataSession,
    private readonly adapters: AdapterSession | null = null,
  ) {}

  get active(): ActiveRun | null {
    return this.run;
  }

  /** The active run, unless it is training right now (chat, evaluation and export need the GPU to itself). */
  idleRun(what: string): ActiveRun | null {
    if (this.run?.loop && !this.run.paused)
      throw new UserError('busy', `the GPU is training: pause the run to ${what}`);
    return this.run;
  }

  onProgress(f: ((p: RunProgress) => void) | null): void {
    this.listener = f;
  }

  deviceLost(info: { reason: string; message: string }): void {
    this.models.forget();
    if (this.run) {
      this.run.stop = true;
      this.run.lost = info.message || info.reason || 'unknown reason';
    }
  }

  /** Releases the active run's GPU state; throws while it trains. */
  releaseActive(): void {
    if (!this.run) return;
    if (this.run.loop) throw new UserError('busy', 'a run is training on the GPU: pause or stop it first');
    // Buffers of a lost device are gone with it.
    if (!this.run.lost) {
      this.run.training.trainer.release();
      this.run.training.lora?.release();
    }
    this.run = null;
  }

  private emit(): void {
    if (!this.listener || !this.run) return;
    const r = this.run.record;
    const recent = this.recentSteps.slice(-10);
    let tps = 0;
    let secPerStep: number | null = null;
    if (recent.length >= 2) {
      const dt = (recent.at(-1)!.t - recent[0].t) / 1000;
      tps = dt > 0 ? recent.slice(1).reduce((a, s) => a + s.tokens, 0) / dt : 0;
      secPerStep = dt / (recent.length - 1);
    } else if (r.step > 0) secPerStep = r.elapsed / r.step;
    this.listener({
      run: structuredClone(r),
      etaSeconds: secPerStep !== null ? secPerStep * (r.totalSteps - r.step) : null,
      tokensPerSecond: tps,
      memory: this.models.current?.gpu.ledger.report() ?? null,
      phase: this.phase,
      onGpu: !this.run.lost,
      loadProgress: this.models.progress,
    });
  }

  snapshot(): RunProgress | null {
    if (!this.run) return null;
    let out: RunProgress | null = null;
    const l = this.listener;
    this.listener = (p) => (out = p);
    this.emit();
    this.listener = l;
    return out;
  }

  async runs(): Promise<RunRecord[]> {
    const all = await listRuns();
    // A record still marked running that is not the live run was interrupted (reload, crash).
    return all.map((r) =>
      r.status === 'running' && r.id !== this.run?.record.id ? { ...r, status: 'paused' as const } : r,
    );
  }

  activeRunId(): string | null {
    return this.run?.record.id ?? null;
  }

  async removeRun(id: string): Promise<void> {
    if (this.run?.record.id === id) {
      if (this.run.loop) throw new UserError('busy', 'stop the run before deleting it');
      this.releaseActive();
    }
    await deleteRun(id);
  }

  /**
   * Model, data, adapters and trainer of a run (fresh, or from its checkpoint). `fitTo` (bytes):
   * a fresh run's settings are first auto-fitted to that budget.
   */
  private async build(record: RunRecord, resume: boolean, fitTo: number | null = null): Promise<ActiveRun> {
    const ms = this.models.session();
    if (resume && record.model.id !== ms.id) {
      throw new UserError(
        'wrong-model',
        `this run trained "${record.model.id}" but "${ms.id}" is open: open that model in the Model step, then resume`,
      );
    }
    let plan: RunPlan;
    try {
      plan = planRun(record.config);
    } catch (e) {
      throw new UserError('bad-settings', (e as Error).message);
    }
    const tok = ms.tokenizer!;
    this.phase = 'preparing';
    const opts = { keys: record.datasetKeys, ...plan.prepare };
    await this.data.prepare(tok, opts);
    const prep = this.data.preparedFor(tok.hash, opts)!;
    const items = prep.data.packed ?? prep.data.train;
    if (!items.length)
      throw new UserError('no-data', 'no training rows: select datasets with valid rows in the Data step');
    const padId = tok.pad?.id ?? tok.eos?.id ?? 0;
    const gpu = await this.models.gpu();
    this.seqLen = longestOf(items);
    if (fitTo !== null) {
      const fromBatch = record.config.perDeviceTrainBatchSize;
      const fit = fitRunToBudget(ms.config!, record.config, this.seqLen, fitTo, gpu.limits);
      record.config = fit.config;
      record.memory = { budget: fitTo, planned: fit.planned, fitted: stepsOf(fit), fromBatch };
      plan = planRun(record.config);
    }
    // The run keeps to the user's budget from here on (the model load included).
    gpu.pool.budget = record.memory?.budget ?? null;
    const model = await this.models.get(
      plan.load,
      () => this.releaseActive(),
      () => this.emit(),
    );
    this.phase = 'preparing';
    // The first run on an adapter measures the kernel variants for this run's products (stored).
    // Its operands are freed before training, which is what the budget is planned for.
    gpu.pool.budget = null;
    await tuneKernelsForRun(model, plan, longestOf(items), {
      store: browserKernelStore,
    });
    gpu.pool.trim();
    gpu.pool.budget = record.memory?.budget ?? null;
    // A run from an opened adapter starts from its weights (LLaMA-Factory adapter_name_or_path); a checkpoint overrides them.
    const adapter =
      record.adapter && plan.lora && this.adapters
        ? await this.adapters.load(record.adapter.id, model, {
            dropout: record.config.lora.dropout,
            seed: record.config.seed,
          })
        : undefined;
    let training: Training;
    try {
      training = startTraining(model, plan, items, padId, adapter);
    } catch (e) {
      adapter?.release();
      throw e;
    }
    if (resume) {
      const ckpt = await loadCheckpointRecord(record.id);
      if (ckpt) await training.trainer.loadCheckpoint(ckpt);
      else record.step = 0;
    }
    record.totalSteps = training.totalSteps;
    record.trainExamples = prep.data.train.length;
    record.valExamples = prep.data.val.length;
    const valBatches = evalBatchesOf(plan, prep.data.val, padId);
    return {
      record,
      plan,
      training,
      prepared: prep.data,
      examples: prep.examples,
      valBatches,
      paused: false,
      stop: false,
      lost: false,
      loop: null,
    };
  }

  async start(o: {
    config: TrainConfig;
    datasetKeys: string[];
    datasetNames: string[];
    adapter?: { id: string; name: string };
    /** GPU memory the run may use (the Method step's budget): settings are auto-fitted to it. */
    budgetBytes?: number;
  }): Promise<RunRecord> {
    if (this.run?.loop) throw new UserError('busy', 'a run is already training: pause or stop it first');
    const problems = checkTrainConfig(o.config);
    if (problems.length)
      throw new UserError('bad-settings', problems.map((p) => `${p.field}: ${problemText(p)}`).join('; '));
    const ms = this.models.session();
    const now = Date.now();
    const record: RunRecord = {
      id: `run-${now.toString(36)}`,
      createdAt: now,
      updatedAt: now,
      model: { id: ms.id, source: ms.source },
      datasetKeys: o.datasetKeys,
      datasetNames: o.datasetNames,
      config: runConfig(o.config, { modelNameOrPath: ms.id, datasets: o.datasetNames }),
      totalSteps: 0,
      trainExamples: 0,
      valExamples: 0,
      status: 'running',
      step: 0,
      epoch: 0,
      elapsed: 0,
      tokensSeen: 0,
      steps: [],
      logs: [],
      evals: [],
      checkpointStep: null,
      ...(o.adapter ? { adapter: o.adapter } : {}),
    };
    this.releaseActive();
    this.run = await this.buildOrShrink(record, false, o.budgetBytes ?? null);
    await saveRun(record);
    this.launch();
    return structuredClone(record);
  }

  /** build(), retried once with the next smaller plan when it runs out of GPU memory. */
  private async buildOrShrink(record: RunRecord, resume: boolean, fitTo: number | null = null): Promise<ActiveRun> {
    try {
      return await this.build(record, resume, fitTo);
    } catch (e) {
      if (!isOutOfMemory(e) || record.memory?.retry || !this.shrink(record, e)) {
        await this.liftBudget();
        throw e;
      }
      try {
        return await this.build(record, resume);
      } catch (e2) {
        await this.liftBudget();
        throw e2;
      }
    }
  }

  /** Chat, evaluation and export outside a training loop are not held to a run's budget. */
  private async liftBudget(): Promise<void> {
    const gpu = await this.models.gpu().catch(() => null);
    if (gpu) gpu.pool.budget = null;
  }

  /**
   * The run's settings → the next smaller plan after an out-of-memory error (recorded on the
   * run); false when no memory step is left.
   */
  private shrink(record: RunRecord, e: unknown): boolean {
    const ms = this.models.session();
    const smaller = smallerRun(ms.config!, record.config, this.seqLen ?? record.config.cutoffLen);
    if (!smaller) return false;
    const fromBatch = record.config.perDeviceTrainBatchSize;
    record.config = smaller.config;
    const retry = {
      step: record.step,
      error: (e as Error).message,
      steps: stepsOf(smaller),
      planned: smaller.planned,
      fromBatch,
    };
    record.memory = { budget: 0, planned: 0, fitted: [], fromBatch, ...record.memory, retry };
    return true;
  }

  /** Continues a run from its last checkpoint (after a reload, a crash, a stop or a pause). */
  async resume(id: string): Promise<RunRecord> {
    if (this.run?.lost && !this.run.loop) this.run = null;
    if (this.run?.record.id === id) {
      this.run.paused = false;
      this.run.record.status = 'running';
      if (!this.run.loop) {
        this.run.stop = false;
        this.launch();
      }
      this.emit();
      return structuredClone(this.run.record);
    }
    if (this.run?.loop) throw new UserError('busy', 'another run is training: pause or stop it first');
    const record = await this.stored(id);
    // Points after the checkpoint are dropped: the resumed run recomputes them identically.
    const at = record.checkpointStep ?? 0;
    record.steps = record.steps.filter((p) => p.step <= at);
    record.logs = record.logs.filter((p) => p.step <= at);
    record.evals = record.evals.filter((p) => p.step <= at);
    record.step = at;
    record.status = 'running';
    record.error = undefined;
    this.releaseActive();
    this.run = await this.buildOrShrink(record, true);
    this.launch();
    return structuredClone(record);
  }

  /** Loads a stored run's adapter (without training) so chat, evaluation and export can use it. */
  async open(id: string): Promise<RunRecord> {
    if (this.run?.record.id === id) return structuredClone(this.run.record);
    if (this.run?.loop) throw new UserError('busy', 'another run is training: pause or stop it first');
    const record = await this.stored(id);
    if (record.status === 'running') record.status = 'paused';
    this.releaseActive();
    this.run = await this.build(record, true);
    await this.liftBudget();
    this.phase = 'idle';
    return structuredClone(record);
  }

  /**
   * Makes an opened adapter the active entry (a finished run of 0 steps whose weights are the
   * adapter's) on the model open now, so chat, evaluation and export use it as a trained run.
   */
  async openAdapter(o: {
    adapter: { id: string; name: string };
    config: TrainConfig;
    datasetKeys: string[];
    datasetNames: string[];
  }): Promise<RunRecord> {
    if (this.run?.loop) throw new UserError('busy', 'a run is training: pause or stop it first');
    const ms = this.models.session();
    const now = Date.now();
    const prior = await loadRun(o.adapter.id);
    const record: RunRecord = {
      id: o.adapter.id,
      createdAt: prior?.createdAt ?? now,
      updatedAt: now,
      model: { id: ms.id, source: ms.source },
      datasetKeys: o.datasetKeys,
      datasetNames: o.datasetNames,
      config: runConfig(o.config, { modelNameOrPath: ms.id, datasets: o.datasetNames }),
      totalSteps: 0,
      trainExamples: 0,
      valExamples: 0,
      status: 'done',
      step: 0,
      epoch: 0,
      elapsed: 0,
      tokensSeen: 0,
      steps: [],
      logs: [],
      evals: [],
      // "Open" in the Train step's list needs a checkpoint step; the adapter's own weights are the state.
      checkpointStep: 0,
      adapter: o.adapter,
    };
    this.releaseActive();
    this.run = await this.build(record, true);
    await this.liftBudget();
    record.totalSteps = 0;
    this.phase = 'idle';
    await saveRun(record);
    return structuredClone(record);
  }

  private async stored(id: string): Promise<RunRecord> {
    const record = await loadRun(id);
    if (!record) throw new UserError('missing', `run ${id} is not stored in this browser`);
    return record;
  }

  pause(): void {
    if (this.run?.loop) {
      this.run.paused = true;
      this.run.record.status = 'paused';
      this.emit();
    }
  }

  stop(): void {
    if (this.run) {
      this.run.stop = true;
      this.run.paused = false;
    }
  }

  private launch(): void {
    const a = this.run!;
    this.recentSteps = [];
    a.loop = this.loop(a).finally(() => {
      a.loop = null;
      if (this.run === a) {
        // Chat, evaluation and export of a paused or finished run are not held to the budget.
        a.training.trainer.model.gpu.pool.budget = null;
        this.phase = 'idle';
      }
      this.emit();
    });
  }

  private driverFor(a: ActiveRun): RunDriver {
    const r = a.record;
    const { trainer, totalSteps } = a.training;
    const driver: RunDriver = new RunDriver(
      trainer,
      { totalSteps, ...a.plan.cadence, evalBatches: a.valBatches, savedStep: r.checkpointStep },
      {
        beforeStep: async (): Promise<BeforeStep> => {
          if (a.paused) {
            this.phase = 'idle';
            await driver.checkpoint();
            this.emit();
            // Chat and evaluation while paused are not held to the run's budget.
            const pool = trainer.model.gpu.pool;
            pool.budget = null;
            while (a.paused && !a.stop) await sleep(100);
            pool.budget = r.memory?.budget ?? null;
            this.recentSteps = [];
          }
          if (a.lost) return 'abandon';
          if (a.stop) return 'stop';
          r.status = 'running';
          this.phase = 'training';
          return 'go';
        },
        afterStep: (s, seconds) => {
          r.step = s.step;
          r.epoch = s.epoch ?? r.epoch;
          r.elapsed += seconds;
          r.tokensSeen += s.tokens;
          r.steps.push({ step: s.step, loss: s.loss, lr: s.lr, ...(s.metrics ? { metrics: { ...s.metrics } } : {}) });
          const now = performance.now();
          if (!this.recentSteps.length) this.recentSteps.push({ t: now - seconds * 1000, tokens: 0 });
          this.recentSteps.push({ t: now, tokens: s.tokens });
        },
        stepDone: () => this.emit(),
        onLog: ({ steps: _steps, ...point }) => void r.logs.push(point),
        beforeEval: () => {
          this.phase = 'evaluating';
          this.emit();
        },
        onEval: (step, loss) => void r.evals.push({ step, loss }),
        save: async (step) => {
          this.phase = 'saving';
          await saveCheckpointRecord(r.id, await trainer.saveCheckpoint());
          r.checkpointStep = step;
          r.updatedAt = Date.now();
          await saveRun(r);
          this.phase = 'training';
        },
      },
    );
    return driver;
  }

  private async loop(a: ActiveRun): Promise<void> {
    const r = a.record;
    try {
      const outcome = await this.driverFor(a).run();
      if (outcome === 'abandoned' || a.lost) return await this.interrupted(a);
      r.status = outcome === 'done' ? 'done' : 'stopped';
      await saveRun(r);
    } catch (e) {
      // A step can fail on the lost device before device.lost has told us: give it a moment (seconds
      // on a loaded machine; a real failure is only reported that much later).
      const gpuLost = a.training.trainer.model.gpu.lost.then((i) => i.message || String(i.reason));
      const lost = a.lost || (await Promise.race([gpuLost, sleep(LOST_GRACE_MS).then(() => false as const)]));
      if (lost) {
        a.lost ||= lost;
        return await this.interrupted(a);
      }
      if (isOutOfMemory(e) && !r.memory?.retry && (await this.retrySmaller(a, e))) return;
      r.status = 'failed';
      r.error = (e as Error).message;
      await saveRun(r).catch(() => {});
    }
  }

  /**
   * Out of GPU memory mid-run: once, the next smaller plan continues from the last checkpoint
   * (points after it are recomputed). A smaller micro-batch takes more of them per step, so the
   * data cursor is rescaled and a checkpoint in the new units is written at once.
   */
  private async retrySmaller(a: ActiveRun, e: unknown): Promise<boolean> {
    const r = a.record;
    const before = r.config.perDeviceTrainBatchSize;
    if (!this.shrink(r, e)) return false;
    const at = r.checkpointStep ?? 0;
    r.steps = r.steps.filter((p) => p.step <= at);
    r.logs = r.logs.filter((p) => p.step <= at);
    r.evals = r.evals.filter((p) => p.step <= at);
    r.step = at;
    a.training.trainer.release();
    a.training.lora?.release();
    this.run = null;
    try {
      const next = await this.build(r, true);
      this.run = next;
      const after = r.config.perDeviceTrainBatchSize;
      const { loader, trainer } = next.training;
      if (after !== before && r.checkpointStep !== null) {
        const c = loader.state();
        loader.setState({ epoch: c.epoch, micro: Math.floor((c.micro * before) / after) });
        await saveCheckpointRecord(r.id, await trainer.saveCheckpoint());
      }
      await saveRun(r);
      this.launch();
      return true;
    } catch (e2) {
      await this.liftBudget();
      r.status = 'failed';
      r.error = (e2 as Error).message;
      await saveRun(r).catch(() => {});
      return true;
    }
  }

  /**
   * The device went away mid-run (driver reset, GPU process crash, OOM kill): nothing on it can be
   * saved, but the last checkpoint is in IndexedDB, so the run waits paused for Resume.
   */
  private async interrupted(a: ActiveRun): Promise<void> {
    const r = a.record;
    r.status = 'paused';
    r.error = `the GPU device was lost at step ${r.step} (${a.lost}); Resume continues from the checkpoint at step ${r.checkpointStep ?? 0}`;
    await saveRun(r).catch(() => {});
  }
}

function longestOf(items: readonly { inputIds: ArrayLike<number> }[]): number {
  return Math.max(...items.map((x) => x.inputIds.length));
}

function stepsOf(f: FittedRun): MemoryStep[] {
  return f.steps.map((st) => ({ kind: st.kind, label: st.label, change: { ...st.change } }));
}
