import { describe, expect, it } from 'vitest';
import {
  LORA_MODULES,
  PeftError,
  adapterConfigJson,
  isTargeted,
  loraKey,
  loraParamsFor,
  makeAdapterConfig,
  parseAdapterConfig,
  parseLoraKey,
  writeAdapterConfig,
} from '../../../src/io/peft.ts';

// adapter_config.json as LLaMA-Factory + PEFT 0.12 save it for a Qwen2.5 LoRA.
const SAVED = {
  alpha_pattern: {},
  auto_mapping: null,
  base_model_name_or_path: 'Qwen/Qwen2.5-0.5B-Instruct',
  bias: 'none',
  fan_in_fan_out: false,
  inference_mode: true,
  init_lora_weights: true,
  layer_replication: null,
  layers_pattern: null,
  layers_to_transform: null,
  loftq_config: {},
  lora_alpha: 16,
  lora_dropout: 0.0,
  megatron_config: null,
  megatron_core: 'megatron.core',
  modules_to_save: null,
  peft_type: 'LORA',
  r: 8,
  rank_pattern: {},
  revision: null,
  target_modules: ['k_proj', 'v_proj', 'up_proj', 'q_proj', 'down_proj', 'o_proj', 'gate_proj'],
  task_type: 'CAUSAL_LM',
  use_dora: false,
  use_rslora: false,
};

describe('adapter_config.json', () => {
  it('writes the PEFT fields with PEFT defaults', () => {
    const c = makeAdapterConfig({
      r: 16,
      loraAlpha: 32,
      targetModules: ['v_proj', 'q_proj'],
      baseModelNameOrPath: 'meta-llama/Llama-3.2-1B-Instruct',
    });
    const j = JSON.parse(writeAdapterConfig(c));
    expect(j).toMatchObject({
      r: 16,
      lora_alpha: 32,
      lora_dropout: 0,
      target_modules: ['q_proj', 'v_proj'],
      bias: 'none',
      use_rslora: false,
      use_dora: false,
      peft_type: 'LORA',
      task_type: 'CAUSAL_LM',
      base_model_name_or_path: 'meta-llama/Llama-3.2-1B-Instruct',
      fan_in_fan_out: false,
      inference_mode: true,
      modules_to_save: null,
      init_lora_weights: true,
      layers_to_transform: null,
      rank_pattern: {},
      alpha_pattern: {},
    });
    expect(writeAdapterConfig(c).endsWith('}\n')).toBe(true);
  });

  it('reads what PEFT saved and round-trips its own output', () => {
    const c = parseAdapterConfig(JSON.stringify(SAVED));
    expect(c).toMatchObject({
      r: 8,
      loraAlpha: 16,
      loraDropout: 0,
      useRslora: false,
      useDora: false,
      baseModelNameOrPath: 'Qwen/Qwen2.5-0.5B-Instruct',
    });
    expect(parseAdapterConfig(adapterConfigJson(c))).toEqual({
      ...c,
      targetModules: [...(c.targetModules as string[])].sort(),
      taskType: 'CAUSAL_LM',
    });
  });

  it('refuses what cannot be applied faithfully, naming the field', () => {
    const bad = (patch: Record<string, unknown>) => {
      try {
        parseAdapterConfig({ ...SAVED, ...patch }, 'out/adapter_config.json');
      } catch (e) {
        expect(e).toBeInstanceOf(PeftError);
        return (e as Error).message;
      }
      throw new Error('expected PeftError');
    };
    expect(bad({ peft_type: 'IA3' })).toBe(
      'out/adapter_config.json: peft_type: only LORA adapters are supported, got "IA3"',
    );
    expect(bad({ r: 0 })).toMatch(/: r: must be a positive integer/);
    expect(bad({ lora_alpha: '16' })).toMatch(/lora_alpha: must be a positive number/);
    expect(bad({ bias: 'all' })).toMatch(/bias: only "none" is supported/);
    expect(bad({ fan_in_fan_out: true })).toMatch(/fan_in_fan_out/);
    expect(bad({ modules_to_save: ['lm_head'] })).toMatch(
      /modules_to_save: fully trained extra modules \(\["lm_head"\]\)/,
    );
    expect(bad({ target_modules: [] })).toMatch(/target_modules: must be a non-empty list/);
    expect(bad({ target_modules: '(' })).toMatch(/does not compile/);
    expect(bad({ layers_to_transform: [-1] })).toMatch(/layers_to_transform/);
    expect(bad({ rank_pattern: { q_proj: 0 } })).toMatch(/rank_pattern\.q_proj: must be a positive number/);
    expect(bad({ task_type: 'SEQ_CLS' })).toMatch(/task_type: must be CAUSAL_LM/);
    expect(bad({ use_dora: 'no' })).toMatch(/use_dora: must be true or false/);
    expect(() => parseAdapterConfig('{', 'a.json')).toThrow(/^a\.json: not valid JSON/);
  });
});

