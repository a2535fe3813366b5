import { describe, expect, it } from 'vitest';
import { MEMORY_CATEGORIES } from '../../src/engine/gpu/ledger.ts';
import { allocationBytes, sizeClass } from '../../src/engine/gpu/pool.ts';
import { loraArenaLayout } from '../../src/engine/model/model.ts';
import { checkWeights, expectedWeights, parseModelConfig } from '../../src/engine/model/config.ts';
import { knownConfig } from '../../src/engine/plan/known-configs.ts';
import {
  fitPlan,
  nextSmallerPlan,
  planMemory,
  PlanError,
  SMALL_LOSS_CHUNK_ROWS,
  type TrainPlanConfig,
} from '../../src/engine/plan/plan.ts';
import type { TrainConfig } from '../../src/engine/train/llamafactory-config.ts';
import { DEFAULT_TRAIN_CONFIG, applyPlanChange } from '../../src/engine/train/method.ts';
import { memoryPlanInput, planRun } from '../../src/engine/train/run-builder.ts';

const tiny = parseModelConfig({
  architectures: ['LlamaForCausalLM'],
  hidden_size: 64,
  intermediate_size: 160,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  vocab_size: 300,
  torch_dtype: 'float32',
  tie_word_embeddings: false,
});
const base: TrainPlanConfig = {
  method: 'lora',
  batchSize: 2,
  seqLen: 16,
  loraRank: 4,
  loraTargets: ['q_proj', 'v_proj'],
  gradientCheckpointing: false,
};

// Weights, adapters, gradients and optimizer state are allocated at their exact size (4-byte words).
const W = (bytes: number) => allocationBytes(bytes, 'weights');

