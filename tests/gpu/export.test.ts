// Export proof: a tiny Llama (bf16 weights, untied head) and a tiny Qwen2 (f32, q/k/v biases,
// tied embeddings) get a LoRA adapter with non-zero B; the merged checkpoint (sharded and single
// file, f32 and bf16) and the PEFT adapter are written to tests/artifacts/export/ and checked by
// tests/reference/gen_export.py in PyTorch: its own merge, its own forward on base + adapter
// (PEFT-style, unmerged) and on our merged weights. Node only (files + a Python subprocess).
import { describe, expect, it } from 'vitest';
import { readF32, writeTensor } from '../../src/engine/gpu/index.ts';
import { randn } from '../cpu/random.ts';
import { runtime, testGpu } from './context.ts';

const ROOT = 'tests/artifacts/export';

interface CheckOut {
  problems: string[];
  merged_files: string[];
  dtype: string;
  adapter_modules: number;
  merged_vs_torch_merge_max_abs: number;
  merged_vs_torch_merge_worst_ulps: number;
  merged_vs_torch_merge_elements_off: number;
  rel_merged_vs_peft: number;
  rel_merged_vs_torch_merged: number;
  rel_adapter_effect: number;
  peft_logits_last: number[];
  base_logits_last: number[];
}

async function pythonCheck(base: string, adapter: string, merged: string, ids: number[]): Promise<CheckOut> {
  const { execFileSync } = await import('node:child_process');
  const out = execFileSync(
    '/usr/bin/python3',
    [
      'tests/reference/gen_export.py',
      'check',
      '--base',
      base,
      '--adapter',
      adapter,
      '--merged',
      merged,
      '--ids',
      ids.join(','),
    ],
    {
      encoding: 'utf8',
      maxBuffer: 64 << 20,
    },
  );
  return JSON.parse(out) as CheckOut;
}

function rel(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < a.length; i++) {
    num = Math.max(num, Math.abs(a[i] - b[i]));
    den = Math.max(den, Math.abs(b[i]));
  }
  return num / den;
}

interface Case {
  name: string;
  arch: 'llama' | 'qwen2' | 'smollm3' | 'phi3' | 'gemma3' | 'gemma2';
  stored: 'F32' | 'BF16';
  out: 'f32' | 'bf16' | 'f16';
  shardBytes?: number;
  targets: string[] | 'all';
  rsLora?: boolean;
  /** Pretend the device binds at most this many bytes: embedding / lm_head load split by rows. */
  maxBindingBytes?: number;
}

const CASES: Case[] = [
  {
    name: 'llama-bf16-to-f32-sharded',
    arch: 'llama',
    stored: 'BF16',
    out: 'f32',
    shardBytes: 120_000,
    targets: 'all',
    maxBindingBytes: 16_384,
  },
  {
    name: 'qwen2-f32-to-bf16',
    arch: 'qwen2',
    stored: 'F32',
    out: 'bf16',
    targets: ['q_proj', 'v_proj', 'down_proj'],
    rsLora: true,
  },
  { name: 'qwen2-f32-to-f32', arch: 'qwen2', stored: 'F32', out: 'f32', targets: 'all' },
  { name: 'llama-bf16-to-f16', arch: 'llama', stored: 'BF16', out: 'f16', targets: ['o_proj', 'gate_proj', 'up_proj'] },
  // NoPE layers 1 and 3: a merged config without them would rope every layer and change the logits.
  { name: 'smollm3-f32-to-f32', arch: 'smollm3', stored: 'F32', out: 'f32', targets: 'all' },
  // Phi-3: LoRA on the fused qkv_proj / gate_up_proj merges into the fused tensors; the 10-token
  // check runs on LongRoPE's long factors with partial rotary.
  { name: 'phi3-f32-to-f32', arch: 'phi3', stored: 'F32', out: 'f32', targets: 'all' },
  // Gemma 3: (1 + w) norms, sandwich norms, GeGLU, windows and two RoPE bases in the merged config.
  { name: 'gemma3-f32-to-f32', arch: 'gemma3', stored: 'F32', out: 'f32', targets: 'all' },
  // Gemma 2: soft-capped attention and logits, a window on layer 0.
  { name: 'gemma2-f32-to-f32', arch: 'gemma2', stored: 'F32', out: 'f32', targets: 'all' },
];

