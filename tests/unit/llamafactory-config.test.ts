import { describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { parse as parseYaml } from 'yaml';
import {
  ALL_LORA_TARGETS,
  LlamaFactoryConfigError,
  parseExportYaml,
  parseInferYaml,
  parseTrainYaml,
  trainConfigToYaml,
  yamlFloat,
} from '../../src/engine/train/llamafactory-config.ts';

// Shape of LLaMA-Factory examples/train_lora/llama3_lora_sft.yaml.
const LLAMA3_LORA_SFT = `### model
model_name_or_path: meta-llama/Meta-Llama-3-8B-Instruct
trust_remote_code: true

### method
stage: sft
do_train: true
finetuning_type: lora
lora_rank: 8
lora_target: all

### dataset
dataset: identity,alpaca_en_demo
template: llama3
cutoff_len: 2048
max_samples: 1000
overwrite_cache: true
preprocessing_num_workers: 16
dataloader_num_workers: 4

### output
output_dir: saves/llama3-8b/lora/sft
logging_steps: 10
save_steps: 500
plot_loss: true
overwrite_output_dir: true
save_only_model: false
report_to: none  # choices: [none, wandb, tensorboard, swanlab, mlflow]

### train
per_device_train_batch_size: 1
gradient_accumulation_steps: 8
learning_rate: 1.0e-4
num_train_epochs: 3.0
lr_scheduler_type: cosine
warmup_ratio: 0.1
bf16: true
ddp_timeout: 180000000
resume_from_checkpoint: null

### eval
# eval_dataset: alpaca_en_demo
# val_size: 0.1
`;

// Qwen2.5 QLoRA in the shape of examples/train_qlora/llama3_lora_sft_otfq.yaml.
const QWEN25_QLORA = `model_name_or_path: Qwen/Qwen2.5-0.5B-Instruct
quantization_bit: 4
quantization_method: bnb
double_quantization: false
stage: sft
do_train: true
finetuning_type: lora
lora_rank: 16
lora_alpha: 16
lora_dropout: 0.05
lora_target: q_proj, v_proj
use_rslora: true
dataset: [alpaca_zh_demo]
dataset_dir: ./data
template: qwen
cutoff_len: 1024
val_size: 0.1
packing: false
output_dir: saves/qwen2.5/qlora
per_device_train_batch_size: 2
gradient_accumulation_steps: 4
learning_rate: 2e-4
max_steps: 200
lr_scheduler_type: constant_with_warmup
warmup_steps: 20
max_grad_norm: 0.5
weight_decay: 0.01
seed: 7
disable_gradient_checkpointing: true
neftune_noise_alpha: 5
`;

function fails(
  text: string,
  parse: (text: string, file?: string) => unknown = parseTrainYaml,
): LlamaFactoryConfigError {
  try {
    parse(text, 'my.yaml');
  } catch (e) {
    expect(e).toBeInstanceOf(LlamaFactoryConfigError);
    return e as LlamaFactoryConfigError;
  }
  throw new Error('expected LlamaFactoryConfigError');
}

describe('LLaMA-Factory train YAML', () => {
  it('reads llama3_lora_sft.yaml with LLaMA-Factory / transformers defaults', () => {
    const { config: c, warnings, notes } = parseTrainYaml(LLAMA3_LORA_SFT);
    expect(c).toEqual({
      stage: 'sft',
      pref: { loss: 'sigmoid', beta: 0.1, ftx: 0, labelSmoothing: 0, simpoGamma: 0.5 },
      doTrain: true,
      modelNameOrPath: 'meta-llama/Meta-Llama-3-8B-Instruct',
      adapterNameOrPath: null,
      template: 'llama3',
      dataset: ['identity', 'alpaca_en_demo'],
      datasetDir: 'data',
      finetuningType: 'lora',
      lora: { rank: 8, alpha: 16, dropout: 0, target: [...ALL_LORA_TARGETS], useRslora: false, useDora: false },
      quantization: null,
      cutoffLen: 2048,
      maxSamples: 1000,
      valSize: 0,
      packing: false,
      trainOnPrompt: false,
      maskHistory: false,
      perDeviceTrainBatchSize: 1,
      gradientAccumulationSteps: 8,
      learningRate: 1e-4,
      numTrainEpochs: 3,
      maxSteps: null,
      lrSchedulerType: 'cosine',
      warmupSteps: 0,
      warmupRatio: 0.1,
      maxGradNorm: 1,
      weightDecay: 0,
      adamBeta1: 0.9,
      adamBeta2: 0.999,
      adamEpsilon: 1e-8,
      loggingSteps: 10,
      saveSteps: 500,
      outputDir: 'saves/llama3-8b/lora/sft',
      overwriteOutputDir: true,
      seed: 42,
      gradientCheckpointing: true,
      neftuneNoiseAlpha: null,
      resumeFromCheckpoint: null,
      bf16: true,
      fp16: false,
      plotLoss: true,
    });
    expect(warnings).toEqual([]);
    expect(
      notes.some((n) =>
        n.startsWith('template: "llama3" accepted; prompts are built with the tokenizer\'s own chat template'),
      ),
    ).toBe(true);
    expect(notes.some((n) => n.startsWith('bf16: accepted and ignored'))).toBe(true);
    expect(notes.some((n) => n.startsWith('ddp_timeout: accepted and ignored'))).toBe(true);
  });

  it('reads a Qwen2.5 QLoRA config (lists, 2e-4 written YAML-1.2 style, explicit alpha, rsLoRA)', () => {
    const { config: c, warnings } = parseTrainYaml(QWEN25_QLORA);
    expect(warnings).toEqual([]);
    expect(c.quantization).toEqual({ bits: 4, type: 'nf4', doubleQuantization: false });
    expect(c.lora).toEqual({
      rank: 16,
      alpha: 16,
      dropout: 0.05,
      target: ['q_proj', 'v_proj'],
      useRslora: true,
      useDora: false,
    });
    expect(c).toMatchObject({
      dataset: ['alpaca_zh_demo'],
      datasetDir: './data',
      cutoffLen: 1024,
      valSize: 0.1,
      learningRate: 2e-4,
      maxSteps: 200,
      lrSchedulerType: 'constant_with_warmup',
      warmupSteps: 20,
      maxGradNorm: 0.5,
      weightDecay: 0.01,
      seed: 7,
      gradientCheckpointing: false,
      neftuneNoiseAlpha: 5,
      perDeviceTrainBatchSize: 2,
      gradientAccumulationSteps: 4,
      outputDir: 'saves/qwen2.5/qlora',
    });
    expect(
      parseTrainYaml(QWEN25_QLORA.replace('learning_rate: 2e-4', "learning_rate: '2e-4'")).config.learningRate,
    ).toBe(2e-4);
  });

  it('minimal config gets HF TrainingArguments defaults', () => {
    const { config: c } = parseTrainYaml('model_name_or_path: Qwen/Qwen3-0.6B\ndataset: identity\n');
    expect(c).toMatchObject({
      perDeviceTrainBatchSize: 8,
      gradientAccumulationSteps: 1,
      learningRate: 5e-5,
      numTrainEpochs: 3,
      lrSchedulerType: 'linear',
      loggingSteps: 500,
      saveSteps: 500,
      seed: 42,
      outputDir: 'trainer_output',
      cutoffLen: 2048,
      template: null,
      finetuningType: 'lora',
    });
  });

  it('lists unknown keys in one warning instead of dropping them silently', () => {
    const { warnings } = parseTrainYaml(LLAMA3_LORA_SFT + 'lora_rnak: 16\nlearning_rat: 1\n');
    expect(warnings).toEqual(['train.yaml: unknown keys ignored: lora_rnak, learning_rat']);
  });

  it('refuses what it cannot do, naming the key', () => {
    const base = 'model_name_or_path: m\ndataset: d\n';
    expect(fails(base + 'finetuning_type: freeze').message).toBe(
      'my.yaml: finetuning_type: freeze (partial-parameter) fine-tuning is not supported; use lora or full',
    );
    expect(fails(base + 'quantization_bit: 8').message).toBe(
      'my.yaml: quantization_bit: 8-bit quantization is not supported; use quantization_bit: 4 (NF4 QLoRA) or remove it',
    );
    expect(fails(base + 'quantization_bit: 4\nquantization_type: fp4').key).toBe('quantization_type');
    expect(fails(base + 'quantization_bit: 4\nfinetuning_type: full').message).toMatch(/needs finetuning_type: lora/);
    expect(fails(base + 'stage: rm').message).toMatch(
      /stage: must be sft \(supervised\), pt \(continued pre-training\) or dpo \(preference tuning\), got "rm" \(reward modelling, PPO and KTO are not supported\)/,
    );
    expect(fails(base + 'lr_scheduler_type: cosine_with_restarts').message).toBe(
      'my.yaml: lr_scheduler_type: "cosine_with_restarts" is not supported; choose from constant, constant_with_warmup, linear, cosine',
    );
    expect(fails(base + 'lora_target: q_proj,qkv').message).toMatch(
      /lora_target: unknown module qkv; choose from all, q_proj/,
    );
    expect(fails(base + 'train_on_prompt: true\nmask_history: true').key).toBe('mask_history');
    expect(fails(base + 'finetuning_type: full\nuse_rslora: true').key).toBe('use_rslora');
    expect(fails(base + 'eval_dataset: x').message).toMatch(/eval_dataset: use val_size/);
    expect(fails('dataset: d').message).toBe('my.yaml: model_name_or_path: is required');
    expect(fails('model_name_or_path: m').key).toBe('dataset');
  });

  it('wrong types are errors naming the key', () => {
    const base = 'model_name_or_path: m\ndataset: d\n';
    expect(fails(base + 'lora_rank: eight').message).toBe(
      'my.yaml: lora_rank: must be an integer, got "eight" (string)',
    );
    expect(fails(base + 'lora_rank: 0').message).toMatch(/lora_rank: must be ≥ 1, got 0/);
    expect(fails(base + 'learning_rate: fast').key).toBe('learning_rate');
    expect(fails(base + 'learning_rate: -1').message).toMatch(/learning_rate: must be > 0, got -1/);
    expect(fails(base + 'bf16x: 1\npacking: "yes"').message).toMatch(
      /packing: must be true or false, got "yes" \(string\)/,
    );
    expect(fails(base + 'per_device_train_batch_size: 1.5').key).toBe('per_device_train_batch_size');
    expect(fails(base + 'warmup_ratio: 1.5').key).toBe('warmup_ratio');
    expect(fails(base + 'val_size: 2.5').key).toBe('val_size');
    expect(fails(base + 'lora_target: [1, 2]').key).toBe('lora_target');
    expect(fails(base + 'model_name_or_path: [a]').message).toMatch(/YAML|model_name_or_path/);
  });

  it('reports YAML syntax errors with a line number', () => {
    expect(fails('model_name_or_path: m\n  dataset: [d\n').message).toMatch(
      /^my\.yaml: invalid YAML: line \d+, column \d+/,
    );
    expect(fails('- a\n- b\n').message).toBe('my.yaml: must be a mapping of key: value lines');
    expect(fails('').message).toBe('my.yaml: is empty');
    expect(fails('a: 1\na: 2\n').message).toMatch(/invalid YAML/);
  });

  it('writes YAML that LLaMA-Factory (PyYAML) reads as the same values, and that parses back identically', () => {
    for (const src of [
      LLAMA3_LORA_SFT,
      QWEN25_QLORA,
      `${QWEN25_QLORA}\nresume_from_checkpoint: true\n`,
      `${QWEN25_QLORA}\nresume_from_checkpoint: saves/q/checkpoint-100\n`,
    ]) {
      const { config } = parseTrainYaml(src);
      const text = trainConfigToYaml(config);
      expect(parseTrainYaml(text).config).toEqual(config);
      expect(parseTrainYaml(text).warnings).toEqual([]);
    }
    const text = trainConfigToYaml(parseTrainYaml(LLAMA3_LORA_SFT).config);
    expect(text).toContain('### model\nmodel_name_or_path: meta-llama/Meta-Llama-3-8B-Instruct\n');
    expect(text).toContain('learning_rate: 1.0e-4\n');
    expect(text).toContain('num_train_epochs: 3.0\n');
    expect(text).toContain('lora_target: all\n');
    expect(text).toContain('dataset: identity,alpaca_en_demo\n');
    const q = trainConfigToYaml(parseTrainYaml(QWEN25_QLORA).config);
    expect(q).toContain('quantization_bit: 4\n');
    expect(q).toContain('disable_gradient_checkpointing: true\n');
    expect(q).toContain('learning_rate: 2.0e-4\n');
  });

  // PyYAML is a live oracle: npm test installs python3-yaml, so a missing one fails here.
  it('PyYAML (what LLaMA-Factory uses) reads our YAML as the same typed values', () => {
    for (const src of [LLAMA3_LORA_SFT, QWEN25_QLORA]) {
      const text = trainConfigToYaml(parseTrainYaml(src).config);
      const py = JSON.parse(
        execFileSync(
          '/usr/bin/python3',
          ['-c', 'import sys, json, yaml; print(json.dumps(yaml.safe_load(sys.stdin.read())))'],
          { input: text, encoding: 'utf8' },
        ),
      );
      expect(py).toEqual(parseYaml(text));
      expect(typeof py.learning_rate).toBe('number');
      expect(typeof py.adam_epsilon).toBe('number');
    }
  });

  it('formats floats the way PyYAML recognises them', () => {
    expect(yamlFloat(1e-4)).toBe('1.0e-4');
    expect(yamlFloat(5e-5)).toBe('5.0e-5');
    expect(yamlFloat(1.5e-7)).toBe('1.5e-7');
    expect(yamlFloat(1e-8)).toBe('1.0e-8');
    expect(yamlFloat(3)).toBe('3.0');
    expect(yamlFloat(0.1)).toBe('0.1');
    expect(yamlFloat(1e21)).toBe('1.0e+21');
    const pyyamlFloat = /^[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?$/; // PyYAML's resolver (main branch)
    for (const x of [1e-4, 2e-5, 3, 0.999, 1e-8, 12.25]) expect(yamlFloat(x)).toMatch(pyyamlFloat);
  });
});

describe('LLaMA-Factory export and chat YAML', () => {
  it('reads examples/merge_lora/llama3_lora_sft.yaml', () => {
    const { config, notes } =
      parseExportYaml(`### Note: DO NOT use quantized model or quantization_bit when merging lora adapters

### model
model_name_or_path: meta-llama/Meta-Llama-3-8B-Instruct
adapter_name_or_path: saves/llama3-8b/lora/sft
template: llama3
trust_remote_code: true

### export
export_dir: output/llama3_lora_sft
export_size: 5
export_device: cpu  # choices: [cpu, auto]
export_legacy_format: false
`);
    expect(config).toEqual({
      modelNameOrPath: 'meta-llama/Meta-Llama-3-8B-Instruct',
      adapterNameOrPath: ['saves/llama3-8b/lora/sft'],
      template: 'llama3',
      finetuningType: 'lora',
      exportDir: 'output/llama3_lora_sft',
      exportSize: 5,
      exportLegacyFormat: false,
      exportFormat: 'safetensors',
      exportGgufType: 'f16',
      exportGgufAdapter: false,
    });
    expect(notes.some((n) => n.startsWith('export_device: accepted and ignored'))).toBe(true);
    expect(parseExportYaml('model_name_or_path: m\nexport_dir: out\n').config.exportSize).toBe(5);
    expect(fails('model_name_or_path: m\nexport_dir: o\nexport_legacy_format: true', parseExportYaml).key).toBe(
      'export_legacy_format',
    );
    expect(fails('model_name_or_path: m', parseExportYaml).message).toBe('my.yaml: export_dir: is required');
  });

  it('reads export_format: gguf and export_gguf_type (f32 | f16 | bf16 | q8_0 | q4_k_m), refusing others', () => {
    const base = 'model_name_or_path: m\nexport_dir: out\n';
    const g = parseExportYaml(`${base}export_format: gguf\nexport_gguf_type: Q8_0\n`);
    expect(g.config.exportFormat).toBe('gguf');
    expect(g.config.exportGgufType).toBe('q8_0');
    expect(g.warnings).toEqual([]);
    expect(parseExportYaml(`${base}export_format: gguf\n`).config.exportGgufType).toBe('f16');
    for (const t of ['f32', 'bf16', 'q4_k_m'])
      expect(parseExportYaml(`${base}export_format: gguf\nexport_gguf_type: ${t}\n`).config.exportGgufType).toBe(t);
    const q4 = fails(`${base}export_format: gguf\nexport_gguf_type: q4_k_s\n`, parseExportYaml);
    expect(q4.key).toBe('export_gguf_type');
    expect(q4.message).toMatch(/q4_k_s is not yet supported/);
    expect(fails(`${base}export_gguf_type: f8\n`, parseExportYaml).message).toMatch(
      /must be f32, f16, bf16, q8_0 or q4_k_m/,
    );
    expect(fails(`${base}export_format: onnx\n`, parseExportYaml).message).toMatch(/must be safetensors or gguf/);
    expect(parseExportYaml(`${base}export_gguf_type: q8_0\n`).warnings.join(' ')).toMatch(
      /only used with export_format: gguf/,
    );
    expect(parseExportYaml(`${base}export_format: gguf\nexport_size: 2\n`).warnings.join(' ')).toMatch(
      /export_size is not used/,
    );
  });

  it('reads export_gguf_adapter: the LoRA adapter alone as a GGUF adapter, f32 | f16 | bf16', () => {
    const base = 'model_name_or_path: m\nexport_dir: out\nexport_format: gguf\n';
    const a = parseExportYaml(`${base}adapter_name_or_path: saves/lora\nexport_gguf_adapter: true\n`).config;
    expect(a.exportGgufAdapter).toBe(true);
    expect(a.exportGgufType).toBe('f16');
    expect(fails(`${base}export_gguf_adapter: true\n`, parseExportYaml).message).toMatch(
      /export_gguf_adapter: needs adapter_name_or_path/,
    );
    const q = fails(
      `${base}adapter_name_or_path: a\nexport_gguf_adapter: true\nexport_gguf_type: q4_k_m\n`,
      parseExportYaml,
    );
    expect(q.key).toBe('export_gguf_type');
    expect(q.message).toMatch(/written as f32, f16 or bf16, not q4_k_m/);
    expect(
      fails(
        'model_name_or_path: m\nexport_dir: o\nadapter_name_or_path: a\nexport_gguf_adapter: true\n',
        parseExportYaml,
      ).message,
    ).toMatch(/needs export_format: gguf/);
  });

  it('reads examples/inference/llama3_lora_sft.yaml with generating_args.py defaults', () => {
    const { config, warnings } = parseInferYaml(`model_name_or_path: meta-llama/Meta-Llama-3-8B-Instruct
adapter_name_or_path: saves/llama3-8b/lora/sft
template: llama3
infer_backend: huggingface  # choices: [huggingface, vllm, sglang]
trust_remote_code: true
`);
    expect(warnings).toEqual([]);
    expect(config).toEqual({
      modelNameOrPath: 'meta-llama/Meta-Llama-3-8B-Instruct',
      adapterNameOrPath: ['saves/llama3-8b/lora/sft'],
      template: 'llama3',
      finetuningType: 'lora',
      maxNewTokens: 1024,
      doSample: true,
      temperature: 0.95,
      topP: 0.7,
      topK: 50,
      repetitionPenalty: 1.0,
    });
    const g = parseInferYaml(
      'model_name_or_path: m\nmax_new_tokens: 64\ndo_sample: false\ntemperature: 0.2\ntop_p: 0.9\ntop_k: 0\nrepetition_penalty: 1.1\n',
    ).config;
    expect(g).toMatchObject({
      maxNewTokens: 64,
      doSample: false,
      temperature: 0.2,
      topP: 0.9,
      topK: 0,
      repetitionPenalty: 1.1,
    });
    expect(fails('model_name_or_path: m\ntop_p: 0', parseInferYaml).key).toBe('top_p');
  });
});

describe('stage pt (continued pre-training)', () => {
  const pt =
    'model_name_or_path: m\nstage: pt\ndo_train: true\nfinetuning_type: lora\ndataset: c4_demo\ncutoff_len: 1024\n';

  it('parses with packing on by default (hparams/parser.py) and round-trips through YAML', () => {
    const { config } = parseTrainYaml(pt);
    expect(config).toMatchObject({ stage: 'pt', packing: true, trainOnPrompt: false, maskHistory: false });
    const text = trainConfigToYaml(config);
    expect(text).toMatch(/^stage: pt$/m);
    expect(text).not.toMatch(/^packing:/m);
    expect(parseTrainYaml(text).config).toEqual(config);
    const unpacked = parseTrainYaml(pt + 'packing: false').config;
    expect(unpacked.packing).toBe(false);
    expect(trainConfigToYaml(unpacked)).toMatch(/^packing: false$/m);
    expect(parseTrainYaml(trainConfigToYaml(unpacked)).config.packing).toBe(false);
  });

  it('refuses prompt masking, which only sft has', () => {
    expect(() => parseTrainYaml(pt + 'train_on_prompt: true')).toThrow(/train_on_prompt: only applies to stage sft/);
    expect(() => parseTrainYaml(pt + 'mask_history: true')).toThrow(/mask_history: only applies to stage sft/);
  });
});

describe("Tabtune's GPU-memory keys", () => {
  const base = 'model_name_or_path: Qwen/Qwen2.5-1.5B-Instruct\ndataset: identity\nquantization_bit: 4\n';
  it('reads checkpoint_precision, head_precision, embedding_on_host, loss_chunk_rows and writes them back', () => {
    const { config: c, warnings } = parseTrainYaml(
      base + 'checkpoint_precision: bf16\nhead_precision: nf4\nembedding_on_host: true\nloss_chunk_rows: 16\n',
    );
    expect(warnings).toEqual([]);
    expect(c.memory).toEqual({
      checkpointPrecision: 'bf16',
      headPrecision: 'nf4',
      embeddingOnHost: true,
      lossChunkRows: 16,
    });
    expect(parseTrainYaml(trainConfigToYaml(c)).config.memory).toEqual(c.memory);
    // absent keys: no memory options, nothing written
    const plain = parseTrainYaml(base).config;
    expect(plain.memory).toBeUndefined();
    expect(trainConfigToYaml(plain)).not.toMatch(/precision|on_host|chunk_rows/);
  });
  it('names the key and the reason for bad values', () => {
    expect(() => parseTrainYaml(base + 'checkpoint_precision: fp8\n')).toThrow(/checkpoint_precision.*f32 or bf16/);
    expect(() => parseTrainYaml(base + 'head_precision: int8\n')).toThrow(/head_precision.*16bit or nf4/);
    expect(() =>
      parseTrainYaml('model_name_or_path: m\ndataset: d\nfinetuning_type: full\nhead_precision: nf4\n'),
    ).toThrow(/head_precision.*full fine-tuning/);
    expect(() => parseTrainYaml(base + 'loss_chunk_rows: 0\n')).toThrow(/loss_chunk_rows/);
  });
});
