// Host-side pieces of the trainer: HF schedules, micro-batch preparation (label shift, segments),
// data order and cursor, checkpoint files.
import { describe, expect, it } from 'vitest';
import type { EncodedExample } from '../../src/data/types.ts';
import { labelRuns, prepareBatch } from '../../src/engine/model/batch.ts';
import { checkpointFromFiles, checkpointToFiles } from '../../src/engine/train/checkpoint-files.ts';
import { DataLoader, epochOrder } from '../../src/engine/train/data.ts';
import {
  loadOptionsFrom,
  loraConfigFrom,
  totalTrainingSteps,
  trainerConfigFrom,
} from '../../src/engine/train/run-builder.ts';
import { parseTrainYaml } from '../../src/engine/train/llamafactory-config.ts';
import { lrAt, lrLambda, warmupStepsOf } from '../../src/engine/train/schedule.ts';
import type { Checkpoint } from '../../src/engine/train/trainer.ts';

describe('lr schedules (transformers get_scheduler)', () => {
  it('cosine with warmup: 0 at the first step, peak after warmup, half way at the midpoint, 0 at the end', () => {
    const c = { type: 'cosine' as const, lr: 1e-3, totalSteps: 20, warmupSteps: 4 };
    expect(lrAt(c, 0)).toBe(0);
    expect(lrAt(c, 2)).toBeCloseTo(5e-4, 15);
    expect(lrAt(c, 4)).toBeCloseTo(1e-3, 15);
    expect(lrAt(c, 12)).toBeCloseTo(5e-4, 15); // progress 0.5
    expect(lrAt(c, 20)).toBeCloseTo(0, 15);
    // Hand value: s = 7 → progress 3/16, 0.5·(1+cos(3π/16)).
    expect(lrLambda(c, 7)).toBeCloseTo(0.5 * (1 + Math.cos((3 * Math.PI) / 16)), 14);
  });

  it('linear decays to 0 after warmup; constant ignores warmup; constant_with_warmup ramps', () => {
    expect(lrLambda({ type: 'linear', lr: 1, totalSteps: 10, warmupSteps: 2 }, 6)).toBeCloseTo(0.5, 15);
    expect(lrLambda({ type: 'linear', lr: 1, totalSteps: 10, warmupSteps: 2 }, 12)).toBe(0);
    expect(lrLambda({ type: 'constant', lr: 1, totalSteps: 10, warmupSteps: 5 }, 0)).toBe(1);
    expect(lrLambda({ type: 'constant_with_warmup', lr: 1, totalSteps: 10, warmupSteps: 4 }, 1)).toBe(0.25);
    expect(lrLambda({ type: 'constant_with_warmup', lr: 1, totalSteps: 10, warmupSteps: 4 }, 9)).toBe(1);
  });

  it('warmup_ratio rounds up (TrainingArguments.get_warmup_steps); warmup_steps wins', () => {
    expect(warmupStepsOf({ type: 'cosine', lr: 1, totalSteps: 33, warmupRatio: 0.1 })).toBe(4);
    expect(warmupStepsOf({ type: 'cosine', lr: 1, totalSteps: 33, warmupRatio: 0.1, warmupSteps: 2 })).toBe(2);
  });
});

describe('prepareBatch', () => {
  it('shifts labels inside each row, counts them, and marks right padding as segment −1', () => {
    const hb = prepareBatch({
      batch: 2,
      seqLen: 4,
      inputIds: Int32Array.from([5, 6, 7, 8, 9, 10, 0, 0]),
      labels: Int32Array.from([-100, 6, 7, 8, -100, 10, -100, -100]),
      lengths: Int32Array.from([4, 2]),
    });
    expect([...hb.shifted]).toEqual([6, 7, 8, -100, 10, -100, -100, -100]);
    expect(hb.labelCount).toBe(4);
    expect([...hb.segments]).toEqual([0, 0, 0, 0, 1, 1, -1, -1]);
    expect([...hb.positions]).toEqual([0, 1, 2, 3, 0, 1, 2, 3]);
    expect(labelRuns(hb.shifted)).toEqual([
      [0, 3],
      [4, 5],
    ]);
  });

  it('packed rows get one segment per example and padding after the last', () => {
    const hb = prepareBatch({
      batch: 1,
      seqLen: 6,
      inputIds: new Int32Array(6),
      seqStarts: [Int32Array.from([0, 2, 5])],
    });
    expect([...hb.segments]).toEqual([0, 0, 1, 1, 1, -1]);
  });

  it('rejects arrays of the wrong length', () => {
    expect(() => prepareBatch({ batch: 2, seqLen: 3, inputIds: new Int32Array(5) })).toThrow(
      /inputIds has 5 entries, expected 2×3 = 6/,
    );
  });
});

function examples(n: number): EncodedExample[] {
  return Array.from({ length: n }, (_, i) => ({
    row: i,
    inputIds: Int32Array.from({ length: 3 + (i % 4) }, (_, j) => 10 * i + j),
    labels: Int32Array.from({ length: 3 + (i % 4) }, (_, j) => 10 * i + j),
    fullLength: 3 + (i % 4),
    truncated: false,
  }));
}

