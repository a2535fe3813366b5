// What the lossy GPU-memory options cost on the demo model (public/demo-model/, identity dataset):
// the base model's loss with the 16-bit tied head and with the NF4 head, then a short LoRA fine-tune
// (same rows, order and seed) with f32 / bf16 checkpoints and 16-bit / NF4 head, step losses and the
// held-out loss after. Node + Dawn: npx tsx scripts/memory-options-loss.ts [steps]
import { readFileSync } from 'node:fs';
import { loadTokenizer } from '../src/data/tokenizer.ts';
import { parseDataset } from '../src/data/parse.ts';
import { prepareDataset } from '../src/data/pipeline.ts';
import type { MicroBatch } from '../src/engine/model/batch.ts';
import { loadModel, type LoadOptions } from '../src/engine/model/load.ts';
import { attachLora } from '../src/engine/model/model.ts';
import { openModelFiles } from '../src/engine/model/weights.ts';
import { nodeGpu } from '../src/engine/node-gpu.ts';
import { nodeShaders } from '../src/engine/shaders.node.ts';
import { DataLoader } from '../src/engine/train/data.ts';
import { Trainer } from '../src/engine/train/trainer.ts';

const steps = Number(process.argv[2] ?? 5);
const root = new URL('..', import.meta.url);
const read = (p: string) => new Uint8Array(readFileSync(new URL(p, root)));
const files = new Map<string, Uint8Array>();
for (const f of [
  'config.json',
  'generation_config.json',
  'tokenizer.json',
  'tokenizer_config.json',
  'model.safetensors',
])
  files.set(f, read(`public/demo-model/${f}`));
const text = (b: Uint8Array) => new TextDecoder().decode(b);
const tok = await loadTokenizer(text(files.get('tokenizer.json')!), text(files.get('tokenizer_config.json')!));
const parsed = await parseDataset(read('datasets/identity_en_zh.json'), { fileName: 'identity_en_zh.json' });
const prep = prepareDataset(parsed.examples, tok, { cutoffLen: 64, seed: 0 });
const byLength = [...prep.train].sort((a, b) => a.inputIds.length - b.inputIds.length);
// Short rows keep SwiftShader's time in bounds: 4 training rows, 4 held-out rows.
const trainRows = byLength.filter((_, i) => i % 2 === 0).slice(0, 4);
const heldOut = byLength.filter((_, i) => i % 2 === 1).slice(0, 4);
const padId = tok.pad?.id ?? 0;
const evalBatches: MicroBatch[] = [];
{
  const l = new DataLoader(heldOut, { batchSize: 2, gradientAccumulationSteps: 1, seed: 0, padId, shuffle: false });
  for (let i = 0; i < l.microBatchesPerEpoch; i++) evalBatches.push(l.nextWindow()[0]);
}

const { gpu, close } = await nodeGpu(nodeShaders(), { log: (l) => console.error(l) });
const opened = await openModelFiles(files);

async function run(label: string, load: LoadOptions, checkpointPrecision: 'f32' | 'bf16') {
  const t0 = Date.now();
  const model = await loadModel(gpu, opened.config, opened.source, load);
  const lora = attachLora(model, { rank: 8, alpha: 16, dropout: 0, targets: 'all', seed: 0 });
  const loader = new DataLoader(trainRows, { batchSize: 2, gradientAccumulationSteps: 1, seed: 0, padId });
  const trainer = new Trainer(
    model,
    lora,
    {
      learningRate: 3e-3,
      lrSchedulerType: 'constant',
      totalSteps: steps,
      maxGradNorm: 1,
      seed: 0,
      gradientCheckpointing: true,
      checkpointPrecision,
    },
    loader,
  );
  try {
    const before = await trainer.evaluate(evalBatches);
    const losses: number[] = [];
    for (let s = 0; s < steps; s++) losses.push((await trainer.step()).loss);
    const after = await trainer.evaluate(evalBatches);
    const out = { label, before, losses, after, seconds: (Date.now() - t0) / 1000 };
    console.log(JSON.stringify(out));
    return out;
  } finally {
    trainer.release();
    lora.release();
    model.release();
  }
}

const base = await run('16-bit head, f32 checkpoints', {}, 'f32');
const rows = [
  base,
  await run('16-bit head, bf16 checkpoints', {}, 'bf16'),
  await run('NF4 head, f32 checkpoints', { head: 'nf4' }, 'f32'),
  await run('NF4 head, bf16 checkpoints', { head: 'nf4' }, 'bf16'),
];
console.log('\n| option | held-out loss before | step losses | held-out loss after | Δ after vs baseline |');
console.log('|---|---|---|---|---|');
for (const r of rows)
  console.log(
    `| ${r.label} | ${r.before.toFixed(4)} | ${r.losses.map((l) => l.toFixed(4)).join(' → ')} | ${r.after.toFixed(4)} | ${(((r.after - base.after) / base.after) * 100).toFixed(2)} % |`,
  );
close();
