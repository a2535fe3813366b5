// The engine side of the studio, inside the Worker: the model on the GPU, training runs (with
// pause / resume / stop and checkpoints in IndexedDB), chat, evaluation and export.
import { zipSync } from 'fflate';
import type { Gpu } from '../engine/gpu/device.ts';
import type { LedgerReport } from '../engine/gpu/ledger.ts';
import { loadModel } from '../engine/model/load.ts';
import { attachLora, type LoraSet, type Model } from '../engine/model/model.ts';
import type { MicroBatch } from '../engine/model/batch.ts';
import { Trainer, type TrainerConfig } from '../engine/train/trainer.ts';
import { DataLoader } from '../engine/train/data.ts';
import { generate } from '../engine/generate/generate.ts';
import type { DecodeResult } from '../engine/generate/decode.ts';
import { exportMerged } from '../engine/export/merged.ts';
import { exportPeft } from '../engine/export/peft.ts';
import { collateBatch, chatTemplateFor, type Conversation, type Example, type HfTokenizer, type PreparedDataset } from '../data/index.ts';
import { methodYaml, type MethodSettings } from '../ui/method.ts';
import type { DataSession, PrepareOptions } from './data-session.ts';
import type { ModelSession } from './model-session.ts';
import { perplexity, similarity, sentenceBleu4, rougeL, charTokens, wordTokens } from './metrics.ts';
import { listRuns, loadCheckpointRecord, loadRun, saveCheckpointRecord, saveRun, deleteRun, type RunRecord } from './runs.ts';

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

export interface EvalResult {
  runId: string;
  step: number;
  valLoss: number | null;
  perplexity: number | null;
  bleu4: number;
  rougeL: number;
  rows: { dataset: string; row: number; prompt: string; reference: string; prediction: string; bleu4: number; rougeL: number }[];
  note: string | null;
}

export interface ExportedFile {
  name: string;
  blob: Blob;
}

type Mode = 'stored' | 'nf4' | 'f32';

function modeOf(m: MethodSettings): Mode {
  return m.method === 'qlora' ? 'nf4' : m.method === 'full' ? 'f32' : 'stored';
}

class UserError extends Error {
  constructor(
    readonly kind: string,
    message: string,
  ) {
    super(message);
  }
}

interface ActiveRun {
  record: RunRecord;
  trainer: Trainer;
  lora: LoraSet | null;
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

export class EngineSession {
  private loaded: { key: string; model: Model } | null = null;
  private active: ActiveRun | null = null;
  private chatAbort: AbortController | null = null;
  private listener: ((p: RunProgress) => void) | null = null;
  private phase: RunProgress['phase'] = 'idle';
  private loadProgress: RunProgress['loadProgress'];
  private recentSteps: { t: number; tokens: number }[] = [];

  constructor(
    private readonly gpuOf: () => Promise<Gpu>,
    private readonly modelOf: () => ModelSession | null,
    private readonly data: DataSession,
  ) {}

  onProgress(f: ((p: RunProgress) => void) | null): void {
    this.listener = f;
  }

  /** Drops GPU state after a lost device (the next call reloads from the host copies). */
  deviceLost(info: { reason: string; message: string }): void {
    this.loaded = null;
    if (this.active) {
      this.active.stop = true;
      this.active.lost = info.message || info.reason || 'unknown reason';
    }
  }

  private model(): ModelSession {
    const m = this.modelOf();
    if (!m?.config || !m.tokenizer || !m.weights) {
      throw new UserError('no-model', 'the model is not complete: open a model with config.json, tokenizer files and safetensors weights in the Model step (see what is missing there)');
    }
    return m;
  }

  private async gpuModel(mode: Mode): Promise<Model> {
    const ms = this.model();
    const key = `${ms.id}|${ms.state.files.map((f) => f.name + f.size).join(',')}|${mode}`;
    if (this.loaded?.key === key) return this.loaded.model;
    if (this.active?.loop) throw new UserError('busy', 'a run is training on the GPU: pause or stop it first');
    this.releaseActive();
    this.loaded?.model.release();
    this.loaded = null;
    const gpu = await this.gpuOf();
    this.phase = 'loading';
    const model = await loadModel(gpu, ms.config!, ms.weights!, {
      quantize: mode === 'nf4' ? 'nf4' : undefined,
      doubleQuant: true,
      computeDType: mode === 'f32' ? 'f32' : 'stored',
      onProgress: (p) => {
        this.loadProgress = { loaded: p.loaded, total: p.total };
        if (this.active) this.emit();
      },
    });
    this.loadProgress = undefined;
    this.loaded = { key, model };
    return model;
  }

