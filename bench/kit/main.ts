// The GPU kit's Node side, bundled by bench/kit/pack.ts into one .mjs (shaders embedded) and run
// by run.sh one section per process, so a section that crashes, hangs or runs out of its time
// box leaves the others alone. Each section writes its JSON file as it goes (status "running"
// with what is done so far), so even a killed section reports its finished parts.
//
//   node tabtune-kit.mjs adapter   --out F [--tiny]
//   node tabtune-kit.mjs shaders   --out F
//   node tabtune-kit.mjs prepare   --out F --model KEY --dir D --seq N
//   node tabtune-kit.mjs matmul    --out F --sizes 1024,2048 [--budget-s S] [--tiny]
//   node tabtune-kit.mjs attention --out F --seqs 1024,4096 [--budget-s S] [--tiny]
//   node tabtune-kit.mjs train     --out F --dir D --method lora|qlora [--steps N] [--decode N] [--budget-s S] [--tiny]
import { writeFileSync } from 'node:fs';
import { backwardCase, forwardCase } from '../cases/attention.ts';
import type { BenchCase } from '../types.ts';
import type { Gpu } from '../../src/engine/gpu/device.ts';
import { MEMORY_CATEGORIES } from '../../src/engine/gpu/ledger.ts';
import { Recorder } from '../../src/engine/gpu/recorder.ts';
import { releaseTensor, tensorSpec, uploadTensor, writeTensor } from '../../src/engine/gpu/transfer.ts';
import type { Tensor } from '../../src/engine/gpu/tensor.ts';
import { generateAll } from '../../src/engine/generate/generate.ts';
import { DEFAULT_SAMPLING } from '../../src/engine/generate/sample.ts';
import { loadModel } from '../../src/engine/model/load.ts';
import { modelMatmulShapes } from '../../src/engine/model/matmul-shapes.ts';
import { attachLora } from '../../src/engine/model/model.ts';
import { openModelFolder } from '../../src/engine/model/node-folder.ts';
import { isSoftwareAdapter, nodeGpu } from '../../src/engine/node-gpu.ts';
import {
  matmul,
  matmulFlops,
  matmulShapeClass,
  MATMUL_UNTUNED,
  MATMUL_VARIANT_NAMES,
  type MatmulVariant,
} from '../../src/engine/ops/matmul.ts';
import { summariseTuning, tuneLora, tuneMatmul } from '../../src/engine/ops/tuner.ts';
import { planMemory } from '../../src/engine/plan/plan.ts';
import { nodeShaders } from '../../src/engine/shaders.node.ts';
import { Trainer } from '../../src/engine/train/trainer.ts';
import { batchIds, LORA_ALPHA, LORA_RANK, loraInit, prepareModel } from './model.ts';

const [section, ...rest] = process.argv.slice(2);
const opt = (name: string, dflt?: string): string => {
  const i = rest.indexOf(`--${name}`);
  if (i >= 0 && i + 1 < rest.length) return rest[i + 1];
  if (dflt === undefined) throw new Error(`${section}: --${name} is required`);
  return dflt;
};
const tiny = rest.includes('--tiny');
const numbers = (s: string) => s.split(',').filter(Boolean).map(Number);
const started = performance.now();
const budgetMs = Number(opt('budget-s', '60')) * 1000;
const left = () => budgetMs - (performance.now() - started);
const round = (x: number, d = 3) => +x.toFixed(d);

/** The section's JSON, rewritten after each finished part. */
const report: Record<string, unknown> = { section, status: 'running' };
const outFile = opt('out');
function save(): void {
  report.seconds = round((performance.now() - started) / 1000, 1);
  writeFileSync(outFile, JSON.stringify(report, null, 1) + '\n');
}

function log(line: string): void {
  process.stderr.write(`${line}\n`);
}

/** SwiftShader, llvmpipe/lavapipe, or whatever Dawn itself flags as a fallback (CPU) adapter. */
function notAGpu(a: Gpu['adapter']): boolean {
  return isSoftwareAdapter(a) || a.isFallbackAdapter || /\bcpu\b/i.test(`${a.architecture} ${a.description}`);
}

/** Dawn on the machine's Vulkan driver; a software adapter is refused unless --tiny. */
async function openGpu(): Promise<{ gpu: Gpu; close: () => void }> {
  const opened = await nodeGpu(nodeShaders(), { forceSwiftShader: tiny ? undefined : false, log });
  const a = opened.gpu.adapter;
  report.adapter = `${a.vendor} ${a.architecture} ${a.description}`.trim();
  if (notAGpu(a) && !tiny) {
    opened.close();
    throw new Error(
      `the WebGPU adapter is a software one (${report.adapter}), not the GPU; its timings would not be GPU timings (run with --tiny to measure it anyway)`,
    );
  }
  return opened;
}

