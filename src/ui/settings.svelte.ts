// Everything the user types or picks, persisted in IndexedDB (idb-keyval) so a reload, a crash or
// a lost GPU never loses it. Secrets (the hub access token) stay in memory only.
import { get, set } from 'idb-keyval';
import type { TrainConfig } from '../engine/train/llamafactory-config.ts';
import { DEFAULT_TRAIN_CONFIG, trainConfigFromLegacyMethod } from '../engine/train/method.ts';

export type StepId = 'model' | 'data' | 'method' | 'train' | 'chat' | 'evaluate' | 'export';
export const STEPS: readonly StepId[] = ['model', 'data', 'method', 'train', 'chat', 'evaluate', 'export'];

export interface ChatSettings {
  system: string;
  temperature: number;
  topP: number;
  topK: number;
  repetitionPenalty: number;
  maxNewTokens: number;
  doSample: boolean;
  compare: boolean;
  draft: string;
}

export interface Settings {
  version: 2;
  step: StepId;
  model: {
    source: 'demo' | 'hub' | 'local';
    hubId: string;
    /** Where hub files come from: huggingface.co or a mirror that serves the same /resolve/ URLs (hf-mirror.com). */
    hubEndpoint: string;
    /** Folder name of the last local model (kept in browser storage). */
    localId: string;
  };
  /** Keys of the selected datasets (DataSession keys). */
  datasets: string[];
  /** Whether the user has touched the dataset selection (else the demo dataset is preselected). */
  datasetsChosen: boolean;
  /** The Method step: a LLaMA-Factory training config (model and datasets are filled in when a run starts). */
  train: TrainConfig;
  /** GPU memory the planner may use, in GiB (WebGPU does not tell how much the GPU has). */
  budgetGiB: number;
  chat: ChatSettings;
  export: { dtype: 'bf16' | 'f16' | 'f32'; maxShardGB: number; zip: boolean };
  evalRows: number;
}

export const DEFAULT_SETTINGS: Settings = {
  version: 2,
  step: 'model',
  model: {
    source: 'demo',
    hubId: 'HuggingFaceTB/SmolLM2-135M-Instruct',
    hubEndpoint: 'https://huggingface.co',
    localId: '',
  },
  datasets: [],
  datasetsChosen: false,
  train: structuredClone(DEFAULT_TRAIN_CONFIG as TrainConfig),
  budgetGiB: 4,
  // LLaMA-Factory generating_args defaults for chat (temperature 0.95, top_p 0.7, top_k 50, max_new_tokens 1024).
  chat: {
    system: '',
    temperature: 0.95,
    topP: 0.7,
    topK: 50,
    repetitionPenalty: 1,
    maxNewTokens: 512,
    doSample: true,
    compare: false,
    draft: '',
  },
  export: { dtype: 'bf16', maxShardGB: 5, zip: true },
  evalRows: 20,
};

const KEY = 'tabtune.settings';

export const settings: Settings = $state(structuredClone(DEFAULT_SETTINGS));
export const persist = $state({ loaded: false, error: null as string | null });

function merge<T>(base: T, saved: unknown): T {
  // A field that defaults to null (quantization, neftune) keeps whatever was saved.
  if (base === null) return (saved === undefined ? base : saved) as T;
  if (
    saved === null ||
    typeof saved !== 'object' ||
    Array.isArray(saved) ||
    base === null ||
    typeof base !== 'object' ||
    Array.isArray(base)
  ) {
    return (saved === undefined || typeof saved !== typeof base ? base : saved) as T;
  }
  const out = { ...base } as Record<string, unknown>;
  for (const k of Object.keys(base as object))
    out[k] = merge((base as Record<string, unknown>)[k], (saved as Record<string, unknown>)[k]);
  return out as T;
}

/** Version 1 kept the Method step as its own flat form (`method`); it becomes the TrainConfig it meant. */
function upgrade(saved: unknown): unknown {
  const s = saved as { version?: number; method?: Record<string, unknown>; train?: unknown } | undefined;
  if (!s || typeof s !== 'object' || s.version !== 1 || !s.method) return saved;
  const { method, ...rest } = s;
  return { ...rest, version: 2, train: trainConfigFromLegacyMethod(method) };
}

export async function loadSettings(): Promise<void> {
  try {
    const saved = upgrade(await get(KEY));
    if (saved) Object.assign(settings, merge(structuredClone(DEFAULT_SETTINGS), saved));
  } catch (e) {
    persist.error = (e as Error).message;
  }
  persist.loaded = true;
}

let timer: ReturnType<typeof setTimeout> | null = null;

/** Saves soon (typing does not write on every key). */
export function saveSettings(): void {
  if (!persist.loaded) return;
  const snapshot = $state.snapshot(settings);
  if (timer) clearTimeout(timer);
  timer = setTimeout(() => {
    set(KEY, snapshot).then(
      () => (persist.error = null),
      (e: Error) => (persist.error = e.message),
    );
  }, 250);
}

/** Writes now (before a reload in tests, or on page hide). */
export async function flushSettings(): Promise<void> {
  if (timer) clearTimeout(timer);
  if (persist.loaded) await set(KEY, $state.snapshot(settings));
}
