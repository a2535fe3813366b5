// Real-size rows: a random bf16 model with the exact config of Qwen2.5-0.5B or 1.5B (written by our
// own safetensors writer; no download), one LoRA or QLoRA step on it in Node + Dawn, the same step
// in PyTorch on the CPU (tests/reference/real_size_step.py) on the same weights, adapters and batch,
// and 16 greedy tokens through the KV cache against PyTorch's. Prints one JSON row per run and
// merges them into bench/results.json under "real".
//
//   npm run real-size -- [--model 0.5b|1.5b] [--method lora|qlora] [--ckpt on|off] [--seq 128]
//                        [--layers N] [--no-torch] [--no-decode] [--memory-options] [--profile]
// --memory-options: NF4 output head, bf16 checkpoints and 16-row loss chunks (planMemory's options;
// lossy, so compare the ledger with the plan and leave PyTorch out with --no-torch).
// --profile prints the step's GPU time per kernel (each dispatch in a pass of its own).
// --layers N keeps the real widths (hidden, heads, vocabulary) with fewer layers (labelled in the row).
import { execFileSync } from 'node:child_process';
import { createWriteStream, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { readF32, writeTensor } from '../src/engine/gpu/index.ts';
import { loadFolderModel } from '../src/cli/common.ts';
import { generateAll } from '../src/engine/generate/generate.ts';
import { DEFAULT_SAMPLING } from '../src/engine/generate/sample.ts';
import { expectedWeights, parseModelConfig } from '../src/engine/model/config.ts';
import { attachLora } from '../src/engine/model/model.ts';
import { nodeGpu } from '../src/engine/node-gpu.ts';
import { nodeKernelStore } from '../src/engine/node-kernel-store.ts';
import { modelMatmulShapes } from '../src/engine/model/matmul-shapes.ts';
import { summariseTuning, tuneLora, tuneMatmul } from '../src/engine/ops/tuner.ts';
import { KNOWN_CONFIGS } from '../src/engine/plan/known-configs.ts';
import { planMemory, SMALL_LOSS_CHUNK_ROWS } from '../src/engine/plan/plan.ts';
import { nodeShaders } from '../src/engine/shaders.node.ts';
import { Trainer } from '../src/engine/train/trainer.ts';
import { writeSafetensors, type TensorToWrite } from '../src/io/safetensors-writer.ts';
import { MEMORY_CATEGORIES } from '../src/engine/gpu/ledger.ts';
import type { KernelTime } from '../src/engine/gpu/profiler.ts';

const args = process.argv.slice(2);
const opt = (name: string, dflt: string) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : dflt;
};
const MODELS: Record<string, string> = { '0.5b': 'Qwen/Qwen2.5-0.5B-Instruct', '1.5b': 'Qwen/Qwen2.5-1.5B-Instruct' };
const modelKey = opt('model', '0.5b');
const method = opt('method', 'lora') as 'lora' | 'qlora';
const ckpt = opt('ckpt', 'on') === 'on';
const seq = Number(opt('seq', '128'));
const memoryOptions = args.includes('--memory-options');
const RANK = 8;
const ALPHA = 16;
const DECODE_PROMPT = 32;
const DECODE_NEW = 16;
const say = (msg: string) => console.error(`real-size: ${msg}`);

/** Deterministic normal draws (xorshift32 + Box–Muller): the model is the same on every machine. */
function normals(n: number, seed: number, std: number): Float32Array {
  let s = seed >>> 0 || 1;
  const u = () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return ((s >>> 0) + 0.5) / 4294967296;
  };
  const out = new Float32Array(n);
  for (let i = 0; i < n; i += 2) {
    const r = Math.sqrt(-2 * Math.log(u()));
    const t = 2 * Math.PI * u();
    out[i] = std * r * Math.cos(t);
    if (i + 1 < n) out[i + 1] = std * r * Math.sin(t);
  }
  return out;
}

function toBf16Bytes(x: Float32Array): Uint8Array {
  const u = new Uint32Array(x.buffer, x.byteOffset, x.length);
  const out = new Uint16Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = (u[i] + 0x7fff + ((u[i] >> 16) & 1)) >>> 16; // round to nearest even
  return new Uint8Array(out.buffer);
}

