// Datasets held by the Worker: the bundled samples and the user's files (kept in IndexedDB so a
// reload never loses them), parsed and validated with src/data, previewed with the model's
// chat template and masks, and prepared (tokenized, split, packed) for training.
import {
  chatTemplateFor,
  deleteDatasetFile,
  encodeExample,
  encodePair,
  IGNORE_INDEX,
  listDatasetFiles,
  loadDatasetFile,
  parseDatasetCollection,
  prepareDataset,
  saveDatasetFile,
  textStats,
  type ChatTemplate,
  type DatasetInfoEntry,
  type Example,
  type HfTokenizer,
  type PreparedDataset,
  type RowIssue,
  type TextStats,
  type TokenStats,
  type ValidationReport,
  type Progress,
  sha256Hex,
} from '../data/index.ts';
import { createStore, get, set, type UseStore } from 'idb-keyval';
import type { DataMessage, WarningList } from '../data/messages.ts';
import type { PrepareSpec } from '../engine/train/run-builder.ts';

export type DatasetOrigin = 'sample' | 'user';

export interface DatasetSummary {
  key: string;
  name: string;
  file: string;
  origin: DatasetOrigin;
  entry?: DatasetInfoEntry;
  report: ValidationReport;
  /** report.invalid may be long: the UI gets the first MAX_ISSUES and the count. */
  invalidCount: number;
  stats: TextStats;
}

export interface GroupError {
  group: string;
  name: string;
  reason: string;
}

export interface DataOverview {
  datasets: DatasetSummary[];
  errors: GroupError[];
}

/** The selected datasets and how the run prepares them (`planRun(config).prepare`, so the Data step and the run share a cache entry). */
export interface PrepareOptions extends PrepareSpec {
  keys: string[];
}

export interface PrepareSummary {
  train: number;
  val: number;
  packed: number | null;
  stats: TokenStats;
  invalid: (RowIssue & { dataset: string })[];
  invalidCount: number;
  warnings: string[];
  /** Codes of `warnings`, same order (absent from data prepared by an older version). */
  warningCodes: DataMessage[];
  tokenizerHash: string;
  /** The tokenized result came from IndexedDB (same files, tokenizer and options as before). */
  fromCache: boolean;
}

/**
 * The last prepared (tokenized, split, packed) data, kept in IndexedDB so a reload or a resumed
 * run does not tokenize again. One entry only: a new choice of data or options replaces it.
 */
let preparedStore: UseStore | null = null;
const PREPARED_KEY = 'latest';
interface StoredPrepared {
  key: string;
  data: PreparedDataset;
}

export interface PreviewRow {
  dataset: string;
  row: number;
  tokens: number;
  trained: number;
  truncated: boolean;
  /** Runs of decoded text; `trained` runs carry a label (loss is taken on them). */
  runs: { text: string; trained: boolean }[];
  /**
   * A preference pair (stage dpo): the shared prompt as rendered, and each answer as its sequence
   * continues after the prompt (both scored; LLaMA-Factory's pairwise encoding).
   */
  pair?: {
    prompt: string;
    chosen: string;
    rejected: string;
    chosenTokens: number;
    rejectedTokens: number;
  };
  error?: string;
}

/** Decoded runs of one sequence: consecutive tokens that are all trained, or all context. */
function labelRuns(
  tok: HfTokenizer,
  ids: Int32Array,
  labels: Int32Array,
): { runs: PreviewRow['runs']; trained: number } {
  const runs: PreviewRow['runs'] = [];
  let start = 0;
  let trained = 0;
  for (let i = 1; i <= ids.length; i++) {
    const cur = labels[i - 1] !== IGNORE_INDEX;
    if (cur) trained++;
    if (i === ids.length || (labels[i] !== IGNORE_INDEX) !== cur) {
      runs.push({ text: tok.decode(ids.subarray(start, i)), trained: cur });
      start = i;
    }
  }
  return { runs, trained };
}

export const MAX_ISSUES = 500;

