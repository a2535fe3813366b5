// Gemma 3 and Gemma 2 against PyTorch (tests/reference/gen_engine.py gemma_forward, written from
// transformers modeling_gemma3.py / modeling_gemma2.py): logits, loss, LoRA and full fine-tuning
// gradients of tiny models that keep every feature — (1 + w) norms, q/k norms, GeGLU, sandwich
// norms, √hidden embeddings, query_pre_attn_scalar, a sliding window shorter than the rows on some
// layers with their own RoPE base, soft-capping — with and without gradient checkpointing, and the
// KV-cache decode equal to the full forward at every position, past the window.
import { describe, expect, it } from 'vitest';
import { forwardLogits, KvCache } from '../../src/engine/model/infer.ts';
import type { Model } from '../../src/engine/model/model.ts';
import { planMemory } from '../../src/engine/plan/plan.ts';
import { relError } from '../cpu/compare.ts';
import { loadFixture, type Fixture } from '../reference/fixtures.ts';
import { runtime, testGpu } from './context.ts';
import { expectPlanMatchesPeak, PLAN_RUN, twoStepPeak } from './plan-util.ts';
import { parseModelConfig } from '../../src/engine/model/config.ts';
import { loadModel } from '../../src/engine/model/load.ts';
import { memoryWeightSource } from '../../src/engine/model/weights.ts';
import {
  evalAndTrainPass,
  fixtureLora,
  fixtureModel,
  fixtureSource,
  realRows,
  type PassOptions,
  type PassResult,
} from './engine-util.ts';

/** One evaluation and one training pass; full fine-tuning computes in f32 (as the fixture does). */
function run(fx: Fixture, opts: PassOptions): Promise<PassResult> {
  return evalAndTrainPass(fx, { ...opts, load: opts.full ? { computeDType: 'f32' } : {} });
}

function checkAgainst(fx: Fixture, r: PassResult, full: boolean, label: string): void {
  const V = (fx.meta.config as { vocab_size: number }).vocab_size;
  const seg = fx.t.segments.data as Int32Array;
  const lRel = relError(realRows(r.logits, seg, V), realRows(fx.f32('logits'), seg, V));
  expect(lRel, `logits rel ${lRel}`).toBeLessThanOrEqual(1e-4);
  const eLoss = fx.f32('loss')[0];
  const lossRel = Math.abs(r.loss - eLoss) / eLoss;
  expect(lossRel, `loss ${r.loss} vs ${eLoss}`).toBeLessThanOrEqual(1e-4);
  let worstLora = 0;
  let worstFull = 0;
  let lora = 0;
  let weights = 0;
  for (const [k, g] of r.grads) {
    const m = /^(.*)\.lora_([AB])$/.exec(k);
    const rel = relError(g, fx.f32(m ? `grad_${m[2]}:${m[1]}` : `grad_w:${k}`));
    expect(rel, `${k} gradient rel ${rel}`).toBeLessThanOrEqual(1e-3);
    if (m) {
      worstLora = Math.max(worstLora, rel);
      lora++;
    } else {
      worstFull = Math.max(worstFull, rel);
      weights++;
    }
  }
  const L = (fx.meta.config as { num_hidden_layers: number }).num_hidden_layers;
  expect(lora).toBe(L * 7 * 2);
  if (full) expect(weights, 'every weight trains').toBe(Object.keys(fx.t).filter((k) => k.startsWith('w:')).length);
  console.log(
    `[${runtime}] ${label}: logits rel ${lRel.toExponential(2)}, loss rel ${lossRel.toExponential(2)}, LoRA grads worst rel ${worstLora.toExponential(2)} over ${lora}${full ? `, full grads worst rel ${worstFull.toExponential(2)} over ${weights}` : ''}`,
  );
}

/** Logits of every position of one sequence: prefixes without a cache (the full forward) vs one token at a time through the KV cache. */
async function decodeVsFull(model: Model, fx: Fixture): Promise<number> {
  const lora = fixtureLora(model, fx, 'all', fx.meta.rank, fx.meta.alpha, 0, 21);
  const T = fx.meta.T as number;
  const ids = (fx.t.ids.data as Int32Array).slice(0, T); // row 0: T real tokens
  const V = model.config.vocabSize;
  const cache = new KvCache(model, T);
  try {
    let worst = 0;
    for (let n = 0; n < T; n++) {
      const full = await forwardLogits(model, lora, ids.subarray(0, n + 1), null);
      const step = await forwardLogits(model, lora, ids.subarray(n, n + 1), cache);
      worst = Math.max(worst, relError(step, full));
      // The full forward of the whole row is PyTorch's: the prefix's last row equals its row n.
      if (n === T - 1) expect(relError(full, fx.f32('logits').subarray(n * V, (n + 1) * V))).toBeLessThanOrEqual(1e-4);
    }
    return worst;
  } finally {
    cache.release();
    lora.release();
  }
}

