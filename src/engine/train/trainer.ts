// The training loop of one run: accumulation windows of micro-batches, HF Trainer loss
// normalisation (Σ token losses in the window / labels in the window, the 1/count written to a
// GPU buffer), global-norm clipping and torch AdamW over a flat parameter arena, LR schedules
// as transformers' get_scheduler. Per optimizer step exactly one GPU→CPU readback: 32 bytes
// holding the loss and the gradient statistics.
import { Recorder } from '../gpu/recorder.ts';
import { numelOf, type Tensor } from '../gpu/tensor.ts';
import {
  createTensor,
  readBytes,
  readF32,
  releaseTensor,
  tensorSpec,
  uploadTensor,
  writeTensor,
  zerosTensor,
} from '../gpu/transfer.ts';
import { adamwBlocks, adamwStep, type AdamwSegment } from '../ops/adamw.ts';
import { gradNorm, gradNormPartials } from '../ops/grad_norm.ts';
import { prepareBatch, type MicroBatch } from '../model/batch.ts';
import { Decoder, type CheckpointPrecision } from '../model/decoder.ts';
import type { LoraSet, Model } from '../model/model.ts';
import type { DataCursor, DataLoader } from './data.ts';
import type { LrScheduler } from './llamafactory-config.ts';
import {
  meanMetrics,
  PreferenceObjective,
  usesReference,
  type PreferenceConfig,
  type PreferenceMetrics,
} from './preference.ts';
import { lrAt, type ScheduleConfig } from './schedule.ts';

export interface TrainerConfig {
  learningRate: number;
  lrSchedulerType: LrScheduler;
  /** Optimizer steps of the whole run (the schedule's horizon). */
  totalSteps: number;
  warmupSteps?: number;
  warmupRatio?: number;
  weightDecay?: number;
  adamBeta1?: number;
  adamBeta2?: number;
  adamEpsilon?: number;
  /** ≤ 0 disables clipping (the norm is still computed and reported). */
  maxGradNorm?: number;
  gradientCheckpointing?: boolean;
  /** With checkpointing: keep layer inputs as bf16 (Decoder checkpointPrecision). */
  checkpointPrecision?: CheckpointPrecision;
  /** NEFTune noise alpha (null/0 = off). */
  neftuneAlpha?: number | null;
  /** Seeds NEFTune noise (LoRA dropout uses the LoRA set's seed, data order the DataLoader's). */
  seed: number;
  /** Full fine-tuning: every base weight trains (lora must be null, weights f32). */
  full?: boolean;
  lossChunkRows?: number;
  /** Preference tuning (stage dpo): micro-batches hold pairs (MicroBatch.pairs). */
  preference?: PreferenceConfig | null;
}

export interface StepResult {
  /** Optimizer steps done after this one (1 after the first). */
  step: number;
  /** Σ token losses / labelled tokens over the window (what HF logs as loss). */
  loss: number;
  /** Global gradient norm before clipping. */
  gradNorm: number;
  /** LR used for this update, and the one the next update will use (HF logs the latter). */
  lr: number;
  nextLr: number;
  tokens: number;
  labelTokens: number;
  /** The update was skipped because the gradients were not finite. */
  skipped: boolean;
  dispatches: number;
  readbacks: number;
  epoch: number | null;
  /** Preference tuning: the window's mean of TRL's metrics (rewards/*, logps/*, ORPO's terms). */
  metrics?: PreferenceMetrics;
}

interface Param {
  name: string;
  tensor: Tensor;
  grad: Tensor;
  /** Element offset in the checkpoint's flat layout (parameters back to back). */
  offset: number;
  /** Element offset in the optimizer's arenas (the LoRA arena's aligned layout, or `offset`). */
  at: number;
  count: number;
  group: number;
}

