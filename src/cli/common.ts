// Node-only glue shared by `tabtune train / export / chat` (src/cli/*.ts): YAML with
// `key=value` overrides, local model folders, tokenizers, the GPU through Dawn, datasets named as
// in LLaMA-Factory (dataset_dir/dataset_info.json or plain files), checkpoints in output_dir.
import { existsSync, openAsBlob, readFileSync, readdirSync, statSync } from 'node:fs';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { parseDocument, stringify } from 'yaml';
import {
  kindFromName,
  loadTokenizer,
  parseDataset,
  parseDatasetInfo,
  type DatasetInfoEntry,
  type Example,
  type HfTokenizer,
  type RowIssue,
} from '../data/index.ts';
import type { Gpu } from '../engine/gpu/device.ts';
import { loadModel, type LoadOptions } from '../engine/model/load.ts';
import type { LoraSet, Model } from '../engine/model/model.ts';
import { openModelFolder } from '../engine/model/node-folder.ts';
import type { ModelFiles } from '../engine/model/weights.ts';
import { openAdapterFolder } from '../engine/export/node-dir.ts';
import { LlamaFactoryConfigError } from '../engine/train/llamafactory-config.ts';
import { loadPeftAdapter } from '../engine/export/peft.ts';

/** An error the user fixes (bad YAML, missing folder, …): printed without a stack, exit status 2. */
export class CliError extends Error {
  override readonly name = 'CliError';
}

export interface YamlArgs {
  yamlPath: string;
  /** `key=value` pairs after the YAML file (LLaMA-Factory's llamafactory-cli accepts the same). */
  overrides: Record<string, unknown>;
  flags: Map<string, string | true>;
}

/**
 * `<config.yaml> [key=value ...] [--flag [value] ...]`. `valued` lists the flags that take a value.
 * Values of overrides are read as YAML scalars (so `lora_rank=16` is a number, `do_sample=false` a bool).
 */
export function parseYamlArgs(
  argv: string[],
  valued: readonly string[],
  command: string,
  switches: readonly string[] = [],
): YamlArgs {
  let yamlPath: string | undefined;
  const overrides: Record<string, unknown> = {};
  const flags = new Map<string, string | true>();
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a.startsWith('--')) {
      const eq = a.indexOf('=');
      const name = eq > 0 ? a.slice(2, eq) : a.slice(2);
      if (valued.includes(name)) {
        const v = eq > 0 ? a.slice(eq + 1) : argv[++i];
        if (v === undefined) throw new CliError(`--${name} needs a value`);
        flags.set(name, v);
      } else if (name === 'help' || switches.includes(name)) {
        if (eq > 0) throw new CliError(`--${name} takes no value`);
        flags.set(name, true);
      } else throw new CliError(`unknown option --${name}`);
    } else if (a === '-h') flags.set('help', true);
    else if (/^[A-Za-z_][A-Za-z0-9_]*=/.test(a)) {
      const eq = a.indexOf('=');
      const doc = parseDocument(a.slice(eq + 1));
      overrides[a.slice(0, eq)] = doc.errors.length ? a.slice(eq + 1) : doc.toJS();
    } else if (yamlPath === undefined) yamlPath = a;
    else throw new CliError(`one YAML file expected, got ${yamlPath} and ${a} (overrides are written key=value)`);
  }
  if (yamlPath === undefined && !flags.has('help')) throw new CliError(`tabtune ${command} needs a YAML config file`);
  return { yamlPath: yamlPath ?? '', overrides, flags };
}

/** The YAML file's text with overrides applied (re-serialised only when there are overrides). */
export function yamlWithOverrides(path: string, overrides: Record<string, unknown>): string {
  if (!existsSync(path)) throw new CliError(`${path}: no such file`);
  const text = readFileSync(path, 'utf8');
  if (!Object.keys(overrides).length) return text;
  const doc = parseDocument(text, { uniqueKeys: true });
  if (doc.errors.length) return text; // the config parser reports the YAML error with its position
  const raw = doc.toJS() as unknown;
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) return text;
  Object.assign(raw, overrides);
  return stringify(raw);
}

/** Resolves a path from the YAML like LLaMA-Factory (relative to the working directory), falling back to the YAML's folder. */
export function resolvePath(p: string, yamlPath: string): string {
  if (isAbsolute(p)) return p;
  const fromCwd = resolve(p);
  if (existsSync(fromCwd)) return fromCwd;
  const fromYaml = resolve(dirname(yamlPath), p);
  return existsSync(fromYaml) ? fromYaml : fromCwd;
}

export function requireModelFolder(p: string, key = 'model_name_or_path', asWritten = p): string {
  if (!existsSync(p)) {
    const looksHub = /^[\w.-]+\/[\w.-]+$/.test(asWritten);
    throw new CliError(
      `${key}: ${p} is not a local folder${looksHub ? ' (Hub ids are not downloaded by the command line: download the repository into a folder, e.g. with huggingface-cli download, and give its path)' : ''}`,
    );
  }
  if (!statSync(p).isDirectory())
    throw new CliError(`${key}: ${p} is a file; give the model folder (config.json + *.safetensors)`);
  if (!existsSync(join(p, 'config.json'))) throw new CliError(`${key}: ${p} has no config.json`);
  return p;
}

