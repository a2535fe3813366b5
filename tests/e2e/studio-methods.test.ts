// QLoRA and full fine-tuning through the studio on a tiny Llama: a short run of each, then the
// export that fits the method (PEFT adapter for QLoRA, merged weights for full).
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

const dir = join(ARTIFACTS, 'studio-methods');

async function download(page: Page, testid: string): Promise<Record<string, Uint8Array>> {
  const [dl] = await Promise.all([
    page.waitForEvent('download'),
    page.getByTestId(testid).getByRole('link').first().click(),
  ]);
  const path = join(dir, dl.suggestedFilename());
  await dl.saveAs(path);
  return unzipSync(new Uint8Array(readFileSync(path)));
}

async function trainWith(page: Page, method: RegExp) {
  await page.getByRole('tab', { name: /Method/ }).click();
  await page.getByRole('radio', { name: method }).check();
  await page.getByRole('tab', { name: /Train/ }).click();
  const before = await page.getByTestId('run-row').count();
  await page.getByRole('button', { name: 'Start training' }).click();
  await expect.poll(() => page.getByTestId('run-row').count(), { timeout: 120_000 }).toBe(before + 1);
  const id = await page.getByTestId('run-row').first().getAttribute('data-run');
  await expect
    .poll(() => page.getByTestId('train-progress').textContent(), { timeout: 300_000, interval: 1000 })
    .toMatch(new RegExp(`Run ${id}[\\s\\S]*Finished`));
  expect(await page.getByTestId('train-step').textContent()).toMatch(/^2 \/ 2$/);
}

describe('studio: QLoRA and full fine-tuning', () => {
  let browser: Browser;
  let page: Page;
  let errors: string[];

  beforeAll(async () => {
    const model = await writeTinyModel({
      dir,
      architecture: 'Qwen2ForCausalLM',
      hidden: 64,
      intermediate: 128,
      dtype: 'BF16',
      seed: 5,
      scale: 0.2,
    });
    const data = join(dir, 'tiny.jsonl');
    writeFileSync(
      data,
      Array.from({ length: 6 }, (_, i) =>
        JSON.stringify({ instruction: `Count to ${i}.`, input: '', output: `${i}.` }),
      ).join('\n') + '\n',
    );
    browser = await launch();
    ({ page, errors } = await openStudio(browser, { acceptDownloads: true }));
    await openModelFolder(page, model, /Model: local model[\s\S]*Qwen2ForCausalLM[\s\S]*matching config\.json/);
    await addDataFile(page, data);
    // 6 rows, batch 2, accumulation 2: 3 micro-batches = 2 optimizer steps.
    await fillMethod(page, {
      'Learning rate': '0.001',
      Epochs: '1',
      'Cutoff length': '32',
      'Batch size': '2',
      'Gradient accumulation': '2',
      'Logging steps': '1',
      'Save steps': '100',
    });
  });
  afterAll(async () => {
    await browser?.close();
  });

  it('trains QLoRA (NF4 base) and exports its adapter', async () => {
    await trainWith(page, /QLoRA/);
    expect(await page.getByTestId('memory-ledger').textContent()).toMatch(/Adapters/);
    await page.getByRole('tab', { name: /Export/ }).click();
    await page.getByRole('button', { name: 'Export adapter' }).click();
    await page.getByTestId('export-peft').waitFor({ timeout: 120_000 });
    const files = await download(page, 'export-peft');
    const cfg = parseAdapterConfig(
      new TextDecoder().decode(files[Object.keys(files).find((n) => n.endsWith('adapter_config.json'))!]),
    );
    expect(cfg.targetModules.length).toBe(7);
    await screenshot(page, 'studio-11-qlora-export');
  });

  it('trains all weights (full) and exports them merged; chat explains there is no separate base', async () => {
    await trainWith(page, /^Full/);
    expect(await page.getByTestId('memory-ledger').textContent()).toMatch(/Optimizer state/);
    await page.getByRole('tab', { name: /Chat/ }).click();
    await page.getByLabel('Max new tokens').fill('4');
    await page.getByLabel('A/B: base vs tuned').check();
    await page.getByLabel('Message').fill('Count to 2.');
    await page.getByRole('button', { name: 'Send' }).click();
    await page
      .getByRole('alert')
      .filter({ hasText: /full fine-tuning changed the base weights/ })
      .waitFor({ timeout: 120_000 })
      .catch(async (e) => {
        await screenshot(page, 'studio-methods-failure');
        throw e;
      });
    await page.getByLabel('A/B: base vs tuned').uncheck();
    await page.getByLabel('Message').fill('Count to 2.');
    await page.getByRole('button', { name: 'Send' }).click();
    await expect
      .poll(() => page.getByTestId('answer-tuned').last().textContent(), { timeout: 120_000 })
      .toMatch(/tokens\/s/);
    await page.getByRole('tab', { name: /Export/ }).click();
    await page.getByLabel('Weight precision').selectOption('f32');
    await page.getByRole('button', { name: 'Export merged model' }).click();
    await page.getByTestId('export-merged').waitFor({ timeout: 120_000 });
    const files = await download(page, 'export-merged');
    const st = Object.keys(files).find((n) => n.endsWith('model.safetensors'))!;
    const h = await readHeader(bytesSource(files[st], st));
    expect(h.tensors.find((t) => t.name === 'model.layers.0.self_attn.q_proj.bias')?.dtype).toBe('F32');
    expect(errors.filter((e) => !/Failed to load resource/.test(e))).toEqual([]);
  });
});
