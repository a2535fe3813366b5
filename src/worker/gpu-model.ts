// The base model on the GPU, kept between runs, chats and evaluations while the model files and
// the load options (NF4 or not, double quantization, f32 for full fine-tuning) stay the same.
import type { Gpu } from '../engine/gpu/device.ts';
import { loadModel } from '../engine/model/load.ts';
import type { Model } from '../engine/model/model.ts';
import type { RunPlan } from '../engine/train/run-builder.ts';
import type { ModelSession } from './model-session.ts';
import { UserError } from './user-error.ts';

export type LoadSpec = RunPlan['load'];

/** What decides the weights on the GPU: the model's files and every load option. */
export function gpuModelKey(modelId: string, files: readonly { name: string; size: number }[], load: LoadSpec): string {
  const names = files.map((f) => f.name + f.size).join(',');
  return JSON.stringify([
    modelId,
    names,
    load.quantize ?? null,
    load.quantize ? (load.doubleQuant ?? true) : null,
    load.computeDType ?? 'stored',
    load.head ?? null,
    load.embeddingOnHost ?? false,
  ]);
}

export class GpuModelCache {
  private loaded: { key: string; model: Model } | null = null;
  progress: { loaded: number; total: number } | undefined;

  constructor(
    private readonly gpuOf: () => Promise<Gpu>,
    private readonly modelOf: () => ModelSession | null,
  ) {}

  /** The open model, complete (config, tokenizer, weights), or a user error saying what is missing. */
  session(): ModelSession {
    const m = this.modelOf();
    if (!m?.config || !m.tokenizer || !m.weights) {
      throw new UserError(
        'no-model',
        'the model is not complete: open a model with config.json, tokenizer files and safetensors weights in the Model step (see what is missing there)',
      );
    }
    return m;
  }

  /** The GPU device (opened on first use). */
  gpu(): Promise<Gpu> {
    return this.gpuOf();
  }

  get current(): Model | null {
    return this.loaded?.model ?? null;
  }

  /**
   * The model loaded with `load`. A different key releases the old weights first; `beforeSwap`
   * releases what still uses them (or throws when that is not possible now).
   */
  async get(load: LoadSpec, beforeSwap: () => void, onProgress?: () => void): Promise<Model> {
    const ms = this.session();
    const key = gpuModelKey(ms.id, ms.state.files, load);
    if (this.loaded?.key === key) return this.loaded.model;
    beforeSwap();
    this.loaded?.model.release();
    this.loaded = null;
    const gpu = await this.gpuOf();
    const model = await loadModel(gpu, ms.config!, ms.weights!, {
      ...load,
      onProgress: (p) => {
        this.progress = { loaded: p.loaded, total: p.total };
        onProgress?.();
      },
    });
    this.progress = undefined;
    this.loaded = { key, model };
    return model;
  }

  /** After a lost device: the buffers are gone with it; the next `get` reloads from the host copies. */
  forget(): void {
    this.loaded = null;
  }
}