export interface Checkpoint {
  format: 'tabtune-checkpoint-1';
  state: {
    step: number;
    microStep: number;
    config: TrainerConfig;
    cursor: DataCursor | null;
    params: { name: string; shape: number[]; offset: number; count: number }[];
    lora: LoraSet['config'] | null;
  };
  /** Flat arenas in `params` order: weights, exp_avg, exp_avg_sq. */
  params: Float32Array;
  expAvg: Float32Array;
  expAvgSq: Float32Array;
}

const REPORT = { norm: 0, nonFinite: 3, loss: 4, evalLoss: 5 } as const;

function noDecay(name: string): boolean {
  // HF Trainer.get_decay_parameter_names: no decay for biases and norm weights.
  return name.endsWith('.bias') || /norm\.weight$/.test(name) || /layernorm\.weight$/.test(name);
}

export class Trainer {
  readonly decoder: Decoder;
  private readonly params: Param[] = [];
  private readonly arena: {
    p: Tensor;
    g: Tensor;
    m: Tensor;
    v: Tensor;
    blocks: Tensor;
    blockCount: number;
    partials: Tensor;
  };
  private readonly report: Tensor;
  private readonly lossScale: Tensor;
  /** Whether AdamW updates the LoRA arena directly (no parameter/gradient copies). */
  private readonly inPlace: boolean;
  /** Optimizer steps done. */
  stepCount = 0;
  /** Micro-batches done (dropout mask and NEFTune stream counter). */
  microStep = 0;
  readonly schedule: ScheduleConfig;
  private readonly preference: PreferenceObjective | null = null;
  private disposed = false;
  private readonly ready: Promise<void>;

  constructor(
    readonly model: Model,
    readonly lora: LoraSet | null,
    readonly cfg: TrainerConfig,
    readonly data: DataLoader | null = null,
  ) {
    if (cfg.full && lora) throw new Error('full fine-tuning trains the base weights: pass lora = null');
    if (!cfg.full && !lora) throw new Error('nothing to train: attach LoRA adapters or set full fine-tuning');
    if (!(cfg.totalSteps >= 1)) throw new Error(`totalSteps must be ≥ 1, got ${cfg.totalSteps}`);
    this.schedule = {
      type: cfg.lrSchedulerType,
      lr: cfg.learningRate,
      totalSteps: cfg.totalSteps,
      warmupSteps: cfg.warmupSteps,
      warmupRatio: cfg.warmupRatio,
    };
    if (cfg.preference) {
      if (cfg.full && usesReference(cfg.preference.loss))
        throw new Error(
          `pref_loss ${cfg.preference.loss} needs LoRA: its reference model is the base with the adapters switched off`,
        );
      if (cfg.neftuneAlpha) throw new Error('neftune_noise_alpha is not supported with stage dpo');
      this.preference = new PreferenceObjective(model, cfg.preference, cfg.lossChunkRows);
    }
    this.decoder = new Decoder(model, lora, {
      checkpointing: cfg.gradientCheckpointing,
      checkpointPrecision: cfg.checkpointPrecision,
      full: cfg.full,
      lossChunkRows: cfg.lossChunkRows,
    });
    const gpu = model.gpu;
    // LoRA: the adapters and their gradients already sit in two arenas of one layout, which AdamW
    // and clipping use in place; full fine-tuning copies weights and gradients into flat arenas.
    const inPlace = !cfg.full && lora?.arena && this.decoder.gradArena ? lora.arena : null;
    this.inPlace = inPlace !== null;
    let offset = 0;
    for (const [name, grad] of this.decoder.grads) {
      const tensor = this.paramTensor(name);
      const count = tensor.shape.reduce((a, b) => a * b, 1);
      const at = inPlace ? (tensor.offset! - (inPlace.offset ?? 0)) / 4 : offset;
      this.params.push({ name, tensor, grad, offset, at, count, group: noDecay(name) ? 1 : 0 });
      offset += count;
    }
    const total = inPlace ? numelOf(inPlace.shape) : offset;
    const segments: AdamwSegment[] = this.params.map((p) => ({ offset: p.at, count: p.count, group: p.group }));
    const blocksHost = adamwBlocks(segments, total);
    const f32 = (label: string, cat: 'optimizer' | 'gradients') =>
      zerosTensor(gpu, tensorSpec('f32', [total], cat, label));
    this.arena = {
      p: inPlace ?? f32('arena.params', 'optimizer'),
      g: inPlace ? this.decoder.gradArena! : f32('arena.grads', 'gradients'),
      m: f32('arena.exp_avg', 'optimizer'),
      v: f32('arena.exp_avg_sq', 'optimizer'),
      blocks: uploadTensor(gpu, blocksHost, tensorSpec('u32', [blocksHost.length], 'optimizer', 'adamw.blocks')),
      blockCount: blocksHost.length / 4,
      partials: createTensor(gpu, tensorSpec('f32', [gradNormPartials([total])], 'scratch', 'grad_norm.partials')),
    };
    this.report = uploadTensor(gpu, new Float32Array(8), tensorSpec('f32', [8], 'scratch', 'step.report'));
    this.lossScale = uploadTensor(gpu, new Float32Array(4), tensorSpec('f32', [4], 'scratch', 'step.loss_scale'));
    const rec = new Recorder(gpu, 'trainer init');
    if (!this.inPlace) for (const p of this.params) rec.copy(p.tensor, 0, this.arena.p, p.at * 4, p.count * 4);
    this.ready = rec.submit();
    this.ready.catch(() => undefined); // surfaced when a step awaits it
  }

