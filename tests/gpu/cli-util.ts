// What the command-line tests share: running `node bin/tabtune.mjs` as a subprocess, writing a tiny
// model folder (demo tokenizer, seeded random weights), an Alpaca data folder and a training YAML,
// reading back what a run wrote, and the in-process references a CLI run is compared with (greedy
// generate() with the same adapter; logits of base + adapter). Node only: every Node module is
// imported inside the function that needs it, so a test file can import this in any runtime.
import type { Gpu } from '../../src/engine/gpu/index.ts';
import type { LoraSet, Model } from '../../src/engine/model/model.ts';

export interface CliResult {
  code: number;
  out: string;
  err: string;
}

/** Runs `node bin/tabtune.mjs …args` and collects its stdout, stderr and exit code. */
export async function runCli(args: string[], env: NodeJS.ProcessEnv = { ...process.env }): Promise<CliResult> {
  const { spawn } = await import('node:child_process');
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, ['bin/tabtune.mjs', ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (err += d));
    p.on('error', reject);
    p.on('close', (code) => resolve({ code: code ?? -1, out, err }));
  });
}

/**
 * A tiny config.json on the demo tokenizer's 6144-token vocabulary (eos 6143, pad 6141): hidden 32,
 * MLP 64, 4 query and 2 key/value heads, float32; `over` gives the architecture and the rest.
 */
export function demoVocabConfig(over: Record<string, unknown>): Record<string, unknown> {
  return {
    hidden_size: 32,
    intermediate_size: 64,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    vocab_size: 6144,
    torch_dtype: 'float32',
    eos_token_id: 6143,
    pad_token_id: 6141,
    ...over,
  };
}

/** A model folder of `raw`'s architecture with F32 weights from `seed` and the demo model's tokenizer. */
export async function writeDemoTokenizerModel(dir: string, raw: Record<string, unknown>, seed: number): Promise<void> {
  const { readFileSync } = await import('node:fs');
  const { tinyWeights, writeModelFolder } = await import('./export-helpers.ts');
  await writeModelFolder(dir, raw, tinyWeights(raw, 'F32', seed), {
    'tokenizer.json': readFileSync('public/demo-model/tokenizer.json'),
    'tokenizer_config.json': readFileSync('public/demo-model/tokenizer_config.json'),
  });
}

export interface AlpacaRow {
  instruction: string;
  input: string;
  output: string;
}

/** `dataDir`/`name`.json with `rows` and a dataset_info.json that names it `name`. */
export async function writeAlpacaDataset(dataDir: string, name: string, rows: AlpacaRow[]): Promise<void> {
  const { mkdirSync, writeFileSync } = await import('node:fs');
  const { join } = await import('node:path');
  mkdirSync(dataDir, { recursive: true });
  writeFileSync(join(dataDir, `${name}.json`), JSON.stringify(rows));
  writeFileSync(join(dataDir, 'dataset_info.json'), JSON.stringify({ [name]: { file_name: `${name}.json` } }));
}

/** Four rows asking to count six numbers: with a chat template, longer than 16 tokens each. */
export function countingRows(): AlpacaRow[] {
  return Array.from({ length: 4 }, (_, i) => ({
    instruction: `Count from ${i} to ${i + 5}, one number per word, and say nothing else please.`,
    input: '',
    output: `${i} ${i + 1} ${i + 2} ${i + 3} ${i + 4} ${i + 5}`,
  }));
}

/** Writes `key: value` lines (in the order given) as a YAML file at `path`; returns `path`. */
export async function writeYaml(path: string, entries: Record<string, string | number | boolean>): Promise<string> {
  const { writeFileSync } = await import('node:fs');
  writeFileSync(
    path,
    Object.entries(entries)
      .map(([k, v]) => `${k}: ${v}\n`)
      .join(''),
  );
  return path;
}

export interface SftLoraYaml {
  modelDir: string;
  dataset: string;
  dataDir: string;
  template: string;
  outputDir: string;
  saveSteps: number;
  seed: number;
  /** Further `key: value` lines (quantization, alpha, dropout, schedule…). */
  extra?: string[];
}

/**
 * Writes a LlamaFactory-style SFT YAML at `path`: LoRA rank 4 on `lora_target: all`, cutoff 48,
 * batch 2, learning rate 5e-2, one epoch, a log line every step; then `extra`.
 */