export async function folderTokenizer(dir: string): Promise<HfTokenizer> {
  const json = join(dir, 'tokenizer.json');
  if (!existsSync(json)) throw new CliError(`${dir}: no tokenizer.json (the fast-tokenizer file is needed)`);
  const cfg = join(dir, 'tokenizer_config.json');
  return loadTokenizer(readFileSync(json, 'utf8'), existsSync(cfg) ? readFileSync(cfg, 'utf8') : '{}');
}

/** Token ids that end a reply: the tokenizer's eos, config.json and generation_config.json eos ids. */
export function stopIdsFor(dir: string, tok: HfTokenizer, configEos: readonly number[]): number[] {
  const ids = new Set<number>(configEos);
  if (tok.eos?.id !== undefined) ids.add(tok.eos.id);
  const gen = join(dir, 'generation_config.json');
  if (existsSync(gen)) {
    try {
      const g = JSON.parse(readFileSync(gen, 'utf8')) as { eos_token_id?: number | number[] };
      for (const id of Array.isArray(g.eos_token_id)
        ? g.eos_token_id
        : g.eos_token_id !== undefined
          ? [g.eos_token_id]
          : [])
        if (Number.isInteger(id)) ids.add(id);
    } catch {
      // an unreadable generation_config.json only loses its extra stop ids
    }
  }
  return [...ids];
}

export interface OpenedGpu {
  gpu: Gpu;
  close: () => void;
  /** One line naming the adapter, e.g. "google swiftshader (SwiftShader Device)". */
  description: string;
  software: boolean;
}

/** A GPU through Dawn, with a line that says which adapter it got (and warns on a software one). */
export async function openNodeGpu(log: (line: string) => void): Promise<OpenedGpu> {
  const { nodeGpu } = await import('../engine/node-gpu.ts');
  const { nodeShaders } = await import('../engine/shaders.node.ts');
  let opened;
  try {
    opened = await nodeGpu(nodeShaders(), { log });
  } catch (e) {
    throw new CliError(
      `no WebGPU adapter: ${(e as Error).message} (on a machine without a GPU, install Debian's chromium package for its SwiftShader Vulkan driver)`,
    );
  }
  const a = opened.gpu.adapter;
  const description = [a.vendor, a.architecture, a.description ? `(${a.description})` : ''].filter(Boolean).join(' ');
  const software = /swiftshader|llvmpipe|lavapipe|software/i.test(`${a.architecture} ${a.description} ${a.vendor}`);
  log(`tabtune: WebGPU adapter: ${description || 'unnamed adapter'}`);
  if (software)
    log(
      'tabtune: warning: this is SwiftShader, a software (CPU) WebGPU implementation — about 1 GFLOP/s; only tiny models train in reasonable time',
    );
  return { ...opened, description, software };
}

export async function loadFolderModel(
  gpu: Gpu,
  dir: string,
  opts: LoadOptions = {},
): Promise<{ model: Model; files: ModelFiles }> {
  const files = await openModelFolder(dir);
  try {
    const model = await loadModel(gpu, files.config, files.source, opts);
    return { model, files };
  } catch (e) {
    await files.source.close?.();
    throw e;
  }
}

/** Loads the model folder, runs `work`, then frees the model's GPU memory and closes its files. */
export async function withFolderModel<T>(
  gpu: Gpu,
  dir: string,
  opts: LoadOptions,
  work: (model: Model, files: ModelFiles) => Promise<T>,
): Promise<T> {
  const { model, files } = await loadFolderModel(gpu, dir, opts);
  try {
    return await work(model, files);
  } finally {
    model.release();
    await files.source.close?.();
  }
}

/**
 * The frame of every GPU command: the body opens the GPU when it is ready for it (config and
 * data errors come first, before any device work); the device is closed and any failure becomes
 * the exit status (commandFailed) however the body ends.
 */
export async function runGpuCommand(
  cmd: string,
  body: (openGpu: () => Promise<OpenedGpu>) => Promise<void>,
): Promise<number> {
  let close = () => {};
  try {
    await body(async () => {
      const g = await openNodeGpu(errLine);
      close = g.close;
      return g;
    });
    return 0;
  } catch (e) {
    return commandFailed(cmd, e);
  } finally {
    close();
  }
}

/** One PEFT adapter folder onto the model (LLaMA-Factory adapter_name_or_path; several are refused). */
export async function loadAdapterFolder(
  model: Model,
  paths: string[] | null,
  yamlPath: string,
  overrides?: { dropout?: number; seed?: number },
): Promise<LoraSet | null> {
  if (!paths?.length) return null;
  if (paths.length > 1)
    throw new CliError(
      `adapter_name_or_path: ${paths.length} adapters given; merge them one at a time (tabtune export), then use one`,
    );
  const dir = resolvePath(paths[0], yamlPath);
  if (!existsSync(dir) || !statSync(dir).isDirectory())
    throw new CliError(`adapter_name_or_path: ${paths[0]} is not a folder`);
  const { configText, store } = await openAdapterFolder(dir);
  try {
    return (await loadPeftAdapter(model, configText, store, join(dir, 'adapter_config.json'), overrides)).lora;
  } finally {
    await store.close();
  }
}

