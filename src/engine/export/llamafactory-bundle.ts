// A LLaMA-Factory bundle: the run's training YAML, its datasets in their own files and a
// dataset_info.json that names them (LLaMA-Factory data/README.md: file_name, formatting,
// columns, tags), so `llamafactory-cli train train_<stage>.yaml` continues the same run on a GPU machine.
import { detectFormat } from '../../data/detect.ts';
import type { DatasetFormat, DatasetInfoEntry } from '../../data/types.ts';
import { trainConfigToYaml, type TrainConfig } from '../train/llamafactory-config.ts';

export interface BundleDataset {
  /** Name shown in the studio (a file name or a dataset_info.json entry). */
  name: string;
  /** Path of the file inside its folder; its last part is kept. */
  file: string;
  bytes: Uint8Array;
  /** The dataset_info.json entry it came with, if any. */
  entry?: DatasetInfoEntry;
  /** The detected format, for files without an entry. */
  format?: DatasetFormat;
}

export interface BundleRun {
  id: string;
  step: number;
  totalSteps: number;
  method: string;
}

const OPENAI_AS_SHAREGPT = {
  formatting: 'sharegpt',
  columns: { messages: 'messages' },
  tags: {
    role_tag: 'role',
    content_tag: 'content',
    user_tag: 'user',
    assistant_tag: 'assistant',
    system_tag: 'system',
  },
};

function infoEntry(d: BundleDataset): Record<string, unknown> {
  const entry: Record<string, unknown> = { ...(d.entry ?? {}), file_name: baseName(d.file) };
  if (!d.entry && d.format === 'sharegpt') entry.formatting = 'sharegpt';
  if (!d.entry && d.format === 'openai') Object.assign(entry, OPENAI_AS_SHAREGPT);
  // Raw text for stage pt: LLaMA-Factory reads it from the prompt column (data/README.md).
  if (!d.entry && d.format === 'text') entry.columns = { prompt: 'text' };
  if (!d.entry && d.format === 'ranking') Object.assign(entry, rankingEntry(d.bytes));
  return entry;
}

/** The first rows of a JSON array or JSON lines file (enough to tell the preference layout). */
function sampleRows(bytes: Uint8Array): unknown[] {
  const text = new TextDecoder().decode(bytes.subarray(0, 1 << 20));
  try {
    const v = JSON.parse(new TextDecoder().decode(bytes)) as unknown;
    return Array.isArray(v) ? v.slice(0, 50) : [v];
  } catch {
    const rows: unknown[] = [];
    for (const line of text.split('\n').slice(0, 50)) {
      try {
        if (line.trim()) rows.push(JSON.parse(line));
      } catch {
        /* a cut last line */
      }
    }
    return rows;
  }
}

/** dataset_info.json for preference rows (data/README.md "Preference Dataset"): ranking: true and the answer columns. */
function rankingEntry(bytes: Uint8Array): Record<string, unknown> {
  const spec = detectFormat(sampleRows(bytes), 'json').spec;
  const answers = { chosen: spec?.columns.chosen ?? 'chosen', rejected: spec?.columns.rejected ?? 'rejected' };
  if (spec?.format === 'sharegpt')
    return { ranking: true, formatting: 'sharegpt', columns: { messages: spec.columns.messages, ...answers } };
  if (spec?.format === 'openai')
    return {
      ranking: true,
      ...OPENAI_AS_SHAREGPT,
      columns: { messages: spec.columns.messages, ...answers },
    };
  return { ranking: true, columns: { prompt: 'instruction', query: 'input', ...answers } };
}

const baseName = (path: string) => path.split('/').pop() ?? path;
const safeName = (name: string) => name.replace(/\.[^.]+$/, '').replace(/[^\w.-]+/g, '_');

/** The bundle's files by path: train_<stage>.yaml, data/<files>, data/dataset_info.json, README.md. */
export function llamaFactoryBundle(
  config: TrainConfig,
  run: BundleRun,
  datasets: readonly BundleDataset[],
): Map<string, Uint8Array> {
  const enc = new TextEncoder();
  const files = new Map<string, Uint8Array>();
  const info: Record<string, unknown> = {};
  for (const d of datasets) {
    info[safeName(d.name)] = infoEntry(d);
    files.set(`data/${baseName(d.file)}`, d.bytes);
  }
  const yaml = trainConfigToYaml({
    ...config,
    dataset: Object.keys(info),
    datasetDir: 'data',
    resumeFromCheckpoint: null,
  })
    // dataset_dir is LLaMA-Factory's default, written anyway so the bundle reads the same from any folder.
    .replace(/^### dataset$/m, '### dataset\ndataset_dir: data');
  const yamlName = `train_${config.stage}.yaml`;
  files.set(yamlName, enc.encode(yaml));
  files.set('data/dataset_info.json', enc.encode(JSON.stringify(info, null, 2) + '\n'));
  files.set(
    'README.md',
    enc.encode(
      `# ${run.id}\n\nTrained in Tabtune on ${config.modelNameOrPath} (${run.method}, ${run.step} of ${run.totalSteps} steps).\n\n` +
        'Continue on a GPU machine with LLaMA-Factory (put the model id or a local path in model_name_or_path):\n\n' +
        `\`\`\`bash\nllamafactory-cli train ${yamlName}\n\`\`\`\n`,
    ),
  );
  return files;
}
