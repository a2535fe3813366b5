// Training runs in IndexedDB: the run record (settings, curves, status) and its latest trainer
// checkpoint (LoRA/full parameters, AdamW moments, data cursor), so a reload, a crash or a lost
// GPU device resumes the same run and the same curve.
import { createStore, del, get, keys, set, type UseStore } from 'idb-keyval';
import type { LogWindow } from '../engine/train/run-driver.ts';
import type { Checkpoint } from '../engine/train/trainer.ts';
import type { TrainConfig } from '../engine/train/llamafactory-config.ts';
import { trainConfigFromLegacyMethod } from '../engine/train/method.ts';

export type RunStatus = 'running' | 'paused' | 'stopped' | 'done' | 'failed';

/** One logging window of the run driver, as the chart plots it (LlamaBoard plots the window's mean loss). */
export type LogPoint = Omit<LogWindow, 'steps'>;

export interface StepPoint {
  step: number;
  loss: number;
  lr: number;
  /** Preference tuning: TRL's metrics of this step (rewards/chosen, rewards/accuracies, logps/rejected, …). */
  metrics?: Record<string, number>;
}

export interface EvalPoint {
  step: number;
  loss: number;
}

export interface RunRecord {
  id: string;
  createdAt: number;
  updatedAt: number;
  model: { id: string; source: 'demo' | 'hub' | 'local' };
  datasetKeys: string[];
  datasetNames: string[];
  /** The run's LLaMA-Factory config, model and dataset names filled in. */
  config: TrainConfig;
  totalSteps: number;
  trainExamples: number;
  valExamples: number;
  status: RunStatus;
  step: number;
  epoch: number;
  /** Seconds of training so far (over every resume). */
  elapsed: number;
  tokensSeen: number;
  steps: StepPoint[];
  logs: LogPoint[];
  evals: EvalPoint[];
  checkpointStep: number | null;
  error?: string;
  /**
   * The PEFT adapter (opened in the Model step, kept in IndexedDB) the run starts from. A record
   * whose id is the adapter's own is the opened adapter itself, untrained here.
   */
  adapter?: { id: string; name: string };
  /**
   * Memory: the budget the run keeps to, what auto-fit changed to get under it (planner steps,
   * in order), the predicted peak, and the one retry after an out-of-memory error.
   */
  memory?: {
    budget: number;
    planned: number;
    fitted: MemoryStep[];
    /** per_device_train_batch_size before the steps (their wording counts from it). */
    fromBatch: number;
    retry?: { step: number; error: string; steps: MemoryStep[]; planned: number; fromBatch: number };
  };
}

/** One auto-fit step as the planner names it (kind + settings change; the UI words it). */
export interface MemoryStep {
  kind: string;
  label: string;
  change: Record<string, unknown>;
}

let storeRef: UseStore | undefined;
const store = () => (storeRef ??= createStore('tabtune-runs', 'runs'));

export async function saveRun(r: RunRecord): Promise<void> {
  await set(`run:${r.id}`, r, store());
}

/** Records written before runs kept a TrainConfig carry the Method step's flat form as `method`. */
function upgrade(r: RunRecord | undefined): RunRecord | undefined {
  const legacy = r as (RunRecord & { method?: Record<string, unknown> }) | undefined;
  if (!legacy || legacy.config || !legacy.method) return r;
  const { method, ...rest } = legacy;
  const config = trainConfigFromLegacyMethod(method);
  config.dataset = [...rest.datasetNames];
  config.modelNameOrPath = rest.model.id;
  return { ...rest, config };
}

export async function loadRun(id: string): Promise<RunRecord | undefined> {
  return upgrade(await get<RunRecord>(`run:${id}`, store()));
}

export async function listRuns(): Promise<RunRecord[]> {
  const out: RunRecord[] = [];
  for (const k of await keys(store())) {
    if (typeof k !== 'string' || !k.startsWith('run:')) continue;
    const r = upgrade(await get<RunRecord>(k, store()));
    if (r) out.push(r);
  }
  return out.sort((a, b) => b.createdAt - a.createdAt);
}

export async function saveCheckpointRecord(id: string, c: Checkpoint): Promise<void> {
  await set(`ckpt:${id}`, c, store());
}

export async function loadCheckpointRecord(id: string): Promise<Checkpoint | undefined> {
  return get<Checkpoint>(`ckpt:${id}`, store());
}

export async function deleteRun(id: string): Promise<void> {
  await del(`run:${id}`, store());
  await del(`ckpt:${id}`, store());
}
