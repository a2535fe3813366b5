// Helpers for the engine tests: models from the PyTorch fixtures of tests/reference/gen_engine.py.
import { expect } from 'vitest';
import type { Gpu } from '../../src/engine/gpu/index.ts';
import { readF32, Recorder, releaseTensor, tensorSpec, writeTensor, zerosTensor } from '../../src/engine/gpu/index.ts';
import { prepareBatch, type MicroBatch } from '../../src/engine/model/batch.ts';
import { Decoder } from '../../src/engine/model/decoder.ts';
import { forwardLogits, KvCache } from '../../src/engine/model/infer.ts';
import { expectedWeights, parseModelConfig, type ModelConfig } from '../../src/engine/model/config.ts';
import { loadModel, type LoadOptions } from '../../src/engine/model/load.ts';
import { attachLora, type LoraSet, type Model } from '../../src/engine/model/model.ts';
import { memoryWeightSource, type WeightSource } from '../../src/engine/model/weights.ts';
import type { Fixture } from '../reference/fixtures.ts';
import { randn } from '../cpu/random.ts';
import { relError } from '../cpu/compare.ts';
import { testGpu } from './context.ts';

export function fixtureSource(fx: Fixture): WeightSource {
  const map = new Map<string, { dtype: string; shape: number[]; bytes: Uint8Array }>();
  for (const [k, t] of Object.entries(fx.t)) {
    if (!k.startsWith('w:')) continue;
    const d = t.data;
    map.set(k.slice(2), {
      dtype: t.dtype === 'f32' ? 'F32' : t.dtype === 'bf16' ? 'BF16' : 'F16',
      shape: t.shape,
      bytes: new Uint8Array(d.buffer, d.byteOffset, d.byteLength),
    });
  }
  return memoryWeightSource(map, `fixture`);
}

/**
 * Seeded random F32 weights for every non-optional weight of `c` (seeds 11, 12, … in
 * expectedWeights order): embeddings ~N(0, 1), linear layers scaled by 1.5/√fan-in, norms 1 ± 0.1.
 */
export function randomWeightSource(c: ModelConfig, name: string): WeightSource {
  const map = new Map<string, { dtype: string; shape: number[]; bytes: Uint8Array }>();
  let s = 11;
  for (const w of expectedWeights(c)) {
    if (w.optional) continue;
    const n = w.shape.reduce((a, b) => a * b, 1);
    const v = randn(n, s++, w.role === 'embed' ? 1 : w.role === 'linear' ? 1.5 / Math.sqrt(w.shape[1]) : 0.1);
    if (w.role === 'norm') for (let i = 0; i < n; i++) v[i] += 1;
    map.set(w.name, { dtype: 'F32', shape: [...w.shape], bytes: new Uint8Array(v.buffer) });
  }
  return memoryWeightSource(map, name);
}

export async function fixtureModel(
  gpu: Gpu,
  fx: Fixture,
  weightsFx: Fixture = fx,
  opts: LoadOptions = {},
): Promise<Model> {
  const config = parseModelConfig(fx.meta.config as Record<string, unknown>, 'fixture config');
  return loadModel(gpu, config, fixtureSource(weightsFx), opts);
}

/** Attaches adapters on `targets` and sets A (and B when the fixture has it) to the fixture's values. */
export function fixtureLora(
  model: Model,
  fx: Fixture,
  targets: string[] | 'all',
  rank: number,
  alpha: number,
  dropout = 0,
  seed = 0,
): LoraSet {
  const lora = attachLora(model, { rank, alpha, dropout, targets, seed });
  for (const [name, st] of lora.adapters) {
    writeTensor(model.gpu, st.A, fx.f32(`lora_A:${name}`));
    if (fx.t[`lora_B:${name}`]) writeTensor(model.gpu, st.B, fx.f32(`lora_B:${name}`));
  }
  return lora;
}

export async function readAll(gpu: Gpu, lora: LoraSet): Promise<Map<string, Float32Array>> {
  const out = new Map<string, Float32Array>();
  for (const [name, st] of lora.adapters) {
    out.set(`A:${name}`, await readF32(gpu, st.A));
    out.set(`B:${name}`, await readF32(gpu, st.B));
  }
  return out;
}

/** Rows of a [N, V] matrix whose segment id is ≥ 0 (non-padding). */
export function realRows(m: Float32Array, segments: Int32Array, V: number): Float32Array {
  const rows: number[] = [];
  segments.forEach((s, n) => s >= 0 && rows.push(n));
  const out = new Float32Array(rows.length * V);
  rows.forEach((n, i) => out.set(m.subarray(n * V, (n + 1) * V), i * V));
  return out;
}

