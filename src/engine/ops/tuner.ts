// Picks the fastest verified variant of a kernel family per shape class by timing every variant
// on this adapter (integrated, discrete, Apple, mobile and CPU-emulated adapters rank them
// differently; see shaders/matmul.wgsl). Two rounds keep this cheap everywhere: a small probe
// (which also compiles each pipeline) drops variants more than PROBE_MARGIN× slower than the
// best, then the survivors are timed at the class's own shape (capped at TIMED_FLOPS: big enough
// to fill a GPU, small enough to take well under a second on a CPU-emulated adapter), as many
// repetitions in one submission as fit in TARGET_MS, in TIMED_ROUNDS interleaved rounds.
import type { Gpu } from '../gpu/device.ts';
import type { KernelChoiceStore } from '../gpu/kernel-choices.ts';
import { Recorder } from '../gpu/recorder.ts';
import { releaseTensor, tensorSpec, uploadTensor } from '../gpu/transfer.ts';
import type { Tensor } from '../gpu/tensor.ts';
import { toBf16, toF16 } from '../numeric/half.ts';
import { matmul, MATMUL_VARIANT_NAMES, matmulShapeClass, type MatmulShape, type MatmulVariant } from './matmul.ts';
import { quantizeNf4, releaseNf4, type Nf4Weight } from './nf4.ts';
import { crossEntropy } from './cross_entropy.ts';
import { matvec, MATVEC_CLASS, MATVEC_VARIANT_NAMES, type MatvecVariant } from './matvec.ts';
import { LORA_CLASS, LORA_FAMILY, LORA_VARIANT_NAMES, skinny, type LoraVariant } from './lora.ts';
import { REDUCE_CLASS, REDUCE_FAMILY, reduceVariants, type ReduceVariant } from './reduce.ts';
import { rmsnormForward } from './rmsnorm.ts';

const PROBE_FLOPS = 2 ** 22;
const TIMED_FLOPS = 2 ** 27;
const PROBE_MARGIN = 2;
const TARGET_MS = 20;
const TIMED_ROUNDS = 3;
const MAX_REPS = 64;

export interface TuneResult {
  family: 'matmul';
  shapeClass: string;
  /** The variant now serving the class. */
  chosen: MatmulVariant;
  /** ms per product at the timed shape; null for a variant dropped by the probe. */
  ms: Partial<Record<MatmulVariant, number | null>>;
  timed: MatmulShape;
}

export interface ReduceTuneResult {
  family: 'reduce';
  chosen: ReduceVariant;
  /** ms of the probe workload (RMSNorm forward 512×896 + cross-entropy 16×32768) per variant. */
  ms: Partial<Record<ReduceVariant, number>>;
}

export interface TuneOptions {
  store?: KernelChoiceStore;
  log?: (line: string) => void;
}

/**
 * Ensures every shape's class has a measured variant (from the store, or timed now); returns what
 * it timed. A forced variant (TABTUNE_KERNELS) skips all of this.
 */
export async function tuneMatmul(
  gpu: Gpu,
  shapes: readonly MatmulShape[],
  opts: TuneOptions = {},
): Promise<TuneResult[]> {
  if (gpu.kernels.isForced('matmul')) return [];
  const key = adapterKey(gpu);
  if (opts.store) gpu.kernels.restore((await opts.store.load(key)) ?? {});
  const todo = new Map<string, MatmulShape>();
  for (const s of shapes) {
    const cls = matmulShapeClass(s);
    if (!gpu.kernels.has('matmul', cls) && !todo.has(cls)) todo.set(cls, s);
  }
  const results: TuneResult[] = [];
  for (const [cls, shape] of todo) {
    const r = await tuneClass(gpu, cls, shape);
    gpu.kernels.set('matmul', cls, r.chosen);
    opts.log?.(`tabtune: matmul ${cls} → ${r.chosen} (${describeTimes(r.ms)})`);
    results.push(r);
  }
  if (opts.store && results.length) await opts.store.save(key, gpu.kernels.toRecord());
  return results;
}

