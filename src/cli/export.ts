// `tabtune export <config.yaml>`: merges a LoRA adapter into its base model with LLaMA-Factory's
// export keys (model_name_or_path, adapter_name_or_path, export_dir, export_size in GB) and writes
// a transformers checkpoint: config.json, generation_config.json, the tokenizer files, and
// model.safetensors or shards + model.safetensors.index.json, in the base model's torch_dtype.
// With `export_format: gguf` it writes one `<model>-<export_gguf_type>.gguf` for llama.cpp / Ollama
// and an Ollama Modelfile beside it; with `export_gguf_adapter: true` only the LoRA adapter, as a
// GGUF adapter `<adapter>-lora-<type>.gguf` for llama.cpp's --lora.
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { basename, join } from 'node:path';
import {
  CliError,
  errLine,
  loadAdapterFolder,
  parseCommandArgs,
  parseYamlArgs,
  requireModelFolder,
  resolvePath,
  runGpuCommand,
  withFolderModel,
  yamlWithOverrides,
} from './common.ts';
import { nodeDirWriter } from '../engine/export/node-dir.ts';
import { exportMerged, TOKENIZER_FILE_NAMES } from '../engine/export/merged.ts';
import { exportGguf } from '../engine/export/gguf.ts';
import { exportGgufAdapter } from '../engine/export/gguf-adapter.ts';
import type { FloatDType } from '../engine/export/convert.ts';
import { parseExportYaml, type ExportConfig } from '../engine/train/llamafactory-config.ts';

const USAGE = `usage: tabtune export <config.yaml> [key=value ...] [--dtype bf16|f16|f32]

Merges adapter_name_or_path into model_name_or_path and writes a transformers checkpoint to export_dir
(shards of at most export_size GB). The dtype is the base model's torch_dtype unless --dtype is given.
With export_format: gguf, writes export_dir/<model>-<type>.gguf and an Ollama Modelfile instead
(export_gguf_type: f32 | f16 | bf16 | q8_0 | q4_k_m, default f16); add export_gguf_adapter: true to
write only the adapter as export_dir/<adapter>-lora-<type>.gguf for llama.cpp --lora (f32 | f16 | bf16).`;

export interface ExportArgs {
  yamlPath: string;
  config: ExportConfig;
  dtype: FloatDType | null;
  warnings: string[];
  notes: string[];
}

export function parseExportArgs(argv: string[]): ExportArgs | 'help' {
  const a = parseYamlArgs(argv, ['dtype'], 'export');
  if (a.flags.has('help')) return 'help';
  const d = a.flags.get('dtype');
  if (d !== undefined && d !== 'bf16' && d !== 'f16' && d !== 'f32')
    throw new CliError(`--dtype must be bf16, f16 or f32, got ${String(d)}`);
  const parsed = parseExportYaml(yamlWithOverrides(a.yamlPath, a.overrides), a.yamlPath);
  return {
    yamlPath: a.yamlPath,
    config: parsed.config,
    dtype: (d as FloatDType | undefined) ?? null,
    warnings: parsed.warnings,
    notes: parsed.notes,
  };
}

/** transformers' default when config.json has no torch_dtype is float32. */
export function exportDtypeFor(torchDtype: string | null): FloatDType {
  return torchDtype === 'bfloat16' ? 'bf16' : torchDtype === 'float16' ? 'f16' : 'f32';
}

