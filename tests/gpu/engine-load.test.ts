// Loading: sharded safetensors from a file map (bf16 kept 16-bit), row-split embedding/lm_head,
// pre-quantized bitsandbytes 4-bit checkpoints, clear errors; and KV-cache generation logits.
import { describe, expect, it } from 'vitest';
import { readTensor, Recorder, releaseTensor, tensorSpec, zerosTensor } from '../../src/engine/gpu/index.ts';
import { writeShardedSafetensors, type TensorToWrite } from '../../src/io/safetensors-writer.ts';
import { prepareBatch } from '../../src/engine/model/batch.ts';
import { parseModelConfig } from '../../src/engine/model/config.ts';
import { Decoder } from '../../src/engine/model/decoder.ts';
import { forwardLogits, KvCache } from '../../src/engine/model/infer.ts';
import { loadModel } from '../../src/engine/model/load.ts';
import { isRowSplit, type Model } from '../../src/engine/model/model.ts';
import { memoryWeightSource, openModelFiles, type WeightSource } from '../../src/engine/model/weights.ts';
import { acquireGpu } from '../../src/engine/gpu/index.ts';
import { expectedWeights } from '../../src/engine/model/config.ts';
import { viteShaders } from '../../src/engine/shaders.vite.ts';
import { isNf4, NF4_CODE, type Nf4Weight } from '../../src/engine/ops/nf4.ts';
import { toBf16, toF16 } from '../../src/engine/numeric/half.ts';
import { relError } from '../cpu/compare.ts';
import { loadFixture, type Fixture } from '../reference/fixtures.ts';
import { runtime, testGpu } from './context.ts';
import { fixtureLora, fixtureModel, fixtureSource, realRows } from './engine-util.ts';

async function allLogits(
  model: Model,
  ids: Int32Array,
  B: number,
  T: number,
  lengths: Int32Array,
): Promise<Float32Array> {
  const gpu = model.gpu;
  const dec = new Decoder(model, null, { inference: true });
  const hb = prepareBatch({ batch: B, seqLen: T, inputIds: ids, lengths });
  const logits = zerosTensor(gpu, tensorSpec('f32', [hb.N, model.config.vocabSize], 'scratch', 'logits'));
  const acc = zerosTensor(gpu, tensorSpec('f32', [4], 'scratch', 'acc'));
  const inputs = dec.uploadInputs(hb, null);
  await dec.forwardLoss(inputs, { lossScale: 1, accum: acc, accumIndex: 0 }, { logits });
  dec.releaseInputs(inputs);
  const out = (await readTensor(gpu, logits)) as Float32Array;
  releaseTensor(gpu, logits);
  releaseTensor(gpu, acc);
  return out;
}

function qloraBase(fx: Fixture) {
  return {
    ids: fx.t.base_ids.data as Int32Array,
    lengths: fx.t.base_lengths.data as Int32Array,
    B: fx.meta.base_B as number,
    T: fx.meta.base_T as number,
  };
}