/** Writes config.json + model.safetensors (bf16) once; later runs reuse the folder. */
async function writeRandomModel(dir: string, config: Record<string, unknown>): Promise<void> {
  if (existsSync(join(dir, 'model.safetensors'))) return;
  mkdirSync(dir, { recursive: true });
  const c = parseModelConfig(config);
  // A tied head is the embedding: like save_pretrained, the file holds no lm_head.weight.
  const tensors: TensorToWrite[] = expectedWeights(c)
    .filter((w) => !w.optional)
    .map((w, i) => {
      const n = w.shape.reduce((a, b) => a * b, 1);
      const norm = /norm\.weight$/.test(w.name);
      return {
        name: w.name,
        dtype: 'BF16',
        shape: w.shape,
        // Norm gains near 1 (as trained models have), everything else N(0, 0.02) like initializer_range.
        data: () => toBf16Bytes(norm ? normals(n, 1000 + i, 0.1).map((v) => 1 + v) : normals(n, 1000 + i, 0.02)),
      };
    });
  const file = createWriteStream(join(dir, 'model.safetensors'));
  await writeSafetensors(
    {
      write: (chunk) => new Promise<void>((res, rej) => file.write(chunk, (e) => (e ? rej(e) : res()))),
    },
    tensors,
    { format: 'pt' },
  );
  await new Promise<void>((res) => file.end(res));
  writeFileSync(join(dir, 'config.json'), JSON.stringify(config, null, 2));
}

function rel(a: number, b: number): number {
  return Math.abs(a - b) / Math.max(Math.abs(b), 1e-12);
}