interface Group {
  id: string;
  origin: DatasetOrigin;
  /** IndexedDB ids of the stored files (user groups). */
  storedIds: string[];
  files: { name: string; blob: Blob }[];
  parsed: {
    name: string;
    file: string;
    entry?: DatasetInfoEntry;
    report: ValidationReport;
    examples: Example[];
    stats: TextStats;
  }[];
  errors: { name: string; reason: string }[];
}

const SAMPLE_URLS = import.meta.glob('../../datasets/*.json', {
  query: '?url',
  import: 'default',
  eager: true,
}) as Record<string, string>;

export class DataSession {
  private groups: Group[] = [];
  private prepared: {
    opts: PrepareOptions;
    tokHash: string;
    data: PreparedDataset;
    examples: { dataset: string; ex: Example }[];
  } | null = null;
  private templateCache: { hash: string; template: ChatTemplate } | null = null;
  private nextId = 1;

  /** The bundled sample datasets (fetched from the app's own assets, so they work offline). */
  async loadSamples(): Promise<void> {
    if (this.groups.some((g) => g.origin === 'sample')) return;
    const files: { name: string; blob: Blob }[] = [];
    for (const [path, url] of Object.entries(SAMPLE_URLS)) {
      const res = await fetch(url);
      if (!res.ok) throw new Error(`sample dataset ${path}: HTTP ${res.status}`);
      files.push({ name: path.split('/').pop()!, blob: await res.blob() });
    }
    await this.addGroup('samples', 'sample', files, []);
  }

  /** Files the user dropped before a reload, from IndexedDB. */
  async restoreUserFiles(): Promise<void> {
    const stored = await listDatasetFiles();
    const byGroup = new Map<string, { name: string; blob: Blob; id: string }[]>();
    for (const info of stored) {
      const f = await loadDatasetFile(info.id);
      if (!f) continue;
      const [group, ...rest] = f.name.split('::');
      const name = rest.length ? rest.join('::') : f.name;
      const g = rest.length ? group : `g${info.id}`;
      if (!byGroup.has(g)) byGroup.set(g, []);
      byGroup
        .get(g)!
        .push({ name, blob: f.data instanceof Blob ? f.data : new Blob([f.data as BlobPart]), id: info.id });
    }
    for (const [g, files] of byGroup) {
      if (this.groups.some((x) => x.id === g)) continue;
      await this.addGroup(
        g,
        'user',
        files,
        files.map((f) => f.id),
      );
    }
  }

  /** Dropped files (one or more; a dataset_info.json among them names the datasets). */
  async addFiles(files: { name: string; blob: Blob }[], onProgress?: (p: Progress) => void): Promise<string> {
    const id = `u${Date.now().toString(36)}${this.nextId++}`;
    const storedIds: string[] = [];
    for (const f of files) {
      try {
        const info = await saveDatasetFile(f.blob, `${id}::${f.name}`);
        storedIds.push(info.id);
      } catch {
        // IndexedDB full or unavailable: the dataset still works until the page is closed.
      }
    }
    await this.addGroup(id, 'user', files, storedIds, onProgress);
    return id;
  }

  private async addGroup(
    id: string,
    origin: DatasetOrigin,
    files: { name: string; blob: Blob }[],
    storedIds: string[],
    onProgress?: (p: Progress) => void,
  ): Promise<void> {
    // Progress of the file being parsed (bytes and rows), for big files.
    const res = await parseDatasetCollection(
      files.map((f) => ({ name: f.name, source: f.blob })),
      onProgress ? { onProgress } : {},
    );
    const group: Group = {
      id,
      origin,
      storedIds,
      files,
      parsed: res.datasets.map((d) => ({
        name: d.name,
        file: d.file,
        entry: d.entry,
        report: d.parsed.report,
        examples: d.parsed.examples,
        stats: textStats(d.parsed.examples, d.parsed.report.duplicateGroups),
      })),
      errors: res.errors,
    };
    if (!res.datasets.length && !res.errors.length)
      group.errors.push({
        name: files.map((f) => f.name).join(', '),
        reason: 'no data file here: drop .json, .jsonl, .csv or .txt files (and optionally their dataset_info.json)',
      });
    this.groups.push(group);
    this.prepared = null;
  }

