// Train → reload → resume → chat A/B → evaluate → export, on a tiny Llama made by the test,
// in Chromium with SwiftShader WebGPU. Exported files are parsed back here.
import { writeFileSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { unzipSync } from 'fflate';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Browser, Page } from 'playwright';
import { launch, screenshot, ARTIFACTS } from './browser.ts';
import { addDataFile, fillMethod, openModelFolder, openStudio } from './studio-steps.ts';
import { writeTinyModel } from './tiny-model.ts';
import { readHeader } from '../../src/io/safetensors.ts';
import { bytesSource } from '../../src/io/byte-source.ts';
import { parseAdapterConfig } from '../../src/io/peft.ts';
import { parseTrainYaml } from '../../src/engine/train/llamafactory-config.ts';
import { parseGguf } from '../cpu/gguf-read.ts';

const dir = join(ARTIFACTS, 'studio-train');

function makeData(): string {
  const p = join(dir, 'greetings.jsonl');
  const rows = Array.from({ length: 12 }, (_, i) => ({
    instruction: `Say hi ${i % 3}.`,
    input: '',
    output: 'Hi! I am Tabby.',
  }));
  writeFileSync(p, rows.map((r) => JSON.stringify(r)).join('\n') + '\n');
  return p;
}

async function loggedLosses(page: Page): Promise<number[]> {
  const cells = await page.locator('figcaption tbody tr td:nth-child(2)').allTextContents();
  return cells.map(Number);
}

async function download(page: Page, testid: string): Promise<Uint8Array> {
  const link = page.getByTestId(testid).getByRole('link').first();
  const [dl] = await Promise.all([page.waitForEvent('download'), link.click()]);
  const path = join(dir, dl.suggestedFilename());
  await dl.saveAs(path);
  return new Uint8Array(readFileSync(path));
}

