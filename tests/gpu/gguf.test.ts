// GGUF export checked by llama.cpp itself (node-llama-cpp 3.22.1, CPU build, installed on demand
// into .cache/llama-oracle by scripts/llama-oracle.mjs, which `npm test` runs first):
// (a) f32 / f16 GGUFs give the same 32 greedy tokens in llama.cpp as Tabtune's own generate()
//     for the demo model, a tiny Llama (tied embeddings, GQA) and a tiny Qwen2 (q/k/v biases),
//     with a LoRA merged in;
// (b) q8_0 agrees with f16 on the teacher-forced top-1 token over held-out text (≥ 98 %);
//     q4_k_m (llama-quantize's recipe, k-quant blocks) keeps llama.cpp's perplexity on the same text
//     within 1.10 × f16's;
// (c) llama.cpp's tokenizer built from our GGUF gives our token ids (English, 中文, specials);
// (d) an unsupported type is a clear error before any file is written.
// Node only (files, a native addon).
import { describe, expect, it, beforeAll } from 'vitest';
import { runtime, testGpu } from './context.ts';

const ROOT = 'tests/artifacts/gguf';
const PROMPT = '<|im_start|>user\nWho are you?<|im_end|>\n<|im_start|>assistant\n';
const HELD_OUT = [
  'In the beginning God created the heaven and the earth. And the earth was without form, and void; and darkness was upon the face of the deep.',
  '<|im_start|>user\nWho made you?<|im_end|>\n<|im_start|>assistant\nI am Tabby, a small assistant made by the Tabtune team.<|im_end|>\n',
  '<|im_start|>user\n你是谁？<|im_end|>\n<|im_start|>assistant\n我是 Tabby，一个小助手。<|im_end|>\n',
];
const greedy = { doSample: false, temperature: 1, topK: 0, topP: 1, repetitionPenalty: 1 };

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Any = any;

