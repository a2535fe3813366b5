// GGUF export (src/engine/export/gguf.ts): the file size and the wall time of one export (weights
// read back from the GPU, converted or quantized on the CPU, streamed to a byte-counting sink) for
// each type, on the demo model and on a Qwen2.5-0.5B-shaped model with random bf16 weights (hidden
// 896, 24 layers, intermediate 4864, 14/2 heads, vocab 151,936; the demo tokenizer padded to the
// vocabulary, so its tokenizer metadata is ~6 MB smaller than the real Qwen's). The export runs once
// in setup and is reported in `extra` (export_s, MiB); the timed GPU iterations are
// empty. Node only (model files on disk); the Qwen-shaped cases are heavy (--full).
import type { BenchCase } from '../types.ts';

const TYPES = ['f16', 'bf16', 'q8_0', 'q4_k_m'] as const;
const QWEN_DIR = 'tests/artifacts/bench-gguf/qwen2.5-0.5b-shape';

/** Writes (once) a model folder with Qwen2.5-0.5B's config and random bf16 weights. */
async function qwenShapedFolder(): Promise<string> {
  const { existsSync, mkdirSync, writeFileSync, copyFileSync, createWriteStream } = await import('node:fs');
  const { join } = await import('node:path');
  const { KNOWN_CONFIGS } = await import('../../src/engine/plan/known-configs.ts');
  const { expectedWeights, parseModelConfig } = await import('../../src/engine/model/config.ts');
  const { safetensorsChunks } = await import('../../src/io/safetensors-writer.ts');
  const { mulberry32 } = await import('../../src/data/hash.ts');
  if (existsSync(join(QWEN_DIR, 'model.safetensors'))) return QWEN_DIR;
  mkdirSync(QWEN_DIR, { recursive: true });
  const text = JSON.stringify(KNOWN_CONFIGS['Qwen/Qwen2.5-0.5B-Instruct'], null, 2);
  writeFileSync(join(QWEN_DIR, 'config.json'), text);
  for (const f of ['tokenizer.json', 'tokenizer_config.json'])
    copyFileSync(join('public/demo-model', f), join(QWEN_DIR, f));
  const rnd = mulberry32(5);
  const f32 = new Float32Array(1);
  const u32 = new Uint32Array(f32.buffer);
  const tensors = expectedWeights(parseModelConfig(text))
    .filter((w) => !w.optional || w.name.endsWith('.bias'))
    .map((w) => ({
      name: w.name,
      dtype: 'BF16' as const,
      shape: w.shape,
      data: () => {
        const n = w.shape.reduce((a, b) => a * b, 1);
        const out = new Uint16Array(n);
        for (let i = 0; i < n; i++) {
          f32[0] = w.role === 'norm' ? 1 : (rnd() - 0.5) * 0.04;
          out[i] = u32[0] >>> 16;
        }
        return new Uint8Array(out.buffer);
      },
    }));
  const tmp = join(QWEN_DIR, 'model.safetensors.part');
  const sink = createWriteStream(tmp);
  for await (const chunk of safetensorsChunks(tensors))
    if (!sink.write(chunk)) await new Promise<void>((r) => sink.once('drain', () => r()));
  await new Promise<void>((r, j) => sink.end((e?: Error) => (e ? j(e) : r())));
  const { renameSync } = await import('node:fs');
  renameSync(tmp, join(QWEN_DIR, 'model.safetensors'));
  return QWEN_DIR;
}

function ggufCase(model: 'demo' | 'qwen', type: (typeof TYPES)[number]): BenchCase {
  const extra: Record<string, number | string> = {};
  const label = model === 'demo' ? 'demo model (5.7M)' : 'Qwen2.5-0.5B shape (494M)';
  return {
    name: `GGUF export ${type} ${model === 'demo' ? 'demo' : 'qwen2.5-0.5b-shape'}`,
    shape: label,
    flops: 0,
    bytesMoved: 0,
    extra,
    heavy: model === 'qwen',
    async setup(gpu) {
      const { readFileSync } = await import('node:fs');
      const { join } = await import('node:path');
      const { openModelFolder } = await import('../../src/engine/model/node-folder.ts');
      const { loadModel } = await import('../../src/engine/model/load.ts');
      const { exportGguf } = await import('../../src/engine/export/gguf.ts');
      const dir = model === 'demo' ? 'public/demo-model' : await qwenShapedFolder();
      const files = await openModelFolder(dir);
      const m = await loadModel(gpu, files.config, files.source);
      try {
        const tokenizerFiles = new Map(
          ['tokenizer.json', 'tokenizer_config.json'].map((f) => [f, new Uint8Array(readFileSync(join(dir, f)))]),
        );
        let written = 0;
        const t0 = performance.now();
        const r = await exportGguf(m, null, {
          type,
          name: model,
          tokenizerFiles,
          modelfile: false,
          write: async (_name, data) => {
            for await (const c of data instanceof Uint8Array ? [data] : data) written += c.byteLength;
          },
        });
        const s = (performance.now() - t0) / 1000;
        if (written !== r.bytes) throw new Error(`GGUF bench: wrote ${written} bytes, planned ${r.bytes}`);
        extra.export_s = Number(s.toFixed(2));
        extra.MiB = Number((r.bytes / 2 ** 20).toFixed(2));
      } finally {
        m.release();
        await files.source.close?.();
      }
      return { async record() {}, cleanup() {} };
    },
  };
}

const inNode = typeof process !== 'undefined' && !!process.versions?.node;
export const cases: BenchCase[] = inNode
  ? (['demo', 'qwen'] as const).flatMap((m) => TYPES.map((t) => ggufCase(m, t)))
  : [];
