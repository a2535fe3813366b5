// Whole-model checks against PyTorch (tests/reference/gen_engine.py): logits, loss, LoRA and
// full fine-tuning gradients of a tiny Llama (f32, padded batch) and a tiny Qwen2 (bf16 weights,
// q/k/v biases, tied embeddings, one packed row with two examples and padding).
import { describe, expect, it } from 'vitest';
import { expectedWeights, parseModelConfig } from '../../src/engine/model/config.ts';
import { loadModel } from '../../src/engine/model/load.ts';
import { memoryWeightSource } from '../../src/engine/model/weights.ts';
import { isNf4 } from '../../src/engine/ops/nf4.ts';
import { dequantizeNf4Ref, quantizeNf4Ref } from '../cpu/nf4.ts';
import { forwardLogits, forwardLogitsRows, KvCache } from '../../src/engine/model/infer.ts';
import { Trainer } from '../../src/engine/train/trainer.ts';
import { relError } from '../cpu/compare.ts';
import { loadFixture, type Fixture } from '../reference/fixtures.ts';
import { runtime, testGpu } from './context.ts';
import {
  cachedDecodeWorstRel,
  evalAndTrainPass,
  passOnModel,
  fixtureBatch,
  fixtureLora,
  fixtureModel,
  forwardLogitsAll,
  realRows,
  type PassResult,
} from './engine-util.ts';

function checkAgainst(fx: Fixture, r: PassResult, full: boolean, minTensors = full ? 29 : 28): void {
  const V = (fx.meta.config as { vocab_size: number }).vocab_size;
  const seg = fx.t.segments.data as Int32Array;
  const eLogits = realRows(fx.f32('logits'), seg, V);
  const aLogits = realRows(r.logits, seg, V);
  const lRel = relError(aLogits, eLogits);
  expect(lRel, `logits rel ${lRel}`).toBeLessThanOrEqual(1e-4);
  const eLoss = fx.f32('loss')[0];
  expect(Math.abs(r.loss - eLoss) / eLoss, `loss ${r.loss} vs ${eLoss}`).toBeLessThanOrEqual(1e-4);
  let worst = 0;
  let n = 0;
  for (const [k, g] of r.grads) {
    const m = /^(.*)\.lora_([AB])$/.exec(k);
    const key = m ? `grad_${m[2]}:${m[1]}` : `grad_w:${k}`;
    if (!m && !full) continue;
    const e = fx.f32(key);
    const rel = relError(g, e);
    worst = Math.max(worst, rel);
    n++;
    expect(rel, `${key} rel ${rel}`).toBeLessThanOrEqual(1e-3);
  }
  expect(n).toBeGreaterThanOrEqual(minTensors);
  console.log(
    `[${runtime}] logits rel ${lRel.toExponential(2)}, loss rel ${(Math.abs(r.loss - eLoss) / eLoss).toExponential(2)}, worst grad rel ${worst.toExponential(2)} over ${n} tensors`,
  );
}

