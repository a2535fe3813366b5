// Where downloaded model files live in the browser, so a model is downloaded once. Files go to
// the Origin Private File System (OPFS): an incomplete download is kept as `<file>.part` and
// resumed with an HTTP Range request (see hub.ts); a finished one is renamed to `<file>`.
// MemoryModelStore has the same behaviour without persistence (Node tests, browsers without OPFS).

export interface StoredModelFile {
  name: string;
  size: number;
}

export interface StoredModel {
  modelId: string;
  files: StoredModelFile[];
  /** Files still downloading (or interrupted), with the bytes kept so far. */
  partial: StoredModelFile[];
}

export interface FileWriter {
  write(chunk: Uint8Array): Promise<void>;
  /** Makes everything written so far durable (an interrupted download resumes from here). */
  flush(): Promise<void>;
  close(): Promise<void>;
}

export interface ModelStore {
  readonly kind: 'opfs' | 'memory';
  /** A complete file, or null when it is not (fully) stored. */
  get(modelId: string, file: string): Promise<Blob | null>;
  /** Bytes kept from an interrupted download of `file` (0 when none). */
  partialSize(modelId: string, file: string): Promise<number>;
  /** Opens the partial file for appending at `offset`; bytes past `offset` are dropped. */
  openPartial(modelId: string, file: string, offset: number): Promise<FileWriter>;
  /** The partial file is complete: it becomes the stored file. */
  commit(modelId: string, file: string): Promise<void>;
  /** Stores a small file whole (config.json, tokenizer files). */
  put(modelId: string, file: string, bytes: Uint8Array): Promise<void>;
  list(): Promise<StoredModel[]>;
  delete(modelId: string): Promise<void>;
}

export const PARTIAL_SUFFIX = '.part';

/** A model id ("Qwen/Qwen2.5-0.5B-Instruct") as one folder name that round-trips. */
export function modelDirName(modelId: string): string {
  return encodeURIComponent(modelId);
}

export class ModelStoreError extends Error {
  override readonly name = 'ModelStoreError';
  constructor(
    readonly kind: 'quota' | 'io',
    readonly file: string,
    detail: string,
  ) {
    super(`${file}: ${detail}`);
  }
}

function isQuotaError(e: unknown): boolean {
  return e instanceof Error && (e.name === 'QuotaExceededError' || /quota/i.test(e.message));
}

/** Turns a storage failure into a ModelStoreError that says what to do. */
export function storeError(e: unknown, file: string): ModelStoreError {
  if (e instanceof ModelStoreError) return e;
  if (isQuotaError(e))
    return new ModelStoreError(
      'quota',
      file,
      'the browser refused to store more data (storage quota exceeded); delete cached models you no longer need or free disk space, then retry — the download resumes where it stopped',
    );
  return new ModelStoreError('io', file, `could not write to browser storage: ${(e as Error)?.message ?? String(e)}`);
}

// ---------------------------------------------------------------------------------------------

export class MemoryModelStore implements ModelStore {
  readonly kind = 'memory' as const;
  private readonly models = new Map<string, Map<string, Uint8Array>>();
  /** Test hook: throws a QuotaExceededError once more than this many bytes are stored. */
  quotaBytes = Infinity;

  private dir(modelId: string): Map<string, Uint8Array> {
    let d = this.models.get(modelId);
    if (!d) this.models.set(modelId, (d = new Map()));
    return d;
  }

  private used(): number {
    let n = 0;
    for (const d of this.models.values()) for (const b of d.values()) n += b.byteLength;
    return n;
  }

  async get(modelId: string, file: string): Promise<Blob | null> {
    const b = this.models.get(modelId)?.get(file);
    return b ? new Blob([b as Uint8Array<ArrayBuffer>]) : null;
  }

  async partialSize(modelId: string, file: string): Promise<number> {
    return this.models.get(modelId)?.get(file + PARTIAL_SUFFIX)?.byteLength ?? 0;
  }