async function tuneClass(gpu: Gpu, shapeClass: string, shape: MatmulShape): Promise<TuneResult> {
  const ms: Partial<Record<MatmulVariant, number | null>> = {};
  const probe = await Problem.create(gpu, shrink(shape, PROBE_FLOPS));
  try {
    for (const v of MATMUL_VARIANT_NAMES) {
      await probe.run(v, 1); // compiles the pipeline
      ms[v] = await probe.time(v);
    }
  } finally {
    probe.release();
  }
  const best = Math.min(...MATMUL_VARIANT_NAMES.map((v) => ms[v]!));
  const survivors = MATMUL_VARIANT_NAMES.filter((v) => ms[v]! <= best * PROBE_MARGIN);
  for (const v of MATMUL_VARIANT_NAMES) if (!survivors.includes(v)) ms[v] = null;
  const timed = shrink(shape, TIMED_FLOPS);
  if (survivors.length > 1) {
    const full = await Problem.create(gpu, timed);
    try {
      // Interleaved rounds, each variant's best kept: a burst of other work on the machine then
      // slows one round of every variant rather than deciding the pick.
      for (let round = 0; round < TIMED_ROUNDS; round++) {
        for (const v of survivors) {
          const t = await full.time(v);
          ms[v] = round === 0 ? t : Math.min(ms[v]!, t);
        }
      }
    } finally {
      full.release();
    }
  }
  const chosen = survivors.reduce((a, b) => (ms[b]! < ms[a]! ? b : a));
  return { family: 'matmul', shapeClass, chosen, ms, timed };
}

/**
 * Picks tree or subgroup reductions (ops/reduce.ts) for this adapter by timing an RMSNorm forward
 * and a cross-entropy with each; nothing to measure without the subgroups feature or when forced.
 */
export async function tuneReductions(gpu: Gpu, opts: TuneOptions = {}): Promise<ReduceTuneResult | null> {
  const variants = reduceVariants(gpu);
  if (gpu.kernels.isForced(REDUCE_FAMILY) || variants.length < 2) return null;
  const key = adapterKey(gpu);
  if (opts.store) gpu.kernels.restore((await opts.store.load(key)) ?? {});
  if (gpu.kernels.has(REDUCE_FAMILY, REDUCE_CLASS)) return null;
  const [rows, width, ceRows, vocab] = [512, 896, 16, 32768];
  const spec = (n: number, label: string) => tensorSpec('f32', [n], 'scratch', label);
  const x = uploadTensor(gpu, filled(rows * width, 3), spec(rows * width, 'tune.x'));
  const w = uploadTensor(gpu, filled(width, 4), spec(width, 'tune.w'));
  const y = uploadTensor(gpu, new Float32Array(rows * width), spec(rows * width, 'tune.y'));
  const rstd = uploadTensor(gpu, new Float32Array(rows), spec(rows, 'tune.rstd'));
  const logits = uploadTensor(gpu, filled(ceRows * vocab, 5), spec(ceRows * vocab, 'tune.logits'));
  const labels = uploadTensor(
    gpu,
    Int32Array.from({ length: ceRows }, (_, i) => (i * 997) % vocab),
    {
      ...tensorSpec('i32', [ceRows], 'scratch', 'tune.labels'),
    },
  );
  const rowLoss = uploadTensor(gpu, new Float32Array(ceRows), spec(ceRows, 'tune.rowLoss'));
  let ms: Record<ReduceVariant, number>;
  try {
    ms = await timeForms(gpu, variants, 'tune.reduce', async (rec, variant) => {
      gpu.kernels.set(REDUCE_FAMILY, REDUCE_CLASS, variant);
      await rmsnormForward(rec, { x, weight: w, y, rstd, rows, width, eps: 1e-6 });
      await crossEntropy(rec, { logits, labels, rowLoss, lossScale: 1, rows: ceRows, vocab, writeGrad: false });
    });
  } finally {
    [x, w, y, rstd, logits, labels, rowLoss].forEach((t) => releaseTensor(gpu, t));
  }
  const chosen = variants.reduce((a, b) => (ms[b] < ms[a] ? b : a));
  gpu.kernels.set(REDUCE_FAMILY, REDUCE_CLASS, chosen);
  opts.log?.(`tabtune: reductions → ${chosen} (${describeTimes(ms)})`);
  if (opts.store) await opts.store.save(key, gpu.kernels.toRecord());
  return { family: 'reduce', chosen, ms };
}

export interface LoraTuneResult {
  family: 'lora';
  chosen: LoraVariant;
  /** ms of the probe (t = x·Aᵀ and dA = gᵀ·x at 256 tokens, 896 wide, rank 8) per form. */
  ms: Partial<Record<LoraVariant, number>>;
}