async function main(): Promise<void> {
  const base = KNOWN_CONFIGS[MODELS[modelKey]];
  if (!base) throw new Error(`--model must be one of ${Object.keys(MODELS).join(', ')}`);
  const layers = Number(opt('layers', String(base.num_hidden_layers)));
  const config = { ...base, num_hidden_layers: layers };
  const name = `qwen2.5-${modelKey}${layers === base.num_hidden_layers ? '' : `-L${layers}`}`;
  const dir = join('.cache', 'real-size', name);
  const t0 = performance.now();
  await writeRandomModel(dir, config);
  const writeS = (performance.now() - t0) / 1000;

  const { gpu, close } = await nodeGpu(nodeShaders(), { log: (l) => console.error(l) });
  const row: Record<string, unknown> = { model: name, method, gradientCheckpointing: ckpt, batch: 1, seq, rank: RANK };
  if (memoryOptions) row.memoryOptions = 'nf4 head, bf16 checkpoints, 16-row loss chunks';
  try {
    const load = {
      ...(method === 'qlora' ? ({ quantize: 'nf4', doubleQuant: true } as const) : {}),
      ...(memoryOptions ? ({ head: 'nf4' } as const) : {}),
    };
    const { model, files } = await loadFolderModel(gpu, dir, load);
    try {
      const lora = attachLora(model, { rank: RANK, alpha: ALPHA, dropout: 0, targets: 'all', seed: 7 });
      // B starts at zero in PEFT; a non-zero B makes every LoRA gradient (A's too) worth comparing.
      // Host copies of the adapters as they are for the step go to PyTorch.
      const loraTensors: TensorToWrite[] = [];
      let i = 0;
      for (const [mod, st] of lora.adapters) {
        const b = normals(st.B.shape[0] * st.B.shape[1], 50 + i++, 0.01);
        writeTensor(gpu, st.B, b);
        const a = await readF32(gpu, st.A);
        loraTensors.push({ name: `${mod}.lora_A`, dtype: 'F32', shape: st.A.shape, data: new Uint8Array(a.buffer) });
        loraTensors.push({ name: `${mod}.lora_B`, dtype: 'F32', shape: st.B.shape, data: new Uint8Array(b.buffer) });
      }
      const ids = new Int32Array(seq).map((_, n) => (n * 7919 + 13) % model.config.vocabSize);
      say('measuring the matmul kernels for this model (once per adapter; cached)');
      const tuneT0 = performance.now();
      const step = {
        tokens: seq,
        backward: true,
        loraRank: RANK,
        ...(memoryOptions ? { lossChunkRows: SMALL_LOSS_CHUNK_ROWS } : {}),
      };
      const prefill = { tokens: DECODE_PROMPT, backward: false, loraRank: RANK, prefill: true };
      const tuned = await tuneMatmul(gpu, [...modelMatmulShapes(model, step), ...modelMatmulShapes(model, prefill)], {
        store: nodeKernelStore(),
      });
      const loraForm = (await tuneLora(gpu, { store: nodeKernelStore() }))?.chosen;
      row.tuning = {
        seconds: (performance.now() - tuneT0) / 1000,
        chosen: summariseTuning(tuned),
        ...(loraForm ? { lora: loraForm } : {}),
      };
      say(`loaded ${name} (${method})${args.includes('--no-decode') ? '' : `; decoding ${DECODE_NEW} greedy tokens`}`);
      // Greedy decode first: the step below moves the adapters, and PyTorch decodes with them as written.
      let greedy: number[] = [];
      if (!args.includes('--no-decode')) {
        const decodeProfiler = args.includes('--profile') ? gpu.startProfiling() : null;
        const d = await generateAll(model, lora, ids.subarray(0, DECODE_PROMPT), {
          ...DEFAULT_SAMPLING, // greedy
          maxNewTokens: DECODE_NEW,
          stopIds: [],
        });
        greedy = [...d.tokens];
        row.decodeMsPerToken = +(d.decodeMs / Math.max(1, d.tokens.length - 1)).toFixed(1);
        row.prefillMs = Math.round(d.prefillMs);
        if (decodeProfiler) {
          gpu.profiler = null;
          printProfile(await decodeProfiler.report(), d.prefillMs + d.decodeMs, 'prefill and decode');
        }
      }
      const trainer = new Trainer(model, lora, {
        learningRate: 1e-4,
        lrSchedulerType: 'constant',
        totalSteps: 1,
        maxGradNorm: 0,
        gradientCheckpointing: ckpt,
        seed: 1,
        ...(memoryOptions ? { checkpointPrecision: 'bf16' as const, lossChunkRows: SMALL_LOSS_CHUNK_ROWS } : {}),
      });
      say(`one training step, batch 1 × ${seq}, gradient checkpointing ${ckpt ? 'on' : 'off'}`);
      gpu.ledger.resetPeaks();
      const profiler = args.includes('--profile') ? gpu.startProfiling() : null;
      const s0 = performance.now();
      const r = await trainer.step([{ batch: 1, seqLen: seq, inputIds: ids, labels: ids }]);
      const stepMs = performance.now() - s0;
      if (profiler) {
        gpu.profiler = null;
        printProfile(await profiler.report(), stepMs, 'step');
      }
      const ledger = gpu.ledger.report();
      const plan = planMemory(model.config, {
        method,
        batchSize: 1,
        seqLen: seq,
        packing: true,
        loraRank: RANK,
        loraTargets: lora.targets,
        doubleQuant: true,
        gradientCheckpointing: ckpt,
        storageOffsetAlignment: gpu.limits.minStorageBufferOffsetAlignment,
        ...(memoryOptions
          ? {
              headPrecision: 'nf4' as const,
              checkpointPrecision: 'bf16' as const,
              lossChunkRows: SMALL_LOSS_CHUNK_ROWS,
            }
          : {}),
      });
      const peakTotal = MEMORY_CATEGORIES.reduce((a, k) => a + ledger.peak[k], 0);
      Object.assign(row, {
        loss: r.loss,
        stepMs: Math.round(stepMs),
        tokensPerS: +((seq / stepMs) * 1000).toFixed(3),
        dispatches: r.dispatches,
        readbacks: r.readbacks,
        ledgerPeak: Object.fromEntries(MEMORY_CATEGORIES.map((k) => [k, ledger.peak[k]])),
        ledgerPeakTotal: peakTotal,
        planned: plan.byCategory,
        plannedTotal: plan.total,
        planError: +(plan.total / peakTotal - 1).toFixed(4),
      });
      const ourNorms: Record<string, number> = {};
      for (const mod of lora.adapters.keys()) {
        for (const which of ['A', 'B'] as const) {
          const g = await readF32(gpu, trainer.decoder.grads.get(`${mod}.lora_${which}`)!);
          ourNorms[`${mod}.lora_${which}`] = Math.sqrt(g.reduce((a, v) => a + v * v, 0));
        }
      }
      trainer.release();
      lora.release();
      if (!args.includes('--no-torch')) {
        const work = join(dir, `check-${method}`);
        mkdirSync(work, { recursive: true });
        const sink = createWriteStream(join(work, 'lora.safetensors'));
        await writeSafetensors({ write: (c) => void sink.write(c) }, loraTensors, null, 'lora.safetensors');
        await new Promise<void>((res) => sink.end(res));
        // Ours beside the batch, so the PyTorch side can be re-run and compared without another step.
        writeFileSync(join(work, 'ours.json'), JSON.stringify({ loss: r.loss, gradNorms: ourNorms, greedy }));
        writeFileSync(
          join(work, 'batch.json'),
          JSON.stringify({
            ids: [...ids],
            labels: [...ids],
            rank: RANK,
            alpha: ALPHA,
            decodePrompt: DECODE_PROMPT,
            decodeNew: greedy.length ? DECODE_NEW : 0,
          }),
        );
        const py = [
          'tests/reference/real_size_step.py',
          dir,
          join(work, 'lora.safetensors'),
          join(work, 'batch.json'),
          join(work, 'torch.json'),
        ];
        if (method === 'qlora') py.push('--nf4', '--dq');
        say('the same step and decode in PyTorch (CPU, f32)');
        execFileSync('/usr/bin/python3', py, {
          stdio: 'inherit',
          cwd: process.cwd(),
          env: { ...process.env, PYTHONPATH: 'tests/reference' },
        });
        const t = JSON.parse(readFileSync(join(work, 'torch.json'), 'utf8')) as {
          loss: number;
          gradNorms: Record<string, number>;
          greedy: number[];
          stepSeconds: number;
        };
        const normRel = Object.keys(t.gradNorms).map((k) => rel(ourNorms[k], t.gradNorms[k]));
        Object.assign(row, {
          torchLoss: t.loss,
          lossRel: +rel(r.loss, t.loss).toExponential(2),
          gradNormRelMax: +Math.max(...normRel).toExponential(2),
          gradNormsCompared: normRel.length,
          torchStepS: +t.stepSeconds.toFixed(1),
          greedyEqual: greedy.length ? JSON.stringify(greedy) === JSON.stringify(t.greedy) : null,
          greedy,
          agree:
            rel(r.loss, t.loss) <= 1e-3 &&
            Math.max(...normRel) <= 1e-2 &&
            !(greedy.length && JSON.stringify(greedy) !== JSON.stringify(t.greedy)),
        });
      }
    } finally {
      model.release();
      await files.source.close?.();
    }
  } finally {
    close();
  }
  row.modelWriteS = +writeS.toFixed(1);
  row.rowS = Math.round((performance.now() - t0) / 1000);
  row.date = new Date().toISOString().slice(0, 10);
  row.adapter = 'see bench/results.json runtime';
  console.log(JSON.stringify(row));
  const resultsPath = 'bench/results.json';
  const all = JSON.parse(readFileSync(resultsPath, 'utf8')) as Record<string, unknown>;
  const real = (all.real as Record<string, unknown>[] | undefined) ?? [];
  const key = (x: Record<string, unknown>) =>
    `${x.model}|${x.method}|${x.gradientCheckpointing}|${x.seq}|${x.memoryOptions ?? ''}`;
  all.real = [...real.filter((x) => key(x) !== key(row)), row];
  writeFileSync(resultsPath, JSON.stringify(all, null, 2) + '\n');
  if (row.agree === false) process.exitCode = 1;
}

/** The kernels that took 1 % of the step or more, longest first. */
function printProfile(times: KernelTime[], wallMs: number, what: string): void {
  const gpuMs = times.reduce((a, t) => a + t.ms, 0);
  say(`GPU time ${(gpuMs / 1000).toFixed(1)} s of the ${(wallMs / 1000).toFixed(1)} s ${what}, by kernel:`);
  for (const t of times.filter((t) => t.ms >= gpuMs / 100)) {
    say(`  ${(t.ms / 1000).toFixed(1).padStart(7)} s ${String(t.count).padStart(5)}× ${t.kernel.slice(0, 160)}`);
  }
}

await main();