/**
 * ms per iteration of a bench case: a first submission compiles and measures, then `runs`
 * submissions of as many back-to-back iterations as fill ~targetMs (a GPU finishes a 1024³
 * product faster than one submission's round trip), median over the runs.
 */
async function timeCase(
  gpu: Gpu,
  c: BenchCase,
  runs: number,
  targetMs: number,
): Promise<{ ms: number; reps: number; dispatches: number }> {
  const inst = await c.setup(gpu);
  try {
    const submit = async (reps: number) => {
      const rec = new Recorder(gpu, `kit ${c.name}`);
      for (let r = 0; r < reps; r++) await inst.record(rec);
      const t0 = performance.now();
      await rec.submit();
      await gpu.device.queue.onSubmittedWorkDone();
      return { ms: (performance.now() - t0) / reps, dispatches: rec.dispatchCount / reps };
    };
    await submit(1);
    const once = (await submit(1)).ms;
    const reps = Math.max(1, Math.min(256, Math.floor(targetMs / Math.max(once, 1e-3))));
    const times: number[] = [];
    let dispatches = 0;
    for (let i = 0; i < runs; i++) {
      const r = await submit(reps);
      times.push(r.ms);
      dispatches = r.dispatches;
    }
    times.sort((x, y) => x - y);
    return { ms: times[Math.floor(times.length / 2)], reps, dispatches };
  } finally {
    inst.cleanup();
    gpu.pool.trim();
  }
}

const filledCache = new Map<string, Float32Array>();
/** Deterministic operands, made once per size (an 8192² matrix takes a while in JS). */
function filled(n: number, salt: number): Float32Array {
  const key = `${n}/${salt}`;
  let a = filledCache.get(key);
  if (!a) {
    if ([...filledCache.keys()].some((k) => !k.startsWith(`${n}/`))) filledCache.clear();
    a = new Float32Array(n);
    for (let i = 0; i < n; i++) a[i] = (((i + salt) * 2654435761) % 1000) / 1000 - 0.5;
    filledCache.set(key, a);
  }
  return a;
}

/** GFLOP/s with three significant digits at least. */
const gflopsOf = (flops: number, ms: number) => {
  const g = flops / (ms * 1e6);
  return g >= 100 ? Math.round(g) : +g.toPrecision(3);
};

/** C[n×n] = A·B in f32, one variant pinned (undefined: the tuner's pick for the class). */
function squareMatmul(n: number, variant: MatmulVariant | undefined): BenchCase {
  return {
    name: `matmul ${n}³ [${variant ?? 'tuned'}]`,
    shape: `${n}×${n}×${n}`,
    flops: matmulFlops(n, n, n),
    bytesMoved: 12 * n * n,
    async setup(gpu) {
      const ts: Tensor[] = [
        uploadTensor(gpu, filled(n * n, 1), tensorSpec('f32', [n, n], 'activations', 'A')),
        uploadTensor(gpu, filled(n * n, 2), tensorSpec('f32', [n, n], 'weights', 'B')),
        uploadTensor(gpu, new Float32Array(n * n), tensorSpec('f32', [n, n], 'activations', 'C')),
      ];
      const [a, b, c] = ts;
      return {
        record: (rec) => matmul(rec, { a, b, c, M: n, N: n, K: n, variant }),
        cleanup: () => ts.forEach((t) => releaseTensor(gpu, t)),
      };
    },
  };
}

async function matmulSection(): Promise<void> {
  const { gpu, close } = await openGpu();
  try {
    const rows: Record<string, unknown>[] = [];
    report.rows = rows;
    report.variants = MATMUL_VARIANT_NAMES;
    const runs = tiny ? 2 : 3;
    for (const n of numbers(opt('sizes'))) {
      const row: Record<string, unknown> = { size: n, gflops: {}, ms: {} };
      rows.push(row);
      const gflops = row.gflops as Record<string, number | string>;
      const ms = row.ms as Record<string, number>;
      for (const v of [...MATMUL_VARIANT_NAMES, undefined]) {
        const name = v ?? 'tuned';
        if (left() < 2000) {
          gflops[name] = 'skipped: section time box spent';
          continue;
        }
        try {
          if (!v) {
            const shape = { M: n, N: n, K: n, weight: 'f32' };
            const t0 = performance.now();
            const [r] = await tuneMatmul(gpu, [shape], { log });
            row.tuned = {
              chosen: gpu.kernels.pick('matmul', matmulShapeClass(shape), MATMUL_VARIANT_NAMES, MATMUL_UNTUNED),
              class: matmulShapeClass(shape),
              tunerMs: r?.ms ?? null,
              tunerTimedShape: r ? `${r.timed.M}×${r.timed.N}×${r.timed.K}` : null,
              tunerSeconds: round((performance.now() - t0) / 1000, 2),
            };
          }
          const c = squareMatmul(n, v);
          const t = await timeCase(gpu, c, runs, tiny ? 1 : 50);
          ms[name] = round(t.ms, 4);
          gflops[name] = gflopsOf(c.flops, t.ms);
        } catch (e) {
          gflops[name] = `error: ${(e as Error).message.split('\n')[0]}`;
        }
        save();
      }
    }
    const best = rows.flatMap((r) =>
      Object.entries(r.gflops as Record<string, unknown>).filter(([, g]) => typeof g === 'number'),
    ) as [string, number][];
    report.bestGflops = best.length ? Math.max(...best.map(([, g]) => g)) : null;
  } finally {
    close();
  }
}