describe.skipIf(runtime !== 'node')('export (merged safetensors + PEFT adapter) checked in PyTorch', () => {
  for (const c of CASES) {
    it(`${c.name}: files, torch merge, and logits of merged = base + adapter`, async () => {
      const { existsSync, readFileSync, readdirSync } = await import('node:fs');
      const { join } = await import('node:path');
      const helpers = await import('./export-helpers.ts');
      const { tinyLlamaConfig, tinyPhi3Config, tinyQwen2Config, tinySmolLM3Config, tinyWeights, writeModelFolder } =
        helpers;
      const { openModelFolder } = await import('../../src/engine/model/node-folder.ts');
      const { loadModel } = await import('../../src/engine/model/load.ts');
      const { attachLora } = await import('../../src/engine/model/model.ts');
      const { forwardLogits } = await import('../../src/engine/model/infer.ts');
      const { exportMerged, TOKENIZER_FILE_NAMES } = await import('../../src/engine/export/merged.ts');
      const { exportPeft, loadPeftAdapter } = await import('../../src/engine/export/peft.ts');
      const { nodeDirWriter, openAdapterFolder } = await import('../../src/engine/export/node-dir.ts');

      const gpu = await testGpu();
      const dir = join(ROOT, c.name);
      const raw =
        c.arch === 'llama'
          ? tinyLlamaConfig()
          : c.arch === 'smollm3'
            ? tinySmolLM3Config()
            : c.arch === 'phi3'
              ? tinyPhi3Config()
              : c.arch === 'gemma3'
                ? helpers.tinyGemma3Config()
                : c.arch === 'gemma2'
                  ? helpers.tinyGemma2Config()
                  : tinyQwen2Config();
      await writeModelFolder(join(dir, 'base'), raw, tinyWeights(raw, c.stored, 100), {
        'tokenizer.json': '{"fake": "tokenizer"}',
        'tokenizer_config.json': '{}',
      });
      const files = await openModelFolder(join(dir, 'base'));
      const model = await loadModel(gpu, files.config, files.source, { maxBindingBytes: c.maxBindingBytes });
      if (c.maxBindingBytes) expect(model.notes.join(' ')).toMatch(/embed_tokens.weight split by rows/);
      const lora = attachLora(model, {
        rank: 4,
        alpha: 8,
        dropout: 0.1,
        targets: c.targets,
        seed: 7,
        rsLora: c.rsLora,
      });
      let s = 500;
      for (const st of lora.adapters.values()) writeTensor(gpu, st.B, randn(st.B.shape[0] * st.B.shape[1], s++, 0.2));
      try {
        const tokenizerFiles = new Map<string, Uint8Array>();
        for (const f of TOKENIZER_FILE_NAMES)
          if (existsSync(join(dir, 'base', f))) tokenizerFiles.set(f, readFileSync(join(dir, 'base', f)));
        const mergedFiles = await exportMerged(model, lora, {
          dtype: c.out,
          maxShardBytes: c.shardBytes,
          configText: files.configText,
          tokenizerFiles,
          write: nodeDirWriter(join(dir, 'merged')),
        });
        const peftFiles = await exportPeft(lora, null, 'tiny-base', nodeDirWriter(join(dir, 'adapter')));
        expect(peftFiles.sort()).toEqual(['adapter_config.json', 'adapter_model.safetensors']);
        expect(mergedFiles).toContain('config.json');
        expect(mergedFiles).toContain('generation_config.json');
        expect(readFileSync(join(dir, 'merged', 'tokenizer.json'), 'utf8')).toBe('{"fake": "tokenizer"}');
        if (c.shardBytes) {
          expect(mergedFiles).toContain('model.safetensors.index.json');
          expect(mergedFiles.filter((f) => /^model-\d{5}-of-\d{5}\.safetensors$/.test(f)).length).toBeGreaterThan(1);
        } else expect(mergedFiles).toContain('model.safetensors');
        expect(readdirSync(join(dir, 'merged')).sort()).toEqual([...mergedFiles].sort());
        const cfg = JSON.parse(readFileSync(join(dir, 'merged', 'config.json'), 'utf8'));
        expect(cfg.torch_dtype).toBe({ f32: 'float32', bf16: 'bfloat16', f16: 'float16' }[c.out]);
        const acfg = JSON.parse(readFileSync(join(dir, 'adapter', 'adapter_config.json'), 'utf8'));
        expect(acfg).toMatchObject({
          r: 4,
          lora_alpha: 8,
          lora_dropout: 0.1,
          peft_type: 'LORA',
          task_type: 'CAUSAL_LM',
          base_model_name_or_path: 'tiny-base',
          use_rslora: !!c.rsLora,
          bias: 'none',
        });

        const ids = [5, 17, 42, 99, 3, 250, 64, 8, 120, 7];
        const py = await pythonCheck(join(dir, 'base'), join(dir, 'adapter'), join(dir, 'merged'), ids);
        expect(py.problems).toEqual([]);
        expect(py.adapter_modules).toBe(lora.adapters.size);
        expect(py.rel_adapter_effect).toBeGreaterThan(1e-2); // the adapter changes the logits
        if (c.out === 'f32') {
          expect(py.merged_vs_torch_merge_max_abs).toBeLessThan(1e-6);
          expect(py.rel_merged_vs_peft).toBeLessThan(1e-5);
        } else {
          // RNE like torch; a rounding tie flipped by a different f32 summation order may differ by one ulp
          expect(py.merged_vs_torch_merge_worst_ulps).toBeLessThanOrEqual(1);
          expect(py.rel_merged_vs_torch_merged).toBeLessThan(1e-3);
          expect(py.rel_merged_vs_peft).toBeLessThan(3e-2);
        }
        // Our own forward with the adapter on / off equals PyTorch's base + PEFT adapter.
        const withAdapter = await forwardLogits(model, lora, Int32Array.from(ids), null);
        const without = await forwardLogits(model, null, Int32Array.from(ids), null);
        expect(rel(withAdapter, py.peft_logits_last)).toBeLessThan(1e-4);
        expect(rel(without, py.base_logits_last)).toBeLessThan(1e-4);
        console.log(
          `[${c.name}] merged vs PEFT logits rel ${py.rel_merged_vs_peft.toExponential(2)}, ours vs PEFT ${rel(withAdapter, py.peft_logits_last).toExponential(2)}, base ${rel(without, py.base_logits_last).toExponential(2)}`,
        );

        // The PEFT files load back into identical adapters.
        const { configText, store } = await openAdapterFolder(join(dir, 'adapter'));
        const back = await loadPeftAdapter(model, configText, store);
        await store.close();
        try {
          expect(back.lora.adapters.size).toBe(lora.adapters.size);
          expect(back.lora.scale).toBeCloseTo(lora.scale, 12);
          for (const [name, st] of lora.adapters) {
            const b = back.lora.adapters.get(name)!;
            expect(Array.from(await readF32(gpu, b.A))).toEqual(Array.from(await readF32(gpu, st.A)));
            expect(Array.from(await readF32(gpu, b.B))).toEqual(Array.from(await readF32(gpu, st.B)));
          }
        } finally {
          back.lora.release();
        }
      } finally {
        lora.release();
        model.release();
        await files.source.close?.();
      }
    });
  }

  it('QLoRA model: merged export dequantizes NF4 (+ adapter) and says so', async () => {
    const { join } = await import('node:path');
    const { readFileSync } = await import('node:fs');
    const { tinyLlamaConfig, tinyWeights, writeModelFolder } = await import('./export-helpers.ts');
    const { openModelFolder } = await import('../../src/engine/model/node-folder.ts');
    const { loadModel } = await import('../../src/engine/model/load.ts');
    const { attachLora } = await import('../../src/engine/model/model.ts');
    const { forwardLogits } = await import('../../src/engine/model/infer.ts');
    const { exportMerged } = await import('../../src/engine/export/merged.ts');
    const { nodeDirWriter } = await import('../../src/engine/export/node-dir.ts');
    const { loadModel: load2 } = await import('../../src/engine/model/load.ts');
    const gpu = await testGpu();
    const dir = join(ROOT, 'llama-qlora');
    const raw = tinyLlamaConfig();
    await writeModelFolder(join(dir, 'base'), raw, tinyWeights(raw, 'BF16', 300));
    const files = await openModelFolder(join(dir, 'base'));
    const model = await loadModel(gpu, files.config, files.source, { quantize: 'nf4', doubleQuant: true });
    const lora = attachLora(model, { rank: 4, alpha: 16, dropout: 0, targets: 'all', seed: 3 });
    let s = 900;
    for (const st of lora.adapters.values()) writeTensor(gpu, st.B, randn(st.B.shape[0] * st.B.shape[1], s++, 0.2));
    const notes: string[] = [];
    try {
      await exportMerged(model, lora, {
        dtype: 'f32',
        configText: files.configText,
        write: nodeDirWriter(join(dir, 'merged')),
        onNote: (n) => notes.push(n),
      });
      expect(notes.join(' ')).toMatch(/NF4/);
      expect(JSON.parse(readFileSync(join(dir, 'merged', 'config.json'), 'utf8')).quantization_config).toBeUndefined();
      // The merged dense model computes what the NF4 model + adapter computes.
      const mergedFiles = await openModelFolder(join(dir, 'merged'));
      const merged = await load2(gpu, mergedFiles.config, mergedFiles.source);
      try {
        const ids = Int32Array.from([4, 8, 15, 16, 23, 42]);
        const a = await forwardLogits(model, lora, ids, null);
        const b = await forwardLogits(merged, null, ids, null);
        expect(rel(b, a)).toBeLessThan(1e-4);
      } finally {
        merged.release();
        await mergedFiles.source.close?.();
      }
    } finally {
      lora.release();
      model.release();
      await files.source.close?.();
    }
  });
});
