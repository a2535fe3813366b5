// IndexedDB storage (idb-keyval) of dataset files and their tokenized form, so a reload neither
// loses a dropped file nor re-tokenizes it. Tokenized results are keyed by file hash + tokenizer
// hash + the options that change tokens, and stored as flat typed arrays (cheap to clone).
import { createStore, del, get, keys, set, type UseStore } from 'idb-keyval';
import { sha256Hex } from './hash.ts';
import type { EncodeOptions } from './encode.ts';
import type { EncodedExample, PackedSequence, ValidationReport } from './types.ts';

export interface StoredFile {
  id: string;
  name: string;
  size: number;
  type: string;
  savedAt: number;
  data: Blob;
}

export type StoredFileInfo = Omit<StoredFile, 'data'>;

/** Flat form of a list of encoded examples. */
export interface FlatExamples {
  rows: Int32Array;
  /** offsets[i]..offsets[i+1] are example i's tokens; length = examples + 1. */
  offsets: Int32Array;
  inputIds: Int32Array;
  labels: Int32Array;
  fullLengths: Int32Array;
}

export interface TokenizedDataset {
  key: string;
  fileId: string;
  tokenizerHash: string;
  options: TokenizeKeyOptions;
  report?: ValidationReport;
  train: FlatExamples;
  val: FlatExamples;
  createdAt: number;
}

/** Everything that changes the tokens of a dataset. */
export interface TokenizeKeyOptions extends EncodeOptions {
  maxSamples?: number;
  valSize?: number;
  seed?: number;
  enableThinking?: boolean;
  format?: string;
  datasetInfo?: unknown;
}

let defaultStore: UseStore | undefined;
function store(s?: UseStore): UseStore {
  return s ?? (defaultStore ??= createStore('tabtune-data', 'datasets'));
}

export function openDataStore(dbName = 'tabtune-data', storeName = 'datasets'): UseStore {
  return createStore(dbName, storeName);
}

/** Saves a file; its id is the sha256 of its bytes, so the same file saved twice is stored once. */
export async function saveDatasetFile(file: Blob, name: string, s?: UseStore): Promise<StoredFileInfo> {
  const bytes = new Uint8Array(await file.arrayBuffer());
  const id = `file:${await sha256Hex(bytes)}`;
  const rec: StoredFile = { id, name, size: file.size, type: file.type, savedAt: Date.now(), data: file };
  await set(id, rec, store(s));
  const { data: _data, ...info } = rec;
  return info;
}

export async function loadDatasetFile(id: string, s?: UseStore): Promise<StoredFile | undefined> {
  return get<StoredFile>(id, store(s));
}

export async function listDatasetFiles(s?: UseStore): Promise<StoredFileInfo[]> {
  const out: StoredFileInfo[] = [];
  for (const k of await keys(store(s))) {
    if (typeof k !== 'string' || !k.startsWith('file:')) continue;
    const rec = await get<StoredFile>(k, store(s));
    if (rec) {
      const { data: _d, ...info } = rec;
      out.push(info);
    }
  }
  return out.sort((a, b) => a.savedAt - b.savedAt);
}

/** Deletes a file and every tokenized result made from it. */
export async function deleteDatasetFile(id: string, s?: UseStore): Promise<void> {
  await del(id, store(s));
  for (const k of await keys(store(s))) if (typeof k === 'string' && k.startsWith(`tok:${id}:`)) await del(k, store(s));
}

function canonical(v: unknown): string {
  if (v === null || typeof v !== 'object') return JSON.stringify(v) ?? 'null';
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  const o = v as Record<string, unknown>;
  return `{${Object.keys(o)
    .filter((k) => o[k] !== undefined)
    .sort()
    .map((k) => `${JSON.stringify(k)}:${canonical(o[k])}`)
    .join(',')}}`;
}

export async function tokenizedKey(
  fileId: string,
  tokenizerHash: string,
  options: TokenizeKeyOptions,
): Promise<string> {
  return `tok:${fileId}:${await sha256Hex(`${tokenizerHash}\n${canonical(options)}`)}`;
}

export function flattenExamples(examples: EncodedExample[]): FlatExamples {
  const offsets = new Int32Array(examples.length + 1);
  for (let i = 0; i < examples.length; i++) offsets[i + 1] = offsets[i] + examples[i].inputIds.length;
  const n = offsets[examples.length];
  const inputIds = new Int32Array(n),
    labels = new Int32Array(n);
  const rows = new Int32Array(examples.length),
    fullLengths = new Int32Array(examples.length);
  examples.forEach((e, i) => {
    inputIds.set(e.inputIds, offsets[i]);
    labels.set(e.labels, offsets[i]);
    rows[i] = e.row;
    fullLengths[i] = e.fullLength;
  });
  return { rows, offsets, inputIds, labels, fullLengths };
}

export function unflattenExamples(f: FlatExamples): EncodedExample[] {
  const out: EncodedExample[] = [];
  for (let i = 0; i + 1 < f.offsets.length; i++) {
    const inputIds = f.inputIds.slice(f.offsets[i], f.offsets[i + 1]);
    out.push({
      row: f.rows[i],
      inputIds,
      labels: f.labels.slice(f.offsets[i], f.offsets[i + 1]),
      fullLength: f.fullLengths[i],
      truncated: f.fullLengths[i] > inputIds.length,
    });
  }
  return out;
}

export async function saveTokenized(
  fileId: string,
  tokenizerHash: string,
  options: TokenizeKeyOptions,
  data: { train: EncodedExample[]; val: EncodedExample[]; report?: ValidationReport },
  s?: UseStore,
): Promise<string> {
  const key = await tokenizedKey(fileId, tokenizerHash, options);
  const rec: TokenizedDataset = {
    key,
    fileId,
    tokenizerHash,
    options,
    report: data.report,
    train: flattenExamples(data.train),
    val: flattenExamples(data.val),
    createdAt: Date.now(),
  };
  await set(key, rec, store(s));
  return key;
}

export async function loadTokenized(
  fileId: string,
  tokenizerHash: string,
  options: TokenizeKeyOptions,
  s?: UseStore,
): Promise<TokenizedDataset | undefined> {
  return get<TokenizedDataset>(await tokenizedKey(fileId, tokenizerHash, options), store(s));
}

export type { PackedSequence };
