// One decoded token (KV-cache step) at Qwen2.5-0.5B shape: hidden 896, 14/2 heads of 64,
// intermediate 4864, vocabulary 151,936 (tied head), against a 512-token cache, with bf16 and NF4
// (double-quantized, QLoRA's storage) weights built from random values (no download). All 24
// layers are heavy on a software adapter (--full); the 2-layer cut runs everywhere, and the
// single-product rows give each projection and the head on their own, the matrix-vector kernel
// beside the tiled matmul the decode path used before (one row in a 64-row tile).
// A step is what chat waits for per token: record, submit and read the logits back, so its time
// is extra.ms_per_token (median of the timed runs); the runner's own ms column only covers the
// (empty) recorder it hands over.
import type { Gpu } from '../../src/engine/gpu/device.ts';
import { releaseTensor, tensorSpec, uploadTensor, writeTensor, type Tensor } from '../../src/engine/gpu/index.ts';
import { expectedWeights, parseModelConfig, type ModelConfig } from '../../src/engine/model/config.ts';
import { forwardLogits, KvCache } from '../../src/engine/model/infer.ts';
import { loadModel } from '../../src/engine/model/load.ts';
import type { WeightSource } from '../../src/engine/model/weights.ts';
import { mix32 } from '../../src/engine/ops/lora.ts';
import { matmul, matmulFlops } from '../../src/engine/ops/matmul.ts';
import {
  matvec,
  MATVEC_CLASS,
  MATVEC_UNTUNED,
  MATVEC_VARIANT_NAMES,
  matvecFlops,
} from '../../src/engine/ops/matvec.ts';
import { tuneMatvec } from '../../src/engine/ops/tuner.ts';
import { quantizeNf4, releaseNf4, type Nf4Weight } from '../../src/engine/ops/nf4.ts';
import { Recorder } from '../../src/engine/gpu/recorder.ts';
import type { BenchCase } from '../types.ts';

const QWEN05 = {
  architectures: ['Qwen2ForCausalLM'],
  model_type: 'qwen2',
  hidden_size: 896,
  intermediate_size: 4864,
  num_hidden_layers: 24,
  num_attention_heads: 14,
  num_key_value_heads: 2,
  vocab_size: 151936,
  max_position_embeddings: 32768,
  rms_norm_eps: 1e-6,
  rope_theta: 1000000.0,
  tie_word_embeddings: true,
  hidden_act: 'silu',
  torch_dtype: 'bfloat16',
};
const KV_TOKENS = 512;

type Weights = 'bf16' | 'nf4';

/** U(±bound) from a counter hash, as bf16 bits (the top half of the f32). */
function randomBf16(count: number, stream: number, bound: number): Uint16Array {
  const out = new Uint16Array(count);
  const f = new Float32Array(1);
  const bits = new Uint32Array(f.buffer);
  const key = mix32(stream + 0x51ed);
  for (let i = 0; i < count; i++) {
    f[0] = ((mix32(i ^ key) / 2 ** 32) * 2 - 1) * bound;
    out[i] = bits[0] >>> 16;
  }
  return out;
}

/** A bf16 checkpoint of `c` with random values: norms 1, linears and biases U(±1/√in), embedding ±0.05. */
function randomSource(c: ModelConfig): WeightSource {
  const ws = expectedWeights(c).filter((w) => !w.optional);
  const byName = new Map(ws.map((w, i) => [w.name, { ...w, id: i }]));
  const get = (n: string) => {
    const w = byName.get(n);
    if (!w) throw new Error(`random checkpoint: no tensor ${n}`);
    return w;
  };
  return {
    names: () => [...byName.keys()],
    has: (n) => byName.has(n),
    shape: (n) => get(n).shape.slice(),
    dtype: () => 'BF16',
    fileOf: () => 'random.safetensors',
    async read(n) {
      const w = get(n);
      const count = w.shape.reduce((a, b) => a * b, 1);
      if (w.role === 'norm') return new Uint8Array(new Uint16Array(count).fill(0x3f80).buffer);
      const bound = w.role === 'embed' ? 0.05 : 1 / Math.sqrt(w.shape[w.shape.length - 1]);
      return new Uint8Array(randomBf16(count, w.id, bound).buffer);
    },
  };
}

function median(times: number[]): number {
  const s = [...times].sort((a, b) => a - b);
  return Math.round(s[Math.floor(s.length / 2)] * 10) / 10;
}

/** Weight bytes one token step streams: every linear layer and the head once. */
function stepWeightBytes(c: ModelConfig, w: Weights): number {
  const per = w === 'nf4' ? 0.5 + 1 / 64 : 2;
  const q = c.numHeads * c.headDim;
  const kv = c.numKvHeads * c.headDim;
  const layer = c.hiddenSize * (q + 2 * kv) + q * c.hiddenSize + 3 * c.hiddenSize * c.intermediateSize;
  // The tied head stays 16-bit under QLoRA (only the decoder layers' linears are quantized).
  return c.numLayers * layer * per + 2 * c.vocabSize * c.hiddenSize;
}