  private paramTensor(name: string): Tensor {
    const m = /^(.*)\.lora_([AB])$/.exec(name);
    if (m && this.lora) {
      const st = this.lora.adapters.get(m[1]);
      if (!st) throw new Error(`trainer: no adapter ${m[1]}`);
      return m[2] === 'A' ? st.A : st.B;
    }
    return this.model.tensor(name);
  }

  get trainableParameters(): number {
    return this.params.reduce((a, p) => a + p.count, 0);
  }

  /** LR the next update will use. */
  get currentLr(): number {
    return lrAt(this.schedule, this.stepCount);
  }

  /** One optimizer step over `window` (its micro-batches), or over the DataLoader's next window. */
  async step(window?: MicroBatch[]): Promise<StepResult> {
    await this.ready;
    const gpu = this.model.gpu;
    const w = window ?? this.data?.nextWindow();
    if (!w || !w.length) throw new Error('trainer.step needs at least one micro-batch');
    if (this.preference) return this.preferenceStep(this.preference, w);
    const hbs = w.map(prepareBatch);
    const labelTokens = hbs.reduce((a, h) => a + h.labelCount, 0);
    const tokens = hbs.reduce((a, h) => a + h.N, 0);
    writeTensor(gpu, this.lossScale, new Float32Array([labelTokens > 0 ? 1 / labelTokens : 0, 0, 0, 0]));
    const lr = lrAt(this.schedule, this.stepCount);
    let dispatches = 0;
    const pre = new Recorder(gpu, 'step start');
    this.decoder.clearGrads(pre);
    pre.clear(this.report);
    await pre.submit();
    for (const hb of hbs) {
      const inputs = this.decoder.uploadInputs(hb, this.microStep, this.neftune(hb.T, this.microStep));
      try {
        dispatches += (
          await this.decoder.trainMicroBatch(inputs, {
            lossScale: { buffer: this.lossScale, index: 0 },
            accum: this.report,
            accumIndex: REPORT.loss,
          })
        ).dispatches;
      } finally {
        this.decoder.releaseInputs(inputs);
      }
      this.microStep++;
    }
    const rec = new Recorder(gpu, 'optimizer step');
    await this.recordOptimizer(rec, lr);
    await rec.submit();
    dispatches += rec.dispatchCount;
    const r = new Float32Array(await readBytes(gpu, this.report.buf.buffer, 0, 32, 'step report'));
    this.stepCount++;
    return {
      step: this.stepCount,
      loss: r[REPORT.loss],
      gradNorm: r[REPORT.norm],
      lr,
      nextLr: lrAt(this.schedule, this.stepCount),
      tokens,
      labelTokens,
      skipped: r[REPORT.nonFinite] !== 0,
      dispatches,
      readbacks: 1,
      epoch: this.data ? this.data.epoch : null,
    };
  }

