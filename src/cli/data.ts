// `tabtune data <file-or-dataset_dir> [--model DIR] [--cutoff N] [--json] [--dump N]`: validates a
// dataset, prints the report and statistics, and optionally dumps the first N examples exactly as they
// will be trained ({text, input_ids, labels} JSON lines) to compare with another implementation.
import { existsSync, openAsBlob, readFileSync, readdirSync, statSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  chatTemplateFor,
  encodeExample,
  encodePair,
  EncodeError,
  kindFromName,
  loadTokenizer,
  parseDataset,
  parseDatasetInfo,
  prepareDataset,
  textStats,
  type DatasetInfoEntry,
  type HfTokenizer,
  type ParsedDataset,
  type PrepareOptions,
  type TextStats,
  type TokenStats,
} from '../data/index.ts';

const USAGE = `usage: tabtune data <file-or-dataset_dir> [options]

Validates an alpaca / sharegpt / OpenAI-messages / text dataset (.json, .jsonl, .csv, .txt, or a folder
with a LLaMA-Factory dataset_info.json) and prints every invalid row with its field and reason.

options:
  --model DIR        model folder with tokenizer.json + tokenizer_config.json (default: public/demo-model
                     when it exists); enables token statistics and --dump
  --cutoff N         cutoff_len in tokens (default 2048)
  --dataset NAME     with a folder: only this dataset_info.json entry (repeatable)
  --train-on-prompt  also train on prompt tokens
  --mask-history     train on the last assistant turn only
  --no-thinking      pass enable_thinking=false to the chat template
  --json             print one JSON object {format, valid, invalid: [{row, field, reason}], stats}
  --dump N           write the first N examples as JSON lines {text, input_ids, labels} to stdout
                     (the report then goes to stderr)
  -h, --help         this help

exit status: 0 all rows valid, 1 invalid rows or an unusable dataset, 2 usage or file errors`;

interface Args {
  target?: string;
  model?: string;
  cutoff: number;
  json: boolean;
  dump?: number;
  datasets: string[];
  trainOnPrompt: boolean;
  maskHistory: boolean;
  enableThinking?: boolean;
  help: boolean;
}