/** Times the skinny LoRA products' forms once per adapter (the store remembers); null when known or forced. */
export async function tuneLora(gpu: Gpu, opts: TuneOptions = {}): Promise<LoraTuneResult | null> {
  if (gpu.kernels.isForced(LORA_FAMILY)) return null;
  const key = adapterKey(gpu);
  if (opts.store) gpu.kernels.restore((await opts.store.load(key)) ?? {});
  if (gpu.kernels.has(LORA_FAMILY, LORA_CLASS)) return null;
  const [T, width, r] = [256, 896, 8];
  const spec = (n: number, label: string) => tensorSpec('f32', [n], 'scratch', label);
  const x = uploadTensor(gpu, filled(T * width, 6), spec(T * width, 'tune.lora.x'));
  const a = uploadTensor(gpu, filled(r * width, 7), spec(r * width, 'tune.lora.A'));
  const t = uploadTensor(gpu, filled(T * r, 8), spec(T * r, 'tune.lora.t'));
  const dA = uploadTensor(gpu, new Float32Array(r * width), spec(r * width, 'tune.lora.dA'));
  let ms: Record<LoraVariant, number>;
  try {
    ms = await timeForms(gpu, LORA_VARIANT_NAMES, 'tune.lora', async (rec, variant) => {
      const tShape = { M: T, N: r, K: width, aRow: width, aCol: 1, bRow: width, bCol: 1 };
      await skinny(rec, { variant, a: x, b: a, c: t, ...tShape }, 'tune t');
      const dAShape = { M: r, N: width, K: T, aRow: 1, aCol: r, bRow: 1, bCol: width };
      await skinny(rec, { variant, a: t, b: x, c: dA, ...dAShape }, 'tune dA');
    });
  } finally {
    [x, a, t, dA].forEach((z) => releaseTensor(gpu, z));
  }
  const chosen = LORA_VARIANT_NAMES.reduce((p, q) => (ms[q] < ms[p] ? q : p));
  gpu.kernels.set(LORA_FAMILY, LORA_CLASS, chosen);
  opts.log?.(`tabtune: LoRA products → ${chosen} (${describeTimes(ms)})`);
  if (opts.store) await opts.store.save(key, gpu.kernels.toRecord());
  return { family: 'lora', chosen, ms };
}

export interface MatvecTuneResult {
  family: 'matvec';
  chosen: MatvecVariant;
  /** ms per product at the probe shape (a 0.5B model's gate projection cut to 1024 outputs, bf16). */
  ms: Record<MatvecVariant, number>;
}

/**
 * Times the decode matrix-vector forms once per process (about a second on SwiftShader) and serves
 * the fastest from then on; null when already measured, or when TABTUNE_KERNELS forces one.
 */
export async function tuneMatvec(gpu: Gpu): Promise<MatvecTuneResult | null> {
  if (gpu.kernels.isForced('matvec') || gpu.kernels.has('matvec', MATVEC_CLASS)) return null;
  const [N, K] = [1024, 896];
  const words = new Uint32Array((N * K) / 2);
  // bf16 pairs of small values (exponent 0x3c, varying mantissa): no NaN, no denormal.
  for (let i = 0; i < words.length; i++) words[i] = (0x3c00 + (i % 127)) * 0x10001;
  const w = uploadTensor(gpu, new Uint16Array(words.buffer), tensorSpec('bf16', [N, K], 'scratch', 'tune.matvec.W'));
  const x = uploadTensor(gpu, new Float32Array(K).fill(0.5), tensorSpec('f32', [1, K], 'scratch', 'tune.matvec.x'));
  const y = uploadTensor(gpu, new Float32Array(N), tensorSpec('f32', [1, N], 'scratch', 'tune.matvec.y'));
  let ms: Record<MatvecVariant, number>;
  try {
    ms = await timeForms(gpu, MATVEC_VARIANT_NAMES, 'tune.matvec', (rec, variant) =>
      matvec(rec, { x, w, y, rows: 1, N, K, variant }),
    );
  } finally {
    [w, x, y].forEach((t) => releaseTensor(gpu, t));
  }
  const chosen = MATVEC_VARIANT_NAMES.reduce((a, b) => (ms[b] < ms[a] ? b : a));
  gpu.kernels.set('matvec', MATVEC_CLASS, chosen);
  return { family: 'matvec', chosen, ms };
}

/**
 * ms per repetition of `record` for each form: one run compiles, a second sizes the repetitions
 * (as many as fit in TARGET_MS, in one submission), a third times them.
 */
async function timeForms<V extends string>(
  gpu: Gpu,
  forms: readonly V[],
  label: string,
  record: (rec: Recorder, form: V) => Promise<void>,
): Promise<Record<V, number>> {
  const run = async (form: V, reps: number) => {
    const rec = new Recorder(gpu, `${label}.${form}`);
    for (let i = 0; i < reps; i++) await record(rec, form);
    const t0 = performance.now();
    await rec.submit();
    await gpu.device.queue.onSubmittedWorkDone();
    return (performance.now() - t0) / reps;
  };
  const ms = {} as Record<V, number>;
  for (const f of forms) {
    const once = await run(f, 1); // compiles
    const again = await run(f, 1);
    const reps = Math.max(1, Math.min(MAX_REPS, Math.floor(TARGET_MS / Math.max(again, 1e-3))));
    ms[f] = reps === 1 ? Math.min(once, again) : await run(f, reps);
  }
  return ms;
}

