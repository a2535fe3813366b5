import { viteShaders } from '../engine/shaders.vite.ts';
import type { Gpu } from '../engine/gpu/device.ts';
import { planMemory, type TrainPlanConfig } from '../engine/plan/plan.ts';
import type { MemoryCategory } from '../engine/gpu/ledger.ts';
import { downloadModel, HubError, type DownloadProgress } from '../io/hub.ts';
import { openModelStore, type ModelStore, type StoredModel } from '../io/model-store.ts';
import { probeGpu, type ProbeResult } from './probe.ts';
import { openModel, type ModelSession, type ModelState } from './model-session.ts';
import { DataSession, type DataOverview, type PrepareSummary, type PreviewRow } from './data-session.ts';
import { GpuModelCache } from './gpu-model.ts';
import { RunSession, type RunProgress } from './run-session.ts';
import { ChatSession, type ChatReply, type ChatRequest } from './chat-session.ts';
import { EvalSession, type EvalResult } from './eval-session.ts';
import { ExportSession, type ExportedFile, type ExportKind, type ExportOptions } from './export-session.ts';
import type { RunRecord } from './runs.ts';
import type { WarningList } from '../data/messages.ts';
import type { TrainConfig } from '../engine/train/llamafactory-config.ts';
import { memoryPlanInput, planRun } from '../engine/train/run-builder.ts';
import { AdapterSession, adapterRunConfig, type AdapterInfo } from './adapter-session.ts';
import { pushToHub, type PushFile, type PushProgress, type PushResult } from '../io/hub-push.ts';

export type { ProbeResult } from './probe.ts';
export type { ModelState } from './model-session.ts';
export type { DataOverview, DatasetSummary, PrepareOptions, PrepareSummary, PreviewRow } from './data-session.ts';
export type { DownloadProgress } from '../io/hub.ts';
export type { RunProgress } from './run-session.ts';
export type { ChatReply, ChatRequest } from './chat-session.ts';
export type { EvalResult } from './eval-session.ts';
export type { ExportedFile, ExportKind, ExportOptions } from './export-session.ts';
export type { RunRecord, LogPoint, EvalPoint, StepPoint, MemoryStep } from './runs.ts';
export type { AdapterInfo } from './adapter-session.ts';
export type { PushProgress, PushResult } from '../io/hub-push.ts';

export interface WorkerEvents {
  /** The GPU device was lost (driver reset, tab backgrounded too long, OOM): state is on the host. */
  deviceLost(info: { reason: string; message: string }): void;
}

/** A failure the UI shows in plain words: `kind` picks the advice. */
export interface StudioError {
  kind: string;
  message: string;
}

export type Result<T> = { ok: true; value: T } | { ok: false; error: StudioError };

export interface PlanView {
  total: number;
  byCategory: Record<MemoryCategory, number>;
  items: { category: MemoryCategory; what: string; count: number; bytes: number }[];
  fits: boolean;
  suggestions: {
    kind: string;
    label: string;
    change: Partial<TrainPlanConfig>;
    total: number;
    saves: number;
    fits: boolean;
    steps?: { kind: string; label: string; change: Partial<TrainPlanConfig> }[];
  }[];
}

async function guard<T>(f: () => Promise<T>): Promise<Result<T>> {
  try {
    return { ok: true, value: await f() };
  } catch (e) {
    const err = e as Error & { kind?: string };
    return {
      ok: false,
      error: {
        kind: e instanceof HubError ? e.kind : (err.kind ?? err.name ?? 'error'),
        message: err.message ?? String(e),
      },
    };
  }
}

const LOCAL_PREFIX = 'local:';
const DEMO_FILES = [
  'config.json',
  'model.safetensors',
  'tokenizer.json',
  'tokenizer_config.json',
  'generation_config.json',
];

/**
 * The Worker's API, called from the UI through comlink. The Worker owns the GPU device,
 * the engine and the data pipeline; the UI never touches WebGPU.
 */