describe(`Gemma vs PyTorch [${runtime}]`, () => {
  it('tiny Gemma 3 parses as sliding, global, sliding with a local RoPE table', async () => {
    const fx = await loadFixture('engine_gemma3');
    const model = await fixtureModel(await testGpu(), fx);
    try {
      const c = model.config;
      expect(c.slidingWindow).toBe(4);
      expect(c.slidingLayers).toEqual([0, 2]);
      expect(c.gemma).toEqual({
        queryPreAttnScalar: 24,
        attentionScale: 24 ** -0.5,
        attnSoftcap: null,
        finalSoftcap: null,
        ropeLocalTheta: 100,
      });
      expect(model.invFreqLocal).not.toBeNull();
    } finally {
      model.release();
    }
  });

  it('tiny Gemma 3 (window 4 under 9-token rows, f32): logits, loss, LoRA and full fine-tuning gradients', async () => {
    const fx = await loadFixture('engine_gemma3');
    checkAgainst(fx, await run(fx, { full: true }), true, 'Gemma 3');
  });

  it('tiny Gemma 3 with gradient checkpointing: the same LoRA gradients', async () => {
    const fx = await loadFixture('engine_gemma3');
    checkAgainst(fx, await run(fx, { checkpointing: true }), false, 'Gemma 3, checkpointing');
  });

  it('tiny Gemma 3: KV-cache decode, one token at a time, equals the full forward at every position past the window', async () => {
    const fx = await loadFixture('engine_gemma3');
    const model = await fixtureModel(await testGpu(), fx);
    try {
      const worst = await decodeVsFull(model, fx);
      console.log(`[${runtime}] Gemma 3 decode vs full forward: worst rel ${worst.toExponential(2)} over 9 positions`);
      expect(worst, `decode vs full forward rel ${worst}`).toBeLessThanOrEqual(1e-5);
    } finally {
      model.release();
    }
  });

  it('tiny Gemma 2 (bf16, soft-capped attention 3 and logits 5, window 4 on layer 0): logits, loss, LoRA gradients', async () => {
    const fx = await loadFixture('engine_gemma2');
    const model = await fixtureModel(await testGpu(), fx);
    try {
      const c = model.config;
      expect([c.slidingLayers, c.gemma!.attnSoftcap, c.gemma!.finalSoftcap, model.invFreqLocal]).toEqual([
        [0],
        3,
        5,
        null,
      ]);
    } finally {
      model.release();
    }
    // The capped logits: the largest reaches close to the cap of 5 (the cap bends them).
    expect(Math.max(...fx.f32('logits').map(Math.abs))).toBeGreaterThan(4.9);
    checkAgainst(fx, await run(fx, {}), false, 'Gemma 2');
  });

  it('tiny Gemma 2 with gradient checkpointing: the same LoRA gradients', async () => {
    const fx = await loadFixture('engine_gemma2');
    checkAgainst(fx, await run(fx, { checkpointing: true }), false, 'Gemma 2, checkpointing');
  });

  it('tiny Gemma 2: KV-cache decode (capped logits) equals the full forward at every position past the window', async () => {
    const fx = await loadFixture('engine_gemma2');
    const model = await fixtureModel(await testGpu(), fx);
    try {
      const worst = await decodeVsFull(model, fx);
      console.log(`[${runtime}] Gemma 2 decode vs full forward: worst rel ${worst.toExponential(2)} over 9 positions`);
      expect(worst, `decode vs full forward rel ${worst}`).toBeLessThanOrEqual(1e-5);
    } finally {
      model.release();
    }
  });

  for (const ckpt of [false, true])
    it(`planMemory of a tiny Gemma 3 (LoRA all, checkpointing ${ckpt ? 'on' : 'off'}) equals the ledger's peak within 5 %`, async () => {
      const gpu = await testGpu();
      gpu.pool.trim();
      const fx = await loadFixture('engine_gemma3');
      const model = await fixtureModel(gpu, fx);
      try {
        const peak = await twoStepPeak(model, { gradientCheckpointing: ckpt });
        const plan = planMemory(model.config, {
          method: 'lora',
          ...PLAN_RUN,
          gradientCheckpointing: ckpt,
          storageOffsetAlignment: gpu.limits.minStorageBufferOffsetAlignment,
        });
        // Uniform parameter arenas (scratch) come in 64 KiB blocks; after other tests in this file the
        // ledger has held one block more than planMemory's dispatch estimate, ~10 % of this tiny scratch.
        const { measured, lines } = expectPlanMatchesPeak(plan, peak, 64 * 1024);
        console.log(
          `[${runtime}] Gemma 3 plan vs ledger, checkpointing ${ckpt}: ${plan.total} vs ${measured}\n${lines.join('\n')}`,
        );
      } finally {
        model.release();
      }
    });

  it("a Gemma3ForConditionalGeneration checkpoint's language model (text_config, model.language_model.* names, a vision tower beside it) gives the text model's logits", async () => {
    const fx = await loadFixture('engine_gemma3');
    const text = fx.meta.config as Record<string, unknown>;
    const { architectures: _a, ...textConfig } = text;
    const config = parseModelConfig({
      architectures: ['Gemma3ForConditionalGeneration'],
      model_type: 'gemma3',
      text_config: textConfig,
      vision_config: { model_type: 'siglip_vision_model' },
    });
    const plain = fixtureSource(fx);
    const tensors = new Map<string, { dtype: string; shape: number[]; bytes: Uint8Array }>();
    for (const n of plain.names())
      tensors.set(n.replace(/^model\./, 'model.language_model.'), {
        dtype: plain.dtype(n),
        shape: plain.shape(n),
        bytes: await plain.read(n),
      });
    tensors.set('model.vision_tower.vision_model.post_layernorm.weight', {
      dtype: 'F32',
      shape: [2],
      bytes: new Uint8Array(8),
    });
    const gpu = await testGpu();
    const model = await loadModel(gpu, config, memoryWeightSource(tensors, 'multimodal'));
    try {
      expect(model.config.architecture).toBe('Gemma3ForCausalLM');
      const T = fx.meta.T as number;
      const V = model.config.vocabSize;
      const logits = await forwardLogits(model, null, (fx.t.ids.data as Int32Array).slice(0, T), null);
      const text = await fixtureModel(gpu, fx);
      try {
        const want = await forwardLogits(text, null, (fx.t.ids.data as Int32Array).slice(0, T), null);
        expect(Array.from(logits)).toEqual(Array.from(want));
        expect(logits.length).toBe(V);
      } finally {
        text.release();
      }
      if (runtime !== 'node') return;
      // Its PEFT adapter names the language model's modules as PEFT wraps the multimodal model, and
      // target_modules leaves the vision tower's q/k/v_proj alone; it loads back identically.
      const { nodeDirWriter, openAdapterFolder } = await import('../../src/engine/export/node-dir.ts');
      const { exportPeft, loadPeftAdapter } = await import('../../src/engine/export/peft.ts');
      const { readFileSync } = await import('node:fs');
      const dir = 'tests/artifacts/export/gemma3-multimodal-adapter';
      const lora = fixtureLora(model, fx, 'all', fx.meta.rank, fx.meta.alpha, 0, 21);
      try {
        await exportPeft(lora, null, 'tiny-gemma3-multimodal', nodeDirWriter(dir));
        const acfg = JSON.parse(readFileSync(`${dir}/adapter_config.json`, 'utf8'));
        expect(acfg.target_modules).toBe(
          'model\\.language_model\\.layers\\.\\d+\\.(?:self_attn|mlp)\\.(?:down_proj|gate_proj|k_proj|o_proj|q_proj|up_proj|v_proj)',
        );
        const { configText, store } = await openAdapterFolder(dir);
        expect(store.names().every((k) => k.startsWith('base_model.model.model.language_model.layers.'))).toBe(true);
        const back = await loadPeftAdapter(model, configText, store);
        await store.close();
        try {
          expect(back.lora.adapters.size).toBe(lora.adapters.size);
          const a = await forwardLogits(model, lora, (fx.t.ids.data as Int32Array).slice(0, T), null);
          const b = await forwardLogits(model, back.lora, (fx.t.ids.data as Int32Array).slice(0, T), null);
          expect(Array.from(b)).toEqual(Array.from(a));
        } finally {
          back.lora.release();
        }
      } finally {
        lora.release();
      }
    } finally {
      model.release();
    }
  });

  it('tiny Gemma 3 with bf16 gradient checkpoints: the layer run in place on its own input still gives the gradients (within bf16 rounding)', async () => {
    const fx = await loadFixture('engine_gemma3');
    const r = await run(fx, { checkpointing: true, checkpointPrecision: 'bf16' });
    let worst = 0;
    for (const [k, g] of r.grads) {
      const m = /^(.*)\.lora_([AB])$/.exec(k)!;
      worst = Math.max(worst, relError(g, fx.f32(`grad_${m[2]}:${m[1]}`)));
    }
    console.log(
      `[${runtime}] Gemma 3, bf16 checkpoints: LoRA grads worst rel ${worst.toExponential(2)} (bf16 residual stream)`,
    );
    expect(worst).toBeLessThan(3e-2);
  });

  it("an embedding and tied head split by rows (Gemma's 262k vocabulary on a small binding limit) give the same logits, scaled and capped", async () => {
    for (const name of ['engine_gemma3', 'engine_gemma2']) {
      const fx = await loadFixture(name);
      const gpu = await testGpu();
      const T = fx.meta.T as number;
      const ids = (fx.t.ids.data as Int32Array).slice(0, T);
      const whole = await fixtureModel(gpu, fx);
      // 300 × 48 rows of 4 (f32) or 2 (bf16) bytes: about a third of the table per part.
      const rowBytes = 48 * (fx.t['w:model.embed_tokens.weight'].dtype === 'f32' ? 4 : 2);
      const split = await fixtureModel(gpu, fx, fx, { maxBindingBytes: 104 * rowBytes });
      try {
        expect(split.notes.join(' '), name).toMatch(/embed_tokens.weight split by rows/);
        const a = await forwardLogits(whole, null, ids, null);
        const b = await forwardLogits(split, null, ids, null);
        expect(relError(b, a), name).toBeLessThanOrEqual(1e-6);
      } finally {
        whole.release();
        split.release();
      }
    }
  });
});