  /** Pairs of a preference micro-batch (chosen rows, then rejected rows). */
  private static pairsOf(mb: MicroBatch): number {
    if (!mb.pairs || mb.batch !== 2 * mb.pairs)
      throw new Error(`preference tuning needs pair micro-batches (2 rows per pair), got ${mb.batch} rows`);
    return mb.pairs;
  }

  /** One optimizer step of preference tuning; the loss and metrics come from the host (preference.ts). */
  private async preferenceStep(obj: PreferenceObjective, w: MicroBatch[]): Promise<StepResult> {
    const gpu = this.model.gpu;
    const lr = lrAt(this.schedule, this.stepCount);
    const hbs = w.map(prepareBatch);
    const pre = new Recorder(gpu, 'step start');
    this.decoder.clearGrads(pre);
    pre.clear(this.report);
    await pre.submit();
    let loss = 0;
    const metrics: PreferenceMetrics[] = [];
    let dispatches = 0;
    for (const [i, hb] of hbs.entries()) {
      // Dropout off (LLaMA-Factory's DPO trainer disables it), so every pass sees the same function.
      const inputs = this.decoder.uploadInputs(hb, null);
      try {
        const r = await obj.train(this.decoder, inputs, Trainer.pairsOf(w[i]), w.length);
        loss += r.loss / w.length;
        metrics.push(r.metrics);
      } finally {
        this.decoder.releaseInputs(inputs);
      }
      this.microStep++;
    }
    const rec = new Recorder(gpu, 'optimizer step');
    await this.recordOptimizer(rec, lr);
    await rec.submit();
    dispatches += rec.dispatchCount;
    const r = new Float32Array(await readBytes(gpu, this.report.buf.buffer, 0, 32, 'step report'));
    this.stepCount++;
    return {
      step: this.stepCount,
      loss,
      gradNorm: r[REPORT.norm],
      lr,
      nextLr: lrAt(this.schedule, this.stepCount),
      tokens: hbs.reduce((a, h) => a + h.N, 0),
      labelTokens: hbs.reduce((a, h) => a + h.labelCount, 0),
      skipped: r[REPORT.nonFinite] !== 0,
      dispatches,
      readbacks: 1 + hbs.length * obj.readbacksPerMicroBatch,
      epoch: this.data ? this.data.epoch : null,
      metrics: meanMetrics(metrics),
    };
  }

  /** NEFTune noise of micro-batch `stream` (seqLen = the padded length, as transformers' hook). */
  private neftune(seqLen: number, stream: number) {
    return this.cfg.neftuneAlpha ? { alpha: this.cfg.neftuneAlpha, seqLen, seed: this.cfg.seed, stream } : undefined;
  }

  private async recordOptimizer(rec: Recorder, lr: number): Promise<void> {
    if (!this.inPlace) for (const p of this.params) rec.copy(p.grad, 0, this.arena.g, p.at * 4, p.count * 4);
    await gradNorm(rec, {
      ranges: [{ grads: this.arena.g }],
      partials: this.arena.partials,
      stats: this.report,
      statsIndex: 0,
      maxNorm: this.cfg.maxGradNorm ?? 0,
    });
    const wd = this.cfg.weightDecay ?? 0;
    await adamwStep(rec, {
      params: this.arena.p,
      grads: this.arena.g,
      m: this.arena.m,
      v: this.arena.v,
      blocks: this.arena.blocks,
      blockCount: this.arena.blockCount,
      groups: [
        { lr, weightDecay: wd },
        { lr, weightDecay: 0 },
      ],
      step: this.stepCount + 1,
      beta1: this.cfg.adamBeta1,
      beta2: this.cfg.adamBeta2,
      eps: this.cfg.adamEpsilon,
      gradStats: { tensor: this.report, index: 0 },
    });
    if (!this.inPlace) for (const p of this.params) rec.copy(this.arena.p, p.at * 4, p.tensor, 0, p.count * 4);
  }

