// The command line end to end on a tiny Gemma 3 made here (demo tokenizer, random weights; sliding
// and global layers with a window of 8 that the 48-token cutoff passes, two RoPE bases, (1 + w)
// norms, GeGLU, √hidden embeddings) in tests/artifacts/cli-gemma3/: `tabtune train` as QLoRA on
// `lora_target: all` with template gemma3, `tabtune chat` with the adapter (equal to generate() in
// this process, past the window), `tabtune export` (merged logits = base + adapter) and the GGUF
// export refused with its reason. Node only: subprocesses and files.
import { describe, expect, it } from 'vitest';
import { runtime, testGpu } from './context.ts';
import {
  countingRows,
  demoVocabConfig,
  greedyReplyInProcess,
  mergedVsAdapterRel,
  readTrainerLog,
  runCli as run,
  safetensorsNames,
  writeAlpacaDataset,
  writeDemoTokenizerModel,
  writeSftLoraYaml,
  writeYaml,
} from './cli-util.ts';

const ROOT = 'tests/artifacts/cli-gemma3';

describe.skipIf(runtime !== 'node')('tabtune train → chat → export on Gemma 3', () => {
  it('QLoRA on all seven modules past the window, chat and a merged export; GGUF refused', async () => {
    const { readFileSync, rmSync } = await import('node:fs');
    const { join, resolve } = await import('node:path');
    const root = resolve(ROOT);
    rmSync(root, { recursive: true, force: true });
    const modelDir = join(root, 'model');
    const raw = demoVocabConfig({
      architectures: ['Gemma3ForCausalLM'],
      model_type: 'gemma3_text',
      num_hidden_layers: 2,
      head_dim: 8,
      query_pre_attn_scalar: 8,
      max_position_embeddings: 64,
      sliding_window: 8,
      layer_types: ['sliding_attention', 'full_attention'],
      rope_theta: 10000,
      rope_local_base_freq: 100,
      rms_norm_eps: 1e-6,
      hidden_activation: 'gelu_pytorch_tanh',
      tie_word_embeddings: true,
    });
    await writeDemoTokenizerModel(modelDir, raw, 33);
    const dataDir = join(root, 'data');
    await writeAlpacaDataset(dataDir, 'counts', countingRows());
    const out = join(root, 'out');
    const trainYaml = await writeSftLoraYaml(join(root, 'train.yaml'), {
      modelDir,
      dataset: 'counts',
      dataDir,
      template: 'gemma3',
      outputDir: out,
      saveSteps: 100,
      seed: 5,
      extra: ['quantization_bit: 4', 'lora_alpha: 8'],
    });

    // ---- train: 2 QLoRA steps over rows longer than the window
    const t = await run(['train', trainYaml]);
    expect(t.code, t.err).toBe(0);
    const log = await readTrainerLog(out);
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
    const names = await safetensorsNames(join(out, 'adapter_model.safetensors'));
    expect(names).toContain('base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight');
    expect(names).toContain('base_model.model.model.layers.0.mlp.gate_proj.lora_B.weight');
    expect(names).toHaveLength(2 * 7 * 2);

    // ---- chat with the adapter: greedy; the same text as generate() in this process
    const chatYaml = await writeYaml(join(root, 'chat.yaml'), {
      model_name_or_path: modelDir,
      adapter_name_or_path: out,
      template: 'gemma3',
      max_new_tokens: 24,
      do_sample: false,
    });
    const prompt = 'Count from 2 to 7, one number per word, and say nothing else please.';
    const c = await run(['chat', chatYaml, '--prompt', prompt]);
    expect(c.code, c.err).toBe(0);
    expect(c.err).toMatch(/\+ adapter .* \(r=4, 14 modules\)/);
    const { loadFolderModel, loadAdapterFolder } = await import('../../src/cli/common.ts');
    const gpu = await testGpu();
    const { model } = await loadFolderModel(gpu, modelDir);
    const lora = (await loadAdapterFolder(model, [out], chatYaml))!;
    try {
      const ref = await greedyReplyInProcess(model, lora, modelDir, prompt, 24);
      // The prompt alone is longer than the window: decode runs past it from the start.
      expect(ref.ids.length).toBeGreaterThan(8);
      expect(ref.tokens.length).toBeGreaterThan(0);
      expect(c.out).toBe(`${ref.text}\n`);

      // ---- export: merged folder, logits equal base + adapter; GGUF refused with the reason
      const exportYaml = await writeYaml(join(root, 'export.yaml'), {
        model_name_or_path: modelDir,
        adapter_name_or_path: out,
        template: 'gemma3',
        finetuning_type: 'lora',
        export_dir: join(root, 'merged'),
      });
      const e = await run(['export', exportYaml]);
      expect(e.code, e.err).toBe(0);
      const rel = await mergedVsAdapterRel(gpu, model, lora, join(root, 'merged'), ref.ids, (merged) => {
        expect(merged.weights.has('model.layers.0.post_feedforward_layernorm.weight')).toBe(true);
        expect(merged.config.slidingLayers).toEqual([0]);
      });
      console.log(`[gemma3 cli] merged vs base + adapter logits rel ${rel.toExponential(2)}`);
      expect(rel).toBeLessThan(1e-5);
      const g = await run(['export', exportYaml, 'export_format=gguf', 'export_gguf_type=f16']);
      expect(g.code).not.toBe(0);
      expect(g.err).toMatch(/GGUF export does not support Gemma3ForCausalLM: .*convert_hf_to_gguf\.py/);
    } finally {
      lora.release();
      model.release();
    }
  });
});
