// `tabtune train <config.yaml>`: supervised fine-tuning from a LLaMA-Factory training YAML
// (examples/train_lora/*.yaml keys; src/engine/train/llamafactory-config.ts). Like LLaMA-Factory
// it writes into output_dir the PEFT adapter (adapter_config.json, adapter_model.safetensors) or,
// for finetuning_type full, the model; trainer_log.jsonl (one JSON object per logging step, the
// fields of LLaMA-Factory's LogCallback); checkpoint-N/ every save_steps; and it resumes from a
// checkpoint when resume_from_checkpoint is true (the last one) or a path — or on its own, as
// LLaMA-Factory does, when output_dir already holds checkpoints and overwrite_output_dir is off.
import { appendFileSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { chatTemplateFor, prepareDataset } from '../data/index.ts';
import type { EncodedExample, PackedSequence } from '../data/types.ts';
import { fmtBytes } from '../engine/gpu/pool.ts';
import { MEMORY_CATEGORIES } from '../engine/gpu/ledger.ts';
import { exportMerged, TOKENIZER_FILE_NAMES } from '../engine/export/merged.ts';
import {
  CliError,
  folderTokenizer,
  hms,
  listCheckpoints,
  loadAdapterFolder,
  parseYamlArgs,
  readDatasets,
  requireModelFolder,
  resolveDatasets,
  resolvePath,
  yamlWithOverrides,
  errLine,
  parseCommandArgs,
  runGpuCommand,
  withFolderModel,
} from './common.ts';
import { nodeDirWriter } from '../engine/export/node-dir.ts';
import { exportPeft } from '../engine/export/peft.ts';
import { planMemory } from '../engine/plan/plan.ts';
import type { LoadOptions } from '../engine/model/load.ts';
import type { LoraSet } from '../engine/model/model.ts';
import type { ModelConfig } from '../engine/model/config.ts';
import { openModelFolder } from '../engine/model/node-folder.ts';
import { fitRunToBudget, isOutOfMemory, smallerRun } from '../engine/train/memory-fit.ts';
import { checkpointFromFiles, checkpointToFiles } from '../engine/train/checkpoint-files.ts';
import {
  evalBatchesOf,
  memoryPlanInput,
  planRun,
  startTraining,
  tuneKernelsForRun,
  type RunPlan,
  type Training,
} from '../engine/train/run-builder.ts';
import { nodeKernelStore } from '../engine/node-kernel-store.ts';
import { summariseTuning } from '../engine/ops/tuner.ts';
import { RunDriver } from '../engine/train/run-driver.ts';
import { parseTrainYaml, type TrainConfig } from '../engine/train/llamafactory-config.ts';

const USAGE = `usage: tabtune train <config.yaml> [key=value ...]

Supervised fine-tuning (stage: sft), continued pre-training on raw text (stage: pt) or preference tuning
(stage: dpo with pref_loss sigmoid, hinge, ipo, orpo or simpo) — LoRA, QLoRA with quantization_bit: 4, or
full — from a LLaMA-Factory YAML.
model_name_or_path must be a local folder; datasets come from dataset_dir/dataset_info.json or are
files. key=value overrides a YAML key (e.g. max_steps=10 output_dir=saves/try).

  --gpu-memory GiB   GPU memory the run may use: the settings are auto-fitted to it before the
                     start (checkpointing, loss chunks, bf16 checkpoints, micro-batch, NF4 head),
                     and an out-of-memory error retries once with the next smaller plan from the
                     last checkpoint.`;

export const TRAINER_LOG = 'trainer_log.jsonl';
/** Counters of the command line kept beside the trainer state in checkpoint-N/. */
const CLI_STATE = 'tabtune_cli_state.json';

export interface TrainArgs {
  yamlPath: string;
  config: TrainConfig;
  warnings: string[];
  notes: string[];
  /** --gpu-memory in bytes, or null. */
  budgetBytes: number | null;
}

export function parseTrainArgs(argv: string[]): TrainArgs | 'help' {
  const a = parseYamlArgs(argv, ['gpu-memory'], 'train');
  if (a.flags.has('help')) return 'help';
  const text = yamlWithOverrides(a.yamlPath, a.overrides);
  const parsed = parseTrainYaml(text, a.yamlPath);
  if (!parsed.config.doTrain) throw new CliError(`${a.yamlPath}: do_train is false: nothing to do`);
  const gib = a.flags.get('gpu-memory');
  const budget = typeof gib === 'string' ? Number(gib) : null;
  if (budget !== null && !(budget > 0))
    throw new CliError(`--gpu-memory must be a number of GiB above 0, got ${JSON.stringify(gib)}`);
  return {
    yamlPath: a.yamlPath,
    config: parsed.config,
    warnings: parsed.warnings,
    notes: parsed.notes,
    budgetBytes: budget === null ? null : Math.round(budget * 2 ** 30),
  };
}

/** What LLaMA-Factory / transformers would resume from, or an error when output_dir is not empty. */
export function resumeDecision(
  outputDir: string,
  c: TrainConfig,
  yamlPath: string,
): { from: string | null; reason: string } {
  const cks = listCheckpoints(outputDir);
  if (typeof c.resumeFromCheckpoint === 'string') {
    const p = resolvePath(c.resumeFromCheckpoint, yamlPath);
    if (!existsSync(join(p, 'trainer_state.json')))
      throw new CliError(`resume_from_checkpoint: ${p} is not a checkpoint folder (no trainer_state.json)`);
    return { from: p, reason: 'resume_from_checkpoint' };
  }
  if (c.resumeFromCheckpoint === true) {
    if (!cks.length) throw new CliError(`resume_from_checkpoint: true, but ${outputDir} has no checkpoint-N folder`);
    return { from: cks[cks.length - 1].dir, reason: 'resume_from_checkpoint: true (last checkpoint)' };
  }
  if (c.overwriteOutputDir || !existsSync(outputDir)) return { from: null, reason: 'fresh start' };
  if (cks.length)
    return {
      from: cks[cks.length - 1].dir,
      reason: `${outputDir} holds checkpoints and overwrite_output_dir is off (as LLaMA-Factory, training resumes)`,
    };
  if (readdirSync(outputDir).length)
    throw new CliError(
      `output_dir ${outputDir} already exists and is not empty; set overwrite_output_dir: true or choose another folder`,
    );
  return { from: null, reason: 'fresh start' };
}

export interface LogRow {
  current_steps: number;
  total_steps: number;
  loss?: number;
  eval_loss?: number;
  lr?: number;
  grad_norm?: number;
  epoch: number;
  percentage: number;
  elapsed_time: string;
  remaining_time: string;
  total_tokens?: number;
  /** Stage dpo: LLaMA-Factory's LogCallback field (rewards/accuracies). */
  accuracy?: number;
  /** Stage dpo: TRL's metrics under their names (rewards/chosen, logps/rejected, …). */
  [metric: string]: number | string | undefined;
}

/** Stage dpo's log fields: accuracy as LLaMA-Factory's LogCallback names it, and TRL's metrics rounded. */
function preferenceFields(m: Record<string, number> | undefined): Partial<LogRow> {
  if (!m) return {};
  const out: Partial<LogRow> = { accuracy: round4(m['rewards/accuracies']) };
  for (const [k, v] of Object.entries(m)) (out as Record<string, number>)[k] = round4(v);
  return out;
}

/** One trainer_log.jsonl row (LLaMA-Factory callbacks.py LogCallback fields and rounding). */
export function logRow(
  step: number,
  total: number,
  epoch: number,
  elapsedS: number,
  stepsThisRun: number,
  extra: Partial<LogRow>,
): LogRow {
  const perStep = stepsThisRun > 0 ? elapsedS / stepsThisRun : 0;
  return {
    current_steps: step,
    total_steps: total,
    ...extra,
    epoch: Math.round(epoch * 100) / 100,
    percentage: Math.round((step / total) * 10000) / 100,
    elapsed_time: hms(elapsedS),
    remaining_time: hms(perStep * (total - step)),
  };
}

/** Keeps the rows of an earlier run up to `step` (a resumed run appends from there). */
export function truncateLog(path: string, step: number): void {
  if (!existsSync(path)) return;
  const keep = readFileSync(path, 'utf8')
    .split('\n')
    .filter((line) => {
      if (!line.trim()) return false;
      try {
        return (JSON.parse(line) as LogRow).current_steps <= step;
      } catch {
        return false;
      }
    });
  writeFileSync(path, keep.map((l) => `${l}\n`).join(''));
}

function round4(x: number): number {
  return Math.round(x * 1e4) / 1e4;
}

export default async function train(argv: string[]): Promise<number> {
  const err = errLine;
  const args = parseCommandArgs('train', USAGE, argv, parseTrainArgs, (e) => /YAML config file|option/.test(e.message));
  if (typeof args === 'number') return args;
  let c = args.config;
  const { yamlPath, budgetBytes: budget } = args;
  args.warnings.forEach((w) => err(`warning: ${w}`));
  args.notes.forEach((n) => err(`note: ${n}`));
  return runGpuCommand('train', async (openGpu) => {
    let plan: RunPlan;
    try {
      plan = planRun(c); // refuses what the engine cannot train (DoRA, full + 4-bit) before any work
    } catch (e) {
      throw new CliError((e as Error).message);
    }
    const dir = requireModelFolder(
      resolvePath(c.modelNameOrPath, args.yamlPath),
      'model_name_or_path',
      c.modelNameOrPath,
    );
    const outDir = resolvePath(c.outputDir, args.yamlPath);
    let resume = resumeDecision(outDir, c, args.yamlPath);

    // ---- data (before the GPU: bad data fails fast)
    const tok = await folderTokenizer(dir);
    const loaded = await readDatasets(resolveDatasets(c.dataset, c.datasetDir, args.yamlPath));
    loaded.warnings.forEach((w) => err(`warning: ${w}`));
    const prep = prepareDataset(loaded.examples, tok, plan.prepare, chatTemplateFor(tok));
    prep.warnings.forEach((w) => err(`warning: ${w}`));
    const invalid = [
      ...loaded.invalid.map((i) => `${i.dataset} row ${i.issue.row}: ${i.issue.field}: ${i.issue.reason}`),
      ...prep.invalid.map((i) => `row ${i.row}: ${i.field}: ${i.reason}`),
    ];
    if (invalid.length) {
      err(`warning: ${invalid.length} row(s) skipped:`);
      invalid.slice(0, 20).forEach((l) => err(`  ${l}`));
      if (invalid.length > 20) err(`  … and ${invalid.length - 20} more (tabtune data <file> lists them all)`);
    }
    const items: (EncodedExample | PackedSequence)[] = prep.packed ?? prep.train;
    if (!items.length) throw new CliError('no usable training example (see the skipped rows above)');
    err(
      `tabtune: ${loaded.rows} rows → ${prep.train.length} train / ${prep.val.length} eval examples${prep.packed ? ` packed into ${prep.packed.length} sequences of ${c.cutoffLen}` : ''}; ${prep.stats.truncated} truncated at cutoff_len ${c.cutoffLen}`,
    );

    // ---- GPU, memory budget, model, adapter
    const g = await openGpu();
    const longest = Math.max(...items.map((x) => x.inputIds.length));
    const modelConfig = await folderModelConfig(dir);
    if (args.budgetBytes !== null) {
      const fit = fitRunToBudget(modelConfig, c, longest, args.budgetBytes, g.gpu.limits);
      err(
        fit.steps.length
          ? `tabtune: fitted to --gpu-memory ${fmtBytes(args.budgetBytes)}: ${fit.steps.map((st) => st.label).join('; ')} (planned ${fmtBytes(fit.planned)})`
          : `tabtune: planned ${fmtBytes(fit.planned)} fits --gpu-memory ${fmtBytes(args.budgetBytes)}`,
      );
      if (!fit.fits) err(`warning: even the smallest plan (${fmtBytes(fit.planned)}) is above --gpu-memory`);
      c = fit.config;
      plan = planRun(c);
      g.gpu.pool.budget = args.budgetBytes;
    }
    // Out of GPU memory: once, the next smaller plan from the last checkpoint (memory-fit.ts).
    let cursorScale = 1;
    for (let attempt = 0; ; attempt++) {
      try {
        await trainOnce();
        return;
      } catch (e) {
        const smaller = attempt === 0 && isOutOfMemory(e) ? smallerRun(modelConfig, c, longest, g.gpu.limits) : null;
        if (!smaller) throw e;
        err(
          `tabtune: out of GPU memory (${(e as Error).message}); retrying once with ${smaller.steps.map((st) => st.label).join('; ')} (planned ${fmtBytes(smaller.planned)})`,
        );
        cursorScale = c.perDeviceTrainBatchSize / smaller.config.perDeviceTrainBatchSize;
        c = smaller.config;
        plan = planRun(c);
        const cks = listCheckpoints(outDir);
        resume = cks.length
          ? { from: cks[cks.length - 1].dir, reason: 'the last checkpoint, after running out of GPU memory' }
          : { from: null, reason: 'fresh start' };
      }
    }

    async function trainOnce(): Promise<void> {
      const loadOpts: LoadOptions = {
        ...plan.load,
        onProgress: (p) =>
          process.stderr.isTTY &&
          process.stderr.write(`\r  loading ${p.loaded}/${p.total} ${p.tensor}`.padEnd(90).slice(0, 90)),
      };
      await withFolderModel(g.gpu, dir, loadOpts, async (model, files) => {
        if (process.stderr.isTTY) process.stderr.write('\n');
        let adapter: LoraSet | undefined;
        let run: Training | null = null;
        try {
          model.notes.forEach((n) => err(`note: ${n}`));
          if (plan.lora && c.adapterNameOrPath)
            adapter =
              (await loadAdapterFolder(model, c.adapterNameOrPath, yamlPath, {
                dropout: c.lora.dropout,
                seed: c.seed,
              })) ?? undefined;
          const padId = tok.pad?.id ?? tok.eos?.id ?? 0;
          // The kernel trials' operands are freed before training, which is what the budget is planned for.
          g.gpu.pool.budget = null;
          const tuned = await tuneKernelsForRun(model, plan, longest, {
            store: nodeKernelStore(),
          });
          g.gpu.pool.trim();
          g.gpu.pool.budget = budget;
          if (tuned.length) err(`tabtune: kernels measured on this GPU: ${summariseTuning(tuned)}`);
          run = startTraining(model, plan, items, padId, adapter);
          const { trainer, loader, totalSteps, lora } = run;
          const planned = planMemory(model.config, {
            ...memoryPlanInput(plan, longest, g.gpu.limits),
            ...(lora ? { loraRank: lora.config.rank, loraTargets: lora.targets } : {}),
          });
          err(
            `tabtune: planned GPU memory ${fmtBytes(planned.total)} (${MEMORY_CATEGORIES.map((k) => `${k} ${fmtBytes(planned.byCategory[k])}`).join(', ')})`,
          );
          const logPath = join(outDir, TRAINER_LOG);
          let tokens = 0; // input tokens seen, carried across resumes (LLaMA-Factory's total_tokens)
          mkdirSync(outDir, { recursive: true });
          if (resume.from) {
            const ck = new Map<string, Uint8Array>();
            for (const f of ['trainer_state.json', 'optimizer.safetensors']) {
              const p = join(resume.from, f);
              if (!existsSync(p)) throw new CliError(`${resume.from}: no ${f}; cannot resume from this checkpoint`);
              ck.set(f, readFileSync(p));
            }
            await trainer.loadCheckpoint(await checkpointFromFiles(ck));
            if (cursorScale !== 1) {
              // The checkpoint counted micro-batches of the batch size before the retry.
              const at = loader.state();
              loader.setState({ epoch: at.epoch, micro: Math.floor(at.micro * cursorScale) });
            }
            const extra = join(resume.from, CLI_STATE);
            if (existsSync(extra))
              tokens = (JSON.parse(readFileSync(extra, 'utf8')) as { total_tokens?: number }).total_tokens ?? 0;
            truncateLog(logPath, trainer.stepCount);
            err(`tabtune: resuming at step ${trainer.stepCount} from ${resume.from} (${resume.reason})`);
          } else if (existsSync(logPath)) rmSync(logPath);
          if (trainer.stepCount >= totalSteps)
            err(
              `tabtune: the checkpoint is already at step ${trainer.stepCount} of ${totalSteps}; nothing left to train`,
            );

          const evalBatches = evalBatchesOf(plan, prep.val, padId);
          err(
            `tabtune: ${totalSteps} optimizer steps (${loader.stepsPerEpoch} per epoch; batch ${c.perDeviceTrainBatchSize} × accumulation ${c.gradientAccumulationSteps}); ${trainer.trainableParameters.toLocaleString('en-US')} trainable parameters`,
          );
          g.gpu.pool.ledger.resetPeaks();
          const t0 = performance.now();
          const startStep = trainer.stepCount;
          const startTokens = tokens;
          let lossSum = 0;
          const elapsed = () => (performance.now() - t0) / 1000;
          // Ctrl-C: finish the step in flight, save a checkpoint, stop (a second Ctrl-C quits at once).
          let interrupted = false;
          const onSigint = () => {
            if (interrupted) process.exit(130);
            interrupted = true;
            err('\ntabtune: interrupted — saving a checkpoint after this step (Ctrl-C again to quit without saving)');
          };
          const driver = new RunDriver(
            trainer,
            {
              totalSteps,
              loggingSteps: c.loggingSteps,
              saveSteps: c.saveSteps,
              evalBatches,
              savedStep: resume.from ? trainer.stepCount : null,
            },
            {
              beforeStep: () => (interrupted ? 'stop' : 'go'),
              afterStep: (r) => {
                tokens += r.tokens;
                lossSum += r.loss;
                if (r.skipped) err(`warning: step ${r.step}: non-finite gradients, update skipped`);
              },
              onLog: (w) => {
                const row = logRow(w.step, totalSteps, w.epoch, elapsed(), w.step - startStep, {
                  loss: round4(w.loss),
                  lr: w.lr,
                  grad_norm: round4(w.gradNorm),
                  total_tokens: tokens,
                  ...preferenceFields(w.metrics),
                });
                appendFileSync(logPath, `${JSON.stringify(row)}\n`);
                const pref = Object.entries(w.metrics ?? {})
                  .map(([k, v]) => `'${k}': ${round4(v)}, `)
                  .join('');
                err(
                  `{'loss': ${row.loss}, 'grad_norm': ${row.grad_norm}, 'learning_rate': ${w.lr.toExponential(4)}, ${pref}'epoch': ${row.epoch}}  [${w.step}/${totalSteps} ${row.elapsed_time}<${row.remaining_time}]`,
                );
              },
              onEval: (step, loss, epoch) => {
                appendFileSync(
                  logPath,
                  `${JSON.stringify(logRow(step, totalSteps, epoch, elapsed(), step - startStep, { eval_loss: round4(loss) }))}\n`,
                );
                err(`{'eval_loss': ${round4(loss)}, 'epoch': ${Math.round(epoch * 100) / 100}}`);
              },
              save: async (step) => {
                const ckDir = join(outDir, `checkpoint-${step}`);
                mkdirSync(ckDir, { recursive: true });
                if (lora) await exportPeft(lora, null, c.modelNameOrPath, nodeDirWriter(ckDir));
                for (const [name, bytes] of await checkpointToFiles(await trainer.saveCheckpoint()))
                  writeFileSync(join(ckDir, name), bytes);
                writeFileSync(join(ckDir, CLI_STATE), `${JSON.stringify({ total_tokens: tokens, step })}\n`);
                err(`tabtune: saved ${ckDir}`);
              },
            },
          );
          process.on('SIGINT', onSigint);
          try {
            if ((await driver.run()) === 'stopped') {
              err(
                `tabtune: stopped at step ${trainer.stepCount} of ${totalSteps}; resume with resume_from_checkpoint: true`,
              );
              return 130;
            }
          } finally {
            process.off('SIGINT', onSigint);
          }

          // ---- final artifacts, as LLaMA-Factory leaves them in output_dir
          if (lora) await exportPeft(lora, null, c.modelNameOrPath, nodeDirWriter(outDir));
          else {
            const tokFiles = new Map<string, Uint8Array>();
            for (const f of [...TOKENIZER_FILE_NAMES, 'generation_config.json'])
              if (existsSync(join(dir, f))) tokFiles.set(f, readFileSync(join(dir, f)));
            const dtype =
              model.config.torchDtype === 'bfloat16' ? 'bf16' : model.config.torchDtype === 'float16' ? 'f16' : 'f32';
            await exportMerged(model, null, {
              dtype,
              configText: files.configText,
              tokenizerFiles: tokFiles,
              write: nodeDirWriter(outDir),
            });
          }
          if (lora)
            for (const f of TOKENIZER_FILE_NAMES)
              if (existsSync(join(dir, f))) writeFileSync(join(outDir, f), readFileSync(join(dir, f)));
          const runtime = elapsed();
          const done = trainer.stepCount - startStep;
          writeFileSync(
            join(outDir, 'train_results.json'),
            `${JSON.stringify(
              {
                epoch: Math.round(loader.epoch * 100) / 100,
                train_loss: done ? lossSum / done : null,
                train_runtime: Math.round(runtime * 1e4) / 1e4,
                train_steps_per_second: done ? Math.round((done / runtime) * 1e3) / 1e3 : 0,
                train_tokens_per_second: Math.round(((tokens - startTokens) / runtime) * 1e3) / 1e3,
              },
              null,
              2,
            )}\n`,
          );
          const peak = g.gpu.pool.ledger.report().peak;
          const measured = MEMORY_CATEGORIES.reduce((sum, k) => sum + peak[k], 0);
          err(
            `tabtune: done in ${hms(runtime)}; GPU memory peak ${fmtBytes(measured)} (planned ${fmtBytes(planned.total)}); adapter and logs in ${outDir}`,
          );
        } finally {
          run?.trainer.release();
          if (run?.lora) run.lora.release();
          else adapter?.release();
        }
      });
    }
  });
}

/** config.json of a model folder, parsed as loading it would (the memory plan needs it before the load). */
async function folderModelConfig(dir: string): Promise<ModelConfig> {
  const files = await openModelFolder(dir);
  await files.source.close?.();
  return files.config;
}