  async remove(key: string): Promise<void> {
    const [gid] = key.split('/');
    const g = this.groups.find((x) => x.id === gid);
    if (!g) return;
    const name = key.slice(gid.length + 1);
    g.parsed = g.parsed.filter((d) => d.name !== name);
    if (!g.parsed.length) {
      this.groups = this.groups.filter((x) => x !== g);
      for (const sid of g.storedIds) await deleteDatasetFile(sid).catch(() => {});
    }
    this.prepared = null;
  }

  overview(): DataOverview {
    const datasets: DatasetSummary[] = [];
    const errors: GroupError[] = [];
    for (const g of this.groups) {
      for (const d of g.parsed) {
        datasets.push({
          key: `${g.id}/${d.name}`,
          name: d.name,
          file: d.file,
          origin: g.origin,
          entry: d.entry,
          report: { ...d.report, invalid: d.report.invalid.slice(0, MAX_ISSUES) },
          invalidCount: d.report.invalid.length,
          stats: d.stats,
        });
      }
      for (const e of g.errors) errors.push({ group: g.id, ...e });
    }
    return { datasets, errors };
  }

  private examplesOf(keys: string[]): { dataset: string; ex: Example }[] {
    const out: { dataset: string; ex: Example }[] = [];
    for (const key of keys) {
      const [gid] = key.split('/');
      const d = this.groups.find((g) => g.id === gid)?.parsed.find((p) => `${gid}/${p.name}` === key);
      if (d && !d.report.unsupported) for (const ex of d.examples) out.push({ dataset: d.name, ex });
    }
    return out;
  }

  /** Dataset names as LLaMA-Factory would list them (for the YAML). */
  names(keys: string[]): string[] {
    return keys.map((k) => k.slice(k.indexOf('/') + 1));
  }

  private template(tok: HfTokenizer): ChatTemplate {
    if (this.templateCache?.hash !== tok.hash) this.templateCache = { hash: tok.hash, template: chatTemplateFor(tok) };
    return this.templateCache.template;
  }

  /** The chat template's warnings (no chat_template → ChatML, …), in English and as codes. */
  templateWarnings(tok: HfTokenizer): WarningList {
    const t = this.template(tok);
    return { warnings: [...t.warnings], warningCodes: [...t.warningCodes] };
  }

  /** A page of rendered conversations with trained tokens marked. */
  preview(
    tok: HfTokenizer,
    o: {
      keys: string[];
      page: number;
      pageSize: number;
      cutoffLen: number;
      trainOnPrompt: boolean;
      maskHistory: boolean;
    },
  ): { rows: PreviewRow[]; total: number } {
    const all = this.examplesOf(o.keys);
    const slice = all.slice(o.page * o.pageSize, (o.page + 1) * o.pageSize);
    const tpl = this.template(tok);
    const rows = slice.map(({ dataset, ex }): PreviewRow => {
      try {
        if (ex.kind === 'pair') {
          const e = encodePair(ex.row, ex, tok, tpl, o.cutoffLen);
          const rej = e.rejected!;
          // Labels mask the shared prompt, so the first labelled token starts each answer.
          const promptLen = e.labels.findIndex((l) => l !== IGNORE_INDEX);
          const chosen = labelRuns(tok, e.inputIds, e.labels);
          const rejected = labelRuns(tok, rej.inputIds, rej.labels);
          return {
            dataset,
            row: ex.row,
            tokens: e.inputIds.length + rej.inputIds.length,
            trained: chosen.trained + rejected.trained,
            truncated: e.truncated,
            runs: chosen.runs,
            pair: {
              prompt: tok.decode(e.inputIds.subarray(0, promptLen)),
              chosen: tok.decode(e.inputIds.subarray(promptLen)),
              rejected: tok.decode(rej.inputIds.subarray(promptLen)),
              chosenTokens: chosen.trained,
              rejectedTokens: rejected.trained,
            },
          };
        }
        const e = encodeExample(ex, tok, tpl, {
          cutoffLen: o.cutoffLen,
          trainOnPrompt: o.trainOnPrompt,
          maskHistory: o.maskHistory,
        });
        const { runs, trained } = labelRuns(tok, e.inputIds, e.labels);
        return { dataset, row: ex.row, tokens: e.inputIds.length, trained, truncated: e.truncated, runs };
      } catch (err) {
        return {
          dataset,
          row: ex.row,
          tokens: 0,
          trained: 0,
          truncated: false,
          runs: [],
          error: (err as Error).message,
        };
      }
    });
    return { rows, total: all.length };
  }