export class TabtuneWorker {
  private gpu: Gpu | null = null;
  private events: Partial<WorkerEvents> = {};
  private model: ModelSession | null = null;
  private store: ModelStore | null = null;
  private download: AbortController | null = null;
  private readonly data = new DataSession();
  private dataReady: Promise<void> | null = null;
  /** Opening models can overlap (the demo opens itself, the user picks a folder): the last request wins. */
  private modelSeq = 0;
  private readonly models = new GpuModelCache(
    () => this.ensureGpu(),
    () => this.model,
  );
  private readonly adapterSession = new AdapterSession();
  private readonly runSession = new RunSession(this.models, this.data, this.adapterSession);
  private readonly chatSession = new ChatSession(this.models, this.runSession);
  private readonly evalSession = new EvalSession(this.models, this.runSession);
  private readonly exportSession = new ExportSession(this.models, this.runSession, this.data);

  /** Registers UI callbacks (comlink proxies). */
  subscribe(events: Partial<WorkerEvents>): void {
    this.events = events;
  }

  async probe(): Promise<ProbeResult> {
    if (this.gpu) this.gpu.destroy();
    const { result, gpu } = await probeGpu(viteShaders, (info) => {
      this.gpu = null;
      this.runSession.deviceLost(info);
      this.events.deviceLost?.(info);
    });
    this.gpu = gpu;
    return result;
  }

  private async ensureGpu(): Promise<Gpu> {
    if (!this.gpu) {
      const r = await this.probe();
      if (!r.ok || !this.gpu)
        throw Object.assign(new Error(`no GPU: ${r.ok ? 'the device was lost' : r.message}`), { kind: 'no-gpu' });
    }
    return this.gpu;
  }

  memory() {
    return this.gpu?.ledger.report() ?? null;
  }

  // ---- model ------------------------------------------------------------------------------

  private async modelStore(): Promise<ModelStore> {
    return (this.store ??= await openModelStore());
  }

  modelState(): ModelState | null {
    return this.model?.state ?? null;
  }

  /** The demo model bundled with the app (public/demo-model/), so the studio works offline. */
  openDemoModel(): Promise<Result<ModelState>> {
    const seq = ++this.modelSeq;
    return guard(async () => {
      const base = new URL(`${import.meta.env.BASE_URL}demo-model/`, self.location.origin);
      const files = new Map<string, Blob>();
      for (const f of DEMO_FILES) {
        const res = await fetch(new URL(f, base)).catch(() => null);
        // Vite's preview answers unknown paths with index.html; only take real files.
        if (res?.ok && !(res.headers.get('content-type') ?? '').includes('text/html')) files.set(f, await res.blob());
      }
      return this.adopt(seq, await openModel('tabtune-demo', 'demo', files));
    });
  }

  openLocalModel(files: { name: string; file: Blob }[]): Promise<Result<ModelState>> {
    const seq = ++this.modelSeq;
    return guard(async () => {
      const folder = files[0]?.name.includes('/') ? files[0].name.split('/')[0] : 'local model';
      const state = this.adopt(seq, await openModel(folder, 'local', new Map(files.map((f) => [f.name, f.file]))));
      // Keep a copy in the browser so a reload reopens it (and a run can resume) without picking it again.
      if (state.config.ok && state.tokenizer.ok && state.weights.ok) void this.keepLocal(folder, files).catch(() => {});
      return state;
    });
  }

  /** Downloads (or takes from the browser cache) a hub model, reporting bytes, speed and ETA. */
  openHubModel(
    id: string,
    token: string | null,
    endpoint: string | null,
    onProgress: (p: DownloadProgress) => void,
  ): Promise<Result<ModelState>> {
    const seq = ++this.modelSeq;
    return guard(async () => {
      this.download?.abort();
      const ctl = (this.download = new AbortController());
      const store = await this.modelStore();
      const res = await downloadModel(id, store, {
        signal: ctl.signal,
        token: token || undefined,
        endpoint: endpoint || undefined,
        onProgress,
      });
      const files = new Map<string, Blob>();
      for (const f of res.files) {
        const b = await store.get(res.modelId, f);
        if (b) files.set(f, b);
      }
      this.download = null;
      return this.adopt(seq, await openModel(res.modelId, 'hub', files));
    });
  }

