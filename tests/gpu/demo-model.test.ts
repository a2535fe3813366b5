// The embedded demo model (public/demo-model/, written by scripts/demo-model/pretrain.py) and
// the demo dataset (datasets/identity_en_zh.json): the shipped files load through the same
// code paths as a Qwen checkpoint, tokenize, and a short LoRA fine-tune lowers the loss.
import { describe, expect, it } from 'vitest';
import { loadTokenizer } from '../../src/data/tokenizer.ts';
import { parseDataset } from '../../src/data/parse.ts';
import { chatTemplateFor, prepareDataset } from '../../src/data/pipeline.ts';
import { checkWeights } from '../../src/engine/model/config.ts';
import { loadModel } from '../../src/engine/model/load.ts';
import { attachLora } from '../../src/engine/model/model.ts';
import { openModelFiles } from '../../src/engine/model/weights.ts';
import { DataLoader } from '../../src/engine/train/data.ts';
import { Trainer } from '../../src/engine/train/trainer.ts';
import { runtime, testGpu } from './context.ts';

const MODEL_FILES = [
  'config.json',
  'generation_config.json',
  'tokenizer.json',
  'tokenizer_config.json',
  'model.safetensors',
];

async function repoFile(path: string): Promise<Uint8Array> {
  if (runtime === 'node') {
    const { readFile } = await import('node:fs/promises');
    return new Uint8Array(await readFile(new URL(`../../${path}`, import.meta.url)));
  }
  // The browser project serves the repository root through Vite.
  const r = await fetch(`/${path}`);
  if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
  return new Uint8Array(await r.arrayBuffer());
}

const text = (b: Uint8Array) => new TextDecoder().decode(b);

describe(`demo model [${runtime}]`, () => {
  it('ships small, complete, Llama-shaped files with a ChatML tokenizer', async () => {
    const files = new Map<string, Uint8Array>();
    for (const f of MODEL_FILES) files.set(f, await repoFile(`public/demo-model/${f}`));
    expect(files.get('model.safetensors')!.byteLength).toBeLessThanOrEqual(16 * 2 ** 20);
    const opened = await openModelFiles(files);
    const c = opened.config;
    expect(c.architecture).toBe('LlamaForCausalLM');
    expect(c.numKvHeads).toBeLessThan(c.numHeads);
    const shapes = new Map(opened.source.names().map((n) => [n, opened.source.shape(n)] as const));
    const check = checkWeights(c, shapes);
    expect(check.problems).toEqual([]);

    const tok = await loadTokenizer(text(files.get('tokenizer.json')!), text(files.get('tokenizer_config.json')!));
    expect(tok.tokenToId('<|im_end|>')).toBe(c.vocabSize - 1);
    for (const s of [
      'Who made you? I am Tabby.',
      '我是 Tabby，来自 Tabtune 团队。',
      'And God said, Let there be light.',
    ]) {
      const ids = tok.encode(s);
      expect(ids.length).toBeGreaterThan(0);
      expect(tok.decode(ids)).toBe(s);
    }
    const rendered = chatTemplateFor(tok).renderMessages([{ role: 'user', content: 'Who are you?' }], {
      addGenerationPrompt: true,
    });
    expect(rendered).toBe(
      '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nWho are you?<|im_end|>\n<|im_start|>assistant\n',
    );
    expect(tok.eos?.content).toBe('<|im_end|>');
  });

  // One runtime is enough here: SwiftShader needs ~30 s per step for this model, and the same
  // engine code is checked in Chromium by the engine tests on tiny models.
  it.skipIf(runtime === 'browser')(
    'a short LoRA fine-tune on the identity dataset lowers its loss',
    async () => {
      const files = new Map<string, Uint8Array>();
      for (const f of MODEL_FILES) files.set(f, await repoFile(`public/demo-model/${f}`));
      const opened = await openModelFiles(files);
      const tok = await loadTokenizer(text(files.get('tokenizer.json')!), text(files.get('tokenizer_config.json')!));
      const parsed = await parseDataset(await repoFile('datasets/identity_en_zh.json'), {
        fileName: 'identity_en_zh.json',
      });
      expect(parsed.report.invalid, 'invalid rows').toHaveLength(0);
      const prep = prepareDataset(parsed.examples, tok, { cutoffLen: 64, seed: 0 });
      expect(prep.train.length).toBe(parsed.examples.length);
      // Two short examples keep the run short on SwiftShader; the loss must still fall.
      const few = [...prep.train].sort((a, b) => a.inputIds.length - b.inputIds.length).slice(0, 2);

      const gpu = await testGpu();
      const model = await loadModel(gpu, opened.config, opened.source);
      const lora = attachLora(model, { rank: 8, alpha: 16, dropout: 0, targets: 'all', seed: 0 });
      const loader = new DataLoader(few, {
        batchSize: 2,
        gradientAccumulationSteps: 1,
        seed: 0,
        padId: tok.pad?.id ?? 0,
      });
      const steps = 5;
      const trainer = new Trainer(
        model,
        lora,
        { learningRate: 3e-3, lrSchedulerType: 'constant', totalSteps: steps, maxGradNorm: 1, seed: 0 },
        loader,
      );
      try {
        const losses: number[] = [];
        for (let s = 0; s < steps; s++) {
          const r = await trainer.step();
          expect(Number.isFinite(r.loss) && !r.skipped, `step ${s}`).toBe(true);
          losses.push(r.loss);
        }
        console.log(
          `[${runtime}] demo model LoRA on 2 identity rows: loss ${losses.map((l) => l.toFixed(3)).join(' → ')}`,
        );
        // A pre-trained (not random) model: the first loss is far below ln(vocab) ≈ 8.7.
        expect(losses[0]).toBeLessThan(7);
        expect(losses.at(-1)!).toBeLessThan(0.8 * losses[0]);
      } finally {
        trainer.release();
        lora.release();
        model.release();
      }
    },
    900_000,
  );
});