  /** What the tokens depend on: the bytes of every selected file, the tokenizer, the options. */
  private async preparedKey(tok: HfTokenizer, o: PrepareOptions): Promise<string> {
    const files: string[] = [];
    for (const src of this.sourcesOf(o.keys))
      files.push(`${src.name}/${src.file}:${await sha256Hex(new Uint8Array(await src.blob.arrayBuffer()))}`);
    return sha256Hex(JSON.stringify({ files, tokenizer: tok.hash, o }));
  }

  async prepare(
    tok: HfTokenizer,
    o: PrepareOptions,
    onProgress?: (done: number, total: number) => void,
  ): Promise<PrepareSummary> {
    const examples = this.examplesOf(o.keys);
    if (!examples.length) throw new Error('no usable rows: select at least one dataset with valid rows');
    let key: string | null = null;
    let data: PreparedDataset | undefined;
    try {
      key = await this.preparedKey(tok, o);
      preparedStore ??= createStore('tabtune-prepared', 'prepared');
      const hit = await get<StoredPrepared>(PREPARED_KEY, preparedStore);
      if (hit?.key === key) data = hit.data;
    } catch {
      // No IndexedDB (private window, quota): tokenize as usual.
    }
    const fromCache = data !== undefined;
    if (!data) {
      // Rows of different datasets share row numbers; renumber so the report can name the dataset.
      const renumbered = examples.map(({ ex }, i) => ({ ...ex, row: i }) as Example);
      const { keys: _keys, ...spec } = o;
      data = prepareDataset(renumbered, tok, { ...spec, onProgress }, this.template(tok));
      if (key && preparedStore)
        await set(PREPARED_KEY, { key, data } satisfies StoredPrepared, preparedStore).catch(() => {});
    }
    this.prepared = { opts: o, tokHash: tok.hash, data, examples };
    const invalid = data.invalid.map((r) => ({ ...r, row: examples[r.row].ex.row, dataset: examples[r.row].dataset }));
    return {
      train: data.train.length,
      val: data.val.length,
      packed: data.packed?.length ?? null,
      stats: data.stats,
      invalid: invalid.slice(0, MAX_ISSUES),
      invalidCount: invalid.length,
      warnings: data.warnings,
      warningCodes: data.warningCodes ?? [],
      tokenizerHash: tok.hash,
      fromCache,
    };
  }

  /** The last prepared data when it matches these options and tokenizer. */
  preparedFor(
    tokHash: string,
    o: PrepareOptions,
  ): { data: PreparedDataset; examples: { dataset: string; ex: Example }[] } | null {
    if (!this.prepared || this.prepared.tokHash !== tokHash || JSON.stringify(this.prepared.opts) !== JSON.stringify(o))
      return null;
    return this.prepared;
  }

  /** Source files of the selected datasets (export bundles them with dataset_info.json). */
  sourcesOf(keys: string[]): { name: string; file: string; blob: Blob; entry?: DatasetInfoEntry }[] {
    const out: { name: string; file: string; blob: Blob; entry?: DatasetInfoEntry }[] = [];
    for (const key of keys) {
      const [gid] = key.split('/');
      const g = this.groups.find((x) => x.id === gid);
      const d = g?.parsed.find((p) => `${gid}/${p.name}` === key);
      const f = d && g?.files.find((x) => x.name === d.file);
      if (d && f) out.push({ name: d.name, file: d.file, blob: f.blob, entry: d.entry });
    }
    return out;
  }
}