  private releaseActive(): void {
    if (!this.active) return;
    if (this.active.lost) {
      // Buffers of a lost device are gone with it.
      this.active = null;
      return;
    }
    this.active.trainer.release();
    this.active.lora?.release();
    this.active = null;
  }

  private emit(): void {
    if (!this.listener || !this.active) return;
    const r = this.active.record;
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
      memory: this.loaded?.model.gpu.ledger.report() ?? null,
      phase: this.phase,
      onGpu: !this.active.lost,
      loadProgress: this.loadProgress,
    });
  }

  // ---- runs ---------------------------------------------------------------------------------

  async runs(): Promise<RunRecord[]> {
    const all = await listRuns();
    // A record still marked running that is not the live run was interrupted (reload, crash).
    return all.map((r) => (r.status === 'running' && r.id !== this.active?.record.id ? { ...r, status: 'paused' as const } : r));
  }

  async removeRun(id: string): Promise<void> {
    if (this.active?.record.id === id) {
      if (this.active.loop) throw new UserError('busy', 'stop the run before deleting it');
      this.releaseActive();
    }
    await deleteRun(id);
  }

  activeRunId(): string | null {
    return this.active?.record.id ?? null;
  }

  private prepareOptions(keys: string[], m: MethodSettings): PrepareOptions {
    return { keys, cutoffLen: m.cutoffLen, maxSamples: m.maxSamples, valSize: m.valSize, seed: m.seed, packing: m.packing, trainOnPrompt: m.trainOnPrompt, maskHistory: m.maskHistory };
  }

  /** Builds model, data, adapters and trainer for a run (fresh, or from its checkpoint). */
  private async build(record: RunRecord, resume: boolean): Promise<ActiveRun> {
    const ms = this.model();
    if (resume && record.model.id !== ms.id) {
      throw new UserError('wrong-model', `this run trained "${record.model.id}" but "${ms.id}" is open: open that model in the Model step, then resume`);
    }
    const m = record.method;
    const tok = ms.tokenizer!;
    this.phase = 'preparing';
    const opts = this.prepareOptions(record.datasetKeys, m);
    await this.data.prepare(tok, opts);
    const prep = this.data.preparedFor(tok.hash, opts)!;
    const items = prep.data.packed ?? prep.data.train;
    if (!items.length) throw new UserError('no-data', 'no training rows: select datasets with valid rows in the Data step');
    const padId = tok.pad?.id ?? tok.eos?.id ?? 0;
    const dl = new DataLoader(items, { batchSize: m.batchSize, gradientAccumulationSteps: m.gradAccum, seed: m.seed, padId });
    const totalSteps = Math.max(1, Math.ceil(dl.stepsPerEpoch * m.numTrainEpochs));
    const model = await this.gpuModel(modeOf(m));
    this.phase = 'preparing';
    const lora = m.method === 'full' ? null : attachLora(model, { rank: m.loraRank, alpha: m.loraAlpha, dropout: m.loraDropout, targets: m.loraTarget.length ? m.loraTarget : 'all', rsLora: m.useRslora, seed: m.seed });
    const cfg: TrainerConfig = {
      learningRate: m.learningRate, lrSchedulerType: m.lrScheduler, totalSteps, warmupSteps: m.warmupSteps, weightDecay: m.weightDecay,
      maxGradNorm: m.maxGradNorm, gradientCheckpointing: m.gradientCheckpointing, neftuneAlpha: m.neftuneAlpha > 0 ? m.neftuneAlpha : null,
      seed: m.seed, full: m.method === 'full',
    };
    let trainer: Trainer;
    try {
      trainer = new Trainer(model, lora, cfg, dl);
    } catch (e) {
      lora?.release();
      throw e;
    }
    if (resume) {
      const ckpt = await loadCheckpointRecord(record.id);
      if (ckpt) await trainer.loadCheckpoint(ckpt);
      else record.step = 0;
    }
    record.totalSteps = totalSteps;
    record.trainExamples = prep.data.train.length;
    record.valExamples = prep.data.val.length;
    const valBatches: MicroBatch[] = [];
    for (let i = 0; i < prep.data.val.length; i += m.batchSize) {
      const pb = collateBatch(prep.data.val.slice(i, i + m.batchSize), padId, 8);
      valBatches.push({ batch: pb.batch, seqLen: pb.seqLen, inputIds: pb.inputIds, labels: pb.labels, positionIds: pb.positionIds, lengths: pb.lengths });
    }
    return { record, trainer, lora, prepared: prep.data, examples: prep.examples, valBatches, paused: false, stop: false, lost: false, loop: null };
  }

  async start(o: { method: MethodSettings; datasetKeys: string[]; datasetNames: string[] }): Promise<RunRecord> {
    if (this.active?.loop) throw new UserError('busy', 'a run is already training: pause or stop it first');
    const ms = this.model();
    const now = Date.now();
    const record: RunRecord = {
      id: `run-${now.toString(36)}`, createdAt: now, updatedAt: now, model: { id: ms.id, source: ms.source }, datasetKeys: o.datasetKeys, datasetNames: o.datasetNames,
      method: o.method, totalSteps: 0, trainExamples: 0, valExamples: 0, status: 'running', step: 0, epoch: 0, elapsed: 0, tokensSeen: 0,
      steps: [], logs: [], evals: [], checkpointStep: null,
    };
    this.releaseActive();
    this.active = await this.build(record, false);
    await saveRun(record);
    this.launch();
    return structuredClone(record);
  }

  /** Continues a run from its last checkpoint (after a reload, a crash, a stop or a pause). */
  async resume(id: string): Promise<RunRecord> {
    if (this.active?.lost && !this.active.loop) this.active = null;
    if (this.active?.record.id === id) {
      this.active.paused = false;
      if (!this.active.loop) {
        this.active.stop = false;
        this.active.record.status = 'running';
        this.launch();
      } else this.active.record.status = 'running';
      this.emit();
      return structuredClone(this.active.record);
    }
    if (this.active?.loop) throw new UserError('busy', 'another run is training: pause or stop it first');
    const record = await loadRun(id);
    if (!record) throw new UserError('missing', `run ${id} is not stored in this browser`);
    // Points after the checkpoint are dropped: the resumed run recomputes them identically.
    const at = record.checkpointStep ?? 0;
    record.steps = record.steps.filter((p) => p.step <= at);
    record.logs = record.logs.filter((p) => p.step <= at);
    record.evals = record.evals.filter((p) => p.step <= at);
    record.step = at;
    record.status = 'running';
    record.error = undefined;
    this.releaseActive();
    this.active = await this.build(record, true);
    this.launch();
    return structuredClone(record);
  }

  pause(): void {
    if (this.active?.loop) {
      this.active.paused = true;
      this.active.record.status = 'paused';
      this.emit();
    }
  }

  stop(): void {
    if (this.active) {
      this.active.stop = true;
      this.active.paused = false;
    }
  }

  private launch(): void {
    const a = this.active!;
    this.recentSteps = [];
    a.loop = this.loop(a).finally(() => {
      a.loop = null;
      this.phase = 'idle';
      this.emit();
    });
  }

  private async checkpoint(a: ActiveRun): Promise<void> {
    this.phase = 'saving';
    const c = await a.trainer.saveCheckpoint();
    await saveCheckpointRecord(a.record.id, c);
    a.record.checkpointStep = a.record.step;
    a.record.updatedAt = Date.now();
    await saveRun(a.record);
  }

  private async loop(a: ActiveRun): Promise<void> {
    const r = a.record;
    const m = r.method;
    let windowLoss = 0;
    let windowSteps = 0;
    let windowTokens = 0;
    let windowStart = performance.now();
    try {
      while (r.step < r.totalSteps && !a.stop) {
        if (a.paused) {
          this.phase = 'idle';
          if (r.checkpointStep !== r.step) await this.checkpoint(a);
          this.emit();
          while (a.paused && !a.stop) await sleep(100);
          if (a.stop) break;
          r.status = 'running';
          windowStart = performance.now();
          this.recentSteps = [];
        }
        this.phase = 'training';
        const t0 = performance.now();
        const s = await a.trainer.step();
        const dt = (performance.now() - t0) / 1000;
        r.step = s.step;
        r.epoch = s.epoch ?? r.epoch;
        r.elapsed += dt;
        r.tokensSeen += s.tokens;
        r.steps.push({ step: s.step, loss: s.loss, lr: s.lr });
        this.recentSteps.push({ t: performance.now(), tokens: s.tokens });
        if (this.recentSteps.length === 1) this.recentSteps.unshift({ t: t0, tokens: 0 });
        windowLoss += s.loss;
        windowSteps++;
        windowTokens += s.tokens;
        if (s.step % m.loggingSteps === 0 || s.step === r.totalSteps) {
          const secs = (performance.now() - windowStart) / 1000;
          r.logs.push({ step: s.step, epoch: r.epoch, loss: windowLoss / windowSteps, lr: s.nextLr, gradNorm: s.gradNorm, tokensPerSecond: secs > 0 ? windowTokens / secs : 0 });
          windowLoss = windowSteps = windowTokens = 0;
          windowStart = performance.now();
          if (a.valBatches.length) {
            this.phase = 'evaluating';
            this.emit();
            r.evals.push({ step: s.step, loss: await a.trainer.evaluate(a.valBatches) });
          }
        }
        if (s.step % m.saveSteps === 0) await this.checkpoint(a);
        this.emit();
      }
      if (a.lost) return await this.interrupted(a);
      r.status = r.step >= r.totalSteps ? 'done' : 'stopped';
      if (r.checkpointStep !== r.step) await this.checkpoint(a);
      else await saveRun(r);
    } catch (e) {
      // A step can fail on the lost device before device.lost has told us: give it a moment.
      const lost = a.lost || (await Promise.race([a.trainer.model.gpu.lost.then((i) => i.message || String(i.reason)), sleep(1000).then(() => false as const)]));
      if (lost) {
        a.lost ||= lost;
        return await this.interrupted(a);
      }
      r.status = 'failed';
      r.error = (e as Error).message;
      await saveRun(r).catch(() => {});
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

  snapshot(): RunProgress | null {
    if (!this.active) return null;
    let out: RunProgress | null = null;
    const l = this.listener;
    this.listener = (p) => (out = p);
    this.emit();
    this.listener = l;
    return out;
  }

  // ---- chat ---------------------------------------------------------------------------------

  /** Loads a stored run's adapter (without training) so chat, evaluation and export can use it. */
  async openRun(id: string): Promise<RunRecord> {
    if (this.active?.record.id === id) return structuredClone(this.active.record);
    if (this.active?.loop) throw new UserError('busy', 'another run is training: pause or stop it first');
    const record = await loadRun(id);
    if (!record) throw new UserError('missing', `run ${id} is not stored in this browser`);
    if (record.status === 'running') record.status = 'paused';
    this.releaseActive();
    this.active = await this.build(record, true);
    this.phase = 'idle';
    return structuredClone(record);
  }

  private async chatModel(target: 'base' | 'tuned'): Promise<{ model: Model; lora: LoraSet | null; tok: HfTokenizer }> {
    const ms = this.model();
    if (this.active) {
      if (this.active.loop && !this.active.paused) throw new UserError('busy', 'the GPU is training: pause the run to chat');
      if (target === 'tuned' && this.active.record.method.method === 'full') {
        return { model: this.active.trainer.model, lora: null, tok: ms.tokenizer! };
      }
      if (target === 'base' && this.active.record.method.method === 'full') {
        throw new UserError('full-ft', 'full fine-tuning changed the base weights in place: the base model is not kept on the GPU; compare with a LoRA run instead');
      }
      return { model: this.active.trainer.model, lora: target === 'tuned' ? this.active.lora : null, tok: ms.tokenizer! };
    }
    if (target === 'tuned') throw new UserError('no-run', 'no tuned model yet: train a run in the Train step (or open a stored run there) first');
    return { model: await this.gpuModel('stored'), lora: null, tok: ms.tokenizer! };
  }

  async chat(req: ChatRequest, onText: (text: string) => void): Promise<ChatReply> {
    const { model, lora, tok } = await this.chatModel(req.target);
    const conv: Conversation = { system: req.system || undefined, messages: req.messages.map((x) => ({ role: x.role, content: x.content })) };
    const tpl = chatTemplateFor(tok);
    const promptIds = tok.encode(tpl.render(conv, { addGenerationPrompt: true }));
    const stopIds = [...new Set([...model.config.eosTokenIds, ...(tok.eos?.id !== undefined ? [tok.eos.id] : [])])];
    this.chatAbort?.abort();
    const ctl = (this.chatAbort = new AbortController());
    const ids: number[] = [];
    const it = generate(model, lora, Int32Array.from(promptIds), {
      maxNewTokens: req.maxNewTokens, stopIds, temperature: req.temperature, topP: req.topP, topK: req.topK, repetitionPenalty: req.repetitionPenalty,
      doSample: req.doSample, seed: req.seed, signal: ctl.signal,
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
    return { text, tokens: ids.length, reason: res.reason, promptTokens: res.promptTokens, tokensPerSecond: res.decodeMs > 0 ? (1000 * ids.length) / res.decodeMs : 0 };
  }

  stopChat(): void {
    this.chatAbort?.abort();
  }

  // ---- evaluate -----------------------------------------------------------------------------

  async evaluate(o: { rows: number; maxNewTokens: number }, onRow: (done: number, total: number) => void): Promise<EvalResult> {
    const a = this.active;
    if (!a) throw new UserError('no-run', 'no run to evaluate: train one in the Train step, or open a stored run there');
    if (a.loop && !a.paused) throw new UserError('busy', 'the GPU is training: pause the run to evaluate');
    const tok = this.model().tokenizer!;
    const valLoss = a.valBatches.length ? await a.trainer.evaluate(a.valBatches) : null;
    const held = a.prepared.val.length ? a.prepared.val : [];
    const note = held.length ? null : 'no held-out rows (Validation size is 0): predictions below are on training rows, which says little about generalisation — set Validation size > 0 in the Method step and train again';
    const source = held.length ? held : a.prepared.train;
    const picked = source.slice(0, Math.max(1, o.rows));
    const tpl = chatTemplateFor(tok);
    const out: EvalResult['rows'] = [];
    const model = a.trainer.model;
    const stopIds = [...new Set([...model.config.eosTokenIds, ...(tok.eos?.id !== undefined ? [tok.eos.id] : [])])];
    for (const [i, enc] of picked.entries()) {
      const { dataset, ex } = a.examples[enc.row];
      onRow(i, picked.length);
      if (ex.kind !== 'chat') continue;
      const msgs = ex.conversation.messages;
      let last = msgs.length - 1;
      while (last >= 0 && msgs[last].role !== 'assistant') last--;
      if (last < 0) continue;
      const conv: Conversation = { ...ex.conversation, messages: msgs.slice(0, last) };
      const promptText = tpl.render(conv, { addGenerationPrompt: true });
      const ids: number[] = [];
      const it = generate(model, a.lora, Int32Array.from(tok.encode(promptText)), { maxNewTokens: o.maxNewTokens, stopIds, temperature: 1, topP: 1, topK: 0, repetitionPenalty: 1, doSample: false });
      for (;;) {
        const n = await it.next();
        if (n.done) break;
        ids.push(n.value);
      }
      const prediction = tok.decode(ids, { skipSpecialTokens: true }).trim();
      const reference = msgs[last].content;
      out.push({
        dataset, row: ex.row, prompt: msgs[last - 1]?.content ?? '', reference, prediction,
        bleu4: 100 * sentenceBleu4(charTokens(reference), charTokens(prediction)),
        rougeL: (() => { const h = wordTokens(prediction), r = wordTokens(reference); return h.length && r.length ? 100 * rougeL(r, h) : 0; })(),
      });
    }
    onRow(picked.length, picked.length);
    const sim = similarity(out.map((x) => ({ reference: x.reference, prediction: x.prediction })));
    return { runId: a.record.id, step: a.record.step, valLoss, perplexity: valLoss !== null ? perplexity(valLoss) : null, bleu4: sim.bleu4, rougeL: sim.rougeL, rows: out, note };
  }

  // ---- export -------------------------------------------------------------------------------

  async export(kind: 'merged' | 'peft' | 'bundle', o: { dtype: 'bf16' | 'f16' | 'f32'; maxShardGB: number; zip: boolean }, onProgress: (done: number, total: number) => void): Promise<{ files: ExportedFile[]; notes: string[] }> {
    const a = this.active;
    const ms = this.model();
    const files = new Map<string, Uint8Array>();
    const notes: string[] = [];
    const write = async (name: string, data: Uint8Array | AsyncIterable<Uint8Array>) => {
      if (data instanceof Uint8Array) return void files.set(name, data.slice());
      const parts: Uint8Array[] = [];
      let n = 0;
      for await (const c of data) (parts.push(c.slice()), (n += c.byteLength));
      const out = new Uint8Array(n);
      let at = 0;
      for (const p of parts) (out.set(p, at), (at += p.byteLength));
      files.set(name, out);
    };
    const folder = (ms.id.split('/').pop() ?? 'model').replace(/[^\w.-]+/g, '_');
    if (kind === 'bundle') {
      const method = a?.record.method;
      const keys = a?.record.datasetKeys;
      if (!method || !keys) throw new UserError('no-run', 'the bundle holds a run’s settings and data: train or open a run in the Train step first');
      await this.bundle(files, a.record, ms.id);
    } else {
      if (!a) throw new UserError('no-run', 'nothing trained to export: train a run in the Train step, or open a stored run there');
      if (a.loop && !a.paused) throw new UserError('busy', 'the GPU is training: pause or stop the run to export');
      if (kind === 'peft') {
        if (!a.lora) throw new UserError('full-ft', 'this run is full fine-tuning: there is no adapter; export the merged model instead');
        await exportPeft(a.lora, null, ms.id, write);
      } else {
        const side = await ms.sideFiles();
        const configText = side.get('config.json') ? new TextDecoder().decode(side.get('config.json')!) : null;
        side.delete('config.json');
        await exportMerged(a.trainer.model, a.lora, {
          dtype: o.dtype, maxShardBytes: Math.max(1, o.maxShardGB) * 1e9, configText, tokenizerFiles: side, write,
          onProgress: (p) => onProgress(p.done, p.total), onNote: (n) => notes.push(n),
        });
      }
    }
    const stem = kind === 'merged' ? `${folder}-merged` : kind === 'peft' ? `${folder}-lora` : `${folder}-llamafactory`;
    if (o.zip || kind === 'bundle') {
      const zipped = zipSync(Object.fromEntries([...files].map(([n, b]) => [`${stem}/${n}`, b])), { level: 0 });
      return { files: [{ name: `${stem}.zip`, blob: new Blob([zipped], { type: 'application/zip' }) }], notes };
    }
    return { files: [...files].map(([name, b]) => ({ name, blob: new Blob([b as Uint8Array<ArrayBuffer>]) })), notes };
  }

  /** LLaMA-Factory bundle: the training YAML, the datasets in their own format and dataset_info.json. */
  private async bundle(files: Map<string, Uint8Array>, r: RunRecord, modelId: string): Promise<void> {
    const enc = new TextEncoder();
    const info: Record<string, unknown> = {};
    const sources = this.data.sourcesOf(r.datasetKeys);
    const names: string[] = [];
    for (const s of sources) {
      const name = s.name.replace(/\.[^.]+$/, '').replace(/[^\w.-]+/g, '_');
      names.push(name);
      const entry: Record<string, unknown> = { ...(s.entry ?? {}), file_name: s.file.split('/').pop() };
      const summary = this.data.overview().datasets.find((d) => d.name === s.name);
      if (!s.entry && summary) {
        if (summary.report.format === 'sharegpt') entry.formatting = 'sharegpt';
        if (summary.report.format === 'openai') Object.assign(entry, { formatting: 'sharegpt', columns: { messages: 'messages' }, tags: { role_tag: 'role', content_tag: 'content', user_tag: 'user', assistant_tag: 'assistant', system_tag: 'system' } });
      }
      info[name] = entry;
    }
    for (const s of sources) files.set(`data/${s.file.split('/').pop()}`, new Uint8Array(await s.blob.arrayBuffer()));
    const yaml = methodYaml(r.method, { modelNameOrPath: modelId, datasets: names }).replace(/^### dataset$/m, '### dataset\ndataset_dir: data');
    files.set('train_sft.yaml', enc.encode(yaml));
    files.set('data/dataset_info.json', enc.encode(JSON.stringify(info, null, 2) + '\n'));
    files.set('README.md', enc.encode(
      `# ${r.id}\n\nTrained in Tabtune on ${modelId} (${r.method.method}, ${r.step} of ${r.totalSteps} steps).\n\n` +
      'Continue on a GPU machine with LLaMA-Factory (put the model id or a local path in model_name_or_path):\n\n```bash\nllamafactory-cli train train_sft.yaml\n```\n',
    ));
  }
}
