// Export from the Worker: the merged model, the PEFT adapter, a GGUF for llama.cpp / Ollama (merged,
// with its Modelfile, or the adapter alone as a GGUF adapter), or a LLaMA-Factory bundle of the run's
// settings and data, as files (optionally one zip) for the browser to download.
import { zipSync } from 'fflate';
import { exportMerged } from '../engine/export/merged.ts';
import { exportPeft } from '../engine/export/peft.ts';
import { exportGguf, planGguf } from '../engine/export/gguf.ts';
import { exportGgufAdapter, planGgufAdapter } from '../engine/export/gguf-adapter.ts';
import { llamaFactoryBundle, type BundleDataset } from '../engine/export/llamafactory-bundle.ts';
import { methodOf } from '../engine/train/method.ts';
import type { DataSession } from './data-session.ts';
import type { GpuModelCache } from './gpu-model.ts';
import type { ActiveRun, RunSession } from './run-session.ts';
import { UserError } from './user-error.ts';

export interface ExportedFile {
  name: string;
  blob: Blob;
}

export type ExportKind = 'merged' | 'peft' | 'gguf' | 'bundle';
export interface ExportOptions {
  dtype: 'bf16' | 'f16' | 'f32';
  maxShardGB: number;
  zip: boolean;
  /** GGUF tensor type: f16 | bf16 | q8_0 | q4_k_m (f32 | f16 | bf16 for an adapter); default f16. */
  ggufType?: string;
  /** GGUF: the LoRA adapter alone, as a GGUF adapter for llama.cpp --lora. */
  ggufAdapter?: boolean;
}

async function collect(data: Uint8Array | AsyncIterable<Uint8Array>): Promise<Uint8Array> {
  if (data instanceof Uint8Array) return data.slice();
  const parts: Uint8Array[] = [];
  for await (const c of data) parts.push(c.slice());
  const out = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0));
  let at = 0;
  for (const p of parts) (out.set(p, at), (at += p.byteLength));
  return out;
}

function folderName(modelId: string): string {
  return (modelId.split('/').pop() ?? 'model').replace(/[^\w.-]+/g, '_');
}

function fullFtNoAdapter(): UserError {
  return new UserError('full-ft', 'this run is full fine-tuning: there is no adapter; export the merged model instead');
}

export class ExportSession {
  constructor(
    private readonly models: GpuModelCache,
    private readonly runs: RunSession,
    private readonly data: DataSession,
  ) {}

  async export(
    kind: ExportKind,
    o: ExportOptions,
    onProgress: (done: number, total: number) => void,
  ): Promise<{ files: ExportedFile[]; notes: string[] }> {
    const ms = this.models.session();
    const notes: string[] = [];
    const files =
      kind === 'bundle' ? await this.bundle(this.runs.active) : await this.weights(kind, o, onProgress, notes);
    const folder = folderName(ms.id);
    const stem =
      kind === 'merged'
        ? `${folder}-merged`
        : kind === 'peft'
          ? `${folder}-lora`
          : kind === 'gguf'
            ? `${folder}-gguf`
            : `${folder}-llamafactory`;
    if (o.zip || kind === 'bundle') {
      const zipped = zipSync(Object.fromEntries([...files].map(([n, b]) => [`${stem}/${n}`, b])), { level: 0 });
      return { files: [{ name: `${stem}.zip`, blob: new Blob([zipped], { type: 'application/zip' }) }], notes };
    }
    return { files: [...files].map(([name, b]) => ({ name, blob: new Blob([b as Uint8Array<ArrayBuffer>]) })), notes };
  }

  /** The GGUF's size in bytes before anything is written (the file layout is planned, no weights read). */
  async ggufEstimate(o: ExportOptions): Promise<number> {
    const ms = this.models.session();
    const { trainer, lora } = this.trained().training;
    const name = folderName(ms.id);
    if (o.ggufAdapter) {
      if (!lora) throw fullFtNoAdapter();
      return planGgufAdapter(trainer.model, lora, { type: o.ggufType ?? 'f16', name }).bytes;
    }
    const side = await ms.sideFiles();
    return planGguf(trainer.model, lora, {
      type: o.ggufType ?? 'f16',
      name,
      tokenizerFiles: side,
      write: async () => {},
    }).bytes;
  }

  private trained(): ActiveRun {
    const a = this.runs.idleRun('export');
    if (!a)
      throw new UserError(
        'no-run',
        'nothing trained to export: train a run in the Train step, or open a stored run there',
      );
    return a;
  }

  private async weights(
    kind: 'merged' | 'peft' | 'gguf',
    o: ExportOptions,
    onProgress: (done: number, total: number) => void,
    notes: string[],
  ): Promise<Map<string, Uint8Array>> {
    const ms = this.models.session();
    const a = this.trained();
    const files = new Map<string, Uint8Array>();
    const write = async (name: string, data: Uint8Array | AsyncIterable<Uint8Array>) =>
      void files.set(name, await collect(data));
    const { trainer, lora } = a.training;
    if (kind === 'peft') {
      if (!lora) throw fullFtNoAdapter();
      await exportPeft(lora, null, ms.id, write);
      return files;
    }
    const progress = (p: { done: number; total: number }) => onProgress(p.done, p.total);
    if (kind === 'gguf' && o.ggufAdapter) {
      if (!lora) throw fullFtNoAdapter();
      await exportGgufAdapter(trainer.model, lora, {
        type: o.ggufType ?? 'f16',
        name: folderName(ms.id),
        write,
        onProgress: progress,
      });
      return files;
    }
    const side = await ms.sideFiles();
    if (kind === 'gguf') {
      await exportGguf(trainer.model, lora, {
        type: o.ggufType ?? 'f16',
        name: folderName(ms.id),
        tokenizerFiles: side,
        write,
        onProgress: progress,
        onNote: (n) => notes.push(n),
      });
      return files;
    }
    const configText = side.get('config.json') ? new TextDecoder().decode(side.get('config.json')!) : null;
    side.delete('config.json');
    await exportMerged(trainer.model, lora, {
      dtype: o.dtype,
      maxShardBytes: Math.max(1, o.maxShardGB) * 1e9,
      configText,
      tokenizerFiles: side,
      write,
      onProgress: (p) => onProgress(p.done, p.total),
      onNote: (n) => notes.push(n),
    });
    return files;
  }

  private async bundle(a: ActiveRun | null): Promise<Map<string, Uint8Array>> {
    if (!a)
      throw new UserError(
        'no-run',
        'the bundle holds a run’s settings and data: train or open a run in the Train step first',
      );
    const r = a.record;
    const formats = new Map(this.data.overview().datasets.map((d) => [d.name, d.report.format]));
    const datasets: BundleDataset[] = [];
    for (const s of this.data.sourcesOf(r.datasetKeys)) {
      datasets.push({
        name: s.name,
        file: s.file,
        bytes: new Uint8Array(await s.blob.arrayBuffer()),
        entry: s.entry,
        format: formats.get(s.name),
      });
    }
    return llamaFactoryBundle(
      r.config,
      { id: r.id, step: r.step, totalSteps: r.totalSteps, method: methodOf(r.config) },
      datasets,
    );
  }
}
