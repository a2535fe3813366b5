// Phi-3 / Phi-3.5 / Phi-4-mini (Phi3ForCausalLM): config.json parsing (fused projections, LongRoPE,
// partial rotary), the real configs' weight names and memory plan, and the LongRoPE frequency
// tables against transformers' formulas (modeling_rope_utils.py _compute_longrope_parameters).
import { describe, expect, it } from 'vitest';
import {
  checkWeights,
  computeInvFreq,
  expectedWeights,
  fusedParts,
  linearModules,
  linearShape,
  longRopeUsesLong,
  parseModelConfig,
  ropeAttentionScaling,
} from '../../src/engine/model/config.ts';
import { LINEAR_MODULES, resolveTargets } from '../../src/engine/model/model.ts';
import {
  checkTrainConfig,
  DEFAULT_TRAIN_CONFIG,
  guessTemplate,
  loraTargetChecked,
  loraTargetChoices,
  toggleLoraTarget,
} from '../../src/engine/train/method.ts';
import { parseTrainYaml } from '../../src/engine/train/llamafactory-config.ts';
import { ggufArchitecture } from '../../src/engine/export/gguf.ts';
import { modelMatmulShapes } from '../../src/engine/model/matmul-shapes.ts';
import type { Model } from '../../src/engine/model/model.ts';
import type { HfTokenizer } from '../../src/data/index.ts';
import { stopIdsOf } from '../../src/worker/chat-session.ts';
import { generationEosIds } from '../../src/worker/model-session.ts';
import { KNOWN_CONFIGS, knownConfig } from '../../src/engine/plan/known-configs.ts';
import { planMemory } from '../../src/engine/plan/plan.ts';

const PHI35 = 'microsoft/Phi-3.5-mini-instruct';
const PHI4 = 'microsoft/Phi-4-mini-instruct';

function err(raw: Record<string, unknown>): string {
  try {
    parseModelConfig(raw);
  } catch (e) {
    return (e as Error).message;
  }
  return 'parsed';
}

/** Every stored tensor of a checkpoint of this config (the tied head not stored). */
function checkpointNames(name: string): Map<string, number[]> {
  return new Map(
    expectedWeights(knownConfig(name))
      .filter((w) => !w.optional)
      .map((w) => [w.name, w.shape]),
  );
}

