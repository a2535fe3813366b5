// A set of dropped files (or a folder) with a LLaMA-Factory dataset_info.json: parse each entry whose
// file is present; without dataset_info.json, parse every data file with auto-detection.
import { parseDatasetInfo, type DatasetInfoError } from './datasetInfo.ts';
import { coded } from './messages.ts';
import { parseDataset, type ParseOptions } from './parse.ts';
import { kindFromName } from './records.ts';
import { readText, type ByteSource } from './source.ts';
import type { DatasetInfoEntry, ParsedDataset } from './types.ts';

export interface NamedSource {
  /** Path relative to the dropped folder, e.g. "data/train.jsonl" or "dataset_info.json". */
  name: string;
  source: ByteSource;
}

export interface CollectionResult {
  datasets: { name: string; file: string; entry?: DatasetInfoEntry; parsed: ParsedDataset }[];
  /** dataset_info.json entries that cannot be read (bad entry, hub dataset, file not among the sources). */
  errors: DatasetInfoError[];
}

const baseName = (p: string) => p.split(/[\\/]/).pop() ?? p;

export async function parseDatasetCollection(
  files: NamedSource[],
  opts: Omit<ParseOptions, 'fileName' | 'datasetInfo'> & { only?: string[] } = {},
): Promise<CollectionResult> {
  const byName = new Map(files.map((f) => [f.name.replace(/^\.?\//, ''), f]));
  const infoFile = files.find((f) => baseName(f.name) === 'dataset_info.json');
  const out: CollectionResult = { datasets: [], errors: [] };
  if (!infoFile) {
    for (const f of files) {
      if (!kindFromName(f.name)) continue;
      out.datasets.push({
        name: baseName(f.name),
        file: f.name,
        parsed: await parseDataset(f.source, { ...opts, fileName: f.name }),
      });
    }
    return out;
  }
  const prefix = infoFile.name.slice(0, infoFile.name.length - 'dataset_info.json'.length);
  const info = parseDatasetInfo(await readText(infoFile.source), infoFile.name);
  out.errors.push(...info.errors);
  for (const [name, entry] of Object.entries(info.entries)) {
    if (opts.only && !opts.only.includes(name)) continue;
    const path = `${prefix}${entry.file_name}`.replace(/^\.?\//, '');
    const src = byName.get(path) ?? byName.get(entry.file_name!);
    if (!src) {
      out.errors.push({ name, ...coded('info-file-missing', { file: String(entry.file_name) }) });
      continue;
    }
    out.datasets.push({
      name,
      file: src.name,
      entry,
      parsed: await parseDataset(src.source, { ...opts, fileName: src.name, datasetInfo: entry }),
    });
  }
  return out;
}
