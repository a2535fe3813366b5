// Stage dpo in the LLaMA-Factory YAML (pref_loss, pref_beta, pref_ftx, dpo_label_smoothing,
// simpo_gamma with hparams/finetuning_args.py defaults and checks), its round trip through our
// YAML writer and PyYAML, the run plan (trainer preference config, doubled sequences in the memory
// plan), the Method step's stage switch, the bundle's ranking: true dataset entry, and the host-side
// loss math at its closed-form points.
import { describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { parse as parseYaml } from 'yaml';
import { llamaFactoryBundle } from '../../src/engine/export/llamafactory-bundle.ts';
import { parseTrainYaml, trainConfigToYaml, type TrainConfig } from '../../src/engine/train/llamafactory-config.ts';
import { DEFAULT_TRAIN_CONFIG, setStage, STAGES } from '../../src/engine/train/method.ts';
import { preferenceLoss, PREFERENCE_DEFAULTS } from '../../src/engine/train/preference-loss.ts';
import { memoryPlanInput, planRun } from '../../src/engine/train/run-builder.ts';

const DPO = `### model
model_name_or_path: meta-llama/Meta-Llama-3-8B-Instruct

### method
stage: dpo
do_train: true
finetuning_type: lora
lora_rank: 8
lora_target: all
pref_beta: 0.1
pref_loss: sigmoid  # choices: [sigmoid (dpo), orpo, simpo]

### dataset
dataset: dpo_en_demo
template: llama3
cutoff_len: 2048
max_samples: 1000

### output
output_dir: saves/llama3-8b/lora/dpo
logging_steps: 10
save_steps: 500

### train
per_device_train_batch_size: 1
gradient_accumulation_steps: 8
learning_rate: 5.0e-6
num_train_epochs: 3.0
lr_scheduler_type: cosine
warmup_ratio: 0.1
bf16: true
`;

const fails = (text: string) => {
  try {
    parseTrainYaml(text);
  } catch (e) {
    return (e as Error).message;
  }
  return '';
};

describe('stage dpo in the train YAML', () => {
  it("reads examples/train_lora/llama3_lora_dpo.yaml with finetuning_args.py's defaults", () => {
    const { config, warnings } = parseTrainYaml(DPO);
    expect(warnings).toEqual([]);
    expect(config.stage).toBe('dpo');
    expect(config.pref).toEqual({ loss: 'sigmoid', beta: 0.1, ftx: 0, labelSmoothing: 0, simpoGamma: 0.5 });
    expect(config.packing).toBe(false);
    const orpo = parseTrainYaml(DPO.replace('pref_loss: sigmoid', 'pref_loss: orpo\npref_ftx: 0.5')).config.pref;
    expect(orpo).toMatchObject({ loss: 'orpo', ftx: 0.5 });
  });

  it('round-trips through our YAML (PyYAML reads the same values)', () => {
    for (const extra of [
      '',
      'dpo_label_smoothing: 0.1\npref_ftx: 0.25\n',
      'pref_loss: simpo\nsimpo_gamma: 1.5\npref_beta: 2.0\n',
      'pref_loss: ipo\n',
      'pref_loss: hinge\npref_beta: 0.5\n',
    ]) {
      const src =
        DPO.replace('pref_loss: sigmoid  # choices: [sigmoid (dpo), orpo, simpo]\n', '').replace(
          'pref_beta: 0.1\n',
          '',
        ) + extra;
      const { config } = parseTrainYaml(src);
      const text = trainConfigToYaml(config);
      expect(text).toMatch(/^stage: dpo$/m);
      expect(text).toMatch(/^pref_loss: /m);
      expect(parseTrainYaml(text).config).toEqual(config);
      const py = JSON.parse(
        execFileSync(
          '/usr/bin/python3',
          ['-c', 'import sys, json, yaml; print(json.dumps(yaml.safe_load(sys.stdin.read())))'],
          { input: text, encoding: 'utf8' },
        ),
      );
      expect(py).toEqual(parseYaml(text));
      expect(typeof py.pref_beta).toBe('number');
    }
    const sft = trainConfigToYaml(parseTrainYaml(DPO.replace('stage: dpo', 'stage: sft')).config);
    expect(sft).not.toMatch(/pref_/);
  });

  it('refuses what LLaMA-Factory refuses or this engine cannot do, naming the key', () => {
    expect(fails(DPO + 'dpo_label_smoothing: 0.1\n'.replace('0.1', '0.7'))).toMatch(
      /dpo_label_smoothing: must be in \[0, 0.5\]/,
    );
    expect(fails(DPO.replace('pref_loss: sigmoid', 'pref_loss: ipo') + 'dpo_label_smoothing: 0.1\n')).toMatch(
      /dpo_label_smoothing: is only valid for pref_loss: sigmoid/,
    );
    expect(fails(DPO.replace('pref_loss: sigmoid', 'pref_loss: kto_pair'))).toMatch(
      /pref_loss: kto_pair is not supported/,
    );
    expect(fails(DPO.replace('pref_beta: 0.1', 'pref_beta: 0'))).toMatch(/pref_beta: must be > 0/);
    expect(fails(DPO.replace('finetuning_type: lora', 'finetuning_type: full'))).toMatch(
      /finetuning_type: pref_loss sigmoid needs a reference model/,
    );
    expect(
      fails(
        DPO.replace('finetuning_type: lora', 'finetuning_type: full').replace('pref_loss: sigmoid', 'pref_loss: simpo'),
      ),
    ).toBe('');
    expect(fails(DPO + 'packing: true\n')).toMatch(/packing: preference pairs are not packed/);
    expect(fails(DPO + 'train_on_prompt: true\n')).toMatch(/train_on_prompt: only applies to stage sft/);
    expect(fails(DPO + 'neftune_noise_alpha: 5\n')).toMatch(/neftune_noise_alpha: is not supported with stage dpo/);
    expect(fails(DPO + 'ref_model: some/model\n')).toMatch(/ref_model/);
    expect(fails(DPO + 'pref_bco_weight: 0.5\n')).toMatch(/pref_bco_weight: BCO/);
    expect(fails(DPO.replace('stage: dpo', 'stage: kto'))).toMatch(
      /stage: must be sft .* dpo .* KTO are not supported/,
    );
    expect(parseTrainYaml(DPO.replace('stage: dpo', 'stage: sft')).warnings).toEqual([
      'pref_beta, pref_loss: only used by stage dpo',
    ]);
  });

  it('plans the trainer with the preference loss and counts two sequences per pair', () => {
    const { config } = parseTrainYaml(DPO.replace('per_device_train_batch_size: 1', 'per_device_train_batch_size: 3'));
    const plan = planRun(config);
    expect(plan.optimizer.preference).toEqual(config.pref);
    expect(plan.prepare.stage).toBe('dpo');
    expect(memoryPlanInput(plan, 128).batchSize).toBe(6);
    const sft = planRun(parseTrainYaml(DPO.replace('stage: dpo', 'stage: sft')).config);
    expect(sft.optimizer.preference).toBeNull();
    expect(memoryPlanInput(sft, 128).batchSize).toBe(1);
  });

  it('the Method step switches to dpo with its defaults', () => {
    expect(STAGES).toContain('dpo');
    const c = structuredClone(DEFAULT_TRAIN_CONFIG as TrainConfig);
    expect(c.pref).toEqual(PREFERENCE_DEFAULTS);
    c.trainOnPrompt = true;
    c.neftuneNoiseAlpha = 5;
    setStage(c, 'dpo');
    expect(c).toMatchObject({ stage: 'dpo', packing: false, trainOnPrompt: false, neftuneNoiseAlpha: null });
  });
});

describe('LLaMA-Factory bundle of a dpo run', () => {
  const enc = (rows: unknown[]) => new TextEncoder().encode(JSON.stringify(rows));
  it('writes train_dpo.yaml with the pref keys and ranking: true dataset entries', () => {
    const { config } = parseTrainYaml(DPO.replace('pref_loss: sigmoid', 'pref_loss: simpo'));
    const files = llamaFactoryBundle(config, { id: 'r', step: 3, totalSteps: 9, method: 'lora' }, [
      {
        name: 'a.json',
        file: 'a.json',
        format: 'ranking',
        bytes: enc([{ instruction: 'q', input: '', chosen: 'x', rejected: 'y' }]),
      },
      {
        name: 's.json',
        file: 's.json',
        format: 'ranking',
        bytes: enc([
          {
            conversations: [{ from: 'human', value: 'q' }],
            chosen: { from: 'gpt', value: 'x' },
            rejected: { from: 'gpt', value: 'y' },
          },
        ]),
      },
      {
        name: 'o.json',
        file: 'o.json',
        format: 'ranking',
        bytes: enc([
          {
            messages: [{ role: 'user', content: 'q' }],
            chosen: { role: 'assistant', content: 'x' },
            rejected: { role: 'assistant', content: 'y' },
          },
        ]),
      },
    ]);
    const yaml = new TextDecoder().decode(files.get('train_dpo.yaml')!);
    const back = parseTrainYaml(yaml).config;
    expect(back.pref).toEqual(config.pref);
    expect(back.stage).toBe('dpo');
    const info = JSON.parse(new TextDecoder().decode(files.get('data/dataset_info.json')!));
    const entries = Object.values(info) as Record<string, unknown>[];
    expect(entries[0]).toEqual({
      file_name: 'a.json',
      ranking: true,
      columns: { prompt: 'instruction', query: 'input', chosen: 'chosen', rejected: 'rejected' },
    });
    expect(entries[1]).toEqual({
      file_name: 's.json',
      ranking: true,
      formatting: 'sharegpt',
      columns: { messages: 'conversations', chosen: 'chosen', rejected: 'rejected' },
    });
    expect(entries[2]).toMatchObject({
      ranking: true,
      formatting: 'sharegpt',
      columns: { messages: 'messages', chosen: 'chosen', rejected: 'rejected' },
      tags: { role_tag: 'role', content_tag: 'content', user_tag: 'user', assistant_tag: 'assistant' },
    });
  });
});

describe('preference losses at closed-form points', () => {
  const seq = (sum: number, count: number) => ({ sum, count });
  it('sigmoid at z = 0 is ln 2 with dL/dc = −β/2; rewards β(c − c₀)', () => {
    const r = preferenceLoss({ ...PREFERENCE_DEFAULTS, beta: 0.2 }, [
      { chosen: seq(-3, 2), rejected: seq(-5, 4), refChosen: seq(-3, 2), refRejected: seq(-5, 4) },
    ]);
    expect(r.loss).toBe(Math.LN2);
    expect(r.gradChosen[0]).toBeCloseTo(-0.1, 15);
    expect(r.gradRejected[0]).toBeCloseTo(0.1, 15);
    expect(r.metrics).toMatchObject({ 'rewards/chosen': 0, 'rewards/accuracies': 0, 'logps/chosen': -3 });
  });
  it('ipo, simpo and orpo average per token; pref_ftx adds −ftx/|chosen| to dL/dc', () => {
    const pair = { chosen: seq(-2, 4), rejected: seq(-6, 3), refChosen: seq(-2, 4), refRejected: seq(-6, 3) };
    const ipo = preferenceLoss({ ...PREFERENCE_DEFAULTS, loss: 'ipo', beta: 0.5 }, [pair]);
    expect(ipo.loss).toBeCloseTo(1, 14); // (0 − 1/(2·0.5))²
    expect(ipo.gradChosen[0]).toBeCloseTo(-2 / 4, 14);
    const simpo = preferenceLoss({ ...PREFERENCE_DEFAULTS, loss: 'simpo', beta: 2, simpoGamma: 1 }, [pair]);
    // c_avg − r_avg = −0.5 + 2 = 1.5; −logσ(2·1.5 − 1)
    expect(simpo.loss).toBeCloseTo(Math.log1p(Math.exp(-2)), 14);
    expect(simpo.metrics['rewards/chosen']).toBeCloseTo(-1, 14);
    const orpo = preferenceLoss({ ...PREFERENCE_DEFAULTS, loss: 'orpo', beta: 0.1 }, [pair]);
    const c = -0.5;
    const r = -2;
    const lo = c - r - (Math.log1p(-Math.exp(c)) - Math.log1p(-Math.exp(r)));
    expect(orpo.loss).toBeCloseTo(-c + 0.1 * Math.log1p(Math.exp(-lo)), 14);
    expect(orpo.metrics.sft_loss).toBeCloseTo(0.5, 14);
    const ftx = preferenceLoss({ ...PREFERENCE_DEFAULTS, ftx: 0.4 }, [pair]);
    expect(ftx.loss).toBeCloseTo(Math.LN2 + 0.4 * 0.5, 14);
    expect(ftx.gradChosen[0]).toBeCloseTo(-0.05 - 0.4 / 4, 14);
  });
});