// ---------------------------------------------------------------------------------------------
// Datasets

export interface DatasetFile {
  name: string;
  file: string;
  entry?: DatasetInfoEntry;
}

/**
 * LLaMA-Factory's lookup (data/parser.py get_dataset_list): names from dataset_dir/dataset_info.json
 * with a local file_name; a name that is not there but is a file (in dataset_dir or as given) is
 * read directly with its format detected.
 */
export function resolveDatasets(names: string[], datasetDir: string, yamlPath: string): DatasetFile[] {
  const dir = resolvePath(datasetDir, yamlPath);
  const infoPath = join(dir, 'dataset_info.json');
  const info = existsSync(infoPath) ? parseDatasetInfo(readFileSync(infoPath, 'utf8'), infoPath) : null;
  return names.map((n) => {
    const entry = info?.entries[n];
    if (entry) {
      if (!entry.file_name)
        throw new CliError(
          `${infoPath}: "${n}" has no local file_name (hub datasets are not downloaded by the command line)`,
        );
      const file = join(dir, entry.file_name);
      if (!existsSync(file)) throw new CliError(`${infoPath}: "${n}": ${file} does not exist`);
      return { name: n, file, entry };
    }
    const bad = info?.errors.find((e) => e.name === n);
    if (bad) throw new CliError(`${infoPath}: "${n}": ${bad.reason}`);
    for (const cand of [join(dir, n), resolvePath(n, yamlPath)]) {
      if (existsSync(cand) && statSync(cand).isFile() && kindFromName(cand)) return { name: n, file: cand };
    }
    const known = info ? Object.keys(info.entries) : [];
    throw new CliError(
      `dataset "${n}" is neither in ${info ? infoPath : `${dir}/dataset_info.json (missing)`} nor a .json/.jsonl/.csv/.txt file${known.length ? `; known: ${known.join(', ')}` : ''}`,
    );
  });
}

export interface LoadedExamples {
  examples: Example[];
  invalid: { dataset: string; issue: RowIssue }[];
  warnings: string[];
  rows: number;
}

export async function readDatasets(files: DatasetFile[]): Promise<LoadedExamples> {
  const out: LoadedExamples = { examples: [], invalid: [], warnings: [], rows: 0 };
  for (const f of files) {
    const parsed = await parseDataset(await openAsBlob(f.file), {
      fileName: f.file.split(/[\\/]/).pop(),
      datasetInfo: f.entry,
    });
    const r = parsed.report;
    if (r.unsupported) throw new CliError(`dataset "${f.name}" (${f.file}): ${r.unsupported}`);
    out.rows += r.rows;
    out.examples.push(...parsed.examples);
    out.invalid.push(...r.invalid.map((issue) => ({ dataset: f.name, issue })));
    out.warnings.push(...r.warnings.map((w) => `${f.name}: ${w}`));
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Checkpoints

/** checkpoint-N folders of output_dir, highest N last (transformers get_last_checkpoint). */
export function listCheckpoints(outputDir: string): { step: number; dir: string }[] {
  if (!existsSync(outputDir)) return [];
  return readdirSync(outputDir)
    .map((n) => /^checkpoint-(\d+)$/.exec(n))
    .filter((m): m is RegExpExecArray => !!m && statSync(join(outputDir, m[0])).isDirectory())
    .map((m) => ({ step: Number(m[1]), dir: join(outputDir, m[0]) }))
    .sort((a, b) => a.step - b.step);
}

/** "H:MM:SS" as LLaMA-Factory's LogCallback writes elapsed / remaining time. */
export function hms(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  return `${Math.floor(s / 3600)}:${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}:${String(s % 60).padStart(2, '0')}`;
}

/** Writes one line to stderr (the commands keep stdout for answers and usage). */
export function errLine(s: string): void {
  process.stderr.write(`${s}\n`);
}

/**
 * Parses a command's argv: the parsed args, or the exit code after printing help (0) or a
 * parse error (2; the usage is appended where `withUsage` says the mistake was in the call).
 */
export function parseCommandArgs<A>(
  cmd: string,
  usage: string,
  argv: string[],
  parse: (argv: string[]) => A | 'help',
  withUsage: (e: CliError) => boolean = () => true,
): A | number {
  let args: A | 'help';
  try {
    args = parse(argv);
  } catch (e) {
    if (e instanceof CliError || e instanceof LlamaFactoryConfigError) {
      errLine(`tabtune ${cmd}: ${e.message}${e instanceof CliError && withUsage(e) ? `\n\n${usage}` : ''}`);
      return 2;
    }
    throw e;
  }
  if (args === 'help') {
    process.stdout.write(`${usage}\n`);
    return 0;
  }
  return args;
}

/** Exit code for a failed command: 2 for what the user asked wrong, 1 for anything else. */
export function commandFailed(cmd: string, e: unknown): number {
  errLine(`tabtune ${cmd}: ${(e as Error).message}`);
  return e instanceof CliError ? 2 : 1;
}
