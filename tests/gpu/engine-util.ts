// Helpers for the engine tests: models from the PyTorch fixtures of tests/reference/gen_engine.py.
import type { Gpu } from '../../src/engine/gpu/index.ts';
import { readF32, writeTensor } from '../../src/engine/gpu/index.ts';
import { parseModelConfig } from '../../src/engine/model/config.ts';
import { loadModel, type LoadOptions } from '../../src/engine/model/load.ts';
import { attachLora, type LoraSet, type Model } from '../../src/engine/model/model.ts';
import { memoryWeightSource, type WeightSource } from '../../src/engine/model/weights.ts';
import type { Fixture } from '../reference/fixtures.ts';

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