async function attentionSection(): Promise<void> {
  const { gpu, close } = await openGpu();
  try {
    const rows: Record<string, unknown>[] = [];
    report.rows = rows;
    for (const seq of numbers(opt('seqs'))) {
      for (const c of [forwardCase(seq), backwardCase(seq)]) {
        const row: Record<string, unknown> = { name: c.name, shape: c.shape };
        rows.push(row);
        if (left() < 2000) {
          row.error = 'skipped: section time box spent';
          continue;
        }
        try {
          const t = await timeCase(gpu, c, tiny ? 1 : 3, tiny ? 1 : 50);
          Object.assign(row, {
            ms: round(t.ms, 4),
            gflops: gflopsOf(c.flops, t.ms),
            dispatches: t.dispatches,
            reps: t.reps,
          });
        } catch (e) {
          row.error = (e as Error).message.split('\n')[0];
        }
        save();
      }
    }
  } finally {
    close();
  }
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

async function trainSection(): Promise<void> {
  const dir = opt('dir');
  const method = opt('method') as 'lora' | 'qlora';
  if (method !== 'lora' && method !== 'qlora') throw new Error(`--method must be lora or qlora, not ${method}`);
  const maxSteps = Number(opt('steps', '4'));
  const decodeNew = Number(opt('decode', '0'));
  const ckpt = opt('ckpt', 'on') === 'on';
  const { gpu, close } = await openGpu();
  try {
    const files = await openModelFolder(dir);
    const config = files.config;
    const t0 = performance.now();
    const model = await loadModel(
      gpu,
      config,
      files.source,
      method === 'qlora' ? { quantize: 'nf4', doubleQuant: true } : {},
    );
    const seq = Number(opt('seq'));
    Object.assign(report, {
      method,
      batch: 1,
      seq,
      rank: LORA_RANK,
      alpha: LORA_ALPHA,
      targets: 'all linear (7 modules)',
      gradientCheckpointing: ckpt,
      layers: config.numLayers,
      loadSeconds: round((performance.now() - t0) / 1000, 1),
    });
    save();
    try {
      const lora = attachLora(model, { rank: LORA_RANK, alpha: LORA_ALPHA, dropout: 0, targets: 'all', seed: 7 });
      const init = loraInit(config);
      for (const [name, st] of lora.adapters) {
        const m = init.modules.get(name)!;
        writeTensor(gpu, st.A, m.A);
        writeTensor(gpu, st.B, m.B);
      }
      const ids = batchIds(config.vocabSize, seq);
      if (decodeNew > 0) {
        // ms per token through the KV cache, before the steps move the adapters.
        const prompt = ids.subarray(0, Math.min(32, seq));
        await generateAll(model, lora, prompt.subarray(0, 4), { ...GREEDY, maxNewTokens: 2 }); // compiles
        const d = await generateAll(model, lora, prompt, { ...GREEDY, maxNewTokens: decodeNew });
        report.decode = {
          prompt: prompt.length,
          tokens: d.tokens.length,
          prefillMs: round(d.prefillMs, 1),
          msPerToken: round(d.decodeMs / Math.max(1, d.tokens.length - 1), 2),
        };
        save();
      }
      const tuneT0 = performance.now();
      const tuned = await tuneMatmul(
        gpu,
        modelMatmulShapes(model, { tokens: seq, backward: true, loraRank: LORA_RANK }),
        { log },
      );
      await tuneLora(gpu, { log });
      report.tuning = process.env.TABTUNE_KERNELS
        ? { pinned: process.env.TABTUNE_KERNELS }
        : { seconds: round((performance.now() - tuneT0) / 1000, 1), chosen: summariseTuning(tuned) };
      save();
      const trainer = new Trainer(model, lora, {
        learningRate: 1e-4,
        lrSchedulerType: 'constant',
        totalSteps: maxSteps,
        maxGradNorm: 0,
        weightDecay: 0,
        adamBeta1: 0.9,
        adamBeta2: 0.999,
        adamEpsilon: 1e-8,
        gradientCheckpointing: ckpt,
        seed: 1,
      });
      try {
        gpu.ledger.resetPeaks();
        const steps: { loss: number; ms: number; dispatches: number; readbacks: number }[] = [];
        report.steps = steps;
        for (let i = 0; i < maxSteps; i++) {
          // the first step also compiles every pipeline; later ones take about as long as the last
          const expect = i === 0 ? 0 : i === 1 ? steps[0].ms / 2 : steps[i - 1].ms;
          if (i > 0 && left() < 1.5 * expect + 1000) break;
          const s0 = performance.now();
          const r = await trainer.step([{ batch: 1, seqLen: seq, inputIds: ids, labels: ids }]);
          steps.push({
            loss: r.loss,
            ms: round(performance.now() - s0, 1),
            dispatches: r.dispatches,
            readbacks: r.readbacks,
          });
          const timed = steps.slice(1).map((s) => s.ms);
          const ms = timed.length ? median(timed) : steps[0].ms;
          const ledger = gpu.ledger.report();
          const plan = planMemory(config, {
            method,
            batchSize: 1,
            seqLen: seq,
            packing: true,
            loraRank: LORA_RANK,
            loraTargets: lora.targets,
            doubleQuant: true,
            gradientCheckpointing: ckpt,
            storageOffsetAlignment: gpu.limits.minStorageBufferOffsetAlignment,
          });
          const peakTotal = MEMORY_CATEGORIES.reduce((a, k) => a + ledger.peak[k], 0);
          Object.assign(report, {
            loss: steps[0].loss,
            stepMs: round(ms, 1),
            stepMsIncludesCompile: timed.length === 0,
            tokensPerS: round((seq / ms) * 1000, 1),
            ledgerPeak: Object.fromEntries(MEMORY_CATEGORIES.map((k) => [k, ledger.peak[k]])),
            ledgerPeakTotal: peakTotal,
            ledgerPeakAllocated: ledger.peakAllocated,
            plannedTotal: plan.total,
            planError: round(plan.total / peakTotal - 1, 4),
          });
          save();
        }
      } finally {
        trainer.release();
        lora.release();
      }
    } finally {
      model.release();
      await files.source.close?.();
    }
  } finally {
    close();
  }
}

const GREEDY = { ...DEFAULT_SAMPLING, maxNewTokens: 16, stopIds: [] };

async function adapterSection(): Promise<void> {
  const { gpu, close } = await openGpu();
  try {
    const a = gpu.adapter;
    Object.assign(report, {
      vendor: a.vendor,
      architecture: a.architecture,
      description: a.description,
      device: a.device,
      software: notAGpu(a),
      fallbackAdapter: a.isFallbackAdapter,
      limits: {
        maxStorageBufferBindingSize: gpu.limits.maxStorageBufferBindingSize,
        maxBufferSize: gpu.limits.maxBufferSize,
        maxComputeWorkgroupStorageSize: gpu.limits.maxComputeWorkgroupStorageSize,
        maxComputeInvocationsPerWorkgroup: gpu.limits.maxComputeInvocationsPerWorkgroup,
      },
      features: [...gpu.device.features].map(String).sort(),
      vulkanIcd: process.env.VK_ICD_FILENAMES ?? process.env.VK_DRIVER_FILES ?? 'system manifests',
    });
  } finally {
    close();
  }
}

async function prepareSection(): Promise<void> {
  const key = opt('model');
  const p = await prepareModel(key, opt('dir'), Number(opt('seq')));
  Object.assign(report, {
    model: key,
    dir: p.dir,
    seq: p.seq,
    layers: p.config.numLayers,
    hidden: p.config.hiddenSize,
    headDim: p.config.headDim,
    vocab: p.config.vocabSize,
    checkpointBytes: p.bytes,
  });
}

/** The WGSL sources the bundle carries (the packing test compares them with shaders/). */
async function shadersSection(): Promise<void> {
  const sources = nodeShaders();
  Object.assign(report, { count: Object.keys(sources).length, sources });
}

const SECTIONS: Record<string, () => Promise<void>> = {
  shaders: shadersSection,
  adapter: adapterSection,
  prepare: prepareSection,
  matmul: matmulSection,
  attention: attentionSection,
  train: trainSection,
};

try {
  const run = SECTIONS[section];
  if (!run) throw new Error(`unknown section "${section}"; known: ${Object.keys(SECTIONS).join(', ')}`);
  await run();
  report.status = 'ok';
  save();
} catch (e) {
  report.status = 'error';
  report.error = (e as Error).stack ?? String(e);
  save();
  log(`${section}: ${(e as Error).message}`);
  process.exitCode = 1;
}
// Dawn's device keeps the event loop alive after close() on some drivers: the section is done.
process.exit();
