import { describe, expect, it } from 'vitest';
import { checkMethod, DEFAULT_METHOD, DEMO_METHOD, guessTemplate, methodFromYaml, methodYaml, totalSteps, type MethodSettings } from '../../src/ui/method.ts';

describe('method settings', () => {
  it('start from LlamaBoard defaults', () => {
    expect(DEFAULT_METHOD).toMatchObject({
      method: 'lora', learningRate: 5e-5, numTrainEpochs: 3, maxSamples: 100000, cutoffLen: 2048, batchSize: 2, gradAccum: 8,
      valSize: 0, lrScheduler: 'cosine', warmupSteps: 0, maxGradNorm: 1, loggingSteps: 5, saveSteps: 100, loraRank: 8, loraAlpha: 16,
      loraDropout: 0, loraTarget: [], useRslora: false, neftuneAlpha: 0, packing: false, trainOnPrompt: false, seed: 42,
    });
    expect(checkMethod({ ...DEFAULT_METHOD })).toEqual([]);
  });

  it('round-trip through LLaMA-Factory YAML', () => {
    const s: MethodSettings = { ...DEFAULT_METHOD, method: 'qlora', learningRate: 2e-4, loraRank: 16, loraAlpha: 32, loraTarget: ['q_proj', 'v_proj'], useRslora: true, neftuneAlpha: 5, packing: true, valSize: 0.1, template: 'qwen', doubleQuant: false };
    const yaml = methodYaml(s, { modelNameOrPath: 'Qwen/Qwen2.5-0.5B-Instruct', datasets: ['identity_en_zh'] });
    expect(yaml).toMatch(/^learning_rate: 2\.0e-4$/m);
    expect(yaml).toMatch(/^quantization_bit: 4$/m);
    expect(yaml).toMatch(/^lora_target: q_proj,v_proj$/m);
    expect(yaml).toMatch(/^neftune_noise_alpha: 5\.0$/m);
    const back = methodFromYaml(yaml);
    expect(back.settings).toEqual(s);
    expect(back.model).toBe('Qwen/Qwen2.5-0.5B-Instruct');
    expect(back.datasets).toEqual(['identity_en_zh']);
    const d = methodFromYaml(methodYaml({ ...DEFAULT_METHOD }, { modelNameOrPath: 'm/x', datasets: ['d'] }));
    expect(d.settings).toEqual({ ...DEFAULT_METHOD });
  });

  it('name the knob and the reason for bad values', () => {
    const p = checkMethod({ ...DEFAULT_METHOD, learningRate: 0, batchSize: 1.5, loraDropout: 1, valSize: 2.5, loraTarget: ['qproj'] });
    expect(p.map((x) => x.field).sort()).toEqual(['batchSize', 'learningRate', 'loraDropout', 'loraTarget', 'valSize']);
  });

  it('count optimizer steps like the HF Trainer and guess templates', () => {
    expect(totalSteps(100, { batchSize: 2, gradAccum: 8, numTrainEpochs: 3 })).toBe(21);
    expect(totalSteps(3, { batchSize: 2, gradAccum: 8, numTrainEpochs: 1 })).toBe(1);
    expect(guessTemplate('Qwen/Qwen2.5-0.5B-Instruct', null)).toBe('qwen');
    expect(guessTemplate('meta-llama/Llama-3.2-1B-Instruct', 'LlamaForCausalLM')).toBe('llama3');
  });
});

describe('loss curve smoothing (LlamaBoard ploting.smooth)', () => {
  it('starts at the first value and follows with the length-dependent EMA weight', async () => {
    const { smooth } = await import('../../src/ui/chart-data.ts');
    expect(smooth([])).toEqual([]);
    const v = [4, 2, 2, 2];
    const w = 1.8 * (1 / (1 + Math.exp(-0.05 * 4)) - 0.5);
    const s = smooth(v);
    expect(s[0]).toBe(4);
    expect(s[1]).toBeCloseTo(4 * w + 2 * (1 - w), 12);
    expect(s[3]).toBeGreaterThan(2);
    expect(s[3]).toBeLessThan(s[1]);
  });
});

describe('demo preset', () => {
  it('is a valid method that differs from LlamaBoard only where the tiny demo model needs it', () => {
    expect(checkMethod({ ...DEMO_METHOD })).toEqual([]);
    const changed = Object.keys(DEMO_METHOD).filter((k) => DEMO_METHOD[k as keyof typeof DEMO_METHOD] !== DEFAULT_METHOD[k as keyof typeof DEFAULT_METHOD]).sort();
    expect(changed).toEqual(['batchSize', 'cutoffLen', 'gradAccum', 'gradientCheckpointing', 'learningRate', 'numTrainEpochs', 'saveSteps']);
  });
});
