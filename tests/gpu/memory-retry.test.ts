// GPU memory as a user meets it: the budget the pool keeps to (an allocation past it fails as an
// out-of-memory error naming the buffer), `tabtune train --gpu-memory` fitting a run to a budget
// before it starts, and a run that runs out of memory mid-way retrying once with the next smaller
// plan from its last checkpoint — with the same losses as a run that never failed (the smaller
// plan here turns gradient checkpointing on, which recomputes bit-identical activations).
import { afterEach, describe, expect, it, vi } from 'vitest';
import { GpuError } from '../../src/engine/gpu/errors.ts';
import { createTensor, releaseTensor, tensorSpec } from '../../src/engine/gpu/transfer.ts';
import { Trainer } from '../../src/engine/train/trainer.ts';
import { runtime, testGpu } from './context.ts';
import { demoVocabConfig, writeAlpacaDataset, writeDemoTokenizerModel, writeSftLoraYaml } from './cli-util.ts';

const ROOT = 'tests/artifacts/memory-retry';

/** A size the CLI printed with fmtBytes (rounded: compare with slack). */
function bytesIn(text: string, re: RegExp): number {
  const m = re.exec(text)?.[1];
  if (!m) throw new Error(`${re} not in:\n${text}`);
  const [v, unit] = m.split(' ');
  return Number(v) * 1024 ** (['KiB', 'MiB', 'GiB'].indexOf(unit) + 1);
}

afterEach(() => vi.restoreAllMocks());

describe('the GPU memory budget', () => {
  it('refuses an allocation past the budget after giving pooled buffers back, and names the buffer', async () => {
    const gpu = await testGpu();
    const pool = gpu.pool;
    pool.trim();
    const base = pool.ledger.allocated;
    pool.budget = base + 3 * 65536;
    try {
      const a = createTensor(gpu, tensorSpec('f32', [16384], 'scratch', 'first'));
      const b = createTensor(gpu, tensorSpec('f32', [16384], 'scratch', 'second'));
      releaseTensor(gpu, b); // pooled: still allocated until the pool gives it back
      // Two more 64 KiB buffers need the pooled one to be destroyed, then fit exactly.
      const c = createTensor(gpu, tensorSpec('f32', [16383], 'activations', 'third'));
      const d = createTensor(gpu, tensorSpec('f32', [16384], 'activations', 'fourth'));
      expect(pool.ledger.allocated - base).toBe(3 * 65536);
      let err: unknown;
      try {
        createTensor(gpu, tensorSpec('f32', [10], 'scratch', 'one too many'));
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(GpuError);
      expect((err as GpuError).kind).toBe('out-of-memory');
      expect((err as GpuError).message).toMatch(/one too many: needs 256 B more while 192\.0 KiB .* budget is in use/);
      for (const t of [a, c, d]) releaseTensor(gpu, t);
      await pool.checkAllocations(); // no device error behind any of them
    } finally {
      pool.budget = null;
    }
  });
});

describe.skipIf(runtime !== 'node')('tabtune train under a GPU memory budget', () => {
  async function capture(fn: () => Promise<number>): Promise<{ code: number; err: string }> {
    let err = '';
    const e = vi
      .spyOn(process.stderr, 'write')
      .mockImplementation((s: string | Uint8Array) => ((err += String(s)), true));
    try {
      return { code: await fn(), err };
    } finally {
      e.mockRestore();
    }
  }

  it('fits the run to --gpu-memory, and retries once after running out of memory with the same losses', async () => {
    const { readFileSync, rmSync } = await import('node:fs');
    const { join, resolve } = await import('node:path');
    const { default: train } = await import('../../src/cli/train.ts');
    const root = resolve(ROOT);
    rmSync(root, { recursive: true, force: true });
    const modelDir = join(root, 'model');
    const raw = demoVocabConfig({
      architectures: ['Qwen2ForCausalLM'],
      model_type: 'qwen2',
      num_hidden_layers: 2,
      max_position_embeddings: 256,
      rms_norm_eps: 1e-6,
      rope_theta: 10000,
      tie_word_embeddings: true,
    });
    await writeDemoTokenizerModel(modelDir, raw, 23);
    const dataDir = join(root, 'data');
    const rows = Array.from({ length: 8 }, (_, i) => ({
      instruction: `Count to ${i}.`,
      input: '',
      output: `${i}`.repeat(i + 1),
    }));
    await writeAlpacaDataset(dataDir, 'count', rows);
    const yaml = (out: string) =>
      writeSftLoraYaml(join(root, `${out}.yaml`), {
        modelDir,
        dataset: 'count',
        dataDir,
        template: 'qwen',
        outputDir: join(root, out),
        saveSteps: 2,
        seed: 5,
        extra: ['lora_dropout: 0.1', 'gradient_checkpointing: false'],
      });
    const losses = (out: string) =>
      readFileSync(join(root, out, 'trainer_log.jsonl'), 'utf8')
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as { current_steps: number; loss: number })
        .map((r) => [r.current_steps, r.loss]);

    // ---- the run as it is (no budget)
    const plain = await capture(async () => train([await yaml('plain')]));
    expect(plain.code, plain.err).toBe(0);
    const planned = bytesIn(plain.err, /planned GPU memory ([\d.]+ [KMG]iB)/);
    expect(planned).toBeGreaterThan(0);

    // ---- a budget below its plan: auto-fit turns gradient checkpointing on, and the peak keeps to it
    const budgetGiB = (planned * 0.95) / 2 ** 30;
    const fitted = await capture(async () => train([await yaml('fitted'), '--gpu-memory', String(budgetGiB)]));
    expect(fitted.code, fitted.err).toBe(0);
    expect(fitted.err).toMatch(/tabtune: fitted to --gpu-memory [\d.]+ [KM]iB: turn on gradient checkpointing/);
    const peak = bytesIn(fitted.err, /GPU memory peak ([\d.]+ [KMG]iB)/);
    expect(peak).toBeLessThanOrEqual(budgetGiB * 2 ** 30 * 1.001);
    expect(losses('fitted')).toEqual(losses('plain'));

    // ---- out of memory at step 4 (after checkpoint-2): one retry, from checkpoint-2, same curve
    const step = Trainer.prototype.step;
    let calls = 0;
    vi.spyOn(Trainer.prototype, 'step').mockImplementation(function (this: Trainer, ...a) {
      if (++calls === 4) return Promise.reject(new GpuError('out-of-memory', 'activations', 'simulated for the test'));
      return step.apply(this, a);
    });
    const retried = await capture(async () => train([await yaml('retried')]));
    expect(retried.code, retried.err).toBe(0);
    expect(retried.err).toMatch(
      /out of GPU memory \(out-of-memory error in activations: simulated for the test\); retrying once with turn on gradient checkpointing/,
    );
    expect(retried.err).toMatch(
      /resuming at step 2 from .*checkpoint-2 \(the last checkpoint, after running out of GPU memory\)/,
    );
    expect(losses('retried')).toEqual(losses('plain'));
    expect(readFileSync(join(root, 'retried', 'adapter_model.safetensors'))).toEqual(
      readFileSync(join(root, 'plain', 'adapter_model.safetensors')),
    );
    // ---- and a second out-of-memory error is not retried again
    calls = 0;
    vi.spyOn(Trainer.prototype, 'step').mockImplementation(() =>
      Promise.reject(new GpuError('out-of-memory', 'activations', 'always')),
    );
    const failed = await capture(async () => train([await yaml('failed')]));
    expect(failed.code).not.toBe(0);
    expect(failed.err.match(/retrying once/g)).toHaveLength(1);
  }, 600_000);
});
