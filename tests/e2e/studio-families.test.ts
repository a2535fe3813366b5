// The newer small-model families through the studio, each on a tiny model made by the test
// (demo tokenizer, random weights, every feature of the family switched on: Gemma 3's sliding and
// global layers, Gemma 2's soft-capping, Phi-3's fused projections and partial rotary, SmolLM3's
// NoPE layer): open it, train two LoRA steps, chat with the tuned model, and export the adapter
// under PEFT's module names.
import { writeFileSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { unzipSync } from 'fflate';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Browser, Page } from 'playwright';
import { launch, screenshot, ARTIFACTS } from './browser.ts';
import { addDataFile, fillMethod, openModelFolder, openStudio } from './studio-steps.ts';
import { writeTinyModel, type TinyModel } from './tiny-model.ts';
import { parseAdapterConfig } from '../../src/io/peft.ts';

const dir = join(ARTIFACTS, 'studio-families');

const FAMILIES: { arch: TinyModel['architecture']; modules: string[] }[] = [
  {
    arch: 'Gemma3ForCausalLM',
    modules: ['down_proj', 'gate_proj', 'k_proj', 'o_proj', 'q_proj', 'up_proj', 'v_proj'],
  },
  {
    arch: 'Gemma2ForCausalLM',
    modules: ['down_proj', 'gate_proj', 'k_proj', 'o_proj', 'q_proj', 'up_proj', 'v_proj'],
  },
  { arch: 'Phi3ForCausalLM', modules: ['down_proj', 'gate_up_proj', 'o_proj', 'qkv_proj'] },
  {
    arch: 'SmolLM3ForCausalLM',
    modules: ['down_proj', 'gate_proj', 'k_proj', 'o_proj', 'q_proj', 'up_proj', 'v_proj'],
  },
];

describe('studio: Gemma 3, Gemma 2, Phi-3 and SmolLM3 train, chat and export', () => {
  let browser: Browser;
  let page: Page;
  let errors: string[];

  beforeAll(async () => {
    const data = join(dir, 'tiny.jsonl');
    const { mkdirSync } = await import('node:fs');
    mkdirSync(dir, { recursive: true });
    writeFileSync(
      data,
      Array.from({ length: 6 }, (_, i) =>
        JSON.stringify({ instruction: `Spell the number ${i} in words, please.`, input: '', output: `It is ${i}.` }),
      ).join('\n') + '\n',
    );
    browser = await launch();
    ({ page, errors } = await openStudio(browser, { acceptDownloads: true }));
    await addDataFile(page, data);
    // 6 rows, batch 2, accumulation 2: 3 micro-batches = 2 optimizer steps; rows longer than the window.
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

  for (const [i, f] of FAMILIES.entries()) {
    it(`${f.arch}: opens, trains 2 LoRA steps, chats and exports its adapter`, async () => {
      const model = await writeTinyModel({
        dir: join(dir, f.arch),
        architecture: f.arch,
        hidden: 64,
        intermediate: 96,
        dtype: 'BF16',
        seed: 31 + i,
        scale: 0.2,
      });
      await openModelFolder(page, model, new RegExp(`${f.arch}[\\s\\S]*matching config\\.json`));
      await page.getByRole('tab', { name: /Train/ }).click();
      const before = await page.getByTestId('run-row').count();
      await page.getByRole('button', { name: 'Start training' }).click();
      await expect.poll(() => page.getByTestId('run-row').count(), { timeout: 120_000 }).toBe(before + 1);
      await expect
        .poll(() => page.getByTestId('train-progress').textContent(), { timeout: 300_000, interval: 1000 })
        .toMatch(/Finished/);
      expect(await page.getByTestId('train-step').textContent()).toMatch(/^2 \/ 2$/);
      expect(
        Number(
          await page
            .getByTestId('train-loss')
            .textContent()
            .then((t) => t!.split(' ')[0]),
        ),
      ).toBeGreaterThan(0);
      await page.getByRole('tab', { name: /Chat/ }).click();
      await page.getByLabel('Max new tokens').fill('4');
      await page.getByLabel('Message').fill('Spell the number 2 in words, please.');
      await page.getByRole('button', { name: 'Send' }).click();
      await expect
        .poll(() => page.getByTestId('answer-tuned').last().textContent(), { timeout: 120_000 })
        .toMatch(/tokens\/s/);
      await page.getByRole('tab', { name: /Export/ }).click();
      await page.getByRole('button', { name: 'Export adapter' }).click();
      await page.getByTestId('export-peft').waitFor({ timeout: 120_000 });
      const [dl] = await Promise.all([
        page.waitForEvent('download'),
        page.getByTestId('export-peft').getByRole('link').first().click(),
      ]);
      const path = join(dir, `${f.arch}-${dl.suggestedFilename()}`);
      await dl.saveAs(path);
      const files = unzipSync(new Uint8Array(readFileSync(path)));
      const cfg = parseAdapterConfig(
        new TextDecoder().decode(files[Object.keys(files).find((n) => n.endsWith('adapter_config.json'))!]),
      );
      expect([...cfg.targetModules].sort()).toEqual(f.modules);
      await screenshot(page, `studio-families-${f.arch}`);
      expect(errors).toEqual([]);
    });
  }
});