describe('LoRA tensor keys', () => {
  it('names keys as PEFT saves them and parses them back', () => {
    expect(loraKey(0, 'q_proj', 'A')).toBe('base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight');
    expect(loraKey(27, 'down_proj', 'B')).toBe('base_model.model.model.layers.27.mlp.down_proj.lora_B.weight');
    expect(loraKey(3, 'v_proj', 'magnitude')).toBe(
      'base_model.model.model.layers.3.self_attn.v_proj.lora_magnitude_vector',
    );
    for (const layer of [0, 1, 15, 127]) {
      for (const module of LORA_MODULES) {
        for (const which of ['A', 'B', 'magnitude'] as const)
          expect(parseLoraKey(loraKey(layer, module, which))).toEqual({ layer, module, which });
      }
    }
  });

  it('accepts the in-memory ".default" adapter name; rejects other keys', () => {
    expect(parseLoraKey('base_model.model.model.layers.2.mlp.up_proj.lora_B.default.weight')).toEqual({
      layer: 2,
      module: 'up_proj',
      which: 'B',
    });
    expect(parseLoraKey('base_model.model.model.layers.2.self_attn.up_proj.lora_B.weight')).toBeNull();
    // Phi-3's fused projections (modeling_phi3.py) are PEFT modules of their own, in their own group.
    expect(parseLoraKey('base_model.model.model.layers.2.self_attn.qkv_proj.lora_A.weight')).toEqual({
      layer: 2,
      module: 'qkv_proj',
      which: 'A',
    });
    expect(parseLoraKey('base_model.model.model.layers.2.mlp.gate_up_proj.lora_B.weight')).toEqual({
      layer: 2,
      module: 'gate_up_proj',
      which: 'B',
    });
    expect(parseLoraKey('base_model.model.model.layers.2.mlp.qkv_proj.lora_A.weight')).toBeNull();
    expect(parseLoraKey('base_model.model.model.layers.2.self_attn.gate_up_proj.lora_A.weight')).toBeNull();
    expect(parseLoraKey('base_model.model.model.layers.2.self_attn.qkv.lora_A.weight')).toBeNull();
    expect(parseLoraKey('base_model.model.lm_head.lora_A.weight')).toBeNull();
    expect(parseLoraKey('model.layers.0.self_attn.q_proj.weight')).toBeNull();
    expect(parseLoraKey('base_model.model.model.layers.x.self_attn.q_proj.lora_A.weight')).toBeNull();
  });

  it('targets modules like PEFT: names by suffix, strings as full-match regex, layers_to_transform', () => {
    const list = parseAdapterConfig({ ...SAVED, target_modules: ['q_proj', 'v_proj'] });
    expect(isTargeted(list, 0, 'q_proj')).toBe(true);
    expect(isTargeted(list, 0, 'k_proj')).toBe(false);
    const re = parseAdapterConfig({ ...SAVED, target_modules: '.*\\.(q|v)_proj', layers_to_transform: [1, 2] });
    expect(isTargeted(re, 1, 'v_proj')).toBe(true);
    expect(isTargeted(re, 0, 'v_proj')).toBe(false);
    expect(isTargeted(re, 1, 'o_proj')).toBe(false);
    expect(isTargeted(parseAdapterConfig({ ...SAVED, target_modules: 'q_proj' }), 0, 'q_proj')).toBe(false); // full match of the path
  });

  it('scale = α/r, or α/√r with rsLoRA; rank/alpha patterns override per module', () => {
    const c = parseAdapterConfig({
      ...SAVED,
      r: 16,
      lora_alpha: 32,
      rank_pattern: { 'layers.3.self_attn.q_proj': 4 },
      alpha_pattern: { down_proj: 8 },
    });
    expect(loraParamsFor(c, 0, 'q_proj')).toEqual({ r: 16, alpha: 32, scale: 2 });
    expect(loraParamsFor(c, 3, 'q_proj')).toEqual({ r: 4, alpha: 32, scale: 8 });
    expect(loraParamsFor(c, 5, 'down_proj')).toEqual({ r: 16, alpha: 8, scale: 0.5 });
    const rs = parseAdapterConfig({ ...SAVED, r: 16, lora_alpha: 32, use_rslora: true });
    expect(loraParamsFor(rs, 0, 'k_proj').scale).toBe(8);
  });
});
