// bf16 gradient checkpoints (Decoder checkpointPrecision 'bf16'): the training pass equals
// PyTorch's forward/backward with the residual stream rounded to bf16 at each layer boundary
// (tests/reference/gen_ckpt16.py), and its distance from the f32 pass is what the rounding costs.
import { describe, expect, it } from 'vitest';
import { readF32, Recorder, releaseTensor, tensorSpec, zerosTensor } from '../../src/engine/gpu/index.ts';
import { prepareBatch } from '../../src/engine/model/batch.ts';
import { Decoder, type CheckpointPrecision } from '../../src/engine/model/decoder.ts';
import { relError } from '../cpu/compare.ts';
import { loadFixture, type Fixture } from '../reference/fixtures.ts';
import { runtime, testGpu } from './context.ts';
import { fixtureBatch, fixtureLora, fixtureModel, realRows } from './engine-util.ts';

async function trainPass(fx: Fixture, precision: CheckpointPrecision, checkpointing = true) {
  const gpu = await testGpu();
  const model = await fixtureModel(gpu, fx);
  const lora = fixtureLora(model, fx, 'all', fx.meta.rank, fx.meta.alpha);
  const dec = new Decoder(model, lora, { checkpointing, checkpointPrecision: precision, lossChunkRows: 4 });
  const hb = prepareBatch(fixtureBatch(fx));
  const logitsT = zerosTensor(gpu, tensorSpec('f32', [hb.N, model.config.vocabSize], 'scratch', 'test logits'));
  const accum = zerosTensor(gpu, tensorSpec('f32', [4], 'scratch', 'test loss'));
  try {
    const inputs = dec.uploadInputs(hb, 0);
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
    model.release();
  }
}

function compare(fx: Fixture, r: Awaited<ReturnType<typeof trainPass>>) {
  const V = (fx.meta.config as { vocab_size: number }).vocab_size;
  const seg = fx.t.segments.data as Int32Array;
  const logits = relError(realRows(r.logits, seg, V), realRows(fx.f32('logits'), seg, V));
  const want = fx.f32('loss')[0];
  const loss = Math.abs(r.loss - want) / want;
  let grad = 0;
  for (const [k, g] of r.grads) {
    const m = /^(.*)\.lora_([AB])$/.exec(k)!;
    grad = Math.max(grad, relError(g, fx.f32(`grad_${m[2]}:${m[1]}`)));
  }
  return { logits, loss, grad };
}

describe(`bf16 gradient checkpoints [${runtime}]`, () => {
  it('tiny Llama: logits, loss and LoRA gradients equal PyTorch with the residual rounded to bf16 at layer boundaries', async () => {
    const rounded = await loadFixture('engine_llama_ckpt16');
    const exact = await loadFixture('engine_llama');
    const r = await trainPass(rounded, 'bf16');
    const same = compare(rounded, r);
    console.log(
      `[${runtime}] bf16 checkpoints vs PyTorch (rounded): logits ${same.logits.toExponential(2)}, loss ${same.loss.toExponential(2)}, worst grad ${same.grad.toExponential(2)}`,
    );
    expect(same.logits).toBeLessThanOrEqual(1e-4);
    expect(same.loss).toBeLessThanOrEqual(1e-4);
    expect(same.grad).toBeLessThanOrEqual(1e-3);
    // What the rounding costs against the f32 model (same weights, adapters and batch).
    const cost = compare(exact, r);
    console.log(
      `[${runtime}] bf16 checkpoints vs the f32 model: logits ${cost.logits.toExponential(2)}, loss ${cost.loss.toExponential(2)}, worst grad ${cost.grad.toExponential(2)}`,
    );
    expect(cost.logits).toBeGreaterThan(same.logits);
    expect(cost.grad).toBeLessThan(0.05);
  });

  it('f32 checkpoints are untouched by the option: the same pass as before', async () => {
    const fx = await loadFixture('engine_llama');
    const r = await trainPass(fx, 'f32');
    const d = compare(fx, r);
    expect(d.logits).toBeLessThanOrEqual(1e-4);
    expect(d.grad).toBeLessThanOrEqual(1e-3);
  });
});
