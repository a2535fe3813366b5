// The command line end to end on a tiny Qwen2 made here (demo tokenizer, random weights) in
// tests/artifacts/cli/: `tabtune train` (LoRA, logging, checkpoints), a resumed run that must
// repeat the same losses, `tabtune chat` (greedy, streamed; equal to generate() in-process) and
// `tabtune export` (merged logits = base + adapter). Node only: subprocesses and files.
import { describe, expect, it } from 'vitest';
import { runtime, testGpu } from './context.ts';

const ROOT = 'tests/artifacts/cli';

async function run(args: string[]): Promise<{ code: number; out: string; err: string }> {
  const { spawn } = await import('node:child_process');
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, ['bin/tabtune.mjs', ...args], {
      env: { ...process.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (err += d));
    p.on('error', reject);
    p.on('close', (code) => resolve({ code: code ?? -1, out, err }));
  });
}

describe.skipIf(runtime !== 'node')('tabtune train → chat → export', () => {
  it('trains with checkpoints, resumes identically, chats greedily and exports a merged model', async () => {
    const { readFileSync, writeFileSync, mkdirSync, existsSync, rmSync } = await import('node:fs');
    const { join, resolve } = await import('node:path');
    const { tinyWeights, writeModelFolder } = await import('./export-helpers.ts');
    const root = resolve(ROOT);
    rmSync(root, { recursive: true, force: true });
    const modelDir = join(root, 'model');
    const raw = {
      architectures: ['Qwen2ForCausalLM'],
      model_type: 'qwen2',
      hidden_size: 32,
      intermediate_size: 64,
      num_hidden_layers: 1,
      num_attention_heads: 4,
      num_key_value_heads: 2,
      vocab_size: 6144,
      max_position_embeddings: 256,
      rms_norm_eps: 1e-6,
      rope_theta: 10000,
      tie_word_embeddings: true,
      torch_dtype: 'float32',
      eos_token_id: 6143,
      pad_token_id: 6141,
    };
    await writeModelFolder(modelDir, raw, tinyWeights(raw, 'F32', 21), {
      'tokenizer.json': readFileSync('public/demo-model/tokenizer.json'),
      'tokenizer_config.json': readFileSync('public/demo-model/tokenizer_config.json'),
    });
    mkdirSync(join(root, 'data'), { recursive: true });
    const rows = Array.from({ length: 8 }, (_, i) => ({
      instruction: `Say the number ${i}.`,
      input: '',
      output: `The number is ${i}.`,
    }));
    writeFileSync(join(root, 'data', 'numbers.json'), JSON.stringify(rows));
    writeFileSync(join(root, 'data', 'dataset_info.json'), JSON.stringify({ numbers: { file_name: 'numbers.json' } }));
    const out = join(root, 'out');
    const trainYaml = join(root, 'train.yaml');
    writeFileSync(
      trainYaml,
      [
        `model_name_or_path: ${modelDir}`,
        'stage: sft',
        'do_train: true',
        'finetuning_type: lora',
        'lora_rank: 4',
        'lora_alpha: 8',
        'lora_target: all',
        'lora_dropout: 0.1',
        'dataset: numbers',
        `dataset_dir: ${join(root, 'data')}`,
        'template: qwen',
        'cutoff_len: 48',
        'per_device_train_batch_size: 2',
        'gradient_accumulation_steps: 1',
        'learning_rate: 5.0e-2',
        'num_train_epochs: 1.0',
        'lr_scheduler_type: cosine',
        'warmup_steps: 1',
        'logging_steps: 1',
        'save_steps: 2',
        `output_dir: ${out}`,
        'seed: 3',
        'unknown_key_here: 1',
        '',
      ].join('\n'),
    );

    // ---- train: 4 steps (8 rows, batch 2), checkpoints at 2 and 4
    const t1 = await run(['train', trainYaml]);
    expect(t1.code, t1.err).toBe(0);
    expect(t1.err).toMatch(/WebGPU adapter: /);
    expect(t1.err).toMatch(/unknown key ignored: unknown_key_here/);
    for (const f of [
      'adapter_config.json',
      'adapter_model.safetensors',
      'trainer_log.jsonl',
      'train_results.json',
      'tokenizer.json',
      'checkpoint-2/adapter_model.safetensors',
      'checkpoint-2/trainer_state.json',
      'checkpoint-2/optimizer.safetensors',
      'checkpoint-4/adapter_config.json',
    ]) {
      expect(existsSync(join(out, f)), f).toBe(true);
    }
    const log1 = readFileSync(join(out, 'trainer_log.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(log1.map((r) => r.current_steps)).toEqual([1, 2, 3, 4]);
    for (const r of log1) {
      expect(Object.keys(r)).toEqual(
        expect.arrayContaining([
          'current_steps',
          'total_steps',
          'loss',
          'lr',
          'epoch',
          'percentage',
          'elapsed_time',
          'remaining_time',
        ]),
      );
      expect(r.total_steps).toBe(4);
      expect(Number.isFinite(r.loss)).toBe(true);
    }
    expect(log1[0].lr).toBeGreaterThan(0); // after the warmup step
    expect(log1[3].percentage).toBe(100);
    expect(log1[3].epoch).toBe(1);

    // ---- resume from checkpoint-2: steps 3 and 4 repeat exactly
    const t2 = await run(['train', trainYaml, `resume_from_checkpoint=${join(out, 'checkpoint-2')}`]);
    expect(t2.code, t2.err).toBe(0);
    expect(t2.err).toMatch(/resuming at step 2/);
    const log2 = readFileSync(join(out, 'trainer_log.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(log2.map((r) => r.current_steps)).toEqual([1, 2, 3, 4]);
    expect(log2.map((r) => r.loss)).toEqual(log1.map((r) => r.loss));
    expect(log2.map((r) => r.grad_norm)).toEqual(log1.map((r) => r.grad_norm));
    expect(log2.map((r) => r.total_tokens)).toEqual(log1.map((r) => r.total_tokens));

    // ---- chat: greedy, streamed to stdout; the same text as generate() in this process
    const chatYaml = join(root, 'chat.yaml');
    writeFileSync(
      chatYaml,
      `model_name_or_path: ${modelDir}\nadapter_name_or_path: ${out}\ntemplate: qwen\nmax_new_tokens: 10\ndo_sample: false\n`,
    );
    const c = await run(['chat', chatYaml, '--prompt', 'Say the number 3.']);
    expect(c.code, c.err).toBe(0);
    expect(c.err).toMatch(/\+ adapter .* \(r=4, 7 modules\)/);
    expect(c.err).toMatch(/SwiftShader|WebGPU adapter/);
    const { loadFolderModel, loadAdapterFolder, folderTokenizer, stopIdsFor } = await import('../../src/cli/common.ts');
    const { generateAll } = await import('../../src/engine/generate/generate.ts');
    const { forwardLogits } = await import('../../src/engine/model/infer.ts');
    const { chatTemplateFor } = await import('../../src/data/index.ts');
    const gpu = await testGpu();
    const { model, files } = await loadFolderModel(gpu, modelDir);
    const lora = (await loadAdapterFolder(model, [out], chatYaml))!;
    try {
      const tok = await folderTokenizer(modelDir);
      const ids = tok.encode(
        chatTemplateFor(tok).renderMessages([{ role: 'user', content: 'Say the number 3.' }], {
          addGenerationPrompt: true,
        }),
      );
      const r = await generateAll(model, lora, ids, {
        doSample: false,
        temperature: 1,
        topK: 0,
        topP: 1,
        repetitionPenalty: 1,
        maxNewTokens: 10,
        stopIds: stopIdsFor(modelDir, tok, model.config.eosTokenIds),
      });
      expect(r.tokens.length).toBeGreaterThan(0);
      expect(c.out).toBe(`${tok.decode(r.tokens, { skipSpecialTokens: true })}\n`);

      // ---- export: merged model folder; its logits equal base + adapter
      const exportYaml = join(root, 'export.yaml');
      writeFileSync(
        exportYaml,
        `model_name_or_path: ${modelDir}\nadapter_name_or_path: ${out}\ntemplate: qwen\nfinetuning_type: lora\nexport_dir: ${join(root, 'merged')}\nexport_size: 1\n`,
      );
      const e = await run(['export', exportYaml]);
      expect(e.code, e.err).toBe(0);
      for (const f of [
        'model.safetensors',
        'config.json',
        'generation_config.json',
        'tokenizer.json',
        'tokenizer_config.json',
      ])
        expect(existsSync(join(root, 'merged', f)), f).toBe(true);
      expect(e.out.trim().split('\n').length).toBe(5);
      const merged = await loadFolderModel(gpu, join(root, 'merged'));
      try {
        const a = await forwardLogits(model, lora, Int32Array.from(ids), null);
        const b = await forwardLogits(merged.model, null, Int32Array.from(ids), null);
        let num = 0;
        let den = 0;
        for (let i = 0; i < a.length; i++) {
          num = Math.max(num, Math.abs(a[i] - b[i]));
          den = Math.max(den, Math.abs(a[i]));
        }
        expect(num / den).toBeLessThan(1e-5);
      } finally {
        merged.model.release();
        await merged.files.source.close?.();
      }
    } finally {
      lora.release();
      model.release();
      await files.source.close?.();
    }
  }, 900_000);
});