  /**
   * Records a whole optimizer step into `rec` without submitting or reading back (benchmarks:
   * one command buffer per step). Every micro-batch's buffers stay allocated until `finish()`,
   * which the caller runs after submitting; it also advances the counters.
   */
  async recordStep(rec: Recorder, window: MicroBatch[]): Promise<{ tokens: number; finish: () => void }> {
    await this.ready;
    if (this.preference) throw new Error('recordStep: preference steps read log-probs back mid-step; use step()');
    const gpu = this.model.gpu;
    const hbs = window.map(prepareBatch);
    const labelTokens = hbs.reduce((a, h) => a + h.labelCount, 0);
    writeTensor(gpu, this.lossScale, new Float32Array([labelTokens > 0 ? 1 / labelTokens : 0, 0, 0, 0]));
    const lr = lrAt(this.schedule, this.stepCount);
    this.decoder.clearGrads(rec);
    rec.clear(this.report);
    const inputs = hbs.map((hb, i) =>
      this.decoder.uploadInputs(hb, this.microStep + i, this.neftune(hb.T, this.microStep + i)),
    );
    for (const inp of inputs)
      await this.decoder.trainMicroBatch(
        inp,
        { lossScale: { buffer: this.lossScale, index: 0 }, accum: this.report, accumIndex: REPORT.loss },
        undefined,
        rec,
      );
    await this.recordOptimizer(rec, lr);
    return {
      tokens: hbs.reduce((a, h) => a + h.N, 0),
      finish: () => {
        this.decoder.releaseDeferred();
        inputs.forEach((i) => this.decoder.releaseInputs(i));
        this.microStep += hbs.length;
        this.stepCount++;
      },
    };
  }

  /** Mean token loss over `batches` (no dropout, no NEFTune, no gradients); one readback. Preference: the mean pair loss. */
  async evaluate(batches: MicroBatch[]): Promise<number> {
    const gpu = this.model.gpu;
    if (this.preference) return (await this.evaluatePairs(batches)).loss;
    const pre = new Recorder(gpu, 'eval start');
    pre.clear(this.report, REPORT.evalLoss * 4, 4);
    await pre.submit();
    let count = 0;
    for (const mb of batches) {
      const hb = prepareBatch(mb);
      count += hb.labelCount;
      const inputs = this.decoder.uploadInputs(hb, null);
      try {
        await this.decoder.forwardLoss(inputs, { lossScale: 1, accum: this.report, accumIndex: REPORT.evalLoss });
      } finally {
        this.decoder.releaseInputs(inputs);
      }
    }
    const r = new Float32Array(await readBytes(gpu, this.report.buf.buffer, 0, 32, 'eval report'));
    return count ? r[REPORT.evalLoss] / count : NaN;
  }

  /**
   * Preference tuning: the mean pair loss over `batches` and the mean of TRL's metrics per batch
   * (rewards/accuracies, rewards/margins, …), as the HF Trainer's evaluation loop averages what
   * DPOTrainer.get_batch_loss_metrics returns for each eval batch.
   */
  async evaluatePairs(batches: MicroBatch[]): Promise<{ loss: number; metrics: PreferenceMetrics }> {
    if (!this.preference) throw new Error('evaluatePairs: this run is not preference tuning (stage dpo)');
    let sum = 0;
    const metrics: PreferenceMetrics[] = [];
    for (const mb of batches) {
      const inputs = this.decoder.uploadInputs(prepareBatch(mb), null);
      try {
        const r = await this.preference.evaluate(this.decoder, inputs, Trainer.pairsOf(mb));
        sum += r.loss;
        metrics.push(r.metrics);
      } finally {
        this.decoder.releaseInputs(inputs);
      }
    }
    return { loss: batches.length ? sum / batches.length : NaN, metrics: meanMetrics(metrics) };
  }

