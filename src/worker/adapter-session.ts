// PEFT adapters the user opens in the studio (a dropped or picked folder, or a hub id): kept in
// IndexedDB as the files they came as, so a reload keeps them. Opening one on the loaded model
// checks it against the model's shapes (no GPU needed for that), then makes it a run entry that
// Chat, Evaluate and Export use as they use a run trained here; training can continue from it.
import { createStore, del, get, keys, set, type UseStore } from 'idb-keyval';
import { blobSource } from '../io/byte-source.ts';
import { fetchSmallFile, validateEndpoint, validateModelId, type HubOptions } from '../io/hub.ts';
import { LORA_MODULES, parseAdapterConfig, parseLoraKey, PeftError } from '../io/peft.ts';
import { SafetensorsFile } from '../io/safetensors.ts';
import { SingleFileStore, type TensorStore } from '../io/safetensors-index.ts';
import { ADAPTER_CONFIG, ADAPTER_WEIGHTS, checkPeftAdapter, loadPeftAdapter } from '../engine/export/peft.ts';
import type { LoraSet, Model } from '../engine/model/model.ts';
import type { ModelConfig } from '../engine/model/config.ts';
import type { TrainConfig } from '../engine/train/llamafactory-config.ts';
import { UserError } from './user-error.ts';

export interface AdapterInfo {
  id: string;
  /** The folder name or hub id it came from. */
  name: string;
  source: 'local' | 'hub';
  addedAt: number;
  /** adapter_config.json's base_model_name_or_path. */
  baseModel: string | null;
  r: number;
  alpha: number;
  dropout: number;
  rsLora: boolean;
  targets: string[];
  tensors: number;
  bytes: number;
}

interface StoredAdapter extends AdapterInfo {
  configText: string;
  weights: Blob;
}

let storeRef: UseStore | undefined;
const store = () => (storeRef ??= createStore('tabtune-adapters', 'adapters'));

const base = (p: string) => p.split(/[\\/]/).pop() ?? p;

function infoOf(a: StoredAdapter): AdapterInfo {
  const { configText: _c, weights: _w, ...info } = a;
  return info;
}

async function tensorStore(a: { weights: Blob }): Promise<TensorStore> {
  return new SingleFileStore(await SafetensorsFile.open(blobSource(a.weights, ADAPTER_WEIGHTS)));
}

export class AdapterSession {
  async list(): Promise<AdapterInfo[]> {
    const out: AdapterInfo[] = [];
    for (const k of await keys(store())) {
      const a = await get<StoredAdapter>(k, store());
      if (a) out.push(infoOf(a));
    }
    return out.sort((a, b) => b.addedAt - a.addedAt);
  }

  async remove(id: string): Promise<void> {
    await del(id, store());
  }

  private async stored(id: string): Promise<StoredAdapter> {
    const a = await get<StoredAdapter>(id, store());
    if (!a) throw new UserError('missing', `adapter ${id} is no longer stored in this browser: open its folder again`);
    return a;
  }

  /** Reads a dropped or picked adapter folder (adapter_config.json + adapter_model.safetensors) and keeps it. */
  async addFiles(files: { name: string; file: Blob }[]): Promise<AdapterInfo> {
    const byName = new Map(files.map((f) => [base(f.name), f.file]));
    // The folder's name when a folder was given; picked files alone are named by their file names.
    const folder = files[0]?.name.includes('/')
      ? files[0].name.split('/').slice(-2, -1)[0]
      : `${ADAPTER_CONFIG} + ${ADAPTER_WEIGHTS}`;
    const configBlob = byName.get(ADAPTER_CONFIG);
    const weights = byName.get(ADAPTER_WEIGHTS);
    if (!configBlob || !weights) {
      const missing = [!configBlob && ADAPTER_CONFIG, !weights && ADAPTER_WEIGHTS].filter(Boolean).join(' and ');
      throw new UserError(
        'bad-adapter',
        `${missing} missing: a PEFT adapter folder holds adapter_config.json and adapter_model.safetensors (got ${[...byName.keys()].join(', ') || 'no files'})`,
      );
    }
    return this.keep(folder, 'local', await configBlob.text(), weights);
  }