describe('Phi-3 config.json', () => {
  it('Phi-3.5-mini-instruct: fused modules, LongRoPE over 4096 → 131072, full rotary, untied', () => {
    const c = knownConfig(PHI35);
    expect(c).toMatchObject({
      architecture: 'Phi3ForCausalLM',
      hiddenSize: 3072,
      numHeads: 32,
      numKvHeads: 32,
      headDim: 96,
      rotaryDim: 96,
      fusedProjections: true,
      tieWordEmbeddings: false,
      rmsNormEps: 1e-5,
      vocabSize: 32064,
      slidingWindow: 262144,
    });
    expect(c.rope.type).toBe('longrope');
    if (c.rope.type !== 'longrope') return;
    expect(c.rope.shortFactor).toHaveLength(48);
    expect(c.rope.longFactor).toHaveLength(48);
    expect(c.rope.originalMaxPositionEmbeddings).toBe(4096);
    // factor = 131072 / 4096 = 32: √(1 + ln 32 / ln 4096).
    expect(ropeAttentionScaling(c)).toBeCloseTo(Math.sqrt(1 + Math.log(32) / Math.log(4096)), 15);
    expect(ropeAttentionScaling(c)).toBeCloseTo(1.1902380714238083, 12);
    expect(linearModules(c)).toEqual(['qkv_proj', 'o_proj', 'gate_up_proj', 'down_proj']);
    expect(linearShape(c, 'qkv_proj')).toEqual([3 * 3072, 3072]);
    expect(linearShape(c, 'gate_up_proj')).toEqual([2 * 8192, 3072]);
  });

  it('Phi-4-mini-instruct: GQA 24/8, RoPE on 96 of 128 dims, tied, 200k vocabulary', () => {
    const c = knownConfig(PHI4);
    expect(c).toMatchObject({ numHeads: 24, numKvHeads: 8, headDim: 128, rotaryDim: 96, tieWordEmbeddings: true });
    expect(linearShape(c, 'qkv_proj')).toEqual([(24 + 2 * 8) * 128, 3072]);
    expect(fusedParts(c, 'qkv_proj')).toEqual([
      { row0: 0, rows: 3072 },
      { row0: 3072, rows: 1024 },
      { row0: 4096, rows: 1024 },
    ]);
    expect(fusedParts(c, 'gate_up_proj')).toEqual([
      { row0: 0, rows: 8192 },
      { row0: 8192, rows: 8192 },
    ]);
    // 48 frequencies (rotary 96), not 64 (head 128).
    expect(computeInvFreq(c)).toHaveLength(48);
  });

  for (const [name, tensors] of [
    [PHI35, 1 + 32 * 6 + 1 + 1],
    [PHI4, 1 + 32 * 6 + 1],
  ] as const) {
    it(`${name}: its weight names check out; QLoRA at cutoff 1024 plans ~0.5 byte per linear weight`, () => {
      const c = knownConfig(name);
      const names = checkpointNames(name);
      // embed, 32 × (2 norms + qkv_proj, o_proj, gate_up_proj, down_proj), final norm (+ lm_head when untied).
      expect(names.size).toBe(tensors);
      expect(names.get('model.layers.31.self_attn.qkv_proj.weight')).toEqual(linearShape(c, 'qkv_proj'));
      expect(names.get('model.layers.0.mlp.gate_up_proj.weight')).toEqual([16384, 3072]);
      expect(checkWeights(c, names).problems).toEqual([]);
      // A Llama-style split checkpoint is not this model: named, tensor by tensor.
      const split = new Map(names);
      split.delete('model.layers.0.self_attn.qkv_proj.weight');
      split.set('model.layers.0.self_attn.q_proj.weight', [3072, 3072]);
      expect(checkWeights(c, split).problems).toEqual([
        `missing tensor "model.layers.0.self_attn.qkv_proj.weight" (expected shape [${linearShape(c, 'qkv_proj').join(', ')}])`,
        'unexpected tensor "model.layers.0.self_attn.q_proj.weight" (not part of a Phi3ForCausalLM with this config.json)',
      ]);
      const base = {
        method: 'qlora' as const,
        batchSize: 1,
        seqLen: 1024,
        loraRank: 8,
        gradientCheckpointing: true,
        doubleQuant: true,
      };
      const p = planMemory(c, base);
      const q = c.numHeads * c.headDim;
      const kv = c.numKvHeads * c.headDim;
      const linear = 32 * (3072 * (q + 2 * kv) + q * 3072 + 3 * 3072 * 8192);
      const embed = 2 * c.vocabSize * 3072 * (c.tieWordEmbeddings ? 1 : 2);
      expect(p.byCategory.weights).toBeGreaterThan(embed + linear / 2);
      expect(p.byCategory.weights).toBeLessThan(1.15 * (embed + linear / 2) + 0.05 * linear);
      console.log(`${name} QLoRA bs1 cutoff 1024: ${(p.total / 1e9).toFixed(2)} GB planned`);
      // A YAML naming the fused modules plans as the modules they fuse.
      const fusedTargets = { ...base, loraTargets: ['qkv_proj', 'o_proj', 'gate_up_proj', 'down_proj'] };
      expect(planMemory(c, fusedTargets).total).toBe(
        planMemory(c, { ...base, loraTargets: [...LINEAR_MODULES] }).total,
      );
    });
  }

  it('LoRA targets are the fused modules as PEFT names them; split names are refused', () => {
    const c = knownConfig(PHI35);
    expect(resolveTargets('all', linearModules(c))).toEqual(['qkv_proj', 'o_proj', 'gate_up_proj', 'down_proj']);
    expect(resolveTargets(['qkv_proj', 'o_proj'], linearModules(c))).toEqual(['qkv_proj', 'o_proj']);
    expect(() => resolveTargets(['q_proj', 'v_proj'], linearModules(c))).toThrow(
      'LoRA target "q_proj" is not a linear layer of this model; choose from qkv_proj, o_proj, gate_up_proj, down_proj or "all"',
    );
    expect(() => resolveTargets(['qkv_proj'])).toThrow(/LoRA target "qkv_proj" is not a linear layer/);
    // lora_target: all arrives as the seven Llama-style names (the TrainConfig's "all"): every fused layer.
    expect(resolveTargets([...LINEAR_MODULES], linearModules(c))).toEqual(linearModules(c));
    // A LLaMA-Factory YAML may name the fused modules; the studio's checks accept them.
    const yaml =
      'model_name_or_path: microsoft/Phi-3.5-mini-instruct\ndataset: alpaca_en_demo\nlora_target: qkv_proj,gate_up_proj\n';
    const tc = parseTrainYaml(yaml).config;
    expect(tc.lora.target).toEqual(['qkv_proj', 'gate_up_proj']);
    expect(checkTrainConfig(tc).filter((p) => p.field === 'loraTarget')).toEqual([]);
    expect(() => parseTrainYaml(yaml.replace('qkv_proj,', 'qkv,'))).toThrow(
      /lora_target: unknown module qkv; choose from all, q_proj, .*, qkv_proj, gate_up_proj/,
    );
    expect(guessTemplate(PHI35, 'Phi3ForCausalLM')).toBe('phi');
  });

  it("the Method step's target boxes for Phi-3 are its fused layers; all ticked saves as lora_target: all", () => {
    const choices = loraTargetChoices('Phi3ForCausalLM');
    expect(choices).toEqual(['qkv_proj', 'o_proj', 'gate_up_proj', 'down_proj']);
    expect(loraTargetChoices('LlamaForCausalLM')).toHaveLength(7);
    const c = structuredClone(DEFAULT_TRAIN_CONFIG);
    // The default ("all") ticks every box of either family.
    expect(choices.every((n) => loraTargetChecked(c, n))).toBe(true);
    toggleLoraTarget(c, 'o_proj', false, choices);
    expect(c.lora.target).toEqual(['qkv_proj', 'gate_up_proj', 'down_proj']);
    expect(loraTargetChecked(c, 'o_proj')).toBe(false);
    expect(checkTrainConfig(c).filter((p) => p.field === 'loraTarget')).toEqual([]);
    expect(resolveTargets(c.lora.target, linearModules(knownConfig(PHI35)))).toEqual([
      'qkv_proj',
      'gate_up_proj',
      'down_proj',
    ]);
    toggleLoraTarget(c, 'o_proj', true, choices);
    expect(c.lora.target).toEqual(structuredClone(DEFAULT_TRAIN_CONFIG).lora.target);
    // The Llama boxes behave as before.
    const l = structuredClone(DEFAULT_TRAIN_CONFIG);
    toggleLoraTarget(l, 'k_proj', false);
    expect(l.lora.target).toEqual(['q_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj']);
  });

  it("LongRoPE tables: short factors up to original_max_position_embeddings, long past it, in f32 as transformers'", () => {
    const c = knownConfig(PHI4);
    if (c.rope.type !== 'longrope') throw new Error('not longrope');
    expect(longRopeUsesLong(c.rope, undefined)).toBe(false);
    expect(longRopeUsesLong(c.rope, 4096)).toBe(false);
    expect(longRopeUsesLong(c.rope, 4097)).toBe(true);
    const short = computeInvFreq(c, 100);
    const long = computeInvFreq(c, 5000);
    const f = Math.fround;
    for (let i = 0; i < 48; i++) {
      // 1 / (ext · 10000^(2i/96)), every step rounded to f32.
      const base = f(Math.pow(10000, f((2 * i) / 96)));
      expect(short[i]).toBe(f(1 / f(f(c.rope.shortFactor[i]) * base)));
      expect(long[i]).toBe(f(1 / f(f(c.rope.longFactor[i]) * base)));
    }
    expect(long[47]).toBeLessThan(short[47] / 40); // 47.77 × slower
    expect(computeInvFreq(c)).toEqual(short);
  });

  it('resolves original_max_position_embeddings, factor and attention_factor as transformers does', () => {
    const base = { ...KNOWN_CONFIGS[PHI4] } as Record<string, unknown>;
    const rs = base.rope_scaling as Record<string, unknown>;
    const scaling = (over: Record<string, unknown>, scalingOver: Record<string, unknown> = {}) =>
      ropeAttentionScaling(parseModelConfig({ ...base, ...over, rope_scaling: { ...rs, ...scalingOver } }));
    // An explicit attention_factor wins; an explicit factor replaces max/original.
    expect(scaling({}, { attention_factor: 1.5 })).toBe(1.5);
    expect(scaling({}, { factor: 4 })).toBeCloseTo(Math.sqrt(1 + Math.log(4) / Math.log(4096)), 15);
    // Phi3Config always has original_max_position_embeddings (default 4096): the dict's value is ignored.
    const { original_max_position_embeddings: _, ...noTop } = base;
    const c = parseModelConfig({ ...noTop, rope_scaling: { ...rs, original_max_position_embeddings: 8192 } });
    expect(c.rope).toMatchObject({ type: 'longrope', originalMaxPositionEmbeddings: 4096 });
    // factor ≤ 1: no scaling.
    expect(scaling({ max_position_embeddings: 4096 })).toBe(1);
    // Residual / embedding / attention dropout is not applied: said when a config asks for it.
    expect(knownConfig(PHI35).notes.filter((n) => /dropout/.test(n))).toEqual([]);
    expect(parseModelConfig({ ...base, resid_pdrop: 0.1 }).notes).toContain(
      'config.json: resid_pdrop is 0.1; Tabtune trains without this dropout (LoRA dropout still applies)',
    );
    // Early Phi-3 configs name it "su".
    expect(parseModelConfig({ ...base, rope_scaling: { ...rs, type: 'su' } }).rope.type).toBe('longrope');
    // model_type alone names the architecture.
    const { architectures: __, ...byType } = base;
    expect(parseModelConfig(byType).architecture).toBe('Phi3ForCausalLM');
  });

  it("the kernel tuner is told the products a Phi-3 step issues: one per fused part, LoRA's part-wise ones too", () => {
    const c = knownConfig(PHI4);
    const dense = { dtype: 'bf16', shape: [1, 1] };
    const model = { config: c, linear: () => dense, bias: () => null, lmHead: dense } as unknown as Model;
    const shapes = modelMatmulShapes(model, { tokens: 256, backward: true, loraRank: 8 });
    const key = (s: { M: number; N: number; K: number; transA?: boolean; transB?: boolean }) =>
      `${s.transA ? 'T' : 'N'}${s.transB ? 'T' : 'N'} ${s.M}×${s.N}×${s.K}`;
    const got = new Set(shapes.map(key));
    // q (3072), k / v (1024) and gate / up (8192) parts of the fused weights, forward and dX.
    for (const o of [3072, 1024, 8192]) {
      expect(got.has(`NT 256×${o}×3072`), `forward ${o}`).toBe(true);
      expect(got.has(`NN 256×3072×${o}`), `dX ${o}`).toBe(true);
      expect(got.has(`NN 256×8×${o}`), `LoRA g ${o}`).toBe(true);
      expect(got.has(`TN ${o}×8×256`), `LoRA dB ${o}`).toBe(true);
    }
    // Never the fused width as one product.
    expect([...got].some((k) => k.includes('×5120×') || k.includes('×16384×'))).toBe(false);
  });

  it("studio replies stop where transformers' generate does: generation_config.json's eos ids too", () => {
    // microsoft/Phi-3.5-mini-instruct generation_config.json: <|end|> 32007, <|assistant|> 32001, <|endoftext|> 32000.
    const gen = generationEosIds('{"bos_token_id": 1, "eos_token_id": [32007, 32001, 32000], "pad_token_id": 32000}');
    expect(gen).toEqual([32007, 32001, 32000]);
    expect(generationEosIds('{"eos_token_id": 199999}')).toEqual([199999]);
    expect(generationEosIds('{"eos_token_id": null}')).toEqual([]);
    expect(generationEosIds('not json')).toEqual([]);
    const model = { config: knownConfig(PHI35) } as unknown as Model;
    const tok = { eos: { id: 32000 } } as unknown as HfTokenizer;
    expect(stopIdsOf(model, tok, gen).sort()).toEqual([32000, 32001, 32007]);
    expect(stopIdsOf(model, tok)).toEqual([32000]);
  });

  it('GGUF export refuses Phi-3 and says what to do instead', () => {
    for (const name of [PHI35, PHI4])
      expect(() => ggufArchitecture(knownConfig(name))).toThrow(
        /GGUF export does not support Phi3ForCausalLM: llama.cpp's phi3 architecture .* export merged safetensors and convert them with llama.cpp's convert_hf_to_gguf.py/,
      );
  });

  it('explains bad LongRoPE and partial rotary fields, naming config.json and the field', () => {
    const base = { ...KNOWN_CONFIGS[PHI4] } as Record<string, unknown>;
    const rs = base.rope_scaling as Record<string, unknown>;
    expect(err({ ...base, rope_scaling: { ...rs, short_factor: [1, 2, 3] } })).toBe(
      'config.json: rope_scaling.short_factor: must hold 48 numbers (one per rotated frequency, rotary dim 96), got 3',
    );
    expect(err({ ...base, rope_scaling: { ...rs, long_factor: undefined } })).toBe(
      'config.json: rope_scaling.long_factor: required for rope_type "longrope": a list of 48 numbers',
    );
    const bad = [...(rs.long_factor as number[])];
    bad[5] = -1;
    expect(err({ ...base, rope_scaling: { ...rs, long_factor: bad } })).toBe(
      'config.json: rope_scaling.long_factor[5]: must be a positive number, got -1',
    );
    expect(err({ ...base, partial_rotary_factor: 0.7 })).toBe(
      'config.json: partial_rotary_factor: head_dim 128 × 0.7 = 89 rotated dimensions; RoPE needs an even number ≥ 2',
    );
    expect(err({ ...base, partial_rotary_factor: 1.5 })).toBe(
      'config.json: partial_rotary_factor: must be a number in (0, 1], got 1.5',
    );
    // Only Phi-3 rotates part of a head.
    expect(
      err({
        architectures: ['LlamaForCausalLM'],
        hidden_size: 64,
        intermediate_size: 128,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        vocab_size: 300,
        partial_rotary_factor: 0.5,
      }),
    ).toBe(
      'config.json: partial_rotary_factor: partial rotary embeddings are not supported for LlamaForCausalLM (got 0.5)',
    );
  });
});
