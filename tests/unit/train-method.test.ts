import { describe, expect, it } from 'vitest';
import type { TrainConfig } from '../../src/engine/train/llamafactory-config.ts';
import { parseTrainYaml } from '../../src/engine/train/llamafactory-config.ts';
import {
  ALL_LORA_TARGETS,
  DEFAULT_TRAIN_CONFIG,
  DEMO_TRAIN_CONFIG,
  METHOD_KNOBS,
  PROBLEM_CODES,
  applyPlanChange,
  checkTrainConfig,
  guessTemplate,
  knob,
  methodOf,
  problemText,
  knobApplies,
  setStage,
  setPrefLoss,
  runConfig,
  setMethod,
  studioConfigFromYaml,
  studioYaml,
  toggleLoraTarget,
  trainConfigFromLegacyMethod,
  type Method,
} from '../../src/engine/train/method.ts';
import { memoryPlanInput, planRun, totalTrainingSteps, trainerConfigFrom } from '../../src/engine/train/run-builder.ts';
import { llamaFactoryBundle } from '../../src/engine/export/llamafactory-bundle.ts';
import { gpuModelKey } from '../../src/worker/gpu-model.ts';
import { problemTables } from '../../src/ui/problems.ts';

const fresh = (m: Method = 'lora'): TrainConfig => {
  const c = structuredClone(DEFAULT_TRAIN_CONFIG as TrainConfig);
  setMethod(c, m);
  return c;
};