  private async keepLocal(folder: string, files: { name: string; file: Blob }[]): Promise<void> {
    const store = await this.modelStore();
    const id = `${LOCAL_PREFIX}${folder}`;
    await store.delete(id);
    for (const f of files) {
      const name = f.name.split('/').pop()!;
      const w = await store.openPartial(id, name, 0);
      const reader = f.file.stream().getReader();
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        await w.write(value);
      }
      await w.close();
      await store.commit(id, name);
    }
  }

  /** Reopens a model kept in the browser (a hub download or a copied local folder) without the network. */
  openStoredModel(storeId: string): Promise<Result<ModelState>> {
    const seq = ++this.modelSeq;
    return guard(async () => {
      const store = await this.modelStore();
      const entry = (await store.list()).find((m) => m.modelId === storeId);
      if (!entry || !entry.files.length)
        throw Object.assign(new Error(`"${storeId}" is no longer stored in this browser`), { kind: 'missing' });
      const files = new Map<string, Blob>();
      for (const f of entry.files) {
        const b = await store.get(storeId, f.name);
        if (b) files.set(f.name, b);
      }
      const local = storeId.startsWith(LOCAL_PREFIX);
      return this.adopt(
        seq,
        await openModel(local ? storeId.slice(LOCAL_PREFIX.length) : storeId, local ? 'local' : 'hub', files),
      );
    });
  }

  private adopt(seq: number, session: ModelSession): ModelState {
    if (seq !== this.modelSeq)
      throw Object.assign(new Error('superseded by a later model choice'), { kind: 'superseded' });
    this.model = session;
    return session.state;
  }

  cancelDownload(): void {
    this.download?.abort();
    this.download = null;
  }

  async cachedModels(): Promise<{ kind: string; models: StoredModel[]; usage: number | null; quota: number | null }> {
    const store = await this.modelStore();
    const est = await navigator.storage?.estimate?.().catch(() => null);
    return { kind: store.kind, models: await store.list(), usage: est?.usage ?? null, quota: est?.quota ?? null };
  }

  async deleteCachedModel(id: string): Promise<void> {
    await (await this.modelStore()).delete(id);
  }

  // ---- data -------------------------------------------------------------------------------

  /** Loads the sample datasets and the user's stored files (once). */
  initData(): Promise<Result<DataOverview>> {
    return guard(async () => {
      await this.ensureData();
      return this.data.overview();
    });
  }

  /** Samples and the user's stored files, loaded once (a resumed run needs them before the Data step opens). */
  private ensureData(): Promise<void> {
    this.dataReady ??= (async () => {
      await this.data.loadSamples();
      await this.data.restoreUserFiles().catch(() => {});
    })();
    return this.dataReady;
  }

  addDatasetFiles(
    files: { name: string; file: Blob }[],
    onProgress?: (p: { bytesDone: number; totalBytes?: number; rows: number }) => void,
  ): Promise<Result<DataOverview>> {
    return guard(async () => {
      await this.ensureData();
      await this.data.addFiles(
        files.map((f) => ({ name: f.name, blob: f.file })),
        onProgress,
      );
      return this.data.overview();
    });
  }

  removeDataset(key: string): Promise<Result<DataOverview>> {
    return guard(async () => {
      await this.data.remove(key);
      return this.data.overview();
    });
  }

  private tokenizer() {
    const tok = this.model?.tokenizer;
    if (!tok)
      throw Object.assign(
        new Error('no tokenizer: open a model with tokenizer.json and tokenizer_config.json in the Model step first'),
        { kind: 'no-model' },
      );
    return tok;
  }

  previewData(o: {
    keys: string[];
    page: number;
    pageSize: number;
    cutoffLen: number;
    trainOnPrompt: boolean;
    maskHistory: boolean;
  }): Promise<Result<{ rows: PreviewRow[]; total: number } & WarningList>> {
    return guard(async () => {
      const tok = this.tokenizer();
      return { ...this.data.preview(tok, o), ...this.data.templateWarnings(tok) };
    });
  }

  /** Tokenizes the selected datasets as a run of `config` will (same options, same cache entry). */
  prepareData(o: { keys: string[]; config: TrainConfig }): Promise<Result<PrepareSummary>> {
    return guard(async () => this.data.prepare(this.tokenizer(), { keys: o.keys, ...planRun(o.config).prepare }));
  }

  // ---- planning ---------------------------------------------------------------------------

  /** Predicted GPU memory of a run with the current model, against `budgetBytes`. */
  plan(train: TrainConfig, budgetBytes: number): Result<PlanView> {
    try {
      const config = this.model?.config;
      if (!config) throw Object.assign(new Error('open a model with a valid config.json first'), { kind: 'no-model' });
      const run = planRun(train);
      const input = memoryPlanInput(run, train.cutoffLen, this.gpu?.limits);
      const p = planMemory(config, input);
      // Stage dpo: the planner counts sequences, two per pair; a smaller batch is offered in pairs
      // (with the total of that many pairs), and one that would split a pair is not offered.
      const perItem = run.optimizer.preference ? 2 : 1;
      const suggestions = p.suggestions(budgetBytes).flatMap((s) => {
        if (perItem === 1 || s.change.batchSize === undefined) return [s];
        const batchSize = Math.floor(s.change.batchSize / perItem);
        if (batchSize < 1 || batchSize >= train.perDeviceTrainBatchSize) return [];
        const total = planMemory(config, { ...input, batchSize: batchSize * perItem }).total;
        return [
          { ...s, change: { ...s.change, batchSize }, total, saves: p.total - total, fits: total <= budgetBytes },
        ];
      });
      return {
        ok: true,
        value: {
          total: p.total,
          byCategory: p.byCategory,
          items: p.items,
          fits: p.fits(budgetBytes),
          suggestions,
        },
      };
    } catch (e) {
      return { ok: false, error: { kind: (e as Error).name, message: (e as Error).message } };
    }
  }

  // ---- training, chat, evaluation, export ------------------------------------------------------

  /** Live progress of the active run (comlink proxy), or null to stop listening. */
  watchRuns(f: ((p: RunProgress) => void) | null): void {
    this.runSession.onProgress(f);
  }

  runs(): Promise<Result<{ runs: RunRecord[]; active: string | null; progress: RunProgress | null }>> {
    return guard(async () => ({
      runs: await this.runSession.runs(),
      active: this.runSession.activeRunId(),
      progress: this.runSession.snapshot(),
    }));
  }

  /** Starts a run; `budgetBytes` (the Method step's GPU memory) auto-fits its settings first. */
  startRun(o: { config: TrainConfig; datasetKeys: string[]; budgetBytes?: number }): Promise<Result<RunRecord>> {
    return guard(async () => {
      await this.ensureData();
      return this.runSession.start({ ...o, datasetNames: this.data.names(o.datasetKeys) });
    });
  }

  resumeRun(id: string): Promise<Result<RunRecord>> {
    return guard(async () => {
      await this.ensureData();
      return this.runSession.resume(id);
    });
  }

  openRun(id: string): Promise<Result<RunRecord>> {
    return guard(async () => {
      await this.ensureData();
      return this.runSession.open(id);
    });
  }

  pauseRun(): void {
    this.runSession.pause();
  }

  stopRun(): void {
    this.runSession.stop();
  }

  deleteRun(id: string): Promise<Result<void>> {
    return guard(() => this.runSession.removeRun(id));
  }

  chat(req: ChatRequest, onText: (text: string) => void): Promise<Result<ChatReply>> {
    return guard(() => this.chatSession.chat(req, onText));
  }

  stopChat(): void {
    this.chatSession.stop();
  }

  evaluate(
    o: { rows: number; maxNewTokens: number },
    onRow: (done: number, total: number) => void,
  ): Promise<Result<EvalResult>> {
    return guard(() => this.evalSession.evaluate(o, onRow));
  }

  // ---- adapters opened in the studio ----------------------------------------------------------

  adapters(): Promise<Result<AdapterInfo[]>> {
    return guard(() => this.adapterSession.list());
  }

  /** Keeps a dropped or picked PEFT adapter folder in the browser. */
  addAdapterFiles(files: { name: string; file: Blob }[]): Promise<Result<AdapterInfo>> {
    return guard(() => this.adapterSession.addFiles(files));
  }

  /** Fetches a PEFT adapter from the hub (or a mirror) and keeps it in the browser. */
  addHubAdapter(id: string, token: string | null, endpoint: string | null): Promise<Result<AdapterInfo>> {
    return guard(() => this.adapterSession.addHub(id, { token: token || undefined, endpoint: endpoint || undefined }));
  }

  removeAdapter(id: string): Promise<Result<void>> {
    return guard(() => this.adapterSession.remove(id));
  }

  /** The adapter on the open model, checked against its shapes, or a mismatch naming the tensor. */
  private async fittedAdapter(id: string): Promise<AdapterInfo> {
    const ms = this.models.session();
    return this.adapterSession.check(id, ms.config!, ms.id);
  }

  /** Opens a kept adapter on the open model for chat, evaluation and export (the Data step's datasets for evaluation). */
  openAdapter(o: { id: string; config: TrainConfig; datasetKeys: string[] }): Promise<Result<RunRecord>> {
    return guard(async () => {
      const a = await this.fittedAdapter(o.id);
      await this.ensureData();
      return this.runSession.openAdapter({
        adapter: { id: a.id, name: a.name },
        config: adapterRunConfig(o.config, a),
        datasetKeys: o.datasetKeys,
        datasetNames: this.data.names(o.datasetKeys),
      });
    });
  }

  /** Starts a training run that continues from a kept adapter (the Method step's settings, the adapter's LoRA shape). */
  continueAdapter(o: { id: string; config: TrainConfig; datasetKeys: string[] }): Promise<Result<RunRecord>> {
    return guard(async () => {
      const a = await this.fittedAdapter(o.id);
      await this.ensureData();
      return this.runSession.start({
        config: adapterRunConfig(o.config, a),
        datasetKeys: o.datasetKeys,
        datasetNames: this.data.names(o.datasetKeys),
        adapter: { id: a.id, name: a.name },
      });
    });
  }

  // ---- the Hugging Face Hub ---------------------------------------------------------------------

  /** Creates (private by default) or updates a hub model repo and uploads `files` with progress. */
  pushToHub(
    o: { repo: string; token: string; endpoint: string; private: boolean; update: boolean; files: PushFile[] },
    onProgress: (p: PushProgress) => void,
  ): Promise<Result<PushResult>> {
    return guard(() => pushToHub({ ...o, onProgress }));
  }

  exportRun(
    kind: ExportKind,
    o: ExportOptions,
    onProgress: (done: number, total: number) => void,
  ): Promise<Result<{ files: ExportedFile[]; notes: string[] }>> {
    return guard(() => this.exportSession.export(kind, o, onProgress));
  }

  /** The GGUF export's file size in bytes for these options, before any export work. */
  estimateGguf(o: ExportOptions): Promise<Result<number>> {
    return guard(() => this.exportSession.ggufEstimate(o));
  }
}