export default async function exportCmd(argv: string[]): Promise<number> {
  const err = errLine;
  const args = parseCommandArgs('export', USAGE, argv, parseExportArgs);
  if (typeof args === 'number') return args;
  const c = args.config;
  args.warnings.forEach((w) => err(`warning: ${w}`));
  args.notes.forEach((n) => err(`note: ${n}`));
  return runGpuCommand('export', async (openGpu) => {
    const dir = requireModelFolder(
      resolvePath(c.modelNameOrPath, args.yamlPath),
      'model_name_or_path',
      c.modelNameOrPath,
    );
    const outDir = resolvePath(c.exportDir, args.yamlPath);
    if (
      c.exportFormat === 'safetensors' &&
      existsSync(outDir) &&
      readdirSync(outDir).some((f) => f.endsWith('.safetensors') || f === 'config.json')
    ) {
      err(`tabtune export: note: ${outDir} already holds a checkpoint; its files are overwritten`);
    }
    const g = await openGpu();
    await withFolderModel(g.gpu, dir, {}, async (model, files) => {
      const lora = await loadAdapterFolder(model, c.adapterNameOrPath, args.yamlPath);
      const dtype = args.dtype ?? exportDtypeFor(model.config.torchDtype);
      const tokenizerFiles = new Map<string, Uint8Array>();
      for (const f of [...TOKENIZER_FILE_NAMES, 'generation_config.json'])
        if (existsSync(join(dir, f))) tokenizerFiles.set(f, readFileSync(join(dir, f)));
      if (!tokenizerFiles.has('tokenizer.json') && !tokenizerFiles.has('tokenizer.model'))
        err(`tabtune export: warning: ${dir} has no tokenizer files; the export will have none`);
      let last = -1;
      const onProgress = (p: { tensor: string; done: number; total: number }) => {
        const pct = Math.floor((100 * p.done) / p.total);
        if (process.stderr.isTTY && pct !== last) process.stderr.write(`\r  ${pct} % (${p.tensor})`.padEnd(80));
        last = pct;
      };
      const what = lora
        ? `${c.adapterNameOrPath![0]} (${lora.adapters.size} modules, scale ${lora.scale})`
        : 'no adapter';
      let written: string[];
      if (c.exportFormat === 'gguf' && c.exportGgufAdapter) {
        if (!lora) throw new CliError('export_gguf_adapter: the adapter did not load');
        const name = basename(resolvePath(c.adapterNameOrPath![0], args.yamlPath));
        err(`tabtune: writing ${what} as a GGUF LoRA adapter (${c.exportGgufType}) → ${outDir}`);
        const t0 = performance.now();
        const r = await exportGgufAdapter(model, lora, {
          type: c.exportGgufType,
          name,
          write: nodeDirWriter(outDir),
          onProgress,
        });
        if (process.stderr.isTTY) process.stderr.write('\n');
        err(
          `tabtune: ${r.fileName}: ${(r.bytes / 2 ** 20).toFixed(2)} MiB in ${((performance.now() - t0) / 1000).toFixed(1)} s (alpha ${r.alpha}; use with llama.cpp --lora on ${basename(dir)}'s GGUF)`,
        );
        written = [r.fileName];
      } else if (c.exportFormat === 'gguf') {
        if (args.dtype) err('tabtune export: note: --dtype is not used for GGUF; export_gguf_type sets the type');
        err(`tabtune: merging ${what} into ${dir} → ${outDir} as GGUF ${c.exportGgufType}`);
        const t0 = performance.now();
        const r = await exportGguf(model, lora, {
          type: c.exportGgufType,
          name: basename(dir),
          tokenizerFiles,
          write: nodeDirWriter(outDir),
          onNote: (n) => err(`note: ${n}`),
          onProgress,
        });
        if (process.stderr.isTTY) process.stderr.write('\n');
        err(
          `tabtune: ${r.fileName}: ${(r.bytes / 2 ** 20).toFixed(1)} MiB in ${((performance.now() - t0) / 1000).toFixed(1)} s`,
        );
        written = r.files;
      } else {
        err(`tabtune: merging ${what} into ${dir} → ${outDir} as ${dtype}, shards ≤ ${c.exportSize} GB`);
        written = await exportMerged(model, lora, {
          dtype,
          maxShardBytes: c.exportSize * 1e9,
          configText: files.configText,
          tokenizerFiles,
          write: nodeDirWriter(outDir),
          onNote: (n) => err(`note: ${n}`),
          onProgress,
        });
        if (process.stderr.isTTY) process.stderr.write('\n');
      }
      for (const f of written) process.stdout.write(`${join(outDir, f)}\n`);
      lora?.release();
    });
  });
}
