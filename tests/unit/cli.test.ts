// Argument and YAML handling of `tabtune train / export / chat` (no GPU: every case fails or
// returns before a device is opened).
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import chat, { parseChatArgs } from '../../src/cli/chat.ts';
import exportCmd, { exportDtypeFor, parseExportArgs } from '../../src/cli/export.ts';
import train, { logRow, parseTrainArgs, resumeDecision, truncateLog } from '../../src/cli/train.ts';
import {
  CliError,
  hms,
  listCheckpoints,
  parseYamlArgs,
  resolveDatasets,
  stopIdsFor,
  yamlWithOverrides,
} from '../../src/cli/common.ts';
import { LlamaFactoryConfigError } from '../../src/engine/train/llamafactory-config.ts';

let dir: string;
const y = (name: string, text: string) => {
  const p = join(dir, name);
  writeFileSync(p, text);
  return p;
};

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'tabtune-cli-'));
  mkdirSync(join(dir, 'model'));
  writeFileSync(join(dir, 'model', 'config.json'), '{}');
  mkdirSync(join(dir, 'data'));
  writeFileSync(join(dir, 'data', 'a.json'), '[{"instruction":"hi","output":"yo"}]');
  writeFileSync(join(dir, 'data', 'plain.jsonl'), '{"instruction":"hi","output":"yo"}\n');
  writeFileSync(
    join(dir, 'data', 'dataset_info.json'),
    JSON.stringify({
      alpaca_a: { file_name: 'a.json' },
      hub_only: { hf_hub_url: 'x/y' },
      gone: { file_name: 'missing.json' },
    }),
  );
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function capture(fn: () => Promise<number>): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const o = vi
    .spyOn(process.stdout, 'write')
    .mockImplementation((s: string | Uint8Array) => ((out += String(s)), true));
  const e = vi
    .spyOn(process.stderr, 'write')
    .mockImplementation((s: string | Uint8Array) => ((err += String(s)), true));
  try {
    return { code: await fn(), out, err };
  } finally {
    o.mockRestore();
    e.mockRestore();
  }
}

describe('parseYamlArgs', () => {
  it('takes one YAML path, key=value overrides as YAML scalars, and flags', () => {
    const a = parseYamlArgs(
      [
        'c.yaml',
        'lora_rank=16',
        'do_sample=false',
        'output_dir=saves/x',
        'learning_rate=1.0e-4',
        '--prompt',
        'hello there',
        '--no-adapter',
      ],
      ['prompt'],
      'chat',
      ['no-adapter'],
    );
    expect(a.yamlPath).toBe('c.yaml');
    expect(a.overrides).toEqual({ lora_rank: 16, do_sample: false, output_dir: 'saves/x', learning_rate: 1e-4 });
    expect(a.flags.get('prompt')).toBe('hello there');
    expect(a.flags.get('no-adapter')).toBe(true);
    expect(parseYamlArgs(['c.yaml', '--prompt=hi'], ['prompt'], 'chat').flags.get('prompt')).toBe('hi');
  });
  it('errors name the problem', () => {
    expect(() => parseYamlArgs([], [], 'train')).toThrow(/needs a YAML config file/);
    expect(() => parseYamlArgs(['a.yaml', 'b.yaml'], [], 'train')).toThrow(
      /one YAML file expected, got a.yaml and b.yaml/,
    );
    expect(() => parseYamlArgs(['a.yaml', '--prompt'], ['prompt'], 'chat')).toThrow(/--prompt needs a value/);
    expect(() => parseYamlArgs(['a.yaml', '--flag=1'], [], 'chat', ['flag'])).toThrow(/--flag takes no value/);
    expect(() => parseYamlArgs(['a.yaml', '--temp', '1'], ['prompt'], 'chat')).toThrow(/unknown option --temp/);
    expect(parseYamlArgs(['-h'], [], 'train').flags.has('help')).toBe(true);
  });
  it('overrides replace YAML keys', () => {
    const p = y('o.yaml', 'model_name_or_path: m\nmax_new_tokens: 10\n');
    expect(yamlWithOverrides(p, {})).toBe('model_name_or_path: m\nmax_new_tokens: 10\n');
    expect(yamlWithOverrides(p, { max_new_tokens: 3 })).toContain('max_new_tokens: 3');
    expect(() => yamlWithOverrides(join(dir, 'nope.yaml'), {})).toThrow(/no such file/);
  });
});