function decodeStepCase(layers: number, weights: Weights): BenchCase {
  const config = parseModelConfig({ ...QWEN05, num_hidden_layers: layers });
  const extra: Record<string, number | string> = { kv_tokens: KV_TOKENS, layers };
  const cut = layers === QWEN05.num_hidden_layers ? '' : `(${layers} layers)`;
  return {
    name: `decode qwen2.5-0.5b-shape${cut} ${weights} kv${KV_TOKENS}`,
    shape: `1 token, kv ${KV_TOKENS}, H${config.hiddenSize} L${layers} V${config.vocabSize} ${weights}`,
    flops: 0,
    bytesMoved: stepWeightBytes(config, weights),
    heavy: layers === QWEN05.num_hidden_layers,
    extra,
    async setup(gpu: Gpu) {
      const model = await loadModel(
        gpu,
        config,
        randomSource(config),
        weights === 'nf4' ? { quantize: 'nf4', doubleQuant: true } : {},
      );
      const cache = new KvCache(model, KV_TOKENS);
      // A full cache without a 511-token prefill: the step's cost does not depend on the values.
      const width = config.numKvHeads * config.headDim;
      for (const [l, t] of [...cache.k, ...cache.v].entries()) {
        const bits = randomBf16(KV_TOKENS * width, 1000 + l, 1);
        writeTensor(
          gpu,
          t,
          Float32Array.from(bits, (b) => new Float32Array(new Uint32Array([b << 16]).buffer)[0]),
        );
      }
      const times: number[] = [];
      let token = 1;
      return {
        async record() {
          cache.length = KV_TOKENS - 1;
          const t0 = performance.now();
          const logits = await forwardLogits(model, null, Int32Array.of(token), cache);
          times.push(performance.now() - t0);
          token = (token * 7919 + logits.length) % config.vocabSize;
        },
        cleanup() {
          // The first call is the runner's warm-up (pipeline compilation).
          if (times.length > 1) extra.ms_per_token = median(times.slice(1));
          if (times.length) extra.first_token_ms = Math.round(times[0]);
          cache.release();
          model.release();
        },
      };
    },
  };
}

interface Product {
  name: string;
  N: number;
  K: number;
}

// The products of one decode step of the 0.5B shape (q/o share a shape, as do gate/up; k/v too).
const PRODUCTS: Product[] = [
  { name: 'q_proj', N: 896, K: 896 },
  { name: 'k_proj', N: 128, K: 896 },
  { name: 'gate_proj', N: 4864, K: 896 },
  { name: 'down_proj', N: 896, K: 4864 },
  { name: 'lm_head', N: 151936, K: 896 },
];

/** One decode-step product y[1,N] = x·Wᵀ through `op` (the matrix-vector kernel or the tiled matmul). */
function productCase(p: Product, weights: Weights, op: 'matvec' | 'matmul'): BenchCase {
  const bytes = p.N * p.K * (weights === 'nf4' ? 0.5 + 1 / 64 : 2) + 4 * (p.K + p.N);
  const extra: Record<string, string> = {};
  return {
    name: `decode ${op} ${p.name} ${weights}`,
    extra,
    shape: `1×${p.N}×${p.K}`,
    flops: op === 'matvec' ? matvecFlops(1, p.N, p.K) : matmulFlops(1, p.N, p.K),
    bytesMoved: bytes,
    // The tiled matmul spends 64× the work at M=1: its head takes tens of seconds in software.
    heavy: op === 'matmul' && p.N * p.K > 1e8,
    async setup(gpu) {
      // The split a decode step would use on this adapter (forwardLogits measures it the same way).
      if (op === 'matvec') {
        await tuneMatvec(gpu);
        extra.form = gpu.kernels.pick('matvec', MATVEC_CLASS, MATVEC_VARIANT_NAMES, MATVEC_UNTUNED);
      }
      const wBits = randomBf16(p.N * p.K, p.N + p.K, 1 / Math.sqrt(p.K));
      const dense = uploadTensor(gpu, wBits, tensorSpec('bf16', [p.N, p.K], 'weights', `W ${p.name}`));
      let w: Tensor | Nf4Weight = dense;
      if (weights === 'nf4') {
        const rec = new Recorder(gpu, 'bench quantize');
        const q = await quantizeNf4(rec, { src: dense, blocksize: 64, doubleQuant: true });
        await rec.submit();
        q.scratch.forEach((t) => releaseTensor(gpu, t));
        releaseTensor(gpu, dense);
        w = q.weight;
      }
      const x = uploadTensor(gpu, new Float32Array(p.K).fill(0.5), tensorSpec('f32', [1, p.K], 'activations', 'x'));
      const y = uploadTensor(gpu, new Float32Array(p.N), tensorSpec('f32', [1, p.N], 'activations', 'y'));
      return {
        record: (rec) =>
          op === 'matvec'
            ? matvec(rec, { x, w, y, rows: 1, N: p.N, K: p.K })
            : matmul(rec, { a: x, b: w, c: y, M: 1, N: p.N, K: p.K, transB: true }),
        cleanup() {
          releaseTensor(gpu, x);
          releaseTensor(gpu, y);
          if (w === dense) releaseTensor(gpu, dense);
          else releaseNf4(gpu, w as Nf4Weight);
        },
      };
    },
  };
}

export const cases: BenchCase[] = [
  ...PRODUCTS.flatMap((p) =>
    (['bf16', 'nf4'] as const).flatMap((w) => [productCase(p, w, 'matvec'), productCase(p, w, 'matmul')]),
  ),
  decodeStepCase(2, 'bf16'),
  decodeStepCase(2, 'nf4'),
  decodeStepCase(QWEN05.num_hidden_layers, 'bf16'),
  decodeStepCase(QWEN05.num_hidden_layers, 'nf4'),
];
