// One LoRA training step (forward + backward + grad norm + AdamW) of a whole model, recorded as
// one command buffer: the tiny test Llama, and a Qwen2.5-0.5B-shaped random bf16 model at seq 256
// (all 24 layers: heavy, --full; and a 2-layer cut of it that SwiftShader can run). `extra`
// reports tokens per step, tokens/s (median of the timed runs), dispatches and readbacks of a
// real Trainer.step(), and the ledger's peak bytes by category during that step.
import type { Gpu } from '../../src/engine/gpu/device.ts';
import { MEMORY_CATEGORIES } from '../../src/engine/gpu/ledger.ts';
import type { MicroBatch } from '../../src/engine/model/batch.ts';
import { parseModelConfig, type ModelConfig } from '../../src/engine/model/config.ts';
import { expectedWeights } from '../../src/engine/model/config.ts';
import { loadModel } from '../../src/engine/model/load.ts';
import { attachLora } from '../../src/engine/model/model.ts';
import type { WeightSource } from '../../src/engine/model/weights.ts';
import { mix32 } from '../../src/engine/ops/lora.ts';
import { Trainer } from '../../src/engine/train/trainer.ts';
import type { BenchCase } from '../types.ts';

interface Shape {
  name: string;
  config: Record<string, unknown>;
  dtype: 'F32' | 'BF16';
  batch: number;
  seq: number;
  /** Tokens per row that carry a label (the rest is a masked prompt). */
  labelled: number;
  rank: number;
  checkpointing: boolean;
  heavy: boolean;
}

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
const TINY = {
  architectures: ['LlamaForCausalLM'],
  model_type: 'llama',
  hidden_size: 64,
  intermediate_size: 128,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  head_dim: 16,
  vocab_size: 300,
  max_position_embeddings: 128,
  rms_norm_eps: 1e-6,
  rope_theta: 10000.0,
  tie_word_embeddings: false,
  hidden_act: 'silu',
  torch_dtype: 'float32',
};

const SHAPES: Shape[] = [
  {
    name: 'train tiny-llama lora-r8',
    config: TINY,
    dtype: 'F32',
    batch: 2,
    seq: 64,
    labelled: 64,
    rank: 8,
    checkpointing: false,
    heavy: false,
  },
  {
    name: 'train qwen2.5-0.5b-shape(2 layers) lora-r8',
    config: { ...QWEN05, num_hidden_layers: 2 },
    dtype: 'BF16',
    batch: 1,
    seq: 256,
    labelled: 128,
    rank: 8,
    checkpointing: true,
    heavy: true,
  },
  {
    name: 'train qwen2.5-0.5b-shape lora-r8',
    config: QWEN05,
    dtype: 'BF16',
    batch: 1,
    seq: 256,
    labelled: 128,
    rank: 8,
    checkpointing: true,
    heavy: true,
  },
];

/** Random weights generated tensor by tensor on read (norms 1, linears U(±1/√in), embedding ±0.05). */
function randomSource(c: ModelConfig, dtype: 'F32' | 'BF16'): WeightSource {
  const ws = expectedWeights(c).filter((w) => !w.optional);
  const byName = new Map(ws.map((w, i) => [w.name, { ...w, id: i }]));
  const get = (n: string) =>
    byName.get(n) ??
    (() => {
      throw new Error(`no tensor ${n}`);
    })();
  return {
    names: () => [...byName.keys()],
    has: (n) => byName.has(n),
    shape: (n) => get(n).shape.slice(),
    dtype: () => dtype,
    fileOf: () => 'random.safetensors',
    async read(n) {
      const w = get(n);
      const count = w.shape.reduce((a, b) => a * b, 1);
      const f = new Float32Array(count);
      const bound = w.role === 'embed' ? 0.05 : 1 / Math.sqrt(w.shape[w.shape.length - 1]);
      for (let i = 0; i < count; i++)
        f[i] = w.role === 'norm' ? 1 : ((mix32(i ^ mix32(w.id + 0x51ed)) / 2 ** 32) * 2 - 1) * bound;
      if (dtype === 'F32') return new Uint8Array(f.buffer);
      const bits = new Uint32Array(f.buffer);
      const out = new Uint16Array(count);
      for (let i = 0; i < count; i++) out[i] = bits[i] >>> 16;
      return new Uint8Array(out.buffer);
    },
  };
}

function batchOf(s: Shape, vocab: number): MicroBatch {
  const N = s.batch * s.seq;
  const ids = Int32Array.from({ length: N }, (_, i) => 1 + (mix32(i + 77) % (vocab - 1)));
  const labels = ids.map((id, i) => (i % s.seq >= s.seq - s.labelled ? id : -100));
  return { batch: s.batch, seqLen: s.seq, inputIds: ids, labels };
}

function layerFlops(c: ModelConfig, tokens: number): number {
  const H = c.hiddenSize;
  const q = c.numHeads * c.headDim;
  const kv = c.numKvHeads * c.headDim;
  const linear = H * (q + 2 * kv) + q * H + 3 * H * c.intermediateSize;
  return 2 * tokens * linear + (4 * tokens * tokens * c.numHeads * c.headDim) / 2;
}

