import { describe, expect, it } from 'vitest';
import { MEMORY_CATEGORIES } from '../../src/engine/gpu/ledger.ts';
import { sizeClass } from '../../src/engine/gpu/pool.ts';
import { parseModelConfig } from '../../src/engine/model/config.ts';
import { knownConfig } from '../../src/engine/plan/known-configs.ts';
import { planMemory, PlanError, type TrainPlanConfig } from '../../src/engine/plan/plan.ts';

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

describe('planMemory', () => {
  it('counts the weights of a tiny Llama exactly (each buffer rounded to its pool size class)', () => {
    const p = planMemory(tiny, base);
    const H = 64,
      I = 160,
      V = 300,
      KV = 32;
    const expected =
      sizeClass(4 * V * H) * 2 + // embed + lm_head
      sizeClass(4 * H) * 5 + // 2 norms × 2 layers + final
      2 * (2 * sizeClass(4 * H * H) + 2 * sizeClass(4 * KV * H) + 3 * sizeClass(4 * I * H)) +
      sizeClass(4 * 8); // RoPE inv_freq [headDim/2]
    expect(p.byCategory.weights).toBe(expected);
    // adapters: q (A 4×64, B 64×4) and v (A 4×64, B 32×4) in 2 layers
    expect(p.byCategory.adapters).toBe(2 * (sizeClass(4 * 256) * 3 + sizeClass(4 * 128)));
    const n = 2 * (256 + 256 + 256 + 128);
    // one gradient per adapter tensor + the flat arena; params/exp_avg/exp_avg_sq arenas + a block per tensor
    expect(p.byCategory.gradients).toBe(p.byCategory.adapters + sizeClass(4 * n));
    expect(p.byCategory.optimizer).toBe(3 * sizeClass(4 * n) + sizeClass(4 * 4 * 8));
    expect(p.total).toBe(MEMORY_CATEGORIES.reduce((s, c) => s + p.byCategory[c], 0));
    expect(p.items.every((i) => i.bytes > 0 && i.count > 0)).toBe(true);
  });
  it('Qwen2 biases, tied embeddings and 16-bit storage', () => {
    const q = knownConfig('Qwen/Qwen2.5-0.5B-Instruct');
    const p = planMemory(q, { ...base, batchSize: 1, seqLen: 64 });
    const embed = p.items.find((i) => i.what === 'embed_tokens')!;
    expect(embed.bytes).toBe(sizeClass(2 * 151936 * 896));
    expect(p.items.some((i) => i.what === 'lm_head')).toBe(false);
    expect(p.items.find((i) => i.what === 'biases')!.count).toBe(24 * 3);
    // bf16 weights: 2 bytes × 494M parameters, plus the pool's size-class rounding (≤ 12.5 % per buffer)
    expect(p.byCategory.weights / 2 / 494e6).toBeGreaterThan(0.99);
    expect(p.byCategory.weights / 2 / 494e6).toBeLessThan(1.125);
  });
  it('QLoRA stores ~0.5 byte per linear weight plus absmax; double quant shrinks absmax 4×', () => {
    const q = knownConfig('Qwen/Qwen2.5-1.5B-Instruct');
    const lora = planMemory(q, { ...base, loraTargets: undefined });
    const ql = planMemory(q, { ...base, method: 'qlora', loraTargets: undefined });
    const qlNoDq = planMemory(q, { ...base, method: 'qlora', doubleQuant: false, loraTargets: undefined });
    const linear = 28 * (2 * 1536 * 1536 + 2 * 256 * 1536 + 3 * 1536 * 8960);
    const dense =
      28 * (2 * sizeClass(2 * 1536 * 1536) + 2 * sizeClass(2 * 256 * 1536) + 3 * sizeClass(2 * 1536 * 8960));
    const embed = sizeClass(2 * 151936 * 1536);
    const rest =
      embed + 57 * sizeClass(2 * 1536) + 28 * (2 * sizeClass(2 * 256) + sizeClass(2 * 1536)) + sizeClass(4 * 64);
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
    expect(new Set(s.map((x) => x.kind))).toEqual(new Set(['checkpointing', 'qlora', 'batch', 'cutoff']));
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
    expect(p.byCategory.gradients).toBe(perTensor.bytes + sizeClass(4 * params));
    expect(p.byCategory.optimizer).toBeGreaterThan(3 * sizeClass(4 * params));
    expect(p.items.find((i) => i.what === 'embed_tokens')!.bytes).toBe(sizeClass(4 * 300 * 64)); // f32 for full FT
  });
  it('rejects bad input with the field name', () => {
    expect(() => planMemory(tiny, { ...base, batchSize: 0 })).toThrow(PlanError);
    expect(() => planMemory(tiny, { ...base, seqLen: 1.5 })).toThrow(/seqLen/);
    expect(() => planMemory(tiny, { ...base, loraTargets: ['qproj'] })).toThrow(/qproj/);
  });
});