  async openPartial(modelId: string, file: string, offset: number): Promise<FileWriter> {
    const d = this.dir(modelId);
    const key = file + PARTIAL_SUFFIX;
    const kept = (d.get(key) ?? new Uint8Array(0)).subarray(0, offset);
    const chunks: Uint8Array[] = [kept.slice()];
    const sync = () => {
      const total = chunks.reduce((a, c) => a + c.byteLength, 0);
      const out = new Uint8Array(total);
      let o = 0;
      for (const c of chunks) (out.set(c, o), (o += c.byteLength));
      d.set(key, out);
    };
    sync();
    return {
      write: async (chunk) => {
        if (this.used() + chunk.byteLength > this.quotaBytes) {
          const e = new Error('The quota has been exceeded.');
          e.name = 'QuotaExceededError';
          throw storeError(e, file);
        }
        chunks.push(chunk.slice());
        sync();
      },
      flush: async () => sync(),
      close: async () => sync(),
    };
  }

  async commit(modelId: string, file: string): Promise<void> {
    const d = this.dir(modelId);
    const part = d.get(file + PARTIAL_SUFFIX);
    if (!part) throw new ModelStoreError('io', file, 'nothing downloaded to commit');
    d.set(file, part);
    d.delete(file + PARTIAL_SUFFIX);
  }

  async put(modelId: string, file: string, bytes: Uint8Array): Promise<void> {
    this.dir(modelId).set(file, bytes.slice());
  }

  async list(): Promise<StoredModel[]> {
    return [...this.models].map(([modelId, d]) => ({
      modelId,
      files: [...d].filter(([n]) => !n.endsWith(PARTIAL_SUFFIX)).map(([name, b]) => ({ name, size: b.byteLength })),
      partial: [...d]
        .filter(([n]) => n.endsWith(PARTIAL_SUFFIX))
        .map(([name, b]) => ({ name: name.slice(0, -PARTIAL_SUFFIX.length), size: b.byteLength })),
    }));
  }

  async delete(modelId: string): Promise<void> {
    this.models.delete(modelId);
  }
}

// ---------------------------------------------------------------------------------------------
// OPFS. Sync access handles (dedicated Workers) write straight to the file, so whatever was written
// survives a crash; elsewhere createWritable() writes a swap file that we commit at every flush.

interface SyncHandle {
  write(b: Uint8Array, o: { at: number }): number;
  truncate(n: number): void;
  flush(): void;
  close(): void;
}
type FileHandleWithSync = FileSystemFileHandle & { createSyncAccessHandle?: () => Promise<SyncHandle> };
type DirWithEntries = FileSystemDirectoryHandle & { entries(): AsyncIterable<[string, FileSystemHandle]> };

const ROOT = 'tabtune-models';

export class OpfsModelStore implements ModelStore {
  readonly kind = 'opfs' as const;
  private constructor(private readonly root: FileSystemDirectoryHandle) {}

  static async open(): Promise<OpfsModelStore> {
    const storage = globalThis.navigator?.storage;
    if (!storage?.getDirectory) throw new ModelStoreError('io', ROOT, 'this browser has no Origin Private File System');
    const top = await storage.getDirectory();
    return new OpfsModelStore(await top.getDirectoryHandle(ROOT, { create: true }));
  }

  private async dir(modelId: string, create: boolean): Promise<FileSystemDirectoryHandle | null> {
    try {
      return await this.root.getDirectoryHandle(modelDirName(modelId), { create });
    } catch {
      return null;
    }
  }

  private async handle(modelId: string, name: string, create: boolean): Promise<FileSystemFileHandle | null> {
    const d = await this.dir(modelId, create);
    if (!d) return null;
    try {
      return await d.getFileHandle(name, { create });
    } catch {
      return null;
    }
  }