describe('tabtune train arguments', () => {
  const cfg = (extra = '') =>
    y(
      't.yaml',
      `model_name_or_path: ${join(dir, 'model')}\nstage: sft\ndo_train: true\nfinetuning_type: lora\ndataset: alpaca_a\ndataset_dir: ${join(dir, 'data')}\noutput_dir: ${join(dir, 'out')}\n${extra}`,
    );
  it('parses LLaMA-Factory keys and resume_from_checkpoint: true / false / a path', () => {
    const a = parseTrainArgs([cfg('lora_rank: 4\nresume_from_checkpoint: true\n'), 'lora_alpha=32']);
    if (a === 'help') throw new Error('help');
    expect(a.config.lora.rank).toBe(4);
    expect(a.config.lora.alpha).toBe(32);
    expect(a.config.resumeFromCheckpoint).toBe(true);
    const b = parseTrainArgs([cfg('resume_from_checkpoint: false\n')]);
    expect(b !== 'help' && b.config.resumeFromCheckpoint).toBeNull();
    const c = parseTrainArgs([cfg('resume_from_checkpoint: saves/x/checkpoint-10\n')]);
    expect(c !== 'help' && c.config.resumeFromCheckpoint).toBe('saves/x/checkpoint-10');
  });
  it('--gpu-memory takes GiB above 0 (the budget auto-fit and the out-of-memory retry work to)', () => {
    const a = parseTrainArgs([cfg(), '--gpu-memory', '1.5']);
    expect(a !== 'help' && a.budgetBytes).toBe(1.5 * 2 ** 30);
    const b = parseTrainArgs([cfg()]);
    expect(b !== 'help' && b.budgetBytes).toBeNull();
    expect(() => parseTrainArgs([cfg(), '--gpu-memory=0'])).toThrow(/--gpu-memory must be a number of GiB above 0/);
    expect(() => parseTrainArgs([cfg(), '--gpu-memory', 'lots'])).toThrow(/got "lots"/);
  });
  it('unknown keys are warnings, unsupported ones errors naming the key', () => {
    const a = parseTrainArgs([cfg('lora_rnak: 4\n')]);
    expect(a !== 'help' && a.warnings.join()).toMatch(/lora_rnak/);
    expect(() => parseTrainArgs([cfg('use_galore: true\n')])).toThrow(LlamaFactoryConfigError);
    expect(() => parseTrainArgs([cfg(), 'do_train=false'])).toThrow(/nothing to do/);
    expect(() => parseTrainArgs([cfg(), '--verbose'])).toThrow(/unknown option --verbose/);
  });
  it('exit status 2 with the message for config errors, before any GPU work', async () => {
    const r = await capture(() => train([cfg('quantization_bit: 8\n')]));
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/quantization_bit: 8-bit quantization is not supported/);
    const m = await capture(() =>
      train([y('m.yaml', `model_name_or_path: Qwen/Qwen2.5-0.5B\ndataset: a\noutput_dir: ${join(dir, 'o2')}\n`)]),
    );
    expect(m.code).toBe(2);
    expect(m.err).toMatch(/not a local folder.*download/);
    const h = await capture(() => train(['--help']));
    expect(h.code).toBe(0);
    expect(h.out).toMatch(/usage: tabtune train/);
  });
  it('resume rules: explicit path, true = last checkpoint, automatic resume, refusing a non-empty folder', () => {
    const out = join(dir, 'runs');
    rmSync(out, { recursive: true, force: true });
    const a = parseTrainArgs([cfg()]);
    if (a === 'help') throw new Error('help');
    const c = { ...a.config, outputDir: out };
    expect(resumeDecision(out, c, 't.yaml').from).toBeNull();
    expect(() => resumeDecision(out, { ...c, resumeFromCheckpoint: true }, 't.yaml')).toThrow(/no checkpoint-N folder/);
    mkdirSync(join(out, 'checkpoint-2'), { recursive: true });
    mkdirSync(join(out, 'checkpoint-10'), { recursive: true });
    mkdirSync(join(out, 'checkpoint-x'), { recursive: true });
    writeFileSync(join(out, 'checkpoint-2', 'trainer_state.json'), '{}');
    expect(listCheckpoints(out).map((x) => x.step)).toEqual([2, 10]);
    expect(resumeDecision(out, { ...c, resumeFromCheckpoint: true }, 't.yaml').from).toBe(join(out, 'checkpoint-10'));
    expect(resumeDecision(out, c, 't.yaml').reason).toMatch(/resumes/);
    expect(resumeDecision(out, { ...c, overwriteOutputDir: true }, 't.yaml').from).toBeNull();
    expect(resumeDecision(out, { ...c, resumeFromCheckpoint: join(out, 'checkpoint-2') }, 't.yaml').from).toBe(
      join(out, 'checkpoint-2'),
    );
    expect(() => resumeDecision(out, { ...c, resumeFromCheckpoint: join(out, 'checkpoint-10') }, 't.yaml')).toThrow(
      /no trainer_state.json/,
    );
    const other = join(dir, 'busy');
    mkdirSync(other, { recursive: true });
    writeFileSync(join(other, 'notes.txt'), 'x');
    expect(() => resumeDecision(other, c, 't.yaml')).toThrow(/not empty.*overwrite_output_dir/);
  });
});