describe(`engine loading [${runtime}]`, () => {
  it.skipIf(runtime !== 'node')(
    'a weight the GPU has no memory left for is an out-of-memory error naming the tensor, and nothing stays allocated',
    async () => {
      // Dawn's null backend executes nothing and refuses allocations past 512 MiB: a small GPU, cheaply.
      const mod = 'webgpu';
      const webgpu = (await import(/* @vite-ignore */ mod)) as typeof import('webgpu');
      const gpu = await acquireGpu({ gpu: webgpu.create(['backend=null']), shaders: viteShaders });
      try {
        const c = parseModelConfig({
          architectures: ['LlamaForCausalLM'],
          hidden_size: 2048,
          intermediate_size: 8192,
          num_hidden_layers: 4,
          num_attention_heads: 16,
          num_key_value_heads: 16,
          vocab_size: 256,
          max_position_embeddings: 64,
          rms_norm_eps: 1e-6,
          tie_word_embeddings: true,
          torch_dtype: 'float32',
        });
        const shapes = new Map(
          expectedWeights(c)
            .filter((w) => !w.optional)
            .map((w) => [w.name, w.shape]),
        );
        const zeros = new Uint8Array(64 << 20); // the largest tensor (8192 × 2048 f32), shared by every read
        const source: WeightSource = {
          names: () => [...shapes.keys()],
          has: (n) => shapes.has(n),
          shape: (n) => [...shapes.get(n)!],
          dtype: () => 'F32',
          fileOf: () => 'big.safetensors',
          read: async (n) => zeros.subarray(0, 4 * shapes.get(n)!.reduce((a, b) => a * b, 1)),
        };
        await expect(loadModel(gpu, c, source)).rejects.toMatchObject({
          kind: 'out-of-memory',
          message: expect.stringMatching(
            /^out-of-memory error in loading model\.layers\.\d+\.\S+ \([\d.]+ MiB of weights already on the GPU\): /,
          ),
        });
        expect(gpu.ledger.report().current.weights).toBe(0);
      } finally {
        gpu.destroy();
      }
    },
  );

  it('loads sharded bf16 safetensors from a file map, keeps bf16 on the GPU and reproduces PyTorch', async () => {
    const gpu = await testGpu();
    const fx = await loadFixture('engine_qwen2');
    const tensors: TensorToWrite[] = [];
    for (const [k, t] of Object.entries(fx.t)) {
      if (!k.startsWith('w:')) continue;
      tensors.push({
        name: k.slice(2),
        dtype: 'BF16',
        shape: t.shape,
        data: new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength),
      });
    }
    const files = new Map<string, Uint8Array>();
    const written = await writeShardedSafetensors(
      tensors,
      (name) => {
        const parts: Uint8Array[] = [];
        return {
          write: (c) => void parts.push(c.slice()),
          close: () => void files.set(`Qwen-tiny/${name}`, concat(parts)),
        };
      },
      { maxShardBytes: 40_000 },
    );
    expect(written.indexFile).not.toBeNull();
    files.set('Qwen-tiny/config.json', new TextEncoder().encode(JSON.stringify(fx.meta.config)));
    const opened = await openModelFiles(files);
    const progress: number[] = [];
    const model = await loadModel(gpu, opened.config, opened.source, { onProgress: (p) => progress.push(p.loaded) });
    try {
      expect(progress.length).toBeGreaterThan(10);
      expect((model.weights.get('model.layers.0.self_attn.q_proj.weight') as { dtype: string }).dtype).toBe('bf16');
      expect(model.lmHead).toBe(model.embedding);
      const lora = fixtureLora(model, fx, 'all', fx.meta.rank, fx.meta.alpha);
      // Generation path: the packed row's first example (5 tokens) through a KV cache, one token at a time.
      const ids = fx.t.ids.data as Int32Array;
      const want = fx.f32('logits');
      const V = model.config.vocabSize;
      const cache = new KvCache(model, 16);
      for (let n = 0; n < 5; n++) {
        const got = await forwardLogits(model, lora, ids.slice(n, n + 1), cache);
        const rel = relError(got, want.subarray(n * V, (n + 1) * V));
        expect(rel, `decode token ${n}: rel ${rel}`).toBeLessThanOrEqual(1e-4);
      }
      expect(cache.length).toBe(5);
      cache.release();
      lora.release();
    } finally {
      model.release();
    }
  });

  it('prefill + decode through the KV cache equals the full forward (f32 Llama with LoRA)', async () => {
    const gpu = await testGpu();
    const fx = await loadFixture('engine_llama');
    const model = await fixtureModel(gpu, fx);
    const lora = fixtureLora(model, fx, 'all', fx.meta.rank, fx.meta.alpha);
    try {
      const ids = fx.t.ids.data as Int32Array;
      const want = fx.f32('logits');
      const V = model.config.vocabSize;
      const cache = new KvCache(model, 12);
      const row = (n: number) => want.subarray(n * V, (n + 1) * V);
      let rel = relError(await forwardLogits(model, lora, ids.slice(0, 5), cache), row(4));
      expect(rel, `prefill rel ${rel}`).toBeLessThanOrEqual(1e-4);
      for (let n = 5; n < 9; n++) {
        rel = relError(await forwardLogits(model, lora, ids.slice(n, n + 1), cache), row(n));
        expect(rel, `decode ${n} rel ${rel}`).toBeLessThanOrEqual(1e-4);
      }
      rel = relError(await forwardLogits(model, lora, ids.slice(0, 9), null), row(8));
      expect(rel, `no-cache rel ${rel}`).toBeLessThanOrEqual(1e-4);
      await expect(forwardLogits(model, lora, ids.slice(0, 4), cache)).rejects.toThrow(/KV cache full/);
      cache.release();
    } finally {
      lora.release();
      model.release();
    }
  });

  it('splits embedding and lm_head by rows above the binding limit: same logits, loss and LoRA gradients', async () => {
    const gpu = await testGpu();
    const fx = await loadFixture('engine_llama');
    // 300 rows × 256 B: a 33 000 B limit gives parts of 128, 128 and 44 rows (the 32 KiB MLP weights still fit).
    const model = await fixtureModel(gpu, fx, fx, { maxBindingBytes: 33_000 });
    try {
      const emb = model.embedding;
      const head = model.lmHead;
      expect(isRowSplit(emb) && emb.parts.length).toBe(3);
      expect(isRowSplit(head) && head.parts.length).toBe(3);
      const lora = fixtureLora(model, fx, 'all', fx.meta.rank, fx.meta.alpha);
      const dec = new Decoder(model, lora, {});
      const seg = fx.t.segments.data as Int32Array;
      const hb = prepareBatch({
        batch: fx.meta.B,
        seqLen: fx.meta.T,
        inputIds: fx.t.ids.data as Int32Array,
        labels: fx.t.labels.data as Int32Array,
        segmentIds: seg,
      });
      const V = model.config.vocabSize;
      const logits = zerosTensor(gpu, tensorSpec('f32', [hb.N, V], 'scratch', 'logits'));
      const acc = zerosTensor(gpu, tensorSpec('f32', [4], 'scratch', 'acc'));
      const inputs = dec.uploadInputs(hb, 0);
      await dec.forwardLoss(inputs, { lossScale: 1 / hb.labelCount, accum: acc, accumIndex: 0 }, { logits });
      const rec = new Recorder(gpu, 'clear');
      dec.clearGrads(rec);
      await rec.submit();
      await dec.trainMicroBatch(inputs, { lossScale: 1 / hb.labelCount, accum: acc, accumIndex: 1 });
      dec.releaseInputs(inputs);
      const got = (await readTensor(gpu, logits)) as Float32Array;
      expect(relError(realRows(got, seg, V), realRows(fx.f32('logits'), seg, V))).toBeLessThanOrEqual(1e-4);
      const loss = ((await readTensor(gpu, acc)) as Float32Array)[1];
      expect(Math.abs(loss - fx.f32('loss')[0]) / fx.f32('loss')[0]).toBeLessThanOrEqual(1e-4);
      for (const [k, g] of dec.grads) {
        const m = /^(.*)\.lora_([AB])$/.exec(k)!;
        const rel = relError((await readTensor(gpu, g)) as Float32Array, fx.f32(`grad_${m[2]}:${m[1]}`));
        expect(rel, k).toBeLessThanOrEqual(1e-3);
      }
      releaseTensor(gpu, logits);
      releaseTensor(gpu, acc);
      dec.release();
      lora.release();
    } finally {
      model.release();
    }
  });

  for (const dq of [false, true]) {
    it(`loads a pre-quantized bitsandbytes 4-bit checkpoint${dq ? ' (double quant)' : ''} to the same model as quantizing at load`, async () => {
      const gpu = await testGpu();
      const fx = await loadFixture('engine_llama');
      const qfx = await loadFixture('engine_train_qlora');
      const quantized = await fixtureModel(gpu, fx, fx, { quantize: 'nf4', doubleQuant: dq });
      const { ids, lengths, B, T } = qloraBase(qfx);
      try {
        const ref = await allLogits(quantized, ids, B, T, lengths);
        if (dq)
          expect(
            relError(
              realRows(ref, prepareBatch({ batch: B, seqLen: T, inputIds: ids, lengths }).segments, 300),
              realRows(
                qfx.f32('base_logits'),
                prepareBatch({ batch: B, seqLen: T, inputIds: ids, lengths }).segments,
                300,
              ),
            ),
          ).toBeLessThanOrEqual(1e-4);
        // Write the quantized weights out in the bitsandbytes layout, the rest as they were.
        const src = fixtureSource(fx);
        const map = new Map<string, { dtype: string; shape: number[]; bytes: Uint8Array }>();
        for (const name of src.names()) {
          const w = quantized.weights.get(name);
          if (w && isNf4(w)) {
            for (const [k, v] of await bnbTensors(gpu, name, w)) map.set(k, v);
          } else {
            map.set(name, { dtype: src.dtype(name), shape: src.shape(name), bytes: await src.read(name) });
          }
        }
        const config = parseModelConfig(fx.meta.config as Record<string, unknown>);
        const pre = await loadModel(gpu, config, memoryWeightSource(map, 'bnb-4bit.safetensors'));
        try {
          expect(isNf4(pre.weights.get('model.layers.1.mlp.down_proj.weight'))).toBe(true);
          const preLogits = await allLogits(pre, ids, B, T, lengths);
          const segs = prepareBatch({ batch: B, seqLen: T, inputIds: ids, lengths }).segments;
          const rel = relError(realRows(preLogits, segs, 300), realRows(ref, segs, 300));
          expect(rel, `bnb checkpoint logits rel ${rel}`).toBeLessThanOrEqual(1e-6);
        } finally {
          pre.release();
        }
      } finally {
        quantized.release();
      }
    });
  }

  for (const dtype of ['F16', 'BF16'] as const) {
    it(`${dtype} weights kept 16-bit on the GPU give the same logits as the same values widened to f32 at load`, async () => {
      const gpu = await testGpu();
      const fx = await loadFixture('engine_llama');
      const src = fixtureSource(fx);
      const map = new Map<string, { dtype: string; shape: number[]; bytes: Uint8Array }>();
      for (const n of src.names()) {
        const f = new Float32Array((await src.read(n)).slice().buffer);
        const h = dtype === 'F16' ? toF16(f) : toBf16(f);
        map.set(n, { dtype, shape: src.shape(n), bytes: new Uint8Array(h.buffer) });
      }
      const config = parseModelConfig(fx.meta.config as Record<string, unknown>);
      const half = await loadModel(gpu, config, memoryWeightSource(map, `${dtype}.safetensors`));
      const wide = await loadModel(gpu, config, memoryWeightSource(map, `${dtype}.safetensors`), {
        computeDType: 'f32',
      });
      try {
        expect((half.weights.get('model.layers.0.mlp.up_proj.weight') as { dtype: string }).dtype).toBe(
          dtype.toLowerCase(),
        );
        expect((wide.weights.get('model.layers.0.mlp.up_proj.weight') as { dtype: string }).dtype).toBe('f32');
        expect(wide.notes.some((n) => n.includes(`${dtype} → F32`))).toBe(true);
        const ids = fx.t.ids.data as Int32Array;
        const lengths = Int32Array.from(fx.meta.lengths as number[]);
        const a = await allLogits(half, ids, fx.meta.B, fx.meta.T, lengths);
        const b = await allLogits(wide, ids, fx.meta.B, fx.meta.T, lengths);
        const rel = relError(a, b);
        expect(rel, `${dtype} vs widened: rel ${rel}`).toBeLessThanOrEqual(1e-6);
      } finally {
        half.release();
        wide.release();
      }
    });
  }

  it('names the file and tensor of a missing weight, and rejects unsupported architectures', async () => {
    const gpu = await testGpu();
    const fx = await loadFixture('engine_llama');
    const src = fixtureSource(fx);
    const map = new Map<string, { dtype: string; shape: number[]; bytes: Uint8Array }>();
    for (const n of src.names())
      if (n !== 'model.layers.1.mlp.up_proj.weight')
        map.set(n, { dtype: src.dtype(n), shape: src.shape(n), bytes: await src.read(n) });
    const config = parseModelConfig(fx.meta.config as Record<string, unknown>);
    await expect(loadModel(gpu, config, memoryWeightSource(map, 'model-00002-of-00002.safetensors'))).rejects.toThrow(
      /model-00002-of-00002\.safetensors: missing tensor "model\.layers\.1\.mlp\.up_proj\.weight"/,
    );
    expect(() =>
      parseModelConfig({ ...(fx.meta.config as object), architectures: ['GemmaForCausalLM'], model_type: 'gemma' }),
    ).toThrow(/unsupported architecture GemmaForCausalLM; supported: LlamaForCausalLM, Qwen2ForCausalLM/);
    const before = gpu.ledger.report().current.weights;
    map.set('model.layers.1.mlp.up_proj.weight', {
      dtype: 'I32',
      shape: [128, 64],
      bytes: new Uint8Array(128 * 64 * 4),
    });
    await expect(loadModel(gpu, config, memoryWeightSource(map, 'bad.safetensors'))).rejects.toThrow(
      /bad\.safetensors: tensor "model\.layers\.1\.mlp\.up_proj\.weight" has dtype I32/,
    );
    expect(gpu.ledger.report().current.weights, 'a failed load frees what it uploaded').toBe(before);
  });
});

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((a, p) => a + p.byteLength, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.byteLength;
  }
  return out;
}