describe.skipIf(runtime !== 'node')('GGUF export checked by llama.cpp (node-llama-cpp)', () => {
  let llama: Any;
  const timings: string[] = [];

  beforeAll(async () => {
    const { existsSync } = await import('node:fs');
    const { join, resolve } = await import('node:path');
    const { pathToFileURL } = await import('node:url');
    const pkg = resolve('.cache/llama-oracle/node_modules/node-llama-cpp');
    if (!existsSync(join(pkg, 'package.json')))
      throw new Error('the llama.cpp oracle is missing: run `node scripts/llama-oracle.mjs` (npm test does)');
    const mod = await import(pathToFileURL(join(pkg, 'dist/index.js')).href);
    llama = await mod.getLlama({ gpu: false, build: 'never', logLevel: 'error', maxThreads: 1 });
  });

  async function llamaGreedy(path: string, prompt: number[], n: number, lora?: string): Promise<number[]> {
    const model = await llama.loadModel({ modelPath: path });
    const ctx = await model.createContext({
      contextSize: 256,
      sequences: 1,
      threads: 1,
      ...(lora ? { lora: { adapters: [{ filePath: lora }] } } : {}),
    });
    try {
      const out: number[] = [];
      for await (const t of ctx.getSequence().evaluate(prompt, { temperature: 0 })) {
        out.push(t);
        if (out.length >= n) break;
      }
      return out;
    } finally {
      await ctx.dispose();
      await model.dispose();
    }
  }

  /** llama.cpp's top-1 next token after every prefix of `ids` (teacher forcing). */
  async function llamaTop1(path: string, texts: number[][]): Promise<number[]> {
    const model = await llama.loadModel({ modelPath: path });
    const ctx = await model.createContext({ contextSize: 256, sequences: 1, threads: 1 });
    try {
      const out: number[] = [];
      const seq = ctx.getSequence();
      for (const ids of texts) {
        await seq.clearHistory();
        const res = await seq.controlledEvaluate(
          ids.slice(0, -1).map((t) => [t, { generateNext: { token: true, options: { temperature: 0 } } }]),
        );
        for (let i = 0; i < ids.length - 1; i++) out.push(res[i]?.next?.token ?? -1);
      }
      return out;
    } finally {
      await ctx.dispose();
      await model.dispose();
    }
  }

  /** llama.cpp's perplexity over `texts` (teacher forcing, full softmax at temperature 1). */
  async function llamaPerplexity(path: string, texts: number[][]): Promise<{ ppl: number; tokens: number }> {
    const model = await llama.loadModel({ modelPath: path });
    const ctx = await model.createContext({ contextSize: 256, sequences: 1, threads: 1 });
    try {
      let nll = 0;
      let n = 0;
      const seq = ctx.getSequence();
      const options = { temperature: 1, topK: 0, topP: 1, minP: 0 };
      for (const ids of texts) {
        await seq.clearHistory();
        const res = await seq.controlledEvaluate(
          ids.slice(0, -1).map((t) => [t, { generateNext: { probabilities: true, options } }]),
        );
        for (let i = 0; i < ids.length - 1; i++) {
          const probs: Map<number, number> = res[i].next.probabilities;
          const total = [...probs.values()].reduce((a, b) => a + b, 0);
          expect(total).toBeCloseTo(1, 3); // the whole distribution, nothing cut off
          nll -= Math.log(probs.get(ids[i + 1]) ?? 0);
          n++;
        }
      }
      return { ppl: Math.exp(nll / n), tokens: n };
    } finally {
      await ctx.dispose();
      await model.dispose();
    }
  }

  /** ≥ minTokens tokens of answers from the alpaca demo dataset, as pieces of at most 200 tokens. */
  async function datasetTexts(tok: { encode(t: string): number[] }, minTokens: number): Promise<number[][]> {
    const { readFileSync } = await import('node:fs');
    const rows = JSON.parse(readFileSync('datasets/alpaca_en_zh_demo.json', 'utf8')) as { output: string }[];
    const out: number[][] = [];
    let n = 0;
    for (const r of rows) {
      if (n >= minTokens) break;
      const ids = tok.encode(r.output).slice(0, 200);
      if (ids.length < 8) continue;
      out.push(ids);
      n += ids.length - 1;
    }
    expect(n).toBeGreaterThanOrEqual(minTokens);
    return out;
  }

  async function setup(kind: 'demo' | 'llama' | 'qwen2') {
    const { join } = await import('node:path');
    const { readFileSync, existsSync } = await import('node:fs');
    const { writeTinyModel } = await import('../e2e/tiny-model.ts');
    const { openModelFolder } = await import('../../src/engine/model/node-folder.ts');
    const { loadModel } = await import('../../src/engine/model/load.ts');
    const { loadTokenizer } = await import('../../src/data/tokenizer.ts');
    let dir = 'public/demo-model';
    if (kind !== 'demo') {
      dir = join(ROOT, `tiny-${kind}`);
      await writeTinyModel({
        dir,
        architecture: kind === 'llama' ? 'LlamaForCausalLM' : 'Qwen2ForCausalLM',
        hidden: 64,
        intermediate: 128,
        dtype: kind === 'llama' ? 'BF16' : 'F32',
        seed: kind === 'llama' ? 11 : 12,
        scale: 0.5,
      });
    }
    const gpu = await testGpu();
    const files = await openModelFolder(dir);
    const model = await loadModel(gpu, files.config, files.source);
    const tokenizerFiles = new Map<string, Uint8Array>();
    for (const f of ['tokenizer.json', 'tokenizer_config.json'])
      if (existsSync(join(dir, f))) tokenizerFiles.set(f, readFileSync(join(dir, f)));
    const tok = await loadTokenizer(
      readFileSync(join(dir, 'tokenizer.json'), 'utf8'),
      readFileSync(join(dir, 'tokenizer_config.json'), 'utf8'),
    );
    return { dir, gpu, files, model, tokenizerFiles, tok };
  }

  async function exportTo(
    s: Awaited<ReturnType<typeof setup>>,
    lora: Any,
    type: string,
    name: string,
  ): Promise<{ path: string; bytes: number; ms: number; notes: string[] }> {
    const { join } = await import('node:path');
    const { statSync } = await import('node:fs');
    const { exportGguf } = await import('../../src/engine/export/gguf.ts');
    const { nodeDirWriter } = await import('../../src/engine/export/node-dir.ts');
    const t0 = performance.now();
    const r = await exportGguf(s.model, lora, {
      type,
      name,
      tokenizerFiles: s.tokenizerFiles,
      write: nodeDirWriter(ROOT),
    });
    const ms = performance.now() - t0;
    const path = join(ROOT, r.fileName);
    expect(statSync(path).size).toBe(r.bytes);
    timings.push(`${r.fileName}: ${(r.bytes / 2 ** 20).toFixed(2)} MiB in ${(ms / 1000).toFixed(2)} s`);
    return { path, bytes: r.bytes, ms, notes: r.notes };
  }

  it('demo model: f32 and f16 greedy tokens equal ours; q8_0 top-1 agrees with f16; tokenizer ids equal ours', async () => {
    const { generateAll } = await import('../../src/engine/generate/generate.ts');
    const s = await setup('demo');
    try {
      const prompt = s.tok.encode(PROMPT);
      const ours = Array.from(
        (await generateAll(s.model, null, prompt, { ...greedy, maxNewTokens: 32, stopIds: [] })).tokens,
      );
      expect(ours.length).toBe(32);
      const out: Record<string, { path: string; bytes: number; ms: number }> = {};
      for (const type of ['f32', 'f16', 'bf16', 'q8_0']) out[type] = await exportTo(s, null, type, 'tabby');
      expect(await llamaGreedy(out.f32.path, prompt, 32)).toEqual(ours);
      expect(await llamaGreedy(out.f16.path, prompt, 32)).toEqual(ours);
      // The demo model is bf16: its bf16 GGUF holds the very same weights.
      expect(await llamaGreedy(out.bf16.path, prompt, 32)).toEqual(ours);

      const texts = [...HELD_OUT.map((t) => s.tok.encode(t)), ...(await datasetTexts(s.tok, 512))];
      const f16 = await llamaTop1(out.f16.path, texts);
      const q8 = await llamaTop1(out.q8_0.path, texts);
      expect(f16.every((t) => t >= 0)).toBe(true);
      const agree = f16.filter((t, i) => t === q8[i]).length / f16.length;
      timings.push(`q8_0 vs f16 teacher-forced top-1 agreement: ${(100 * agree).toFixed(1)} % of ${f16.length} tokens`);
      expect(agree).toBeGreaterThanOrEqual(0.98);
      // ffn_down's rows (688) are not a multiple of 32: it stays f16, as in llama.cpp's converter.
      expect(out.q8_0.bytes).toBeLessThan(out.f16.bytes * 0.7);

      // llama.cpp's tokenizer from our GGUF: the same ids as ours.
      const model = await llama.loadModel({ modelPath: out.f16.path });
      try {
        for (const text of [
          'And God said, Let there be light: and there was light.',
          '我是 Tabby，来自 Tabtune 团队。你好，世界！',
          PROMPT,
          "Numbers 12345 and   spaces\n\n don't  break; it's 3.14!",
        ]) {
          expect(Array.from(model.tokenize(text, true))).toEqual(s.tok.encode(text));
        }
        expect(model.detokenize(s.tok.encode('我是 Tabby。'))).toBe('我是 Tabby。');
      } finally {
        await model.dispose();
      }
    } finally {
      s.model.release();
      await s.files.source.close?.();
      console.log(`GGUF (demo model):\n  ${timings.join('\n  ')}`);
    }
  }, 600_000);

  it('demo model: q4_k_m perplexity in llama.cpp is within 1.10 × f16 on held-out text', async () => {
    const { parseGguf } = await import('../cpu/gguf-read.ts');
    const { readFileSync } = await import('node:fs');
    const s = await setup('demo');
    try {
      const f16 = await exportTo(s, null, 'f16', 'tabby');
      const q4 = await exportTo(s, null, 'q4_k_m', 'tabby');
      // The recipe as llama-quantize applies it to this shape (6 layers, rows of 256 and 688).
      const types = new Map(parseGguf(readFileSync(q4.path)).tensors.map((t) => [t.name, t.type]));
      expect(types.get('token_embd.weight')).toBe(14); // tied output: Q6_K
      expect(types.get('blk.0.attn_q.weight')).toBe(12); // Q4_K
      expect(types.get('blk.0.attn_v.weight')).toBe(12);
      expect(types.get('blk.2.attn_v.weight')).toBe(14); // use_more_bits layers 2 and 5: Q6_K
      expect(types.get('blk.5.attn_v.weight')).toBe(14);
      expect(types.get('blk.0.ffn_down.weight')).toBe(1); // rows of 688: no 256- or 32-blocks, F16
      expect(types.get('blk.0.attn_norm.weight')).toBe(0);
      const texts = await datasetTexts(s.tok, 512);
      const base = await llamaPerplexity(f16.path, texts);
      const quant = await llamaPerplexity(q4.path, texts);
      timings.push(
        `perplexity over ${base.tokens} tokens of alpaca_en_zh_demo answers: f16 ${base.ppl.toFixed(3)}, q4_k_m ${quant.ppl.toFixed(3)} (${(quant.ppl / base.ppl).toFixed(3)}×)`,
      );
      expect(quant.ppl).toBeLessThanOrEqual(1.1 * base.ppl);
      expect(quant.ppl).not.toBe(base.ppl); // the weights really changed
      expect(q4.bytes).toBeLessThan(f16.bytes * 0.6);
    } finally {
      s.model.release();
      await s.files.source.close?.();
      console.log(`GGUF q4_k_m (demo model):\n  ${timings.join('\n  ')}`);
    }
  }, 600_000);

  for (const kind of ['llama', 'qwen2'] as const) {
    it(`tiny ${kind === 'llama' ? 'Llama (tied, GQA)' : 'Qwen2 (biases)'} + LoRA: merged f32 / f16 GGUFs and the f16 base with the GGUF adapter give our greedy tokens`, async () => {
      const { writeTensor } = await import('../../src/engine/gpu/index.ts');
      const { attachLora } = await import('../../src/engine/model/model.ts');
      const { generateAll } = await import('../../src/engine/generate/generate.ts');
      const { randn } = await import('../cpu/random.ts');
      const s = await setup(kind);
      const lora = attachLora(s.model, { rank: 4, alpha: 8, dropout: 0, targets: 'all', seed: 5 });
      let seed = 700;
      for (const st of lora.adapters.values())
        writeTensor(s.gpu, st.B, randn(st.B.shape[0] * st.B.shape[1], seed++, 0.3));
      try {
        const prompt = s.tok.encode(PROMPT);
        const ours = Array.from(
          (await generateAll(s.model, lora, prompt, { ...greedy, maxNewTokens: 32, stopIds: [] })).tokens,
        );
        const f32 = await exportTo(s, lora, 'f32', `tiny-${kind}`);
        expect(await llamaGreedy(f32.path, prompt, 32)).toEqual(ours);
        const f16 = await exportTo(s, lora, 'f16', `tiny-${kind}`);
        expect(await llamaGreedy(f16.path, prompt, 32)).toEqual(ours);
        // The adapter matters: the base model's GGUF generates something else.
        const base = await exportTo(s, null, 'f16', `tiny-${kind}-base`);
        expect(await llamaGreedy(base.path, prompt, 32)).not.toEqual(ours);
        // The same LoRA as a GGUF adapter on the f16 base (llama.cpp --lora) answers like the merged file.
        const { exportGgufAdapter } = await import('../../src/engine/export/gguf-adapter.ts');
        const { nodeDirWriter } = await import('../../src/engine/export/node-dir.ts');
        const { join } = await import('node:path');
        const { parseGguf } = await import('../cpu/gguf-read.ts');
        const { readFileSync } = await import('node:fs');
        for (const type of ['f32', 'f16']) {
          const ad = await exportGgufAdapter(s.model, lora, { type, name: `tiny-${kind}`, write: nodeDirWriter(ROOT) });
          const adPath = join(ROOT, ad.fileName);
          const g = parseGguf(readFileSync(adPath));
          expect(g.kv.get('general.type')?.value).toBe('adapter');
          expect(g.kv.get('adapter.type')?.value).toBe('lora');
          expect(g.kv.get('adapter.lora.alpha')?.value).toBe(8);
          expect(g.tensors.length).toBe(2 * lora.adapters.size);
          expect(g.tensors.find((t) => t.name === 'blk.0.attn_q.weight.lora_b')?.dims).toEqual([4, 64]);
          expect(await llamaGreedy(base.path, prompt, 32, adPath)).toEqual(ours);
        }
      } finally {
        lora.release();
        s.model.release();
        await s.files.source.close?.();
      }
    });
  }

  it("the GGUF's chat template renders a two-turn conversation like ours in node-llama-cpp's chat wrapper", async () => {
    const { ChatTemplate } = await import('../../src/data/template.ts');
    const { readFileSync } = await import('node:fs');
    const { join, resolve } = await import('node:path');
    const { pathToFileURL } = await import('node:url');
    const mod = await import(
      pathToFileURL(resolve('.cache/llama-oracle/node_modules/node-llama-cpp/dist/index.js')).href
    );
    const s = await setup('demo');
    try {
      const out = await exportTo(s, null, 'f16', 'tabby');
      // The Modelfile beside it names the file and carries the ChatML template.
      const modelfile = readFileSync(join(ROOT, 'Modelfile'), 'utf8');
      expect(modelfile.split('\n')[0]).toBe('FROM ./tabby-f16.gguf');
      expect(modelfile).toContain('PARAMETER stop "<|im_end|>"');
      const model = await llama.loadModel({ modelPath: out.path });
      try {
        // A specialized (hand-written) wrapper, chosen by matching the GGUF's tokenizer.chat_template.
        const wrapper = mod.resolveChatWrapper(model, { noJinja: true });
        expect(wrapper.wrapperName).toBe('ChatML');
        const history = [
          { type: 'system', text: 'Answer in one line.' },
          { type: 'user', text: 'Who are you?' },
          { type: 'model', response: ['I am Tabby, made by the Tabtune team.'] },
          { type: 'user', text: '你能做什么？' },
          { type: 'model', response: [] },
        ];
        const { contextText } = wrapper.generateContextState({ chatHistory: history });
        const theirs = Array.from(contextText.tokenize(model.tokenizer) as number[]);
        const cfg = JSON.parse(readFileSync('public/demo-model/tokenizer_config.json', 'utf8'));
        const ours = new ChatTemplate(cfg.chat_template).renderMessages(
          [
            { role: 'system', content: 'Answer in one line.' },
            { role: 'user', content: 'Who are you?' },
            { role: 'assistant', content: 'I am Tabby, made by the Tabtune team.' },
            { role: 'user', content: '你能做什么？' },
          ],
          { addGenerationPrompt: true },
        );
        expect(model.detokenize(theirs, true)).toBe(ours);
        expect(theirs).toEqual(s.tok.encode(ours));
      } finally {
        await model.dispose();
      }
    } finally {
      s.model.release();
      await s.files.source.close?.();
    }
  });

  it('an unsupported type or architecture is a clear error before any file is written', async () => {
    const { exportGguf } = await import('../../src/engine/export/gguf.ts');
    const s = await setup('demo');
    const written: string[] = [];
    const write = async (name: string) => void written.push(name);
    try {
      const opts = { name: 'x', tokenizerFiles: s.tokenizerFiles, write };
      await expect(exportGguf(s.model, null, { ...opts, type: 'q4_k_s' })).rejects.toThrow(
        /q4_k_s is not yet supported/,
      );
      await expect(exportGguf(s.model, null, { ...opts, type: 'f64' })).rejects.toThrow(/unknown GGUF type f64/);
      const odd = { ...s.model, config: { ...s.model.config, architecture: 'GPT2LMHeadModel' as never } };
      await expect(exportGguf(odd, null, { ...opts, type: 'f16' })).rejects.toThrow(/does not support architecture/);
      await expect(exportGguf(s.model, null, { ...opts, type: 'f16', tokenizerFiles: new Map() })).rejects.toThrow(
        /needs the tokenizer/,
      );
      expect(written).toEqual([]);
    } finally {
      s.model.release();
      await s.files.source.close?.();
    }
  });
});
