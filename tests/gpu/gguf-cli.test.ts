// `tabtune export` with export_format: gguf end to end (a subprocess, Node+Dawn): a q4_k_m GGUF of the
// demo model with its Ollama Modelfile; export_gguf_adapter: true writing a PEFT adapter folder as a
// GGUF LoRA adapter; and an unsupported type refused before anything is loaded or written.
import { describe, expect, it } from 'vitest';
import { runtime } from './context.ts';
import { runCli as run } from './cli-util.ts';

const ROOT = 'tests/artifacts/gguf-cli';

describe.skipIf(runtime !== 'node')('tabtune export → GGUF', () => {
  it('writes a q4_k_m GGUF with a Modelfile, a GGUF LoRA adapter, and refuses an unsupported type first', async () => {
    const { mkdirSync, readFileSync, rmSync, writeFileSync, existsSync, readdirSync } = await import('node:fs');
    const { join, resolve } = await import('node:path');
    const { parseGguf } = await import('../cpu/gguf-read.ts');
    const { serializeSafetensors } = await import('../../src/io/safetensors-writer.ts');
    const { loraKey, makeAdapterConfig, writeAdapterConfig } = await import('../../src/io/peft.ts');
    const { randn } = await import('../cpu/random.ts');
    const root = resolve(ROOT);
    rmSync(root, { recursive: true, force: true });
    mkdirSync(root, { recursive: true });
    const model = resolve('public/demo-model');

    // 1. q4_k_m merged GGUF + Modelfile.
    writeFileSync(
      join(root, 'q4.yaml'),
      `model_name_or_path: ${model}\nexport_dir: ${join(root, 'q4')}\nexport_format: gguf\nexport_gguf_type: q4_k_m\n`,
    );
    const q4 = await run(['export', join(root, 'q4.yaml')]);
    expect(q4.err).not.toMatch(/error/i);
    expect(q4.code).toBe(0);
    expect(q4.out.trim().split('\n')).toEqual([
      join(root, 'q4', 'demo-model-q4_k_m.gguf'),
      join(root, 'q4', 'Modelfile'),
    ]);
    const g = parseGguf(readFileSync(join(root, 'q4', 'demo-model-q4_k_m.gguf')));
    expect(g.kv.get('general.file_type')?.value).toBe(15);
    expect(g.tensors.length).toBe(1 + 6 * 9 + 1); // embedding, 9 per layer, output norm (tied)
    expect(new Set(g.tensors.map((t) => t.type))).toEqual(new Set([0, 1, 12, 14])); // F32 F16 Q4_K Q6_K
    expect(readFileSync(join(root, 'q4', 'Modelfile'), 'utf8')).toMatch(
      /^FROM \.\/demo-model-q4_k_m\.gguf\nTEMPLATE """/,
    );

    // 2. A PEFT adapter folder (rank 4 on q_proj and v_proj) → a GGUF LoRA adapter.
    const adapterDir = join(root, 'my-adapter');
    mkdirSync(adapterDir, { recursive: true });
    const tensors = [];
    let seed = 1;
    for (let layer = 0; layer < 6; layer++)
      for (const [module, out] of [
        ['q_proj', 256],
        ['v_proj', 64],
      ] as const)
        for (const which of ['A', 'B'] as const) {
          const shape = which === 'A' ? [4, 256] : [out, 4];
          const x = randn(shape[0] * shape[1], seed++, 0.05);
          tensors.push({
            name: loraKey(layer, module, which),
            dtype: 'F32' as const,
            shape,
            data: new Uint8Array(x.buffer),
          });
        }
    writeFileSync(join(adapterDir, 'adapter_model.safetensors'), await serializeSafetensors(tensors, { format: 'pt' }));
    writeFileSync(
      join(adapterDir, 'adapter_config.json'),
      writeAdapterConfig(makeAdapterConfig({ r: 4, loraAlpha: 16, targetModules: ['q_proj', 'v_proj'] })),
    );
    writeFileSync(
      join(root, 'adapter.yaml'),
      `model_name_or_path: ${model}\nadapter_name_or_path: ${adapterDir}\nexport_dir: ${join(root, 'ad')}\n` +
        'export_format: gguf\nexport_gguf_adapter: true\n',
    );
    const ad = await run(['export', join(root, 'adapter.yaml')]);
    expect(ad.code).toBe(0);
    expect(ad.out.trim()).toBe(join(root, 'ad', 'my-adapter-lora-f16.gguf'));
    const a = parseGguf(readFileSync(join(root, 'ad', 'my-adapter-lora-f16.gguf')));
    expect(a.kv.get('general.type')?.value).toBe('adapter');
    expect(a.kv.get('general.architecture')?.value).toBe('llama');
    expect(a.kv.get('adapter.lora.alpha')?.value).toBe(16);
    expect(a.tensors.length).toBe(24);
    expect(a.tensors.find((t) => t.name === 'blk.5.attn_v.weight.lora_b')).toMatchObject({ dims: [4, 64], type: 1 });
    expect(readdirSync(join(root, 'ad'))).toEqual(['my-adapter-lora-f16.gguf']);

    // 3. An unsupported type: a clear error before any model is read or file written.
    writeFileSync(
      join(root, 'bad.yaml'),
      `model_name_or_path: ${model}\nexport_dir: ${join(root, 'bad')}\nexport_format: gguf\nexport_gguf_type: q3_k_m\n`,
    );
    const bad = await run(['export', join(root, 'bad.yaml')]);
    expect(bad.code).not.toBe(0);
    expect(bad.err).toMatch(/export_gguf_type: q3_k_m is not yet supported; use f32, f16, bf16, q8_0 or q4_k_m/);
    expect(existsSync(join(root, 'bad'))).toBe(false);
  }, 600_000);
});