describe(`engine vs PyTorch [${runtime}]`, () => {
  it('tiny Llama (f32, padded batch): logits, loss, LoRA and full fine-tuning gradients', async () => {
    const fx = await loadFixture('engine_llama');
    const r = await evalAndTrainPass(fx, { full: true });
    checkAgainst(fx, r, true);
  });

  it('tiny Llama with gradient checkpointing and a 5-row loss chunk gives the same gradients', async () => {
    const fx = await loadFixture('engine_llama');
    const r = await evalAndTrainPass(fx, { checkpointing: true, lossChunkRows: 5 });
    checkAgainst(fx, r, false);
  });

  it('tiny Qwen2 (bf16, biases, tied, packed row + padding): logits, loss, LoRA gradients', async () => {
    const fx = await loadFixture('engine_qwen2');
    const r = await evalAndTrainPass(fx, {});
    checkAgainst(fx, r, false);
  });

  it('with LoRA dropout, the recomputed layers of gradient checkpointing regenerate the same masks', async () => {
    const fx = await loadFixture('engine_llama');
    const plain = await evalAndTrainPass(fx, { dropout: 0.25 });
    const ckpt = await evalAndTrainPass(fx, { dropout: 0.25, checkpointing: true });
    const noDrop = await evalAndTrainPass(fx, {});
    let differs = 0;
    for (const [k, g] of plain.grads) {
      expect(relError(ckpt.grads.get(k)!, g), k).toBeLessThanOrEqual(1e-6);
      if (relError(noDrop.grads.get(k)!, g) > 1e-3) differs++;
    }
    expect(differs, 'dropout changes the gradients').toBeGreaterThan(20);
  });

  it('Trainer.evaluate gives the PyTorch loss with LoRA dropout configured (dropout is off in evaluation)', async () => {
    const gpu = await testGpu();
    const fx = await loadFixture('engine_llama');
    const model = await fixtureModel(gpu, fx);
    const lora = fixtureLora(model, fx, 'all', fx.meta.rank, fx.meta.alpha, 0.3, 9);
    const trainer = new Trainer(model, lora, {
      learningRate: 1e-3,
      lrSchedulerType: 'constant',
      totalSteps: 1,
      seed: 0,
    });
    try {
      const loss = await trainer.evaluate([fixtureBatch(fx)]);
      const want = fx.f32('loss')[0];
      expect(Math.abs(loss - want) / want, `eval loss ${loss} vs ${want}`).toBeLessThanOrEqual(1e-5);
    } finally {
      trainer.release();
      lora.release();
      model.release();
    }
  });

  it('tiny Qwen3 (q/k RMSNorm before RoPE, head_dim 24, checkpointing): logits, loss, LoRA gradients', async () => {
    const fx = await loadFixture('engine_qwen3');
    const r = await evalAndTrainPass(fx, { checkpointing: true });
    checkAgainst(fx, r, false);
  });

  it('tiny Mistral (sliding window 3 on rows of 9, checkpointing on and off): logits, loss, LoRA gradients', async () => {
    const fx = await loadFixture('engine_mistral');
    checkAgainst(fx, await evalAndTrainPass(fx, {}), false);
    checkAgainst(fx, await evalAndTrainPass(fx, { checkpointing: true }), false);
  });

  it('tiny Mistral: KV-cache decode past the sliding window equals the full forward at every position', async () => {
    const fx = await loadFixture('engine_mistral');
    const gpu = await testGpu();
    const model = await fixtureModel(gpu, fx);
    const lora = fixtureLora(model, fx, 'all', fx.meta.rank, fx.meta.alpha, 0, 21);
    const T = fx.meta.T as number;
    const ids = (fx.t.ids.data as Int32Array).slice(0, T); // row 0: T real tokens
    const V = model.config.vocabSize;
    try {
      expect(model.config.slidingWindow).toBe(3);
      const full = await forwardLogitsAll(model, lora, ids);
      const worst = await cachedDecodeWorstRel(model, lora, ids, full);
      expect(worst, `decode vs full forward rel ${worst}`).toBeLessThanOrEqual(1e-5);
      // …and the full forward of row 0 is PyTorch's (positions 3.. see only the last 3 keys).
      const torchRel = relError(full, fx.f32('logits').subarray(0, T * V));
      expect(torchRel, `full forward vs PyTorch rel ${torchRel}`).toBeLessThanOrEqual(1e-4);
    } finally {
      lora.release();
      model.release();
    }
  });

  it('tiny SmolLM3 (NoPE on layers 1 and 3, tied, checkpointing on and off): logits, loss, LoRA gradients', async () => {
    const fx = await loadFixture('engine_smollm3');
    const gpu = await testGpu();
    const model = await fixtureModel(gpu, fx);
    try {
      expect(model.config.noRopeLayers).toEqual([1, 3]);
    } finally {
      model.release();
    }
    checkAgainst(fx, await evalAndTrainPass(fx, {}), false);
    checkAgainst(fx, await evalAndTrainPass(fx, { checkpointing: true }), false);
  });

  it('tiny SmolLM3: KV-cache decode, one token at a time, equals the full forward at every position', async () => {
    const fx = await loadFixture('engine_smollm3');
    const gpu = await testGpu();
    const model = await fixtureModel(gpu, fx);
    const lora = fixtureLora(model, fx, 'all', fx.meta.rank, fx.meta.alpha, 0, 21);
    const T = fx.meta.T as number;
    const ids = (fx.t.ids.data as Int32Array).slice(0, T); // row 0: T real tokens
    try {
      const full = await forwardLogitsAll(model, lora, ids);
      const worst = await cachedDecodeWorstRel(model, lora, ids, full);
      expect(worst, `decode vs full forward rel ${worst}`).toBeLessThanOrEqual(1e-5);
    } finally {
      lora.release();
      model.release();
    }
  });
});