describe('planMemory', () => {
  it('counts the weights of a tiny Llama exactly (persistent buffers at their size, LoRA in one aligned arena)', () => {
    const p = planMemory(tiny, base);
    const H = 64,
      I = 160,
      V = 300,
      KV = 32;
    const expected =
      W(4 * V * H) * 2 + // embed + lm_head
      W(4 * H) * 5 + // 2 norms × 2 layers + final
      2 * (2 * W(4 * H * H) + 2 * W(4 * KV * H) + 3 * W(4 * I * H)) +
      W(4 * 8); // RoPE inv_freq [headDim/2]
    expect(p.byCategory.weights).toBe(expected);
    // adapters: q (A 4×64, B 64×4) and v (A 4×64, B 32×4) in 2 layers, each tensor 256-byte aligned
    // (A of 256 floats = 1 KiB, B of 128 floats = 512 B: no padding), in one arena
    const n = 2 * (256 + 256 + 256 + 128);
    expect(
      loraArenaLayout(
        [
          [256, 256],
          [256, 128],
          [256, 256],
          [256, 128],
        ],
        256,
      ).floats,
    ).toBe(n);
    expect(p.byCategory.adapters).toBe(4 * n);
    // the gradients mirror the arena; exp_avg + exp_avg_sq, and a block per tensor
    expect(p.byCategory.gradients).toBe(4 * n);
    expect(p.byCategory.optimizer).toBe(2 * 4 * n + W(4 * 4 * 8));
    expect(p.total).toBe(MEMORY_CATEGORIES.reduce((s, c) => s + p.byCategory[c], 0));
    expect(p.items.every((i) => i.bytes > 0 && i.count > 0)).toBe(true);
  });
  it('Qwen2 biases, tied embeddings and 16-bit storage', () => {
    const q = knownConfig('Qwen/Qwen2.5-0.5B-Instruct');
    const p = planMemory(q, { ...base, batchSize: 1, seqLen: 64 });
    const embed = p.items.find((i) => i.what === 'embed_tokens')!;
    expect(embed.bytes).toBe(2 * 151936 * 896);
    expect(p.items.some((i) => i.what === 'lm_head')).toBe(false);
    expect(p.items.find((i) => i.what === 'biases')!.count).toBe(24 * 3);
    // bf16 weights: 2 bytes × 494M parameters, nothing rounded up
    expect(p.byCategory.weights / 2 / 494e6).toBeGreaterThan(0.99);
    expect(p.byCategory.weights / 2 / 494e6).toBeLessThan(1.01);
  });
  it('SmolLM3-3B: its weight names check out, and QLoRA at cutoff 1024 plans ~0.5 byte per linear weight', () => {
    const c = knownConfig('HuggingFaceTB/SmolLM3-3B');
    expect(c.noRopeLayers).toEqual(Array.from({ length: 9 }, (_, i) => 4 * i + 3));
    // A checkpoint of this shape: embed, 36 × (2 norms + 7 linears), final norm; the tied head is not stored.
    const names = new Map(
      expectedWeights(c)
        .filter((w) => !w.optional)
        .map((w) => [w.name, w.shape]),
    );
    expect(names.size).toBe(1 + 36 * 9 + 1);
    expect(checkWeights(c, names).problems).toEqual([]);
    const p = planMemory(c, {
      method: 'qlora',
      batchSize: 1,
      seqLen: 1024,
      loraRank: 8,
      gradientCheckpointing: true,
      doubleQuant: true,
    });
    const linear = 36 * (2 * 2048 * 2048 + 2 * 512 * 2048 + 3 * 2048 * 11008);
    const embed = 2 * 128256 * 2048;
    expect(p.byCategory.weights).toBeGreaterThan(embed + linear / 2);
    expect(p.byCategory.weights).toBeLessThan(1.15 * (embed + linear / 2) + 0.05 * linear);
    console.log(`SmolLM3-3B QLoRA bs1 cutoff 1024: ${(p.total / 1e9).toFixed(2)} GB planned`);
  });

  it('QLoRA stores ~0.5 byte per linear weight plus absmax; double quant shrinks absmax 4×', () => {
    const q = knownConfig('Qwen/Qwen2.5-1.5B-Instruct');
    const lora = planMemory(q, { ...base, loraTargets: undefined });
    const ql = planMemory(q, { ...base, method: 'qlora', loraTargets: undefined });
    const qlNoDq = planMemory(q, { ...base, method: 'qlora', doubleQuant: false, loraTargets: undefined });
    const linear = 28 * (2 * 1536 * 1536 + 2 * 256 * 1536 + 3 * 1536 * 8960);
    const dense = 28 * (2 * W(2 * 1536 * 1536) + 2 * W(2 * 256 * 1536) + 3 * W(2 * 1536 * 8960));
    const embed = W(2 * 151936 * 1536);
    const rest = embed + 57 * W(2 * 1536) + 28 * (2 * W(2 * 256) + W(2 * 1536)) + W(4 * 64);
    expect(lora.byCategory.weights - rest).toBe(dense);
    const qPerWeight = (ql.byCategory.weights - rest) / linear;
    expect(qPerWeight).toBeGreaterThan(0.5 + 1 / 64);
    expect(qPerWeight).toBeLessThan((0.5 + 1 / 64) * 1.125);
    const absmaxF32 = qlNoDq.items.find((i) => i.what === 'NF4 absmax (f32)')!.bytes;
    const absmaxU8 = ql.items.find((i) => i.what === 'NF4 absmax (8-bit, double quant)')!.bytes;
    expect(absmaxF32 / absmaxU8).toBeGreaterThan(3.9);
    expect(ql.byCategory.adapters).toBe(lora.byCategory.adapters);
  });
  it('activations grow linearly with tokens; checkpointing keeps one layer input per layer', () => {
    const q = knownConfig('Qwen/Qwen2.5-0.5B-Instruct');
    const a1 = planMemory(q, { ...base, batchSize: 1, seqLen: 512 }).byCategory.activations;
    const a2 = planMemory(q, { ...base, batchSize: 2, seqLen: 512 }).byCategory.activations;
    expect(a2 / a1).toBeGreaterThan(1.9);
    expect(a2 / a1).toBeLessThan(2.1);
    const ck = planMemory(q, { ...base, batchSize: 2, seqLen: 512, gradientCheckpointing: true }).byCategory
      .activations;
    expect(ck).toBeLessThan(a2 / 5);
    expect(ck).toBeGreaterThan(24 * 4 * 1024 * 896);
  });
  it('the loss scratch is one chunk of logit rows, not the whole batch', () => {
    const q = knownConfig('Qwen/Qwen2.5-0.5B-Instruct');
    const p = planMemory(q, { ...base, batchSize: 1, seqLen: 1024, gradientCheckpointing: true });
    const logits = p.items.find((i) => i.what.startsWith('logits chunk'))!;
    expect(logits.bytes).toBeLessThanOrEqual(64 * 2 ** 20);
    expect(p.byCategory.scratch).toBeLessThan((4 * 1024 * 151936) / 2); // far below whole-batch logits
    // as many rows as fit in 64 MiB of f32 logits: 110 at Qwen2's vocabulary
    expect(p.items.some((i) => i.what.startsWith('logits chunk (110 rows'))).toBe(true);
    const small = planMemory(q, {
      ...base,
      batchSize: 1,
      seqLen: 1024,
      gradientCheckpointing: true,
      lossChunkRows: 64,
    });
    expect(small.byCategory.scratch).toBeLessThan(p.byCategory.scratch);
  });
  it('splits a tensor larger than the buffer limit (7B lm_head) instead of refusing it', () => {
    const q = knownConfig('Qwen/Qwen2.5-7B-Instruct');
    const p = planMemory(q, { ...base, method: 'qlora', batchSize: 1, seqLen: 256, gradientCheckpointing: true });
    const head = p.items.find((i) => i.what === 'lm_head')!;
    expect(head.count).toBe(2);
    expect(head.bytes).toBeGreaterThanOrEqual(2 * 152064 * 3584);
    expect(head.bytes).toBeLessThan(2 * 152064 * 3584 * 1.13);
  });
  it('fits() and suggestions: each suggestion lowers the total and says whether it then fits', () => {
    const q = knownConfig('Qwen/Qwen2.5-1.5B-Instruct');
    const t: TrainPlanConfig = { method: 'lora', batchSize: 8, seqLen: 1024, gradientCheckpointing: false };
    const p = planMemory(q, t);
    const budget = 4e9;
    expect(p.fits(p.total)).toBe(true);
    expect(p.fits(p.total - 1)).toBe(false);
    expect(p.fits(budget)).toBe(false);
    const s = p.suggestions(budget);
    expect(new Set(s.map((x) => x.kind))).toEqual(
      new Set(['checkpointing', 'qlora', 'batch', 'cutoff', 'lossChunk', 'nf4Head', 'autofit']),
    );
    for (const x of s) {
      const after = planMemory(q, { ...t, ...x.change });
      expect(after.total).toBe(x.total);
      expect(x.saves).toBe(p.total - x.total);
      expect(x.fits).toBe(x.total <= budget);
    }
    expect(s[0].fits || !s.some((x) => x.fits)).toBe(true);
    expect(s.find((x) => x.kind === 'checkpointing')!.saves).toBeGreaterThan(1e9);
  });
  it('full fine-tuning keeps f32 weights, gradients and two moments for every parameter', () => {
    const p = planMemory(tiny, { ...base, method: 'full' });
    const params = 2 * 300 * 64 + 5 * 64 + 2 * (2 * 64 * 64 + 2 * 32 * 64 + 3 * 160 * 64);
    expect(p.byCategory.adapters).toBe(0);
    const perTensor = p.items.find((i) => i.what === 'parameter gradients')!;
    expect(perTensor.count).toBe(2 + 5 + 2 * 7);
    expect(p.byCategory.gradients).toBe(perTensor.bytes + W(4 * params));
    expect(p.byCategory.optimizer).toBeGreaterThan(3 * W(4 * params));
    expect(p.items.find((i) => i.what === 'embed_tokens')!.bytes).toBe(W(4 * 300 * 64)); // f32 for full FT
  });
  it('rejects bad input with the field name', () => {
    expect(() => planMemory(tiny, { ...base, batchSize: 0 })).toThrow(PlanError);
    expect(() => planMemory(tiny, { ...base, seqLen: 1.5 })).toThrow(/seqLen/);
    expect(() => planMemory(tiny, { ...base, loraTargets: ['qproj'] })).toThrow(/qproj/);
  });
});