/** The fixture's batch (ids, labels, positions, segments of B rows of T tokens). */
export function fixtureBatch(fx: Fixture): MicroBatch {
  return {
    batch: fx.meta.B as number,
    seqLen: fx.meta.T as number,
    inputIds: fx.t.ids.data as Int32Array,
    labels: fx.t.labels.data as Int32Array,
    positionIds: fx.t.positions.data as Int32Array,
    segmentIds: fx.t.segments.data as Int32Array,
  };
}

export interface PassResult {
  logits: Float32Array;
  loss: number;
  grads: Map<string, Float32Array>;
}

export interface PassOptions {
  full?: boolean;
  checkpointing?: boolean;
  checkpointPrecision?: 'f32' | 'bf16';
  lossChunkRows?: number;
  dropout?: number;
  /** How the fixture's weights load (e.g. computeDType f32 for full fine-tuning). */
  load?: LoadOptions;
}

/**
 * One evaluation pass (logits, loss) and one training pass (gradients) of the fixture's batch with
 * LoRA on every module (A and B from the fixture); the training pass's loss must equal the
 * evaluation pass's.
 */
export async function evalAndTrainPass(fx: Fixture, opts: PassOptions): Promise<PassResult> {
  const gpu = await testGpu();
  const model = await fixtureModel(gpu, fx, fx, opts.load ?? {});
  try {
    return await passOnModel(gpu, model, fx, opts);
  } finally {
    model.release();
  }
}

/** evalAndTrainPass on a model the caller loaded (and releases). */
export async function passOnModel(gpu: Gpu, model: Model, fx: Fixture, opts: PassOptions): Promise<PassResult> {
  const lora = fixtureLora(model, fx, 'all', fx.meta.rank, fx.meta.alpha, opts.dropout ?? 0, 21);
  const dec = new Decoder(model, lora, {
    full: opts.full,
    checkpointing: opts.checkpointing,
    checkpointPrecision: opts.checkpointPrecision,
    lossChunkRows: opts.lossChunkRows,
  });
  const hb = prepareBatch(fixtureBatch(fx));
  expect(hb.labelCount).toBe(fx.meta.count);
  const V = model.config.vocabSize;
  const logitsT = zerosTensor(gpu, tensorSpec('f32', [hb.N, V], 'scratch', 'test logits'));
  const accum = zerosTensor(gpu, tensorSpec('f32', [4], 'scratch', 'test loss'));
  try {
    const inputs = dec.uploadInputs(hb, 0);
    await dec.forwardLoss(inputs, { lossScale: 1 / hb.labelCount, accum, accumIndex: 0 }, { logits: logitsT });
    const rec = new Recorder(gpu, 'clear');
    dec.clearGrads(rec);
    await rec.submit();
    await dec.trainMicroBatch(inputs, { lossScale: 1 / hb.labelCount, accum, accumIndex: 1 });
    dec.releaseInputs(inputs);
    const grads = new Map<string, Float32Array>();
    for (const [k, t] of dec.grads) grads.set(k, await readF32(gpu, t));
    const acc = await readF32(gpu, accum);
    expect(Math.abs(acc[1] - acc[0]), 'training loss = evaluation loss').toBeLessThan(1e-5 * Math.abs(acc[0]));
    return { logits: await readF32(gpu, logitsT), loss: acc[0], grads };
  } finally {
    releaseTensor(gpu, logitsT);
    releaseTensor(gpu, accum);
    dec.release();
    lora.release();
  }
}

/** Logits of every position of one sequence, from prefixes without a cache (the full forward). */
export async function forwardLogitsAll(model: Model, lora: LoraSet | null, ids: Int32Array): Promise<Float32Array> {
  const V = model.config.vocabSize;
  const out = new Float32Array(ids.length * V);
  for (let n = 0; n < ids.length; n++) out.set(await forwardLogits(model, lora, ids.subarray(0, n + 1), null), n * V);
  return out;
}

/**
 * The worst relative error between decoding `ids` one token at a time through a fresh KV cache and
 * `full`, the full forward's logits at every position.
 */
export async function cachedDecodeWorstRel(
  model: Model,
  lora: LoraSet | null,
  ids: Int32Array,
  full: Float32Array,
): Promise<number> {
  const V = model.config.vocabSize;
  const cache = new KvCache(model, ids.length);
  try {
    let worst = 0;
    for (let n = 0; n < ids.length; n++) {
      const step = await forwardLogits(model, lora, ids.subarray(n, n + 1), cache);
      worst = Math.max(worst, relError(step, full.subarray(n * V, (n + 1) * V)));
    }
    return worst;
  } finally {
    cache.release();
  }
}