describe('Method settings (a LLaMA-Factory TrainConfig)', () => {
  it('start from LlamaBoard defaults', () => {
    expect(DEFAULT_TRAIN_CONFIG).toMatchObject({
      finetuningType: 'lora',
      quantization: null,
      learningRate: 5e-5,
      numTrainEpochs: 3,
      maxSamples: 100000,
      cutoffLen: 2048,
      perDeviceTrainBatchSize: 2,
      gradientAccumulationSteps: 8,
      valSize: 0,
      lrSchedulerType: 'cosine',
      warmupSteps: 0,
      maxGradNorm: 1,
      loggingSteps: 5,
      saveSteps: 100,
      lora: { rank: 8, alpha: 16, dropout: 0, target: [...ALL_LORA_TARGETS], useRslora: false },
      neftuneNoiseAlpha: null,
      packing: false,
      trainOnPrompt: false,
      seed: 42,
    });
    expect(methodOf(DEFAULT_TRAIN_CONFIG)).toBe('lora');
    expect(checkTrainConfig(fresh())).toEqual([]);
  });

  it('round-trip through LLaMA-Factory YAML', () => {
    const s = fresh('qlora');
    Object.assign(s, { learningRate: 2e-4, neftuneNoiseAlpha: 5, packing: true, valSize: 0.1, template: 'qwen' });
    s.lora = { ...s.lora, rank: 16, alpha: 32, target: ['q_proj', 'v_proj'], useRslora: true };
    s.quantization!.doubleQuantization = false;
    const yaml = studioYaml(s, { modelNameOrPath: 'Qwen/Qwen2.5-0.5B-Instruct', datasets: ['identity_en_zh'] });
    expect(yaml).toMatch(/^learning_rate: 2\.0e-4$/m);
    expect(yaml).toMatch(/^quantization_bit: 4$/m);
    expect(yaml).toMatch(/^double_quantization: false$/m);
    expect(yaml).toMatch(/^lora_target: q_proj,v_proj$/m);
    expect(yaml).toMatch(/^neftune_noise_alpha: 5\.0$/m);
    const back = studioConfigFromYaml(yaml);
    expect({ ...back.config, outputDir: '' }).toEqual(s);
    expect(back.model).toBe('Qwen/Qwen2.5-0.5B-Instruct');
    expect(back.datasets).toEqual(['identity_en_zh']);
    const d = studioConfigFromYaml(studioYaml(fresh(), { modelNameOrPath: 'm/x', datasets: ['d'] }));
    expect(d.config).toEqual(fresh());
  });

  it('name the knob and the reason for bad values, in English and 中文', () => {
    const c = fresh();
    Object.assign(c, { learningRate: 0, perDeviceTrainBatchSize: 1.5, valSize: 2.5 });
    c.lora.dropout = 1;
    c.lora.target = ['qproj'];
    const p = checkTrainConfig(c);
    expect(p.map((x) => x.field).sort()).toEqual(['batchSize', 'learningRate', 'loraDropout', 'loraTarget', 'valSize']);
    const batch = p.find((x) => x.field === 'batchSize')!;
    expect(problemText(batch)).toBe('must be a whole number ≥ 1');
    expect(problemText(batch, problemTables.zh)).toBe('必须是 ≥ 1 的整数');
    expect(
      problemText(
        p.find((x) => x.field === 'loraTarget')!,
        problemTables.zh,
      ),
    ).toBe('未知模块 qproj');
    for (const code of PROBLEM_CODES) expect(problemTables.zh[code]).toMatch(/[\u4e00-\u9fff]/);
    c.trainOnPrompt = c.maskHistory = true;
    expect(checkTrainConfig(c).map((x) => x.field)).toContain('maskHistory');
  });

  it('count optimizer steps like the HF Trainer and guess templates', () => {
    // 100 rows at batch 2 = 50 micro-batches; accumulation 8 → 7 updates per epoch; 3 epochs → 21.
    expect(
      totalTrainingSteps(Math.ceil(100 / 2), { gradientAccumulationSteps: 8, numTrainEpochs: 3, maxSteps: null }),
    ).toBe(21);
    expect(
      totalTrainingSteps(Math.ceil(3 / 2), { gradientAccumulationSteps: 8, numTrainEpochs: 1, maxSteps: null }),
    ).toBe(1);
    expect(guessTemplate('Qwen/Qwen2.5-0.5B-Instruct', null)).toBe('qwen');
    expect(guessTemplate('meta-llama/Llama-3.2-1B-Instruct', 'LlamaForCausalLM')).toBe('llama3');
    expect(guessTemplate('HuggingFaceTB/SmolLM3-3B', 'SmolLM3ForCausalLM')).toBe('smollm');
    expect(guessTemplate('microsoft/Phi-3.5-mini-instruct', 'Phi3ForCausalLM')).toBe('phi');
    expect(guessTemplate('microsoft/Phi-3-mini-4k-instruct', null)).toBe('phi');
    expect(guessTemplate('microsoft/Phi-4-mini-instruct', 'Phi3ForCausalLM')).toBe('phi4_mini');
    expect(guessTemplate('microsoft/phi-4', 'Phi3ForCausalLM')).toBe('phi4');
    expect(guessTemplate('my-finetune', 'Phi3ForCausalLM')).toBe('phi');
  });

  it('reads settings stored by the studio before it kept a TrainConfig', () => {
    const old = {
      method: 'qlora',
      learningRate: 2e-4,
      numTrainEpochs: 2,
      maxSamples: 500,
      cutoffLen: 512,
      batchSize: 4,
      gradAccum: 2,
      valSize: 0.1,
      lrScheduler: 'linear',
      warmupSteps: 3,
      maxGradNorm: 0.5,
      weightDecay: 0.01,
      loggingSteps: 2,
      saveSteps: 20,
      loraRank: 16,
      loraAlpha: 32,
      loraDropout: 0.05,
      loraTarget: ['q_proj'],
      useRslora: true,
      doubleQuant: false,
      neftuneAlpha: 5,
      packing: true,
      trainOnPrompt: false,
      maskHistory: true,
      gradientCheckpointing: false,
      seed: 7,
      template: 'qwen',
    };
    const c = trainConfigFromLegacyMethod(old);
    expect(c).toMatchObject({
      finetuningType: 'lora',
      quantization: { bits: 4, type: 'nf4', doubleQuantization: false },
      learningRate: 2e-4,
      numTrainEpochs: 2,
      maxSamples: 500,
      cutoffLen: 512,
      perDeviceTrainBatchSize: 4,
      gradientAccumulationSteps: 2,
      valSize: 0.1,
      lrSchedulerType: 'linear',
      warmupSteps: 3,
      maxGradNorm: 0.5,
      weightDecay: 0.01,
      loggingSteps: 2,
      saveSteps: 20,
      lora: { rank: 16, alpha: 32, dropout: 0.05, target: ['q_proj'], useRslora: true },
      neftuneNoiseAlpha: 5,
      packing: true,
      maskHistory: true,
      gradientCheckpointing: false,
      seed: 7,
      template: 'qwen',
    });
    expect(trainConfigFromLegacyMethod({ method: 'lora', loraTarget: [] }).lora.target).toEqual([...ALL_LORA_TARGETS]);
  });
});