/** Halves the largest extent until the product is at most `flops` (the class's character kept: transposes, format). */
function shrink(s: MatmulShape, flops: number): MatmulShape {
  const d = { ...s };
  while (2 * d.M * d.N * d.K > flops) {
    if (d.M >= d.N && d.M >= d.K) d.M = Math.ceil(d.M / 2);
    else if (d.N >= d.K) d.N = Math.ceil(d.N / 2);
    else d.K = Math.ceil(d.K / 2);
  }
  return d;
}

/** Synthetic operands of one shape, in the weight format of the class. */
class Problem {
  private constructor(
    private readonly gpu: Gpu,
    private readonly s: MatmulShape,
    private readonly a: Tensor,
    private readonly b: Tensor | Nf4Weight,
    private readonly c: Tensor,
  ) {}

  static async create(gpu: Gpu, s: MatmulShape): Promise<Problem> {
    const a = uploadTensor(gpu, filled(s.M * s.K, 1), tensorSpec('f32', [s.M * s.K], 'scratch', 'tune.A'));
    const c = uploadTensor(gpu, new Float32Array(s.M * s.N), tensorSpec('f32', [s.M * s.N], 'scratch', 'tune.C'));
    const w = filled(s.K * s.N, 2);
    let b: Tensor | Nf4Weight;
    if (s.weight === 'nf4') {
      const src = uploadTensor(gpu, w, tensorSpec('f32', [s.K * s.N], 'scratch', 'tune.W'));
      const rec = new Recorder(gpu, 'tune.quantize');
      const q = await quantizeNf4(rec, { src, label: 'tune.B', category: 'scratch' });
      await rec.submit();
      [src, ...q.scratch].forEach((t) => releaseTensor(gpu, t));
      b = q.weight;
    } else {
      const host = s.weight === 'bf16' ? toBf16(w) : s.weight === 'f16' ? toF16(w) : w;
      b = uploadTensor(gpu, host, tensorSpec(s.weight as 'f32' | 'bf16' | 'f16', [s.K * s.N], 'scratch', 'tune.B'));
    }
    return new Problem(gpu, s, a, b, c);
  }

  /** ms per product: one timed submission, then as many repetitions as fit in TARGET_MS if it was quick. */
  async time(variant: MatmulVariant): Promise<number> {
    const once = await this.run(variant, 1);
    const reps = Math.max(1, Math.min(MAX_REPS, Math.floor(TARGET_MS / Math.max(once, 1e-3))));
    return reps === 1 ? once : this.run(variant, reps);
  }

  async run(variant: MatmulVariant, reps: number): Promise<number> {
    const { M, N, K, transA, transB } = this.s;
    const rec = new Recorder(this.gpu, `tune.matmul.${variant}`);
    for (let r = 0; r < reps; r++) {
      await matmul(rec, { a: this.a, b: this.b, c: this.c, M, N, K, transA, transB, variant });
    }
    const t0 = performance.now();
    await rec.submit();
    await this.gpu.device.queue.onSubmittedWorkDone();
    return (performance.now() - t0) / reps;
  }

  release(): void {
    releaseTensor(this.gpu, this.a);
    releaseTensor(this.gpu, this.c);
    if ('packed' in this.b) releaseNf4(this.gpu, this.b);
    else releaseTensor(this.gpu, this.b);
  }
}

function filled(n: number, seed: number): Float32Array {
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) x[i] = (((i + seed) * 2654435761) % 1000) / 1000 - 0.5;
  return x;
}

function describeTimes(ms: Readonly<Record<string, number | null | undefined>>): string {
  return Object.entries(ms)
    .map(([v, t]) => `${v} ${t === null ? 'dropped' : `${t!.toFixed(3)} ms`}`)
    .join(', ');
}

/**
 * Stored choices are valid for one adapter running one set of shaders: a driver update that
 * renames the adapter, or any shader change, measures again.
 */
export function adapterKey(gpu: Gpu): string {
  const a = gpu.adapter;
  return `${a.vendor}|${a.architecture}|${a.device}|${a.description}|shaders:${fnv1a(Object.entries(gpu.shaders).sort().flat().join('\0'))}`;
}

function fnv1a(text: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h.toString(16).padStart(8, '0');
}

/** "7 shape classes: register8x8 ×5, tiled64 ×2" — one line for a log. */
export function summariseTuning(results: readonly TuneResult[]): string {
  const counts = new Map<string, number>();
  for (const r of results) counts.set(r.chosen, (counts.get(r.chosen) ?? 0) + 1);
  const parts = [...counts].sort((a, b) => b[1] - a[1]).map(([v, n]) => `${v} ×${n}`);
  return `${results.length} shape class${results.length === 1 ? '' : 'es'}: ${parts.join(', ')}`;
}
