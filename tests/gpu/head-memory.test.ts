// The vocabulary-sized matrices off the 16-bit GPU path (LoadOptions head 'nf4' / embeddingOnHost):
// the NF4 head is bitsandbytes' NF4 of the table (blocksize 64, f32 scales) however many row chunks
// it is quantized in; a training pass with it equals one with that dequantized head as an ordinary
// f32 head; an embedding kept in host memory gives the same pass (NEFTune noise included) as the GPU
// table; the merged export writes the host embedding's own bytes.
import { describe, expect, it } from 'vitest';
import { readF32, readTensor, Recorder, releaseTensor, tensorSpec, zerosTensor } from '../../src/engine/gpu/index.ts';
import { prepareBatch } from '../../src/engine/model/batch.ts';
import { parseModelConfig } from '../../src/engine/model/config.ts';
import { Decoder } from '../../src/engine/model/decoder.ts';
import { loadModel, type LoadOptions } from '../../src/engine/model/load.ts';
import { isHostWeight, type Model } from '../../src/engine/model/model.ts';
import { memoryWeightSource } from '../../src/engine/model/weights.ts';
import { mergedTensors } from '../../src/engine/export/merged.ts';
import { fromBf16 } from '../../src/engine/numeric/half.ts';
import { isNf4, type Nf4Weight } from '../../src/engine/ops/nf4.ts';
import { relError } from '../cpu/compare.ts';
import { dequantizeNf4Ref, quantizeNf4Ref, unpackNf4 } from '../cpu/nf4.ts';
import { loadFixture, type Fixture } from '../reference/fixtures.ts';
import { runtime, testGpu } from './context.ts';
import { fixtureBatch, fixtureLora, fixtureModel, fixtureSource } from './engine-util.ts';

async function pass(model: Model, fx: Fixture, neftune = false) {
  const gpu = model.gpu;
  const lora = fixtureLora(model, fx, 'all', fx.meta.rank, fx.meta.alpha);
  const dec = new Decoder(model, lora, { checkpointing: true, lossChunkRows: 5 });
  const hb = prepareBatch(fixtureBatch(fx));
  const logitsT = zerosTensor(gpu, tensorSpec('f32', [hb.N, model.config.vocabSize], 'scratch', 'test logits'));
  const accum = zerosTensor(gpu, tensorSpec('f32', [4], 'scratch', 'test loss'));
  try {
    const inputs = dec.uploadInputs(hb, 0, neftune ? { alpha: 5, seqLen: hb.T, seed: 3, stream: 1 } : undefined);
    const rec = new Recorder(gpu, 'clear');
    dec.clearGrads(rec);
    await rec.submit();
    await dec.trainMicroBatch(inputs, { lossScale: 1 / hb.labelCount, accum, accumIndex: 0 }, { logits: logitsT });
    dec.releaseInputs(inputs);
    const grads = new Map<string, Float32Array>();
    for (const [k, t] of dec.grads) grads.set(k, await readF32(gpu, t));
    return { logits: await readF32(gpu, logitsT), loss: (await readF32(gpu, accum))[0], grads };
  } finally {
    releaseTensor(gpu, logitsT);
    releaseTensor(gpu, accum);
    dec.release();
    lora.release();
  }
}

function expectSamePass(a: Awaited<ReturnType<typeof pass>>, b: Awaited<ReturnType<typeof pass>>, tol: number) {
  expect(relError(a.logits, b.logits), 'logits').toBeLessThanOrEqual(tol);
  expect(Math.abs(a.loss - b.loss) / b.loss, 'loss').toBeLessThanOrEqual(tol);
  for (const [k, g] of a.grads) expect(relError(g, b.grads.get(k)!), k).toBeLessThanOrEqual(tol * 10);
}