describe('datasets', () => {
  it('resolves dataset_info.json names and plain files, with clear errors', () => {
    const d = join(dir, 'data');
    const r = resolveDatasets(['alpaca_a', 'plain.jsonl'], d, 'x.yaml');
    expect(r.map((x) => x.file)).toEqual([join(d, 'a.json'), join(d, 'plain.jsonl')]);
    expect(r[0].entry?.file_name).toBe('a.json');
    expect(() => resolveDatasets(['hub_only'], d, 'x.yaml')).toThrow(/"hub_only"/);
    expect(() => resolveDatasets(['gone'], d, 'x.yaml')).toThrow(/missing.json does not exist/);
    expect(() => resolveDatasets(['nothing'], d, 'x.yaml')).toThrow(/neither in .*dataset_info.json.*known: alpaca_a/);
  });
});

describe('trainer_log.jsonl', () => {
  it('rows carry LLaMA-Factory LogCallback fields and rounding', () => {
    const r = logRow(3, 9, 0.3333333, 125.4, 3, { loss: 1.23456, lr: 1e-4 });
    expect(r).toEqual({
      current_steps: 3,
      total_steps: 9,
      loss: 1.23456,
      lr: 1e-4,
      epoch: 0.33,
      percentage: 33.33,
      elapsed_time: '0:02:05',
      remaining_time: '0:04:11',
    });
    expect(hms(3725)).toBe('1:02:05');
    expect(hms(0)).toBe('0:00:00');
  });
  it('a resumed run keeps the rows up to its checkpoint', () => {
    const p = join(dir, 'log.jsonl');
    writeFileSync(p, [1, 2, 3, 4].map((s) => JSON.stringify({ current_steps: s, total_steps: 4 })).join('\n') + '\n');
    truncateLog(p, 2);
    expect(
      readFileSync(p, 'utf8')
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l).current_steps),
    ).toEqual([1, 2]);
  });
});

describe('tabtune chat / export arguments', () => {
  it('chat: --prompt is required; inference keys and do_sample: false', () => {
    const p = y('c.yaml', 'model_name_or_path: m\nmax_new_tokens: 7\ndo_sample: false\ntop_k: 0\n');
    const a = parseChatArgs([p, '--prompt', 'Hi', '--system', 'Be brief', '--seed', '3']);
    if (a === 'help') throw new Error('help');
    expect(a.config).toMatchObject({ maxNewTokens: 7, doSample: false, topK: 0 });
    expect(a.prompt).toBe('Hi');
    expect(a.system).toBe('Be brief');
    expect(a.seed).toBe(3);
    expect(a.useAdapter).toBe(true);
    expect(() => parseChatArgs([p])).toThrow(/--prompt/);
    expect(() => parseChatArgs([p, '--prompt', 'x', '--seed', '-1'])).toThrow(/--seed/);
    expect(() => parseChatArgs([p, '--prompt', 'x', '--temp', '1'])).toThrow(/unknown option --temp/);
    expect(() => parseChatArgs([p, '--prompt', 'x', 'temperature=0'])).toThrow(/temperature: must be > 0/);
  });
  it('chat and export exit 2 with the reason on a missing model folder', async () => {
    const p = y('c2.yaml', `model_name_or_path: ${join(dir, 'nope')}\n`);
    const r = await capture(() => chat([p, '--prompt', 'x']));
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/not a local folder/);
    const e = y('e.yaml', `model_name_or_path: ${join(dir, 'nope')}\nexport_dir: ${join(dir, 'x')}\n`);
    const s = await capture(() => exportCmd([e]));
    expect(s.code).toBe(2);
    expect(s.err).toMatch(/not a local folder/);
  });
  it('export: keys, --dtype and the dtype default from torch_dtype', () => {
    const p = y('e2.yaml', 'model_name_or_path: m\nadapter_name_or_path: a\nexport_dir: out\nexport_size: 2\n');
    const a = parseExportArgs([p, '--dtype', 'f16']);
    if (a === 'help') throw new Error('help');
    expect(a.config).toMatchObject({ exportDir: 'out', exportSize: 2, adapterNameOrPath: ['a'] });
    expect(a.dtype).toBe('f16');
    expect(() => parseExportArgs([p, '--dtype', 'int8'])).toThrow(CliError);
    expect(() => parseExportArgs([y('e3.yaml', 'model_name_or_path: m\n')])).toThrow(/export_dir: is required/);
    expect(exportDtypeFor('bfloat16')).toBe('bf16');
    expect(exportDtypeFor('float16')).toBe('f16');
    expect(exportDtypeFor(null)).toBe('f32');
  });
  it('stop ids: config eos, tokenizer eos and generation_config.json eos', () => {
    const m = join(dir, 'gen');
    mkdirSync(m, { recursive: true });
    writeFileSync(join(m, 'generation_config.json'), JSON.stringify({ eos_token_id: [7, 8] }));
    const tok = { eos: { content: '</s>', id: 9 } } as unknown as Parameters<typeof stopIdsFor>[1];
    expect(stopIdsFor(m, tok, [2]).sort()).toEqual([2, 7, 8, 9]);
  });
});