describe(`engine vs PyTorch, Phi-3 [${runtime}]`, () => {
  it('tiny Phi-3 (fused qkv_proj / gate_up_proj, LongRoPE long factors, 10 of 16 dims rotated): logits, loss, LoRA and full fine-tuning gradients, with and without checkpointing', async () => {
    const fx = await loadFixture('engine_phi3');
    const gpu = await testGpu();
    const model = await fixtureModel(gpu, fx);
    try {
      expect(model.config).toMatchObject({ fusedProjections: true, rotaryDim: 10, headDim: 16 });
      expect(model.weights.has('model.layers.0.self_attn.qkv_proj.weight')).toBe(true);
    } finally {
      model.release();
    }
    // 2 layers × (qkv_proj, o_proj, gate_up_proj, down_proj) × (A, B) = 16 LoRA tensors; + 15 weights.
    checkAgainst(fx, await evalAndTrainPass(fx, { full: true }), true, 31);
    checkAgainst(fx, await evalAndTrainPass(fx, { checkpointing: true }), false, 16);
  });

  it('tiny Phi-3 QLoRA: NF4 fused weights read by row offset give the logits and LoRA gradients of their dequantized values', async () => {
    const fx = await loadFixture('engine_phi3');
    const gpu = await testGpu();
    // The bitsandbytes NF4 round trip (blocksize 64, tests/cpu/nf4.ts) of every fused linear, as f32.
    const config = parseModelConfig(fx.meta.config as Record<string, unknown>, 'fixture config');
    const map = new Map<string, { dtype: string; shape: number[]; bytes: Uint8Array }>();
    for (const w of expectedWeights(config)) {
      if (w.optional) continue;
      let v = fx.f32(`w:${w.name}`);
      if (w.role === 'linear') {
        const q = quantizeNf4Ref(v, 64);
        v = dequantizeNf4Ref(q.codes, q.absmax, 64);
      }
      map.set(w.name, { dtype: 'F32', shape: w.shape, bytes: new Uint8Array(v.buffer, v.byteOffset, v.byteLength) });
    }
    const results: { logits: Float32Array; grads: Map<string, Float32Array> }[] = [];
    for (const nf4 of [false, true]) {
      const model = nf4
        ? await fixtureModel(gpu, fx, fx, { quantize: 'nf4', doubleQuant: false })
        : await loadModel(gpu, config, memoryWeightSource(map));
      if (nf4) expect(isNf4(model.linear(0, 'qkv_proj')) && isNf4(model.linear(1, 'gate_up_proj'))).toBe(true);
      try {
        results.push(await passOnModel(gpu, model, fx, { checkpointing: true }));
      } finally {
        model.release();
      }
    }
    const seg = fx.t.segments.data as Int32Array;
    const V = config.vocabSize;
    const lRel = relError(realRows(results[1].logits, seg, V), realRows(results[0].logits, seg, V));
    let worst = 0;
    for (const [k, g] of results[0].grads) worst = Math.max(worst, relError(results[1].grads.get(k)!, g));
    console.log(
      `[${runtime}] Phi-3 NF4 vs dequantized f32: logits rel ${lRel.toExponential(2)}, LoRA grads rel ${worst.toExponential(2)}`,
    );
    expect(lRel).toBeLessThanOrEqual(1e-5);
    expect(worst).toBeLessThanOrEqual(1e-4);
    // Quantization changed the model (the comparison is not trivially between equal weights).
    expect(relError(realRows(results[0].logits, seg, V), realRows(fx.f32('logits'), seg, V))).toBeGreaterThan(1e-3);
  });

  it("tiny Phi-3 with Phi-3-mini-4k's sliding window (4 under 10-token rows): logits and LoRA gradients, checkpointing on and off", async () => {
    const fx = await loadFixture('engine_phi3_window');
    expect((fx.meta.config as { sliding_window: number }).sliding_window).toBe(4);
    checkAgainst(fx, await evalAndTrainPass(fx, {}), false, 16);
    checkAgainst(fx, await evalAndTrainPass(fx, { checkpointing: true }), false, 16);
  });

  it('tiny Phi-3: a pass within original_max_position_embeddings uses the short factors (logits equal PyTorch)', async () => {
    const fx = await loadFixture('engine_phi3');
    const gpu = await testGpu();
    const model = await fixtureModel(gpu, fx);
    const lora = fixtureLora(model, fx, 'all', fx.meta.rank, fx.meta.alpha, 0, 21);
    const short = fx.meta.short as number;
    const V = model.config.vocabSize;
    try {
      const ids = (fx.t.ids.data as Int32Array).slice(0, short);
      const got = await forwardLogitsAll(model, lora, ids);
      const rel = relError(got, fx.f32('logits_short'));
      console.log(`[${runtime}] Phi-3 short-factor logits rel ${rel.toExponential(2)} over ${short}×${V}`);
      expect(rel).toBeLessThanOrEqual(1e-4);
    } finally {
      lora.release();
      model.release();
    }
  });

  it('tiny Phi-3: KV-cache decode across original_max_position_embeddings equals the full forward at every position', async () => {
    const fx = await loadFixture('engine_phi3');
    const gpu = await testGpu();
    const model = await fixtureModel(gpu, fx);
    const lora = fixtureLora(model, fx, 'all', fx.meta.rank, fx.meta.alpha, 0, 21);
    const T = fx.meta.T as number; // 10 > original 8: the 9th token switches to the long factors
    const ids = (fx.t.ids.data as Int32Array).slice(0, T);
    const V = model.config.vocabSize;
    const cache = new KvCache(model, T);
    const batched = [new KvCache(model, T), new KvCache(model, T)];
    try {
      const full = await forwardLogitsAll(model, lora, ids);
      // Prefill 4 tokens, then one at a time.
      let worst = relError(await forwardLogits(model, lora, ids.subarray(0, 4), cache), full.subarray(3 * V, 4 * V));
      for (let n = 4; n < T; n++) {
        const step = await forwardLogits(model, lora, ids.subarray(n, n + 1), cache);
        worst = Math.max(worst, relError(step, full.subarray(n * V, (n + 1) * V)));
      }
      // Batched decode of two sequences three tokens apart: rows straddle the switch.
      await forwardLogits(model, lora, ids.subarray(0, 3), batched[0]);
      await forwardLogits(model, lora, ids.subarray(0, 6), batched[1]);
      for (let n = 3; n < T - 3; n++) {
        const rows = await forwardLogitsRows(model, lora, Int32Array.of(ids[n], ids[n + 3]), batched);
        worst = Math.max(worst, relError(rows.subarray(0, V), full.subarray(n * V, (n + 1) * V)));
        worst = Math.max(worst, relError(rows.subarray(V), full.subarray((n + 3) * V, (n + 4) * V)));
      }
      console.log(`[${runtime}] Phi-3 decode vs full forward rel ${worst.toExponential(2)}`);
      expect(worst, `decode vs full forward rel ${worst}`).toBeLessThanOrEqual(1e-5);
    } finally {
      cache.release();
      batched.forEach((c) => c.release());
      lora.release();
      model.release();
    }
  });
});