describe('DataLoader', () => {
  it('covers every example once per epoch, in a seeded order that changes per epoch', () => {
    const a = epochOrder(50, 3, 0);
    expect([...a].sort((x, y) => x - y)).toEqual(Array.from({ length: 50 }, (_, i) => i));
    expect([...epochOrder(50, 3, 0)]).toEqual([...a]);
    expect([...epochOrder(50, 3, 1)]).not.toEqual([...a]);
    expect([...epochOrder(50, 4, 0)]).not.toEqual([...a]);
  });

  it('windows of accumulation micro-batches, a shorter last window, and a cursor that resumes identically', () => {
    const mk = () =>
      new DataLoader(examples(10), {
        batchSize: 3,
        gradientAccumulationSteps: 2,
        seed: 1,
        padId: 0,
        padToMultipleOf: 1,
      });
    const a = mk();
    expect(a.microBatchesPerEpoch).toBe(4);
    expect(a.stepsPerEpoch).toBe(2);
    const w1 = a.nextWindow();
    expect(w1.map((m) => m.batch)).toEqual([3, 3]);
    const saved = a.state();
    const w2 = a.nextWindow();
    expect(w2.map((m) => m.batch)).toEqual([3, 1]);
    const w3 = a.nextWindow(); // epoch 1 starts
    expect(a.state().epoch).toBe(1);
    const b = mk();
    b.setState(saved);
    expect(b.nextWindow()).toEqual(w2);
    expect(b.nextWindow()).toEqual(w3);
    const seen = new Set<number>();
    for (const w of [w1, w2])
      for (const mb of w) for (let r = 0; r < mb.batch; r++) seen.add(mb.inputIds[r * mb.seqLen] / 10);
    expect(seen.size).toBe(10);
  });
});

describe('checkpoint files', () => {
  it('round-trip every byte of the trainer state', async () => {
    const c: Checkpoint = {
      format: 'tabtune-checkpoint-1',
      state: {
        step: 7,
        microStep: 14,
        config: { learningRate: 1e-4, lrSchedulerType: 'cosine', totalSteps: 20, seed: 3 },
        cursor: { epoch: 1, micro: 2 },
        params: [{ name: 'x.lora_A', shape: [2, 3], offset: 0, count: 6 }],
        lora: null,
      },
      params: Float32Array.from([1, 2, 3, 4, 5, Math.PI]),
      expAvg: Float32Array.from([0.1, 0.2, 0.3, 0.4, 0.5, 0.6]),
      expAvgSq: Float32Array.from([1e-9, 2e-9, 3e-9, 4e-9, 5e-9, 6e-9]),
    };
    const files = await checkpointToFiles(c);
    const back = await checkpointFromFiles(files);
    expect(back).toEqual(c);
    // Files read in Node arrive as views into a shared pool, at any (unaligned) offset.
    const pool = new Uint8Array(3 + [...files.values()].reduce((n, b) => n + b.byteLength + 5, 0)).fill(0xee);
    const views = new Map<string, Uint8Array>();
    let at = 3;
    for (const [name, bytes] of files) {
      pool.set(bytes, at);
      views.set(name, pool.subarray(at, at + bytes.byteLength));
      at += bytes.byteLength + 5;
    }
    expect(await checkpointFromFiles(views)).toEqual(c);
    // Node Buffers of small files share an 8 KiB pool, and Buffer.slice() does not copy.
    const buffers = new Map([...files].map(([name, bytes]) => [name, Buffer.from(bytes)] as const));
    expect([...buffers.values()].some((b) => b.byteOffset > 0 || b.buffer.byteLength > b.byteLength)).toBe(true);
    expect(await checkpointFromFiles(buffers)).toEqual(c);
    await expect(checkpointFromFiles(new Map())).rejects.toThrow(/trainer_state\.json and optimizer\.safetensors/);
  });
});

describe('LLaMA-Factory YAML → engine settings', () => {
  const yaml = (extra: string) =>
    `model_name_or_path: ./m\nstage: sft\ndo_train: true\nfinetuning_type: lora\nlora_target: all\ndataset: d\ncutoff_len: 256\noutput_dir: out\nper_device_train_batch_size: 2\ngradient_accumulation_steps: 4\nnum_train_epochs: 3.0\nlearning_rate: 1.0e-4\nlr_scheduler_type: cosine\nwarmup_ratio: 0.1\n${extra}`;
  it('QLoRA keys map to NF4 loading, all targets, HF step count and the trainer config', () => {
    const { config: tc } = parseTrainYaml(yaml('quantization_bit: 4\nlora_rank: 16\nlora_alpha: 32\n'));
    expect(loadOptionsFrom(tc)).toEqual({ quantize: 'nf4', doubleQuant: tc.quantization!.doubleQuantization });
    expect(loraConfigFrom(tc)).toMatchObject({
      rank: 16,
      alpha: 32,
      targets: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'],
    });
    // 10 micro-batches per epoch, accumulation 4 → 3 updates per epoch (last one short) → 9.
    const total = totalTrainingSteps(10, tc);
    expect(total).toBe(9);
    const t = trainerConfigFrom(tc, total);
    expect(t).toMatchObject({
      learningRate: 1e-4,
      lrSchedulerType: 'cosine',
      totalSteps: 9,
      warmupRatio: 0.1,
      full: false,
    });
    expect(totalTrainingSteps(10, { ...tc, maxSteps: 5 })).toBe(5);
  });

  it('full fine-tuning loads f32 weights and refuses 4-bit', () => {
    const { config: tc } = parseTrainYaml(
      yaml('').replace('finetuning_type: lora\nlora_target: all\n', 'finetuning_type: full\n'),
    );
    expect(loadOptionsFrom(tc)).toEqual({ computeDType: 'f32' });
    expect(loraConfigFrom(tc)).toBeNull();
    expect(() => loadOptionsFrom({ ...tc, quantization: { bits: 4, type: 'nf4', doubleQuantization: true } })).toThrow(
      /QLoRA/,
    );
  });
});