function trainCase(s: Shape): BenchCase {
  const config = parseModelConfig(s.config);
  const tokens = s.batch * s.seq;
  const labelledRows = s.batch * Math.max(0, s.labelled - 1);
  // Forward ×1, backward ×2 (dX and, for the base, no dW: LoRA only needs dX through the base),
  // recompute ×1 with checkpointing; lm_head only over labelled rows (forward + dX).
  const perLayer = layerFlops(config, tokens);
  const flops =
    config.numLayers * perLayer * (s.checkpointing ? 3 : 2) +
    2 * 2 * labelledRows * config.hiddenSize * config.vocabSize;
  const extra: Record<string, number | string> = { tokens_per_step: tokens, layers: config.numLayers };
  return {
    name: s.name,
    shape: `B${s.batch} T${s.seq} H${config.hiddenSize} L${config.numLayers} V${config.vocabSize} ${s.dtype.toLowerCase()}${s.checkpointing ? ' ckpt' : ''}`,
    flops,
    bytesMoved: 0,
    heavy: s.heavy,
    extra,
    async setup(gpu: Gpu) {
      const model = await loadModel(gpu, config, randomSource(config, s.dtype));
      const lora = attachLora(model, { rank: s.rank, alpha: 2 * s.rank, dropout: 0, targets: 'all', seed: 1 });
      const trainer = new Trainer(model, lora, {
        learningRate: 1e-4,
        lrSchedulerType: 'cosine',
        totalSteps: 1000,
        warmupSteps: 10,
        maxGradNorm: 1,
        seed: 1,
        gradientCheckpointing: s.checkpointing,
      });
      const mb = batchOf(s, config.vocabSize);
      // One real step: dispatches, readbacks and the ledger's peaks by category.
      gpu.ledger.resetPeaks();
      const t0 = performance.now();
      const r = await trainer.step([mb]);
      extra.first_step_ms = Math.round(performance.now() - t0);
      extra.dispatches_per_step = r.dispatches;
      extra.readbacks_per_step = r.readbacks;
      const peak = gpu.ledger.report().peak;
      for (const cat of MEMORY_CATEGORIES) extra[`peak_${cat}_MB`] = Math.round(peak[cat] / 1e5) / 10;
      extra.trainable_params = trainer.trainableParameters;
      let finish: (() => void) | null = null;
      let last = 0;
      const times: number[] = [];
      return {
        async record(rec) {
          const now = performance.now();
          if (finish) {
            finish();
            times.push(now - last);
          }
          last = now;
          finish = (await trainer.recordStep(rec, [mb])).finish;
        },
        cleanup() {
          finish?.();
          if (times.length) {
            times.sort((a, b) => a - b);
            extra.tokens_per_s = Math.round((tokens / (times[Math.floor(times.length / 2)] / 1000)) * 10) / 10;
          }
          trainer.release();
          lora.release();
          model.release();
        },
      };
    },
  };
}

/**
 * The hardware-independent figures of a full Qwen2.5-0.5B-shaped step without running it (so
 * software adapters get them too): the step is recorded into a command buffer that is never
 * submitted; dispatches and the ledger's peak by category are what a real step would show with
 * one micro-batch (every buffer of a micro-batch lives until its end in both cases).
 */
function censusCase(s: Shape): BenchCase {
  const config = parseModelConfig(s.config);
  const extra: Record<string, number | string> = {
    tokens_per_step: s.batch * s.seq,
    layers: config.numLayers,
    note: 'recorded, not executed',
  };
  return {
    name: `census ${s.name.replace(/^train /, '')}`,
    shape: `B${s.batch} T${s.seq} H${config.hiddenSize} L${config.numLayers} V${config.vocabSize} ${s.dtype.toLowerCase()}${s.checkpointing ? ' ckpt' : ''}`,
    flops: 0,
    bytesMoved: 0,
    extra,
    async setup(gpu: Gpu) {
      const { Recorder } = await import('../../src/engine/gpu/recorder.ts');
      const model = await loadModel(gpu, config, randomSource(config, s.dtype));
      const lora = attachLora(model, { rank: s.rank, alpha: 2 * s.rank, dropout: 0, targets: 'all', seed: 1 });
      const trainer = new Trainer(model, lora, {
        learningRate: 1e-4,
        lrSchedulerType: 'cosine',
        totalSteps: 1000,
        warmupSteps: 10,
        maxGradNorm: 1,
        seed: 1,
        gradientCheckpointing: s.checkpointing,
      });
      gpu.ledger.resetPeaks();
      const rec = new Recorder(gpu, 'census');
      const { finish } = await trainer.recordStep(rec, [batchOf(s, config.vocabSize)]);
      extra.dispatches_per_step = rec.dispatchCount;
      extra.readbacks_per_step = 1;
      const peak = gpu.ledger.report().peak;
      for (const cat of MEMORY_CATEGORIES) extra[`peak_${cat}_MB`] = Math.round(peak[cat] / 1e5) / 10;
      extra.trainable_params = trainer.trainableParameters;
      finish();
      return {
        async record() {},
        cleanup() {
          trainer.release();
          lora.release();
          model.release();
        },
      };
    },
  };
}

export const cases: BenchCase[] = [...SHAPES.map(trainCase), censusCase(SHAPES[2])];
