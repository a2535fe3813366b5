// planMemory for the seed's LLaMA-Factory runs, printed beside the peak GPU memory measured there
// (PyTorch + bitsandbytes on CUDA, LoRA rank 8 on all linear layers, cutoff_len 256, gradient
// checkpointing on as LLaMA-Factory defaults). No GPU work: the "time" is the planner's own.
import { knownConfig } from '../../src/engine/plan/known-configs.ts';
import { planMemory, SMALL_LOSS_CHUNK_ROWS, type TrainPlanConfig } from '../../src/engine/plan/plan.ts';
import type { BenchCase } from '../types.ts';

interface Reference {
  model: string;
  label: string;
  train: TrainPlanConfig;
  /** Peak GPU memory of the same run in LLaMA-Factory, GB. */
  llamafactoryGB: number;
}

const lora = (method: 'lora' | 'qlora', batchSize: number): TrainPlanConfig => ({
  method,
  batchSize,
  seqLen: 256,
  loraRank: 8,
  gradientCheckpointing: true,
  doubleQuant: true,
});

const SEED_RUNS: Reference[] = [
  { model: 'Qwen/Qwen2.5-1.5B-Instruct', label: '1.5B QLoRA-4bit bs4', train: lora('qlora', 4), llamafactoryGB: 2.1 },
  { model: 'Qwen/Qwen2.5-1.5B-Instruct', label: '1.5B LoRA bs4', train: lora('lora', 4), llamafactoryGB: 3.9 },
  { model: 'Qwen/Qwen2.5-3B-Instruct', label: '3B QLoRA-4bit bs1', train: lora('qlora', 1), llamafactoryGB: 2.6 },
  { model: 'Qwen/Qwen2.5-7B-Instruct', label: '7B QLoRA-4bit bs1', train: lora('qlora', 1), llamafactoryGB: 6.2 },
];

// The same runs with every memory option (bf16 checkpoints, NF4 head, host-memory embedding,
// 16-row loss chunks): checkpoint_precision / head_precision / embedding_on_host / loss_chunk_rows.
const REFERENCES: Reference[] = [
  ...SEED_RUNS,
  ...SEED_RUNS.map((r) => ({
    ...r,
    label: `${r.label} +memory options`,
    train: {
      ...r.train,
      checkpointPrecision: 'bf16' as const,
      headPrecision: 'nf4' as const,
      embeddingOnHost: true,
      lossChunkRows: SMALL_LOSS_CHUNK_ROWS,
    },
  })),
];

const gb = (b: number) => Number((b / 1e9).toFixed(3));

function planCase(r: Reference): BenchCase {
  const cfg = knownConfig(r.model);
  const p = planMemory(cfg, r.train);
  const extra: Record<string, number | string> = {
    planned_GB: gb(p.total),
    llamafactory_GB: r.llamafactoryGB,
    ratio: Number((p.total / 1e9 / r.llamafactoryGB).toFixed(3)),
  };
  for (const [k, v] of Object.entries(p.byCategory)) extra[`${k}_GB`] = gb(v);
  return {
    name: `planMemory ${r.label}`,
    shape: `${r.model.split('/')[1]} ${r.train.method} r${r.train.loraRank} bs${r.train.batchSize} cutoff${r.train.seqLen} ckpt`,
    flops: 0,
    bytesMoved: 0,
    extra,
    async setup() {
      return {
        record: async () => {
          planMemory(cfg, r.train);
        },
        cleanup: () => {},
      };
    },
  };
}

export const cases: BenchCase[] = REFERENCES.map(planCase);