/** bitsandbytes QuantState.as_dict(packed=True) tensors for an NF4 weight read back from the GPU. */
async function bnbTensors(gpu: Awaited<ReturnType<typeof testGpu>>, name: string, w: Nf4Weight) {
  const numel = w.shape.reduce((a, b) => a * b, 1);
  const nBlocks = Math.ceil(numel / w.blocksize);
  const packed = ((await readTensor(gpu, w.packed)) as Uint8Array).slice(0, Math.ceil(numel / 2));
  const out = new Map<string, { dtype: string; shape: number[]; bytes: Uint8Array }>();
  const f32 = (a: Float32Array) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  out.set(name, { dtype: 'U8', shape: [Math.ceil(numel / 2), 1], bytes: packed });
  out.set(`${name}.quant_map`, { dtype: 'F32', shape: [16], bytes: f32(NF4_CODE.slice()) });
  const state: Record<string, unknown> = {
    quant_type: 'nf4',
    blocksize: w.blocksize,
    dtype: 'bfloat16',
    shape: w.shape,
  };
  if (w.nested) {
    const table = (await readTensor(gpu, w.nested.table)) as Float32Array;
    const codes = ((await readTensor(gpu, w.absmax)) as Uint8Array).slice(0, nBlocks);
    out.set(`${name}.absmax`, { dtype: 'U8', shape: [nBlocks], bytes: codes });
    out.set(`${name}.nested_quant_map`, { dtype: 'F32', shape: [256], bytes: f32(table.slice(0, 256)) });
    out.set(`${name}.nested_absmax`, { dtype: 'F32', shape: [table.length - 257], bytes: f32(table.slice(257)) });
    Object.assign(state, { nested_blocksize: w.nested.blocksize, nested_dtype: 'float32', nested_offset: table[256] });
  } else {
    out.set(`${name}.absmax`, {
      dtype: 'F32',
      shape: [nBlocks],
      bytes: f32(((await readTensor(gpu, w.absmax)) as Float32Array).slice()),
    });
  }
  const stateBytes = new TextEncoder().encode(JSON.stringify(state));
  out.set(`${name}.quant_state.bitsandbytes__nf4`, { dtype: 'U8', shape: [stateBytes.length], bytes: stateBytes });
  return out;
}