// The seed's LLaMA-Factory runs (rank 8 on all linears, cutoff 256, gradient checkpointing).
const seedRun = (method: 'lora' | 'qlora', batchSize: number): TrainPlanConfig => ({
  method,
  batchSize,
  seqLen: 256,
  loraRank: 8,
  gradientCheckpointing: true,
  doubleQuant: true,
});
const ALL_OPTIONS: Partial<TrainPlanConfig> = {
  checkpointPrecision: 'bf16',
  headPrecision: 'nf4',
  embeddingOnHost: true,
  lossChunkRows: SMALL_LOSS_CHUNK_ROWS,
};
const item = (p: ReturnType<typeof planMemory>, what: string) => p.items.find((i) => i.what === what);

describe('planMemory memory options', () => {
  const q15 = knownConfig('Qwen/Qwen2.5-1.5B-Instruct');
  const N = 4 * 256;
  it('bf16 checkpoints: L+1 layer inputs at 2 bytes and one f32 working copy instead of L+1 f32', () => {
    const f32 = planMemory(q15, seedRun('qlora', 4));
    const b16 = planMemory(q15, { ...seedRun('qlora', 4), checkpointPrecision: 'bf16' });
    expect(item(f32, 'residual stream h0..hL')!.bytes).toBe(29 * sizeClass(4 * N * 1536));
    expect(item(b16, 'layer inputs h0..hL (bf16 checkpoints)')!.bytes).toBe(29 * sizeClass(2 * N * 1536));
    expect(item(b16, 'residual stream (f32 working copy)')!.bytes).toBe(sizeClass(4 * N * 1536));
    // without checkpointing the option has nothing to act on
    const off = { ...seedRun('qlora', 4), gradientCheckpointing: false };
    expect(planMemory(q15, { ...off, checkpointPrecision: 'bf16' }).total).toBe(planMemory(q15, off).total);
  });
  it('NF4 head: codes and f32 scales replace the tied 16-bit table, the batch rows come from the host', () => {
    const p = planMemory(q15, { ...seedRun('qlora', 4), headPrecision: 'nf4' });
    expect(item(p, 'embed_tokens')).toBeUndefined();
    expect(item(p, 'lm_head (NF4 codes)')!.bytes).toBe(W((151936 * 1536) / 2));
    expect(item(p, 'lm_head NF4 absmax (f32)')!.bytes).toBe(W((4 * 151936 * 1536) / 64));
    expect(item(p, 'embedding rows gathered on the host, their row ids')!.bytes).toBe(
      sizeClass(2 * N * 1536) + sizeClass(4 * N),
    );
    // a tied model needs the table on the GPU for its 16-bit head: embeddingOnHost alone changes nothing
    const base = planMemory(q15, seedRun('qlora', 4)).total;
    expect(planMemory(q15, { ...seedRun('qlora', 4), embeddingOnHost: true }).total).toBe(base);
    // full fine-tuning trains both matrices: the options do not apply
    const full = { ...seedRun('lora', 1), method: 'full' as const };
    expect(planMemory(q15, { ...full, headPrecision: 'nf4', embeddingOnHost: true }).total).toBe(
      planMemory(q15, full).total,
    );
  });
  it('untied 7B: the input embedding in host memory removes both row-split parts of it', () => {
    const q7 = knownConfig('Qwen/Qwen2.5-7B-Instruct');
    const base = planMemory(q7, seedRun('qlora', 1));
    const host = planMemory(q7, { ...seedRun('qlora', 1), embeddingOnHost: true });
    const embed = item(base, 'embed_tokens')!;
    expect(embed.count).toBe(2);
    expect(item(host, 'embed_tokens')).toBeUndefined();
    expect(base.total - host.total).toBe(embed.bytes - sizeClass(2 * 256 * 3584) - sizeClass(4 * 256));
  });
  it('the four seed runs with every option: 1.5B QLoRA ≤ 1.47 GB, 3B QLoRA ≤ 2.1, 7B QLoRA ≤ 4.34 (70–80 % of LLaMA-Factory), 1.5B LoRA ≤ 3.6', () => {
    const totals = Object.fromEntries(
      (
        [
          ['1.5B QLoRA bs4', 'Qwen/Qwen2.5-1.5B-Instruct', 'qlora', 4],
          ['3B QLoRA bs1', 'Qwen/Qwen2.5-3B-Instruct', 'qlora', 1],
          ['7B QLoRA bs1', 'Qwen/Qwen2.5-7B-Instruct', 'qlora', 1],
          ['1.5B LoRA bs4', 'Qwen/Qwen2.5-1.5B-Instruct', 'lora', 4],
        ] as const
      ).map(([k, m, method, b]) => [
        k,
        [
          planMemory(knownConfig(m), seedRun(method, b)).total,
          planMemory(knownConfig(m), { ...seedRun(method, b), ...ALL_OPTIONS }).total,
        ],
      ]),
    );
    expect(totals['1.5B QLoRA bs4'][1]).toBeLessThanOrEqual(1.47e9);
    expect(totals['3B QLoRA bs1'][1]).toBeLessThanOrEqual(2.1e9);
    expect(totals['7B QLoRA bs1'][1]).toBeLessThanOrEqual(4.34e9);
    expect(totals['1.5B LoRA bs4'][1]).toBeLessThanOrEqual(3.6e9);
    for (const [before, after] of Object.values(totals)) expect(after).toBeLessThan(before * 0.9);
  });
});

