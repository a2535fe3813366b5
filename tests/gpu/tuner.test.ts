import { describe, expect, it } from 'vitest';
import type { KernelChoiceStore } from '../../src/engine/gpu/index.ts';
import { MATMUL_VARIANT_NAMES, matmulShapeClass, type MatmulShape } from '../../src/engine/ops/matmul.ts';
import { adapterKey, tuneLora, tuneMatmul, tuneReductions } from '../../src/engine/ops/tuner.ts';
import { LORA_CLASS, LORA_FAMILY, LORA_VARIANT_NAMES } from '../../src/engine/ops/lora.ts';
import { REDUCE_CLASS, REDUCE_FAMILY, reduceVariant, reduceVariants } from '../../src/engine/ops/reduce.ts';
import { runtime, testGpu } from './context.ts';

function memoryStore(): KernelChoiceStore & { saved: Map<string, Record<string, string>> } {
  const saved = new Map<string, Record<string, string>>();
  return { saved, load: async (k) => saved.get(k), save: async (k, v) => void saved.set(k, { ...v }) };
}

describe(`matmul tuner (${runtime})`, () => {
  // Odd extents so each class lands in its own bucket; dense and NF4 weights, both orientations.
  const shapes: MatmulShape[] = [
    { M: 19, N: 70, K: 33, transB: true, weight: 'f32' },
    { M: 19, N: 33, K: 70, weight: 'bf16' },
    { M: 40, N: 96, K: 128, transB: true, weight: 'nf4' },
  ];

  it('times every variant, keeps the fastest survivor per class, and stores the choices', async () => {
    const gpu = await testGpu();
    if (gpu.kernels.isForced('matmul')) return; // TABTUNE_KERNELS pins one: nothing to measure
    const store = memoryStore();
    const results = await tuneMatmul(gpu, [...shapes, { ...shapes[0], M: 20 }], { store });
    expect(results.map((r) => r.shapeClass)).toEqual(shapes.map(matmulShapeClass)); // M 19 and 20 share a class
    for (const r of results) {
      const timed = MATMUL_VARIANT_NAMES.filter((v) => typeof r.ms[v] === 'number');
      expect(timed).toContain(r.chosen);
      for (const v of timed) expect(r.ms[r.chosen]!).toBeLessThanOrEqual(r.ms[v]!);
      for (const v of MATMUL_VARIANT_NAMES) expect(r.ms[v] === null || r.ms[v]! > 0).toBe(true);
      expect(gpu.kernels.pick('matmul', r.shapeClass, MATMUL_VARIANT_NAMES, 'tiled64')).toBe(r.chosen);
    }
    const stored = store.saved.get(adapterKey(gpu))!;
    for (const r of results) expect(stored[`matmul:${r.shapeClass}`]).toBe(r.chosen);
    // Measured once: the same classes again cost nothing.
    expect(await tuneMatmul(gpu, shapes, { store })).toEqual([]);
  });

  it('keys stored choices by adapter and shader text', async () => {
    const gpu = await testGpu();
    const key = adapterKey(gpu);
    expect(key).toContain(gpu.adapter.description);
    expect(key).toMatch(/shaders:[0-9a-f]{8}$/);
  });

  it('picks tree or subgroup reductions by timing both where the adapter has subgroups', async () => {
    const gpu = await testGpu();
    if (gpu.kernels.isForced(REDUCE_FAMILY)) return;
    const store = memoryStore();
    const r = await tuneReductions(gpu, { store });
    if (reduceVariants(gpu).length < 2) {
      expect(r).toBeNull(); // nothing to choose from: the tree serves
      expect(reduceVariant(gpu)).toBe('tree');
      return;
    }
    expect(r).not.toBeNull();
    expect(Object.keys(r!.ms).sort()).toEqual(['subgroup', 'tree']);
    expect(r!.ms[r!.chosen]!).toBeLessThanOrEqual(Math.min(r!.ms.tree!, r!.ms.subgroup!));
    expect(reduceVariant(gpu)).toBe(r!.chosen);
    expect(store.saved.get(adapterKey(gpu))![`${REDUCE_FAMILY}:${REDUCE_CLASS}`]).toBe(r!.chosen);
    console.log(`reductions on ${runtime}: ${JSON.stringify(r!.ms)} → ${r!.chosen}`);
    expect(await tuneReductions(gpu, { store })).toBeNull(); // measured once
  });

  it('times both forms of the skinny LoRA products and keeps the faster', async () => {
    const gpu = await testGpu();
    if (gpu.kernels.isForced(LORA_FAMILY)) return;
    const store = memoryStore();
    const known = gpu.kernels.has(LORA_FAMILY, LORA_CLASS);
    const r = await tuneLora(gpu, { store });
    if (known) return expect(r).toBeNull(); // another test file measured it in this process
    expect(Object.keys(r!.ms).sort()).toEqual([...LORA_VARIANT_NAMES].sort());
    expect(r!.ms[r!.chosen]!).toBeLessThanOrEqual(Math.min(...Object.values(r!.ms)));
    expect(gpu.kernels.pick(LORA_FAMILY, LORA_CLASS, LORA_VARIANT_NAMES, 'skinny')).toBe(r!.chosen);
    expect(store.saved.get(adapterKey(gpu))![`${LORA_FAMILY}:${LORA_CLASS}`]).toBe(r!.chosen);
    console.log(`LoRA products on ${runtime}: ${JSON.stringify(r!.ms)} → ${r!.chosen}`);
    expect(await tuneLora(gpu, { store })).toBeNull(); // measured once
  });
});