  /** Everything needed to resume identically (parameters, moments, counters, data cursor). */
  async saveCheckpoint(): Promise<Checkpoint> {
    const gpu = this.model.gpu;
    // The checkpoint keeps parameters back to back, whatever the arenas' alignment padding.
    const read = async (t: Tensor) => {
      const all = await readF32(gpu, t);
      const out = new Float32Array(this.trainableParameters);
      for (const p of this.params) out.set(all.subarray(p.at, p.at + p.count), p.offset);
      return out;
    };
    return {
      format: 'tabtune-checkpoint-1',
      state: {
        step: this.stepCount,
        microStep: this.microStep,
        config: { ...this.cfg },
        cursor: this.data ? this.data.state() : null,
        params: this.params.map((p) => ({
          name: p.name,
          shape: [...p.tensor.shape],
          offset: p.offset,
          count: p.count,
        })),
        lora: this.lora ? { ...this.lora.config } : null,
      },
      params: await read(this.arena.p),
      expAvg: await read(this.arena.m),
      expAvgSq: await read(this.arena.v),
    };
  }

  async loadCheckpoint(c: Checkpoint): Promise<void> {
    if (c.format !== 'tabtune-checkpoint-1') throw new Error(`checkpoint: unknown format ${JSON.stringify(c.format)}`);
    const mine = this.params.map((p) => `${p.name}[${p.tensor.shape.join('×')}]@${p.offset}`);
    const theirs = c.state.params.map((p) => `${p.name}[${p.shape.join('×')}]@${p.offset}`);
    if (mine.length !== theirs.length || mine.some((x, i) => x !== theirs[i])) {
      const diff = mine.find((x, i) => x !== theirs[i]) ?? theirs[mine.length];
      throw new Error(
        `checkpoint: its ${theirs.length} trainable tensors do not match this run's ${mine.length} (first difference: ${diff}); same model, LoRA rank and targets are required`,
      );
    }
    const total = this.trainableParameters;
    for (const [k, a] of [
      ['params', c.params],
      ['exp_avg', c.expAvg],
      ['exp_avg_sq', c.expAvgSq],
    ] as const) {
      if (a.length !== total) throw new Error(`checkpoint: ${k} holds ${a.length} values, expected ${total}`);
    }
    const gpu = this.model.gpu;
    const arenaLength = numelOf(this.arena.p.shape);
    const spread = (a: Float32Array) => {
      const out = new Float32Array(arenaLength);
      for (const p of this.params) out.set(a.subarray(p.offset, p.offset + p.count), p.at);
      return out;
    };
    writeTensor(gpu, this.arena.p, spread(c.params));
    writeTensor(gpu, this.arena.m, spread(c.expAvg));
    writeTensor(gpu, this.arena.v, spread(c.expAvgSq));
    const rec = new Recorder(gpu, 'checkpoint restore');
    if (!this.inPlace) for (const p of this.params) rec.copy(this.arena.p, p.at * 4, p.tensor, 0, p.count * 4);
    await rec.submit();
    this.stepCount = c.state.step;
    this.microStep = c.state.microStep;
    if (c.state.cursor && this.data) this.data.setState(c.state.cursor);
  }

  release(): void {
    if (this.disposed) return;
    this.disposed = true;
    const gpu = this.model.gpu;
    this.decoder.release();
    this.preference?.release();
    // In place, the parameter and gradient arenas belong to the LoraSet and the decoder.
    for (const t of [
      ...(this.inPlace ? [] : [this.arena.p, this.arena.g]),
      this.arena.m,
      this.arena.v,
      this.arena.blocks,
      this.arena.partials,
      this.report,
      this.lossScale,
    ])
      releaseTensor(gpu, t);
  }
}