describe('studio: train, resume, chat, evaluate, export', () => {
  let browser: Browser;
  let page: Page;
  let errors: string[];
  let model: string[];

  beforeAll(async () => {
    model = await writeTinyModel({
      dir,
      architecture: 'LlamaForCausalLM',
      hidden: 32,
      intermediate: 64,
      dtype: 'F32',
      seed: 11,
      scale: 0.2,
    });
    const data = makeData();
    browser = await launch();
    ({ page, errors } = await openStudio(browser, {
      acceptDownloads: true,
      // The engine Worker keeps its GPU devices where the test can reach them, to lose one on purpose.
      before: (p) =>
        p.route(/\/assets\/worker-[^/]*\.js$/, async (route) => {
          const res = await route.fetch();
          const keep = `{const f=GPUAdapter.prototype.requestDevice;GPUAdapter.prototype.requestDevice=async function(...a){const d=await f.apply(this,a);(self.__tabtuneDevices??=[]).push(d);return d;};}\n`;
          await route.fulfill({ response: res, body: keep + (await res.text()) });
        }),
    }));
    await openModelFolder(page, model);
    await addDataFile(page, data);
    await fillMethod(page, {
      'Learning rate': '0.01',
      Epochs: '4',
      'Cutoff length': '64',
      'Batch size': '2',
      'Gradient accumulation': '1',
      'Validation size': '2',
      'Logging steps': '1',
      'Save steps': '3',
      'Warmup steps': '0',
    });
    await page.getByLabel('Learning-rate schedule').selectOption('constant');
  });
  afterAll(async () => {
    await browser?.close();
  });

  it('trains, shows live progress, the chart and the memory ledger', async () => {
    await page.getByRole('tab', { name: /Train/ }).click();
    await page.getByRole('button', { name: 'Start training' }).click();
    await page.getByTestId('train-progress').waitFor({ timeout: 120_000 });
    await expect
      .poll(async () => Number((await page.getByTestId('train-checkpoint').textContent()) ?? 'NaN'), {
        timeout: 300_000,
        interval: 500,
      })
      .toBeGreaterThanOrEqual(3);
    // The page stays responsive while the Worker trains.
    const t0 = Date.now();
    await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => r(null))));
    expect(Date.now() - t0).toBeLessThan(2000);
    expect(await page.getByTestId('memory-ledger').textContent()).toMatch(/Adapters[\s\S]*KiB/);
    expect(await page.getByTestId('train-step').textContent()).toMatch(/\/ 20/);
    await screenshot(page, 'studio-5-train');
  });

  it('a GPU device lost mid-run pauses the run, and Resume continues it from its checkpoint', async () => {
    const worker = page.workers().find((w) => /\/assets\/worker-/.test(w.url()));
    expect(
      worker,
      page
        .workers()
        .map((w) => w.url())
        .join(),
    ).toBeDefined();
    expect(await page.getByTestId('train-status').textContent()).toMatch(/Training/);
    // What a driver reset or a GPU-process crash does to the device under the run.
    await worker!.evaluate(() => {
      for (const d of (self as unknown as { __tabtuneDevices?: GPUDevice[] }).__tabtuneDevices ?? []) d.destroy();
    });
    await page
      .getByRole('alert')
      .filter({ hasText: /The GPU device was lost \(/ })
      .waitFor({ timeout: 60_000 });
    await expect.poll(() => page.getByTestId('train-status').textContent(), { timeout: 120_000 }).toMatch(/Paused/);
    const lostAt = await page
      .getByRole('alert')
      .filter({ hasText: /device was lost at step \d+/ })
      .textContent();
    const ck = Number(/checkpoint at step (\d+)/.exec(lostAt ?? '')?.[1]);
    expect(ck).toBeGreaterThanOrEqual(3);
    expect(await page.getByTestId('run-row').first().textContent()).not.toMatch(/on the GPU/);
    await screenshot(page, 'studio-5b-device-lost');
    await page.getByRole('button', { name: 'Try again' }).first().click();
    await page.getByRole('button', { name: 'Resume', exact: true }).click();
    await expect.poll(() => page.getByTestId('train-status').textContent(), { timeout: 60_000 }).toMatch(/Training/);
    await expect
      .poll(async () => Number(await page.getByTestId('train-checkpoint').textContent()), {
        timeout: 300_000,
        interval: 500,
      })
      .toBeGreaterThan(ck);
    // Leave it paused for the reload test.
    await page.getByRole('button', { name: 'Pause' }).click();
    await expect.poll(() => page.getByTestId('train-status').textContent(), { timeout: 60_000 }).toMatch(/Paused/);
  });

  it('resumes the same run after a reload and continues the curve', async () => {
    await page.waitForTimeout(300);
    await page.reload();
    // The local model was kept in browser storage: it reopens by itself, no need to pick it again.
    await page.getByRole('tab', { name: /Model/ }).click();
    await page
      .getByTestId('model-info')
      .filter({ hasText: /Model: local model[\s\S]*matching config\.json/ })
      .waitFor({ timeout: 60_000 });
    await page.getByRole('tab', { name: /Train/ }).click();
    const row = page.getByTestId('run-row').first();
    await row.waitFor({ timeout: 30_000 });
    expect(await row.textContent()).toMatch(/Paused/);
    const before = await loggedLosses(page);
    expect(before.length).toBeGreaterThanOrEqual(3);
    await row.getByRole('button', { name: /^Resume/ }).click();
    await expect
      .poll(() => page.getByTestId('train-status').textContent(), { timeout: 480_000, interval: 1000 })
      .toMatch(/Finished/);
    const losses = await loggedLosses(page);
    expect(losses.length).toBe(20);
    // The points kept from before the reload are the start of the same curve.
    const kept = before.slice(0, Math.min(before.length, 3));
    expect(losses.slice(0, kept.length)).toEqual(kept);
    const head = losses.slice(0, 3).reduce((a, b) => a + b) / 3;
    const tail = losses.slice(-3).reduce((a, b) => a + b) / 3;
    expect(tail).toBeLessThan(head - 0.5);
    await screenshot(page, 'studio-6-resumed');
  });

  it('answers the same prompt with the base and the tuned model side by side', async () => {
    await page.getByRole('tab', { name: /Chat/ }).click();
    await page.getByLabel('Max new tokens').fill('8');
    await page.getByLabel('A/B: base vs tuned').check();
    await page.getByLabel('Message').fill('Say hi 1.');
    await page.getByRole('button', { name: 'Send' }).click();
    const tuned = page.getByTestId('answer-tuned');
    await expect.poll(() => tuned.textContent(), { timeout: 180_000 }).toMatch(/tokens\/s/);
    expect(await page.getByTestId('answer-base').textContent()).toMatch(/tokens\/s/);
    await screenshot(page, 'studio-7-chat');
  });

  it('evaluates on held-out rows', async () => {
    await page.getByRole('tab', { name: /Evaluate/ }).click();
    await page.getByLabel('Rows to predict').fill('2');
    await page.getByLabel('Max new tokens').fill('8');
    await page.getByRole('button', { name: 'Evaluate' }).click();
    const res = page.getByTestId('eval-results');
    await res.waitFor({ timeout: 180_000 });
    expect(Number(await page.getByTestId('eval-loss').textContent())).toBeGreaterThan(0);
    expect(Number(await page.getByTestId('eval-bleu').textContent())).toBeGreaterThanOrEqual(0);
    await screenshot(page, 'studio-8-evaluate');
  });

  it('exports a merged model, the PEFT adapter, a GGUF and a LLaMA-Factory bundle that parse', async () => {
    await page.getByRole('tab', { name: /Export/ }).click();
    await page.getByRole('button', { name: 'Export merged model' }).click();
    await page.getByTestId('export-merged').waitFor({ timeout: 120_000 });
    const merged = unzipSync(await download(page, 'export-merged'));
    const st = Object.keys(merged).find((n) => n.endsWith('model.safetensors'))!;
    const header = await readHeader(bytesSource(merged[st], st));
    expect(header.tensors.find((t) => t.name === 'model.layers.1.mlp.down_proj.weight')?.shape).toEqual([32, 64]);
    expect(
      JSON.parse(new TextDecoder().decode(merged[Object.keys(merged).find((n) => n.endsWith('/config.json'))!]))
        .architectures,
    ).toEqual(['LlamaForCausalLM']);
    expect(Object.keys(merged).some((n) => n.endsWith('tokenizer.json'))).toBe(true);

    await page.getByRole('button', { name: 'Export adapter' }).click();
    await page.getByTestId('export-peft').waitFor({ timeout: 120_000 });
    const peft = unzipSync(await download(page, 'export-peft'));
    const ac = parseAdapterConfig(
      new TextDecoder().decode(peft[Object.keys(peft).find((n) => n.endsWith('adapter_config.json'))!]),
    );
    expect(ac.r).toBe(8);
    const ah = await readHeader(
      bytesSource(peft[Object.keys(peft).find((n) => n.endsWith('adapter_model.safetensors'))!], 'adapter'),
    );
    expect(ah.tensors.some((t) => /lora_A/.test(t.name))).toBe(true);

    await page.getByRole('button', { name: 'Export bundle' }).click();
    await page.getByTestId('export-bundle').waitFor({ timeout: 60_000 });
    const bundle = unzipSync(await download(page, 'export-bundle'));
    const yaml = parseTrainYaml(
      new TextDecoder().decode(bundle[Object.keys(bundle).find((n) => n.endsWith('train_sft.yaml'))!]),
    );
    expect(yaml.config.learningRate).toBe(0.01);
    expect(yaml.config.dataset).toEqual(['greetings']);
    const info = JSON.parse(
      new TextDecoder().decode(bundle[Object.keys(bundle).find((n) => n.endsWith('data/dataset_info.json'))!]),
    );
    expect(info.greetings.file_name).toBe('greetings.jsonl');
    expect(Object.keys(bundle).some((n) => n.endsWith('data/greetings.jsonl'))).toBe(true);

    // GGUF q8_0 (merged, with its Modelfile): the size is shown before exporting; the file parses
    // with every weight of the merged checkpoint as a tensor.
    await page.getByLabel('GGUF type').selectOption('q8_0');
    await expect.poll(() => page.getByTestId('gguf-size').textContent(), { timeout: 60_000 }).toMatch(/About \d/);
    await page.getByRole('button', { name: 'Export GGUF' }).click();
    await page.getByTestId('export-gguf').waitFor({ timeout: 120_000 });
    const ggufZip = unzipSync(await download(page, 'export-gguf'));
    const ggufName = Object.keys(ggufZip).find((n) => n.endsWith('-q8_0.gguf'))!;
    const gguf = ggufZip[ggufName];
    expect(new TextDecoder().decode(gguf.subarray(0, 4))).toBe('GGUF');
    const g = parseGguf(gguf);
    expect(g.version).toBe(3);
    expect(g.tensors.length).toBe(header.tensors.length);
    expect(g.kv.get('general.file_type')?.value).toBe(7);
    const modelfile = new TextDecoder().decode(ggufZip[Object.keys(ggufZip).find((n) => n.endsWith('/Modelfile'))!]);
    expect(modelfile.split('\n')[0]).toBe(`FROM ./${ggufName.split('/').pop()}`);
    await screenshot(page, 'studio-9-export');
    await page.getByRole('button', { name: /Language/ }).click();
    await page.getByRole('tab', { name: /训练/ }).click();
    await page.getByRole('heading', { name: '此浏览器中的训练' }).waitFor();
    expect(await page.getByTestId('run-row').first().textContent()).toMatch(/已完成/);
    await screenshot(page, 'studio-10-train-zh');
    await page.getByRole('button', { name: /Language/ }).click();
    expect(errors.filter((e) => !/Failed to load resource/.test(e))).toEqual([]);
  });
});