describe(`NF4 head and host-memory embedding [${runtime}]`, () => {
  it('tied Qwen2: the NF4 head (quantized in 3 row chunks) is bitsandbytes NF4 of the table, and trains as that dequantized head', async () => {
    const gpu = await testGpu();
    const fx = await loadFixture('engine_qwen2');
    const V = 300;
    const H = 64;
    // 16 KiB bindings: 128-row chunks of the 300 × 64 bf16 table (every linear still fits).
    const nf4 = await fixtureModel(gpu, fx, fx, { head: 'nf4', maxBindingBytes: 16384 });
    const table = fromBf16(fx.t['w:model.embed_tokens.weight'].data as Uint16Array);
    const ref = quantizeNf4Ref(table, 64);
    let deq: Float32Array;
    try {
      expect(isHostWeight(nf4.embedding)).toBe(true);
      const head = nf4.lmHead as Nf4Weight;
      expect(isNf4(head)).toBe(true);
      const packed = (await readTensor(gpu, head.packed)) as Uint8Array;
      expect(Array.from(unpackNf4(packed, V * H))).toEqual(Array.from(ref.codes));
      expect(Array.from(await readF32(gpu, head.absmax))).toEqual(Array.from(ref.absmax));
      deq = dequantizeNf4Ref(ref.codes, ref.absmax, 64);
      const a = await pass(nf4, fx);
      // The same model with the dequantized head as an untied f32 lm_head.
      const cfg = { ...(fx.meta.config as Record<string, unknown>), tie_word_embeddings: false };
      const tensors = new Map<string, { dtype: string; shape: number[]; bytes: Uint8Array }>();
      const src = fixtureSource(fx);
      for (const n of src.names())
        tensors.set(n, { dtype: src.dtype(n), shape: src.shape(n), bytes: await src.read(n) });
      tensors.set('lm_head.weight', { dtype: 'F32', shape: [V, H], bytes: new Uint8Array(deq.buffer) });
      const plain = await loadModel(gpu, parseModelConfig(cfg, 'untied'), memoryWeightSource(tensors));
      try {
        const b = await pass(plain, fx);
        expectSamePass(a, b, 1e-5);
        // What NF4 costs against the 16-bit head on this random tiny model.
        const exact = await fixtureModel(gpu, fx);
        try {
          // 16-bit table 38,400 B → codes 9,600 B + scales 1,200 B (before the pool's size classes)
          expect(exact.weightBytes() - nf4.weightBytes()).toBeGreaterThan(20000);
          const e = await pass(exact, fx);
          console.log(
            `[${runtime}] NF4 head vs 16-bit head: logits rel ${relError(a.logits, e.logits).toExponential(2)}, loss ${a.loss.toFixed(5)} vs ${e.loss.toFixed(5)}`,
          );
        } finally {
          exact.release();
        }
      } finally {
        plain.release();
      }
    } finally {
      nf4.release();
    }
  });

  for (const [fixture, opts] of [
    ['engine_llama', { embeddingOnHost: true }],
    ['engine_llama', { embeddingOnHost: true, head: 'nf4' }],
  ] as [string, LoadOptions][]) {
    it(`untied Llama ${JSON.stringify(opts)}: the host-memory embedding gives the GPU table's pass, NEFTune noise included`, async () => {
      const gpu = await testGpu();
      const fx = await loadFixture(fixture);
      const host = await fixtureModel(gpu, fx, fx, opts);
      const ref = await fixtureModel(gpu, fx, fx, { head: opts.head });
      try {
        expect(isHostWeight(host.embedding)).toBe(true);
        expect(isHostWeight(ref.embedding)).toBe(false);
        expectSamePass(await pass(host, fx, true), await pass(ref, fx, true), 0);
        // The merged export writes the embedding's own bytes.
        const t = mergedTensors(host, null, 'f32').find((x) => x.name === 'model.embed_tokens.weight')!;
        const bytes: number[] = [];
        for await (const c of (t.data as () => AsyncIterable<Uint8Array>)()) bytes.push(...c);
        const got = new Float32Array(Uint8Array.from(bytes).buffer);
        expect(Array.from(got)).toEqual(Array.from(fx.f32('w:model.embed_tokens.weight')));
      } finally {
        host.release();
        ref.release();
      }
    });
  }
});