function parseArgs(argv: string[]): Args {
  const a: Args = { cutoff: 2048, json: false, datasets: [], trainOnPrompt: false, maskHistory: false, help: false };
  const num = (flag: string, v: string | undefined): number => {
    const n = Number(v);
    if (v === undefined || !Number.isInteger(n) || n <= 0)
      throw new UsageError(`${flag} needs a positive integer, got ${v ?? 'nothing'}`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const x = argv[i];
    if (x === '-h' || x === '--help') a.help = true;
    else if (x === '--model') a.model = argv[++i];
    else if (x === '--cutoff') a.cutoff = num(x, argv[++i]);
    else if (x === '--dump') a.dump = num(x, argv[++i]);
    else if (x === '--dataset') a.datasets.push(argv[++i]);
    else if (x === '--json') a.json = true;
    else if (x === '--train-on-prompt') a.trainOnPrompt = true;
    else if (x === '--mask-history') a.maskHistory = true;
    else if (x === '--no-thinking') a.enableThinking = false;
    else if (x.startsWith('-')) throw new UsageError(`unknown option ${x}`);
    else if (a.target) throw new UsageError(`one dataset path expected, got ${a.target} and ${x}`);
    else a.target = x;
  }
  if (a.model === '') throw new UsageError('--model needs a folder');
  return a;
}

class UsageError extends Error {}

const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const DEMO_MODEL = join(REPO_ROOT, 'public/demo-model');

async function loadModelTokenizer(dir: string): Promise<HfTokenizer> {
  const json = join(dir, 'tokenizer.json');
  const cfg = join(dir, 'tokenizer_config.json');
  if (!existsSync(json)) throw new UsageError(`${dir}: no tokenizer.json`);
  const config = existsSync(cfg) ? readFileSync(cfg, 'utf8') : '{}';
  return loadTokenizer(readFileSync(json, 'utf8'), config);
}

interface Job {
  name: string;
  file: string;
  entry?: DatasetInfoEntry;
}

function jobsFor(target: string, only: string[]): Job[] {
  if (!existsSync(target)) throw new UsageError(`${target}: no such file or folder`);
  if (!statSync(target).isDirectory()) return [{ name: basename(target), file: target }];
  const infoPath = join(target, 'dataset_info.json');
  if (!existsSync(infoPath)) {
    const files = readdirSync(target)
      .filter((f) => kindFromName(f))
      .sort();
    if (!files.length) throw new UsageError(`${target}: no dataset_info.json and no .json/.jsonl/.csv/.txt files`);
    return files.map((f) => ({ name: f, file: join(target, f) }));
  }
  const info = parseDatasetInfo(readFileSync(infoPath, 'utf8'), infoPath);
  for (const e of info.errors)
    if (!only.length || only.includes(e.name)) process.stderr.write(`dataset_info.json: "${e.name}": ${e.reason}\n`);
  const names = only.length ? only : Object.keys(info.entries);
  return names.map((n) => {
    const entry = info.entries[n];
    if (!entry) throw new UsageError(`dataset_info.json has no usable entry "${n}"`);
    return { name: n, file: join(target, entry.file_name!), entry };
  });
}

interface DatasetResult {
  name: string;
  file: string;
  format: string;
  detectedBecause: string;
  rows: number;
  valid: number;
  invalid: { row: number; line?: number; byteOffset?: number; field: string; reason: string }[];
  warnings: string[];
  unsupported?: string;
  stats: { text: TextStats; tokens?: TokenStats; template?: { fallback: boolean; searchModeRows: number } };
}

function fmtStatsText(s: TextStats): string[] {
  return [
    `  rows: ${s.examples} (${s.chat} chat, ${s.text} text); with system prompt ${s.withSystem}, with tools ${s.withTools}`,
    `  turns per row: min ${s.turns.min}, mean ${s.turns.mean.toFixed(1)}, max ${s.turns.max}`,
    `  characters per row: min ${s.chars.min}, median ${s.chars.p50}, p95 ${s.chars.p95}, max ${s.chars.max}`,
    `  duplicate rows: ${s.duplicateRows}`,
  ];
}

function fmtTokens(s: TokenStats): string[] {
  const lines = [
    `  tokens per example: min ${s.minTokens}, mean ${s.meanTokens.toFixed(1)}, median ${s.p50Tokens}, p95 ${s.p95Tokens}, max ${s.maxTokens}`,
    `  truncated at cutoff_len ${s.cutoffLen}: ${s.truncated} (${s.truncatedPct.toFixed(1)} %)`,
    `  tokens after truncation: ${s.totalTokens}, trained (label ≠ -100): ${s.trainedTokens}`,
    '  length histogram:',
  ];
  const max = Math.max(1, ...s.histogram.counts);
  s.histogram.counts.forEach((c, i) => {
    if (!c && i > 0 && s.histogram.counts.slice(i).every((x) => !x)) return;
    lines.push(
      `    ${String(s.histogram.edges[i]).padStart(6)}–${String(s.histogram.edges[i + 1] - 1).padEnd(6)} ${'█'.repeat(Math.round((30 * c) / max)).padEnd(30)} ${c}`,
    );
  });
  return lines;
}

export default async function data(argv: string[]): Promise<number> {
  let args: Args;
  try {
    args = parseArgs(argv);
  } catch (e) {
    process.stderr.write(`tabtune data: ${(e as Error).message}\n\n${USAGE}\n`);
    return 2;
  }
  if (args.help) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  if (!args.target) {
    process.stderr.write(`${USAGE}\n`);
    return 2;
  }
  const report = args.dump !== undefined ? process.stderr : process.stdout;
  try {
    const jobs = jobsFor(args.target, args.datasets);
    const modelDir = args.model ?? (existsSync(join(DEMO_MODEL, 'tokenizer.json')) ? DEMO_MODEL : undefined);
    const tok = modelDir ? await loadModelTokenizer(modelDir) : undefined;
    if (args.dump !== undefined && !tok) throw new UsageError('--dump needs a tokenizer: pass --model <dir>');
    const results: DatasetResult[] = [];
    let dumped = 0;
    for (const job of jobs) {
      if (!existsSync(job.file))
        throw new UsageError(`${job.file}: no such file${job.entry ? ` (dataset_info.json "${job.name}")` : ''}`);
      const size = statSync(job.file).size;
      const showProgress = !args.json && process.stderr.isTTY && size > 50e6;
      const parsed: ParsedDataset = await parseDataset(await openAsBlob(job.file), {
        fileName: basename(job.file),
        datasetInfo: job.entry,
        onProgress: showProgress
          ? (p) =>
              process.stderr.write(
                `\r  reading ${job.name}: ${((100 * p.bytesDone) / (p.totalBytes ?? size)).toFixed(0)} % (${p.rows} rows)`,
              )
          : undefined,
      });
      if (showProgress) process.stderr.write('\n');
      const r = parsed.report;
      const res: DatasetResult = {
        name: job.name,
        file: job.file,
        format: r.format,
        detectedBecause: r.detectedBecause,
        rows: r.rows,
        valid: r.valid,
        invalid: [...r.invalid],
        warnings: [...r.warnings],
        unsupported: r.unsupported,
        stats: { text: textStats(parsed.examples, r.duplicateGroups) },
      };
      if (tok && parsed.examples.length) {
        const opts: PrepareOptions = {
          cutoffLen: args.cutoff,
          trainOnPrompt: args.trainOnPrompt,
          maskHistory: args.maskHistory,
          enableThinking: args.enableThinking,
          // Preference rows are checked as stage dpo pairs (shared prompt, chosen and rejected answers).
          stage: r.format === 'ranking' ? 'dpo' : undefined,
        };
        const tpl = chatTemplateFor(tok, { enableThinking: args.enableThinking });
        const prep = prepareDataset(parsed.examples, tok, opts, tpl);
        res.invalid.push(...prep.invalid);
        res.invalid.sort((a, b) => a.row - b.row);
        res.valid -= new Set(prep.invalid.map((i) => i.row)).size;
        res.warnings.push(...prep.warnings);
        res.stats.tokens = prep.stats;
        res.stats.template = { fallback: tpl.isFallback, searchModeRows: prep.searchModeRows };
        if (args.dump !== undefined) {
          for (const ex of parsed.examples) {
            if (dumped >= args.dump) break;
            try {
              const e =
                ex.kind === 'pair'
                  ? encodePair(ex.row, ex, tok, tpl, opts.cutoffLen)
                  : encodeExample(ex, tok, tpl, opts);
              const rejected = e.rejected
                ? {
                    rejected_input_ids: Array.from(e.rejected.inputIds),
                    rejected_labels: Array.from(e.rejected.labels),
                  }
                : {};
              process.stdout.write(
                `${JSON.stringify({ row: ex.row, text: e.text, input_ids: Array.from(e.inputIds), labels: Array.from(e.labels), ...rejected })}\n`,
              );
              dumped++;
            } catch (err) {
              if (!(err instanceof EncodeError) && !(err instanceof Error)) throw err;
            }
          }
        }
      }
      results.push(res);
    }
    if (args.json) {
      const one = (x: DatasetResult) => ({ ...x, invalid: x.invalid });
      report.write(
        `${JSON.stringify(results.length === 1 && !statSync(args.target).isDirectory() ? one(results[0]) : { datasets: results.map(one), tokenizer: tok ? { model: modelDir, hash: tok.hash } : null })}\n`,
      );
    } else {
      const lines: string[] = [];
      if (tok) lines.push(`tokenizer: ${modelDir} (hash ${tok.hash.slice(0, 12)}), cutoff_len ${args.cutoff}`);
      else lines.push('no tokenizer (pass --model <dir>): token statistics skipped');
      for (const res of results) {
        lines.push('', `${res.name} — ${res.file}`);
        lines.push(`  format: ${res.format} (detected: ${res.detectedBecause})`);
        if (res.unsupported) lines.push(`  UNSUPPORTED: ${res.unsupported}`);
        const badRows = res.rows - res.valid;
        lines.push(`  rows: ${res.rows}, valid: ${res.valid}, invalid: ${badRows}`);
        const shown = res.invalid.slice(0, 50);
        for (const i of shown) {
          const where = [
            `row ${i.row}`,
            i.line !== undefined ? `line ${i.line}` : '',
            i.byteOffset !== undefined ? `byte ${i.byteOffset}` : '',
          ]
            .filter(Boolean)
            .join(', ');
          lines.push(`    ✗ ${where}: ${i.field}: ${i.reason}`);
        }
        if (res.invalid.length > shown.length)
          lines.push(`    … and ${res.invalid.length - shown.length} more (use --json for all)`);
        for (const w of res.warnings) lines.push(`  warning: ${w}`);
        lines.push(...fmtStatsText(res.stats.text));
        if (res.stats.tokens) lines.push(...fmtTokens(res.stats.tokens));
      }
      report.write(`${lines.join('\n')}\n`);
    }
    return results.some((r) => r.unsupported || r.valid < r.rows) ? 1 : 0;
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`tabtune data: ${e.message}\n`);
      return 2;
    }
    throw e;
  }
}
