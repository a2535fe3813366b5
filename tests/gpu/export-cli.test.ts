// The command line end to end on a tiny Qwen2 made here (demo tokenizer, random weights) in
// tests/artifacts/cli/: `tabtune train` (LoRA, logging, checkpoints), a resumed run that must
// repeat the same losses, `tabtune chat` (greedy, streamed; equal to generate() in-process) and
// `tabtune export` (merged logits = base + adapter). Node only: subprocesses and files.
import { describe, expect, it } from 'vitest';
import { runtime, testGpu } from './context.ts';
import {
  demoVocabConfig,
  greedyReplyInProcess,
  mergedVsAdapterRel,
  readTrainerLog,
  runCli as run,
  writeAlpacaDataset,
  writeDemoTokenizerModel,
  writeSftLoraYaml,
  writeYaml,
} from './cli-util.ts';

const ROOT = 'tests/artifacts/cli';

describe.skipIf(runtime !== 'node')('tabtune train → chat → export', () => {
  it('trains with checkpoints, resumes identically, chats greedily and exports a merged model', async () => {
    const { existsSync, rmSync } = await import('node:fs');
    const { join, resolve } = await import('node:path');
    const root = resolve(ROOT);
    rmSync(root, { recursive: true, force: true });
    const modelDir = join(root, 'model');
    const raw = demoVocabConfig({
      architectures: ['Qwen2ForCausalLM'],
      model_type: 'qwen2',
      num_hidden_layers: 1,
      max_position_embeddings: 256,
      rms_norm_eps: 1e-6,
      rope_theta: 10000,
      tie_word_embeddings: true,
    });
    await writeDemoTokenizerModel(modelDir, raw, 21);
    const dataDir = join(root, 'data');
    const rows = Array.from({ length: 8 }, (_, i) => ({
      instruction: `Say the number ${i}.`,
      input: '',
      output: `The number is ${i}.`,
    }));
    await writeAlpacaDataset(dataDir, 'numbers', rows);
    const out = join(root, 'out');
    const trainYaml = await writeSftLoraYaml(join(root, 'train.yaml'), {
      modelDir,
      dataset: 'numbers',
      dataDir,
      template: 'qwen',
      outputDir: out,
      saveSteps: 2,
      seed: 3,
      extra: [
        'lora_alpha: 8',
        'lora_dropout: 0.1',
        'gradient_accumulation_steps: 1',
        'lr_scheduler_type: cosine',
        'warmup_steps: 1',
        'unknown_key_here: 1',
      ],
    });

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
    const log1 = await readTrainerLog(out);
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
    const log2 = await readTrainerLog(out);
    expect(log2.map((r) => r.current_steps)).toEqual([1, 2, 3, 4]);
    expect(log2.map((r) => r.loss)).toEqual(log1.map((r) => r.loss));
    expect(log2.map((r) => r.grad_norm)).toEqual(log1.map((r) => r.grad_norm));
    expect(log2.map((r) => r.total_tokens)).toEqual(log1.map((r) => r.total_tokens));

    // ---- chat: greedy, streamed to stdout; the same text as generate() in this process
    const chatYaml = await writeYaml(join(root, 'chat.yaml'), {
      model_name_or_path: modelDir,
      adapter_name_or_path: out,
      template: 'qwen',
      max_new_tokens: 10,
      do_sample: false,
    });
    const c = await run(['chat', chatYaml, '--prompt', 'Say the number 3.']);
    expect(c.code, c.err).toBe(0);
    expect(c.err).toMatch(/\+ adapter .* \(r=4, 7 modules\)/);
    expect(c.err).toMatch(/SwiftShader|WebGPU adapter/);
    const { loadFolderModel, loadAdapterFolder } = await import('../../src/cli/common.ts');
    const gpu = await testGpu();
    const { model, files } = await loadFolderModel(gpu, modelDir);
    const lora = (await loadAdapterFolder(model, [out], chatYaml))!;
    try {
      const ref = await greedyReplyInProcess(model, lora, modelDir, 'Say the number 3.', 10);
      expect(ref.tokens.length).toBeGreaterThan(0);
      expect(c.out).toBe(`${ref.text}\n`);

      // ---- export: merged model folder; its logits equal base + adapter
      const exportYaml = await writeYaml(join(root, 'export.yaml'), {
        model_name_or_path: modelDir,
        adapter_name_or_path: out,
        template: 'qwen',
        finetuning_type: 'lora',
        export_dir: join(root, 'merged'),
        export_size: 1,
      });
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
      expect(await mergedVsAdapterRel(gpu, model, lora, join(root, 'merged'), ref.ids)).toBeLessThan(1e-5);
    } finally {
      lora.release();
      model.release();
      await files.source.close?.();
    }
  }, 900_000);
});