describe('every Method setting reaches the run it starts', () => {
  /** What the engine does with a config: the run plan, the trainer config, the memory plan, the GPU model key, the bundle YAML. */
  function runOf(c: TrainConfig) {
    const cfg = runConfig(c, { modelNameOrPath: 'org/model', datasets: ['identity'] });
    const plan = planRun(cfg);
    // 40 prepared rows at the configured batch: the step count follows batch, accumulation, epochs.
    const micro = Math.ceil(40 / plan.batches.batchSize);
    return {
      plan,
      trainer: trainerConfigFrom(cfg, totalTrainingSteps(micro, plan.steps)),
      memory: memoryPlanInput(plan, cfg.cutoffLen),
      modelKey: gpuModelKey('org/model', [{ name: 'model.safetensors', size: 1 }], plan.load),
      yaml: new TextDecoder().decode(
        llamaFactoryBundle(cfg, { id: 'r', step: 0, totalSteps: 1, method: plan.method }, [
          { name: 'identity.json', file: 'identity.json', bytes: new Uint8Array([91, 93]) },
        ]).get(`train_${cfg.stage}.yaml`)!,
      ),
    };
  }
  type Run = ReturnType<typeof runOf>;
  const at = (r: Run, path: string): unknown =>
    path.split('.').reduce<unknown>((o, k) => (o as Record<string, unknown>)?.[k], r);

  // Knob id → [method it is shown for, new value, where the run must change, settings it is shown with].
  const dpo = (c: TrainConfig) => setStage(c, 'dpo');
  const cases: Record<string, [Method, number | boolean | string, string[], ((c: TrainConfig) => void)?]> = {
    learningRate: ['lora', 2e-4, ['trainer.learningRate']],
    numTrainEpochs: ['lora', 1, ['trainer.totalSteps']],
    maxGradNorm: ['lora', 0.3, ['trainer.maxGradNorm']],
    maxSamples: ['lora', 10, ['plan.prepare.maxSamples']],
    lrScheduler: ['lora', 'linear', ['trainer.lrSchedulerType']],
    warmupSteps: ['lora', 4, ['trainer.warmupSteps']],
    weightDecay: ['lora', 0.01, ['trainer.weightDecay']],
    seed: ['lora', 7, ['trainer.seed', 'plan.lora.seed', 'plan.prepare.seed', 'plan.batches.seed']],
    cutoffLen: ['lora', 512, ['plan.prepare.cutoffLen', 'memory.seqLen']],
    batchSize: ['lora', 4, ['plan.batches.batchSize', 'memory.batchSize', 'trainer.totalSteps']],
    gradAccum: ['lora', 2, ['plan.batches.gradientAccumulationSteps', 'trainer.totalSteps']],
    valSize: ['lora', 0.1, ['plan.prepare.valSize']],
    packing: ['lora', true, ['plan.prepare.packing', 'memory.packing']],
    trainOnPrompt: ['lora', true, ['plan.prepare.trainOnPrompt']],
    maskHistory: ['lora', true, ['plan.prepare.maskHistory']],
    gradientCheckpointing: ['lora', false, ['trainer.gradientCheckpointing', 'memory.gradientCheckpointing']],
    neftuneAlpha: ['lora', 5, ['trainer.neftuneAlpha']],
    loggingSteps: ['lora', 1, ['plan.cadence.loggingSteps']],
    saveSteps: ['lora', 7, ['plan.cadence.saveSteps']],
    loraRank: ['lora', 16, ['plan.lora.rank', 'memory.loraRank']],
    loraAlpha: ['lora', 8, ['plan.lora.alpha']],
    loraDropout: ['lora', 0.1, ['plan.lora.dropout']],
    useRslora: ['lora', true, ['plan.lora.rsLora']],
    doubleQuant: ['qlora', false, ['plan.load.doubleQuant', 'memory.doubleQuant', 'modelKey']],
    prefLoss: ['lora', 'orpo', ['trainer.preference.loss', 'yaml'], dpo],
    prefBeta: ['lora', 0.5, ['trainer.preference.beta', 'yaml'], dpo],
    prefFtx: ['lora', 0.25, ['trainer.preference.ftx', 'yaml'], dpo],
    dpoLabelSmoothing: ['lora', 0.1, ['trainer.preference.labelSmoothing', 'yaml'], dpo],
    simpoGamma: [
      'lora',
      1.5,
      ['trainer.preference.simpoGamma', 'yaml'],
      (c) => (setStage(c, 'dpo'), setPrefLoss(c, 'simpo')),
    ],
  };

  it('covers every knob the Method step shows', () => {
    expect(Object.keys(cases).sort()).toEqual(METHOD_KNOBS.map((k) => k.id).sort());
  });

  for (const [id, [method, value, paths, setup]] of Object.entries(cases)) {
    it(`${id} → ${paths.join(', ')}`, () => {
      const base = fresh(method);
      const changed = fresh(method);
      setup?.(base);
      setup?.(changed);
      const k = knob(id);
      expect(knobApplies(k, changed)).toBe(true);
      (k.set as (c: TrainConfig, v: unknown) => void)(changed, value);
      expect(k.get(changed)).toEqual(value);
      expect(checkTrainConfig(changed)).toEqual([]);
      const [a, b] = [runOf(base), runOf(changed)];
      for (const p of paths) expect(at(b, p), p).not.toEqual(at(a, p));
    });
  }

  it('the method choice, the LoRA targets and the template', () => {
    const lora = runOf(fresh('lora'));
    const qlora = runOf(fresh('qlora'));
    const full = runOf(fresh('full'));
    expect([lora.plan.load, qlora.plan.load, full.plan.load]).toEqual([
      { computeDType: 'stored' },
      { quantize: 'nf4', doubleQuant: true },
      { computeDType: 'f32' },
    ]);
    expect(new Set([lora.modelKey, qlora.modelKey, full.modelKey]).size).toBe(3);
    expect([lora.memory.method, qlora.memory.method, full.memory.method]).toEqual(['lora', 'qlora', 'full']);
    expect(full.plan.lora).toBeNull();
    expect(full.trainer.full).toBe(true);

    const c = fresh();
    toggleLoraTarget(c, 'k_proj', false);
    const targets = runOf(c);
    expect(targets.plan.lora!.targets).toEqual(['q_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj']);
    expect(targets.memory.loraTargets).toEqual(targets.plan.lora!.targets);
    expect(lora.memory.loraTargets).toEqual([...ALL_LORA_TARGETS]);

    // Prompts always use the tokenizer's own chat template; the name goes to llamafactory-cli.
    const tpl = fresh();
    tpl.template = 'qwen';
    expect(runOf(tpl).yaml).toMatch(/^template: qwen$/m);
    expect(parseTrainYaml(runOf(tpl).yaml).config.template).toBe('qwen');
  });

  it('the stage: continued pre-training packs by default, hides prompt masking and is written to the YAML', () => {
    const c = fresh();
    c.trainOnPrompt = true;
    setStage(c, 'pt');
    expect(c).toMatchObject({ stage: 'pt', packing: true, trainOnPrompt: false, maskHistory: false });
    expect(METHOD_KNOBS.filter((k) => !knobApplies(k, c)).map((k) => k.id)).toEqual([
      'trainOnPrompt',
      'maskHistory',
      'doubleQuant',
      'prefLoss',
      'prefBeta',
      'prefFtx',
      'dpoLabelSmoothing',
      'simpoGamma',
    ]);
    const pt = runOf(c);
    expect(pt.plan.prepare).toMatchObject({ stage: 'pt', packing: true, pretrainEos: undefined });
    expect(pt.memory.packing).toBe(true);
    expect(pt.yaml).toMatch(/^stage: pt$/m);
    expect(pt.yaml).toMatch(/^output_dir: saves\/model\/lora\/pt$/m);
    c.template = 'llama3';
    expect(runOf(c).plan.prepare.pretrainEos).toBe('<|end_of_text|>');
    setStage(c, 'sft');
    expect(c.packing).toBe(false);
    expect(runOf(c).plan.prepare.stage).toBe('sft');
  });

  it("the stage dpo: LlamaBoard's RLHF knobs per loss, no packing or NEFTune, pref_* keys in the YAML", () => {
    const c = fresh();
    c.packing = true;
    setStage(c, 'dpo');
    const hidden = () => METHOD_KNOBS.filter((k) => !knobApplies(k, c)).map((k) => k.id);
    expect(c.packing).toBe(false);
    expect(hidden()).toEqual(['packing', 'trainOnPrompt', 'maskHistory', 'neftuneAlpha', 'doubleQuant', 'simpoGamma']);
    c.pref.labelSmoothing = 0.2;
    setPrefLoss(c, 'simpo');
    // cDPO's smoothing is refused with any other loss, and its knob is hidden: it goes back to 0.
    expect(c.pref).toMatchObject({ loss: 'simpo', labelSmoothing: 0 });
    expect(hidden()).toContain('dpoLabelSmoothing');
    expect(hidden()).not.toContain('simpoGamma');
    const yaml = runOf(c).yaml;
    expect(yaml).toMatch(/^stage: dpo$/m);
    expect(yaml).toMatch(/^pref_loss: simpo$/m);
    expect(yaml).toMatch(/^simpo_gamma: 0\.5$/m);
    expect(parseTrainYaml(yaml).config.pref).toEqual(c.pref);
    expect(studioYaml(c, { modelNameOrPath: 'm/x', datasets: ['p'] })).toMatch(/^pref_beta: 0\.1$/m);
    // The memory plan counts chosen and rejected sequences.
    expect(runOf(c).memory.batchSize).toBe(2 * c.perDeviceTrainBatchSize);
  });

  it('refuses full fine-tuning with a loss that needs the reference model, as the YAML reader does', () => {
    const c = fresh('full');
    setStage(c, 'dpo');
    const p = checkTrainConfig(c);
    expect(p).toEqual([{ field: 'prefLoss', code: 'pref-needs-reference', params: { loss: 'sigmoid' } }]);
    expect(problemText(p[0])).toMatch(/^sigmoid compares with a reference model/);
    expect(problemText(p[0], problemTables.zh)).toMatch(/^sigmoid 需要参考模型/);
    expect(() => parseTrainYaml(studioYaml(c, { modelNameOrPath: 'm/x', datasets: ['p'] }))).toThrow(
      /needs a reference model/,
    );
    for (const loss of ['orpo', 'simpo'] as const) {
      setPrefLoss(c, loss);
      expect(checkTrainConfig(c)).toEqual([]);
      expect(parseTrainYaml(studioYaml(c, { modelNameOrPath: 'm/x', datasets: ['p'] })).config.pref.loss).toBe(loss);
    }
    setMethod(c, 'lora');
    setPrefLoss(c, 'ipo');
    expect(checkTrainConfig(c)).toEqual([]);
    Object.assign(c.pref, { beta: 0, ftx: -1 });
    setPrefLoss(c, 'sigmoid');
    c.pref.labelSmoothing = 0.7;
    expect(checkTrainConfig(c).map((x) => [x.field, x.code])).toEqual([
      ['prefBeta', 'more-than-zero'],
      ['prefFtx', 'at-least-zero'],
      ['dpoLabelSmoothing', 'label-smoothing'],
    ]);
  });

  it('plan suggestions change the settings and keep the effective batch', () => {
    const c = fresh();
    applyPlanChange(c, { batchSize: 1, seqLen: 1024, gradientCheckpointing: false, method: 'qlora' });
    expect(c).toMatchObject({
      perDeviceTrainBatchSize: 1,
      gradientAccumulationSteps: 16,
      cutoffLen: 1024,
      gradientCheckpointing: false,
    });
    expect(methodOf(c)).toBe('qlora');
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
    expect(checkTrainConfig(structuredClone(DEMO_TRAIN_CONFIG as TrainConfig))).toEqual([]);
    const d = DEMO_TRAIN_CONFIG as unknown as Record<string, unknown>;
    const b = DEFAULT_TRAIN_CONFIG as unknown as Record<string, unknown>;
    const changed = Object.keys(d)
      .filter((k) => JSON.stringify(d[k]) !== JSON.stringify(b[k]))
      .sort();
    expect(changed).toEqual([
      'cutoffLen',
      'gradientAccumulationSteps',
      'gradientCheckpointing',
      'learningRate',
      'numTrainEpochs',
      'perDeviceTrainBatchSize',
      'saveSteps',
    ]);
  });
});