describe('auto-fit', () => {
  const q15 = knownConfig('Qwen/Qwen2.5-1.5B-Instruct');
  it('takes the steps in order until the plan fits, and its merged change reproduces the plan', () => {
    const t: TrainPlanConfig = { method: 'qlora', batchSize: 8, seqLen: 512, gradientCheckpointing: false };
    const budget = 1.6e9;
    const r = fitPlan(q15, t, budget);
    expect(r.fits).toBe(true);
    expect(r.plan.total).toBeLessThanOrEqual(budget);
    expect(planMemory(q15, { ...t, ...r.change }).total).toBe(r.plan.total);
    const order = ['checkpointing', 'lossChunk', 'hostEmbedding', 'checkpointPrecision', 'batch', 'nf4Head'];
    const kinds = r.chosen.map((c) => c.kind);
    expect(kinds).toEqual(order.filter((k) => kinds.includes(k as never)));
    expect(kinds[0]).toBe('checkpointing');
    expect(kinds).not.toContain('hostEmbedding'); // tied: the head needs the table
    // each step was needed: without the last one it would not fit
    const without = { ...t };
    for (const c of r.chosen.slice(0, -1)) Object.assign(without, c.change);
    expect(planMemory(q15, without).total).toBeGreaterThan(budget);
    // the method and cutoff_len stay the user's
    expect(r.train.method).toBe('qlora');
    expect(r.train.seqLen).toBe(512);
  });
  it('a budget that already fits changes nothing; an impossible one returns the smallest plan, not fitting', () => {
    const t = seedRun('qlora', 4);
    expect(fitPlan(q15, t, 10e9).chosen).toEqual([]);
    const tiny = fitPlan(q15, t, 1e8);
    expect(tiny.fits).toBe(false);
    expect(tiny.train.batchSize).toBe(1);
    expect(tiny.train.headPrecision).toBe('nf4');
  });
  it('the next smaller plan after an out-of-memory error is strictly smaller, until none is left', () => {
    let t = { ...seedRun('qlora', 4), gradientCheckpointing: false };
    const seen: number[] = [planMemory(q15, t).total];
    for (let i = 0; i < 20; i++) {
      const n = nextSmallerPlan(q15, t);
      if (!n) break;
      expect(n.plan.total).toBeLessThan(seen[seen.length - 1]);
      seen.push(n.plan.total);
      t = n.train;
    }
    expect(nextSmallerPlan(q15, t)).toBeNull();
    expect(seen.length).toBeGreaterThan(5);
  });
  it('the studio applies an auto-fit suggestion to its settings, and the run plans what was suggested', () => {
    const c = structuredClone(DEFAULT_TRAIN_CONFIG) as TrainConfig;
    c.finetuningType = 'lora';
    c.quantization = { bits: 4, type: 'nf4', doubleQuantization: true };
    c.cutoffLen = 256;
    c.perDeviceTrainBatchSize = 4;
    c.gradientAccumulationSteps = 2;
    const input = memoryPlanInput(planRun(c), c.cutoffLen);
    const p = planMemory(q15, input);
    const s = p.suggestions(1.4e9).find((x) => x.kind === 'autofit')!;
    expect(s).toBeDefined();
    applyPlanChange(c, s.change as Parameters<typeof applyPlanChange>[1]);
    expect(c.perDeviceTrainBatchSize * c.gradientAccumulationSteps).toBe(8);
    const after = planMemory(q15, memoryPlanInput(planRun(c), c.cutoffLen));
    expect(after.total).toBe(s.total);
    expect(planRun(c).load.head).toBe(s.change.headPrecision === 'nf4' ? 'nf4' : undefined);
  });
});