  /** Fetches adapter_config.json and adapter_model.safetensors of a hub repo and keeps them. */
  async addHub(id: string, o: HubOptions): Promise<AdapterInfo> {
    const repo = validateModelId(id);
    if (o.endpoint) o = { ...o, endpoint: validateEndpoint(o.endpoint) };
    const config = await fetchSmallFile(repo, ADAPTER_CONFIG, o);
    const weights = await fetchSmallFile(repo, ADAPTER_WEIGHTS, o);
    return this.keep(repo, 'hub', new TextDecoder().decode(config!), new Blob([weights! as Uint8Array<ArrayBuffer>]));
  }

  private async keep(name: string, source: 'local' | 'hub', configText: string, weights: Blob): Promise<AdapterInfo> {
    let ac;
    let tensors: string[];
    try {
      ac = parseAdapterConfig(configText, `${name}/${ADAPTER_CONFIG}`);
      const st = await tensorStore({ weights });
      tensors = st.names();
      await st.close();
    } catch (e) {
      throw new UserError('bad-adapter', (e as Error).message);
    }
    const now = Date.now();
    const a: StoredAdapter = {
      id: `adapter-${now.toString(36)}`,
      name,
      source,
      addedAt: now,
      baseModel: ac.baseModelNameOrPath,
      r: ac.r,
      alpha: ac.loraAlpha,
      dropout: ac.loraDropout,
      rsLora: ac.useRslora,
      // The modules its weights adapt (target_modules may be a regex), in the order LLaMA-Factory lists them.
      targets: LORA_MODULES.filter((m) => tensors.some((t) => parseLoraKey(t)?.module === m)),
      tensors: tensors.length,
      bytes: weights.size,
      configText,
      weights,
    };
    await set(a.id, a, store());
    return infoOf(a);
  }

  /** Whether the adapter fits a model's config; a mismatch names the tensor (or config field) and why. */
  async check(id: string, config: ModelConfig, modelId: string): Promise<AdapterInfo> {
    const a = await this.stored(id);
    const st = await tensorStore(a);
    try {
      checkPeftAdapter(config, a.configText, st, `${a.name}/${ADAPTER_CONFIG}`);
    } catch (e) {
      if (e instanceof PeftError)
        throw new UserError(
          'adapter-mismatch',
          `the adapter "${a.name}" does not fit ${modelId}${a.baseModel && a.baseModel !== modelId ? ` (it was trained on ${a.baseModel})` : ''}: ${e.message}`,
        );
      throw e;
    } finally {
      await st.close();
    }
    return infoOf(a);
  }

  /** The adapter's weights on `model`'s GPU, with a run's dropout and seed for continued training. */
  async load(id: string, model: Model, overrides: { dropout?: number; seed?: number }): Promise<LoraSet> {
    const a = await this.stored(id);
    const st = await tensorStore(a);
    try {
      return (await loadPeftAdapter(model, a.configText, st, `${a.name}/${ADAPTER_CONFIG}`, overrides)).lora;
    } finally {
      await st.close();
    }
  }
}

/**
 * The run settings for an opened adapter: the Method step's settings with the adapter's LoRA
 * shape, and adapter_name_or_path naming it (as a LLaMA-Factory YAML that continues from it would).
 */
export function adapterRunConfig(config: TrainConfig, a: AdapterInfo): TrainConfig {
  const out = structuredClone(config);
  out.finetuningType = 'lora';
  out.lora = { ...out.lora, rank: a.r, alpha: a.alpha, target: [...a.targets], useRslora: a.rsLora, useDora: false };
  out.adapterNameOrPath = [a.name];
  return out;
}