  async get(modelId: string, file: string): Promise<Blob | null> {
    const h = await this.handle(modelId, file, false);
    return h ? h.getFile() : null;
  }

  async partialSize(modelId: string, file: string): Promise<number> {
    const h = await this.handle(modelId, file + PARTIAL_SUFFIX, false);
    return h ? (await h.getFile()).size : 0;
  }

  async openPartial(modelId: string, file: string, offset: number): Promise<FileWriter> {
    const h = (await this.handle(modelId, file + PARTIAL_SUFFIX, true)) as FileHandleWithSync | null;
    if (!h) throw new ModelStoreError('io', file, 'cannot create the file in browser storage');
    if (h.createSyncAccessHandle) {
      const s = await h.createSyncAccessHandle();
      s.truncate(offset);
      let at = offset;
      return {
        write: async (chunk) => {
          try {
            at += s.write(chunk, { at });
          } catch (e) {
            throw storeError(e, file);
          }
        },
        flush: async () => s.flush(),
        close: async () => (s.flush(), s.close()),
      };
    }
    let w = await h.createWritable({ keepExistingData: true });
    await w.truncate(offset);
    await w.seek(offset);
    return {
      write: async (chunk) => {
        try {
          await w.write(chunk as Uint8Array<ArrayBuffer>);
        } catch (e) {
          throw storeError(e, file);
        }
      },
      flush: async () => {
        const size = (await h.getFile()).size;
        await w.close();
        w = await h.createWritable({ keepExistingData: true });
        await w.seek(Math.max(size, (await h.getFile()).size));
      },
      close: async () => w.close(),
    };
  }

  async commit(modelId: string, file: string): Promise<void> {
    const d = await this.dir(modelId, false);
    const h = await this.handle(modelId, file + PARTIAL_SUFFIX, false);
    if (!d || !h) throw new ModelStoreError('io', file, 'nothing downloaded to commit');
    const moveTo = (h as unknown as { move?: (name: string) => Promise<void> }).move;
    if (moveTo) {
      await moveTo.call(h, file);
      return;
    }
    // No move(): copy into the final name, then drop the partial file.
    const target = await d.getFileHandle(file, { create: true });
    const w = await target.createWritable();
    await (await h.getFile()).stream().pipeTo(w);
    await d.removeEntry(file + PARTIAL_SUFFIX);
  }

  async put(modelId: string, file: string, bytes: Uint8Array): Promise<void> {
    try {
      const h = await this.handle(modelId, file, true);
      if (!h) throw new ModelStoreError('io', file, 'cannot create the file in browser storage');
      const w = await h.createWritable();
      await w.write(bytes as Uint8Array<ArrayBuffer>);
      await w.close();
    } catch (e) {
      throw storeError(e, file);
    }
  }

  async list(): Promise<StoredModel[]> {
    const out: StoredModel[] = [];
    for await (const [dirName, entry] of (this.root as DirWithEntries).entries()) {
      if (entry.kind !== 'directory') continue;
      const m: StoredModel = { modelId: decodeURIComponent(dirName), files: [], partial: [] };
      for await (const [name, f] of (entry as DirWithEntries).entries()) {
        if (f.kind !== 'file') continue;
        const size = (await (f as FileSystemFileHandle).getFile()).size;
        if (name.endsWith(PARTIAL_SUFFIX)) m.partial.push({ name: name.slice(0, -PARTIAL_SUFFIX.length), size });
        else m.files.push({ name, size });
      }
      out.push(m);
    }
    return out;
  }

  async delete(modelId: string): Promise<void> {
    try {
      await this.root.removeEntry(modelDirName(modelId), { recursive: true });
    } catch {
      // already gone
    }
  }
}

/** OPFS when the browser has it, else an in-memory store (downloads then last until reload). */
export async function openModelStore(): Promise<ModelStore> {
  try {
    return await OpfsModelStore.open();
  } catch {
    return new MemoryModelStore();
  }
}