export async function writeSftLoraYaml(path: string, o: SftLoraYaml): Promise<string> {
  const { writeFileSync } = await import('node:fs');
  const lines = [
    `model_name_or_path: ${o.modelDir}`,
    'stage: sft',
    'do_train: true',
    'finetuning_type: lora',
    'lora_rank: 4',
    'lora_target: all',
    `dataset: ${o.dataset}`,
    `dataset_dir: ${o.dataDir}`,
    `template: ${o.template}`,
    'cutoff_len: 48',
    'per_device_train_batch_size: 2',
    'learning_rate: 5.0e-2',
    'num_train_epochs: 1.0',
    'logging_steps: 1',
    `save_steps: ${o.saveSteps}`,
    `output_dir: ${o.outputDir}`,
    `seed: ${o.seed}`,
    ...(o.extra ?? []),
    '',
  ];
  writeFileSync(path, lines.join('\n'));
  return path;
}

/** The rows of `outDir`/trainer_log.jsonl. */
export async function readTrainerLog(outDir: string): Promise<Record<string, number>[]> {
  const { readFileSync } = await import('node:fs');
  const { join } = await import('node:path');
  return readFileSync(join(outDir, 'trainer_log.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as Record<string, number>);
}

/** Tensor names from a safetensors file's header (8-byte little-endian length, then JSON). */
export async function safetensorsNames(path: string): Promise<string[]> {
  const { readFileSync } = await import('node:fs');
  const bytes = readFileSync(path);
  const headerLen = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + headerLen).toString('utf8')) as Record<string, unknown>;
  return Object.keys(header).filter((k) => k !== '__metadata__');
}

/**
 * What `tabtune chat --prompt` should print for a folder model with `lora`: the prompt rendered
 * with the tokenizer's chat template, then greedy generate() in this process up to the folder's
 * stop ids. Returns the prompt's ids, the new tokens and their text.
 */
export async function greedyReplyInProcess(
  model: Model,
  lora: LoraSet | null,
  modelDir: string,
  prompt: string,
  maxNewTokens: number,
): Promise<{ ids: number[]; tokens: number[]; text: string }> {
  const { folderTokenizer, stopIdsFor } = await import('../../src/cli/common.ts');
  const { generateAll } = await import('../../src/engine/generate/generate.ts');
  const { chatTemplateFor } = await import('../../src/data/index.ts');
  const tok = await folderTokenizer(modelDir);
  const ids = tok.encode(
    chatTemplateFor(tok).renderMessages([{ role: 'user', content: prompt }], { addGenerationPrompt: true }),
  );
  const r = await generateAll(model, lora, ids, {
    doSample: false,
    temperature: 1,
    topK: 0,
    topP: 1,
    repetitionPenalty: 1,
    maxNewTokens,
    stopIds: stopIdsFor(modelDir, tok, model.config.eosTokenIds),
  });
  const tokens = [...r.tokens];
  return { ids: [...ids], tokens, text: tok.decode(tokens, { skipSpecialTokens: true }) };
}

/**
 * Loads the merged model folder `mergedDir` (after `inspect` sees it) and returns the largest
 * |base + adapter − merged| logit over `ids`, relative to the largest |base + adapter| logit.
 */
export async function mergedVsAdapterRel(
  gpu: Gpu,
  model: Model,
  lora: LoraSet,
  mergedDir: string,
  ids: number[],
  inspect: (merged: Model) => void = () => {},
): Promise<number> {
  const { loadFolderModel } = await import('../../src/cli/common.ts');
  const { forwardLogits } = await import('../../src/engine/model/infer.ts');
  const merged = await loadFolderModel(gpu, mergedDir);
  try {
    inspect(merged.model);
    const a = await forwardLogits(model, lora, Int32Array.from(ids), null);
    const b = await forwardLogits(merged.model, null, Int32Array.from(ids), null);
    let num = 0;
    let den = 0;
    for (let i = 0; i < a.length; i++) {
      num = Math.max(num, Math.abs(a[i] - b[i]));
      den = Math.max(den, Math.abs(a[i]));
    }
    return num / den;
  } finally {
    merged.model.release();
    await merged.files.source.close?.();
  }
}
