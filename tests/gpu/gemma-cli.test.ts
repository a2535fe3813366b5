// The command line end to end on a tiny Gemma 3 made here (demo tokenizer, random weights; sliding
// and global layers with a window of 8 that the 48-token cutoff passes, two RoPE bases, (1 + w)
// norms, GeGLU, √hidden embeddings) in tests/artifacts/cli-gemma3/: `tabtune train` as QLoRA on
// `lora_target: all` with template gemma3, `tabtune chat` with the adapter (equal to generate() in
// this process, past the window), `tabtune export` (merged logits = base + adapter) and the GGUF
// export refused with its reason. Node only: subprocesses and files.
import { describe, expect, it } from 'vitest';
import { runtime, testGpu } from './context.ts';

const ROOT = 'tests/artifacts/cli-gemma3';

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

describe.skipIf(runtime !== 'node')('tabtune train → chat → export on Gemma 3', () => {
  it('QLoRA on all seven modules past the window, chat and a merged export; GGUF refused', async () => {
    const { readFileSync, writeFileSync, mkdirSync, rmSync } = await import('node:fs');
    const { join, resolve } = await import('node:path');
    const { tinyWeights, writeModelFolder } = await import('./export-helpers.ts');
    const root = resolve(ROOT);
    rmSync(root, { recursive: true, force: true });
    const modelDir = join(root, 'model');
    const raw = {
      architectures: ['Gemma3ForCausalLM'],
      model_type: 'gemma3_text',
      hidden_size: 32,
      intermediate_size: 64,
      num_hidden_layers: 2,
      num_attention_heads: 4,
      num_key_value_heads: 2,
      head_dim: 8,
      query_pre_attn_scalar: 8,
      vocab_size: 6144,
      max_position_embeddings: 64,
      sliding_window: 8,
      layer_types: ['sliding_attention', 'full_attention'],
      rope_theta: 10000,
      rope_local_base_freq: 100,
      rms_norm_eps: 1e-6,
      hidden_activation: 'gelu_pytorch_tanh',
      tie_word_embeddings: true,
      torch_dtype: 'float32',
      eos_token_id: 6143,
      pad_token_id: 6141,
    };
    await writeModelFolder(modelDir, raw, tinyWeights(raw, 'F32', 33), {
      'tokenizer.json': readFileSync('public/demo-model/tokenizer.json'),
      'tokenizer_config.json': readFileSync('public/demo-model/tokenizer_config.json'),
    });
    mkdirSync(join(root, 'data'), { recursive: true });
    const rows = Array.from({ length: 4 }, (_, i) => ({
      instruction: `Count from ${i} to ${i + 5}, one number per word, and say nothing else please.`,
      input: '',
      output: `${i} ${i + 1} ${i + 2} ${i + 3} ${i + 4} ${i + 5}`,
    }));
    writeFileSync(join(root, 'data', 'counts.json'), JSON.stringify(rows));
    writeFileSync(join(root, 'data', 'dataset_info.json'), JSON.stringify({ counts: { file_name: 'counts.json' } }));
    const out = join(root, 'out');
    const trainYaml = join(root, 'train.yaml');
    writeFileSync(
      trainYaml,
      [
        `model_name_or_path: ${modelDir}`,
        'stage: sft',
        'do_train: true',
        'finetuning_type: lora',
        'quantization_bit: 4',
        'lora_rank: 4',
        'lora_alpha: 8',
        'lora_target: all',
        'dataset: counts',
        `dataset_dir: ${join(root, 'data')}`,
        'template: gemma3',
        'cutoff_len: 48',
        'per_device_train_batch_size: 2',
        'learning_rate: 5.0e-2',
        'num_train_epochs: 1.0',
        'logging_steps: 1',
        'save_steps: 100',
        `output_dir: ${out}`,
        'seed: 5',
        '',
      ].join('\n'),
    );

    // ---- train: 2 QLoRA steps over rows longer than the window
    const t = await run(['train', trainYaml]);
    expect(t.code, t.err).toBe(0);
    const log = readFileSync(join(out, 'trainer_log.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(log.map((r) => r.current_steps)).toEqual([1, 2]);
    for (const r of log) expect(Number.isFinite(r.loss)).toBe(true);
    const acfg = JSON.parse(readFileSync(join(out, 'adapter_config.json'), 'utf8'));
    expect([...acfg.target_modules].sort()).toEqual([
      'down_proj',
      'gate_proj',
      'k_proj',
      'o_proj',
      'q_proj',
      'up_proj',
      'v_proj',
    ]);
    // The adapter's tensor names from its safetensors header (8-byte length, then JSON).
    const bytes = readFileSync(join(out, 'adapter_model.safetensors'));
    const headerLen = Number(bytes.readBigUInt64LE(0));
    const header = JSON.parse(bytes.subarray(8, 8 + headerLen).toString('utf8')) as Record<string, unknown>;
    const names = Object.keys(header).filter((k) => k !== '__metadata__');
    expect(names).toContain('base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight');
    expect(names).toContain('base_model.model.model.layers.0.mlp.gate_proj.lora_B.weight');
    expect(names).toHaveLength(2 * 7 * 2);

    // ---- chat with the adapter: greedy; the same text as generate() in this process
    const chatYaml = join(root, 'chat.yaml');
    writeFileSync(
      chatYaml,
      `model_name_or_path: ${modelDir}\nadapter_name_or_path: ${out}\ntemplate: gemma3\nmax_new_tokens: 24\ndo_sample: false\n`,
    );
    const prompt = 'Count from 2 to 7, one number per word, and say nothing else please.';
    const c = await run(['chat', chatYaml, '--prompt', prompt]);
    expect(c.code, c.err).toBe(0);
    expect(c.err).toMatch(/\+ adapter .* \(r=4, 14 modules\)/);
    const { loadFolderModel, loadAdapterFolder, folderTokenizer, stopIdsFor } = await import('../../src/cli/common.ts');
    const { generateAll } = await import('../../src/engine/generate/generate.ts');
    const { forwardLogits } = await import('../../src/engine/model/infer.ts');
    const { chatTemplateFor } = await import('../../src/data/index.ts');
    const gpu = await testGpu();
    const { model } = await loadFolderModel(gpu, modelDir);
    const lora = (await loadAdapterFolder(model, [out], chatYaml))!;
    try {
      const tok = await folderTokenizer(modelDir);
      const ids = tok.encode(
        chatTemplateFor(tok).renderMessages([{ role: 'user', content: prompt }], { addGenerationPrompt: true }),
      );
      // The prompt alone is longer than the window: decode runs past it from the start.
      expect(ids.length).toBeGreaterThan(8);
      const r = await generateAll(model, lora, ids, {
        doSample: false,
        temperature: 1,
        topK: 0,
        topP: 1,
        repetitionPenalty: 1,
        maxNewTokens: 24,
        stopIds: stopIdsFor(modelDir, tok, model.config.eosTokenIds),
      });
      expect(r.tokens.length).toBeGreaterThan(0);
      expect(c.out).toBe(`${tok.decode(r.tokens, { skipSpecialTokens: true })}\n`);

      // ---- export: merged folder, logits equal base + adapter; GGUF refused with the reason
      const exportYaml = join(root, 'export.yaml');
      writeFileSync(
        exportYaml,
        `model_name_or_path: ${modelDir}\nadapter_name_or_path: ${out}\ntemplate: gemma3\nfinetuning_type: lora\nexport_dir: ${join(root, 'merged')}\n`,
      );
      const e = await run(['export', exportYaml]);
      expect(e.code, e.err).toBe(0);
      const merged = await loadFolderModel(gpu, join(root, 'merged'));
      try {
        expect(merged.model.weights.has('model.layers.0.post_feedforward_layernorm.weight')).toBe(true);
        expect(merged.model.config.slidingLayers).toEqual([0]);
        const a = await forwardLogits(model, lora, Int32Array.from(ids), null);
        const b = await forwardLogits(merged.model, null, Int32Array.from(ids), null);
        let num = 0;
        let den = 0;
        for (let i = 0; i < a.length; i++) {
          num = Math.max(num, Math.abs(a[i] - b[i]));
          den = Math.max(den, Math.abs(a[i]));
        }
        console.log(`[gemma3 cli] merged vs base + adapter logits rel ${(num / den).toExponential(2)}`);
        expect(num / den).toBeLessThan(1e-5);
      } finally {
        merged.model.release();
        await merged.files.source.close?.();
      }
      const g = await run(['export', exportYaml, 'export_format=gguf', 'export_gguf_type=f16']);
      expect(g.code).not.toBe(0);
      expect(g.err).toMatch(/GGUF export does not support Gemma3ForCausalLM: .*convert_hf_to_gguf\.py/);
    } finally {
      lora.release();
      model.release();
    }
  });
});
