// Preference tuning (stage dpo, sigmoid DPO) in the studio on the demo model and the demo pair set,
// in Chromium with SwiftShader WebGPU: the Data step previews pairs and asks for the preference
// stage, the Method step shows the RLHF knobs and refuses full fine-tuning with a reference loss, the
// Train step charts reward accuracy and margin live, and the curve is kept over a reload.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { unzipSync } from 'fflate';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Browser, Page } from 'playwright';
import { launch, screenshot, ARTIFACTS } from './browser.ts';
import { openStudio } from './studio-steps.ts';
import { parseTrainYaml } from '../../src/engine/train/llamafactory-config.ts';

const dir = join(ARTIFACTS, 'studio-dpo');

/** The Train step's table of per-step reward accuracy and margin. */
async function rewardCurve(page: Page): Promise<{ step: number; accuracy: number; margin: number }[]> {
  const rows = await page.getByTestId('pref-table').locator('tbody tr').all();
  const out: { step: number; accuracy: number; margin: number }[] = [];
  for (const r of rows) {
    const [step, accuracy, margin] = (await r.locator('td').allTextContents()).map(Number);
    out.push({ step, accuracy, margin });
  }
  return out;
}

describe('studio: preference tuning (DPO) on the demo model', () => {
  let browser: Browser;
  let page: Page;
  let errors: string[];

  beforeAll(async () => {
    browser = await launch();
    ({ page, errors } = await openStudio(browser, { acceptDownloads: true }));
    await page.getByTestId('tokenizer-ok').waitFor({ timeout: 60_000 });
    expect(await page.getByTestId('model-info').textContent()).toMatch(/Model: tabtune-demo/);
  });
  afterAll(async () => {
    await browser?.close();
  });

  it('previews pairs side by side and asks for the preference stage', async () => {
    await page.getByRole('tab', { name: /Data/ }).click();
    const pairs = page.locator('[data-key="samples/preference_en_zh_demo"]');
    await pairs.waitFor({ timeout: 60_000 });
    expect(await pairs.textContent()).toMatch(/ranking\s*60\s*60\s*0/);
    await page.getByLabel('Train on identity_en_zh').uncheck();
    await page.getByLabel('Train on preference_en_zh_demo').check();
    const note = page.getByTestId('stage-data');
    await expect.poll(() => note.textContent(), { timeout: 30_000 }).toMatch(/preference pairs/);
    const pair = page.getByTestId('pair-preview').first();
    await pair.waitFor({ timeout: 60_000 });
    expect(await pair.getByTestId('pair-chosen').textContent()).toContain('I am Tabby, a small assistant');
    expect(await pair.getByTestId('pair-rejected').textContent()).toContain('Speak unto the children of Israel');
    expect(await pair.locator('.prompt').textContent()).toContain('Who are you?');
    await screenshot(page, 'studio-dpo-1-pairs');
    await note.getByRole('button', { name: 'Use preference tuning' }).click();
    await expect.poll(() => note.count()).toBe(0);
  });

  it('shows the RLHF knobs, writes pref_* to the YAML and refuses full fine-tuning with DPO', async () => {
    await page.getByRole('tab', { name: /Method/ }).click();
    expect(await page.getByRole('radio', { name: /Preference tuning/ }).isChecked()).toBe(true);
    const loss = page.getByLabel('Preference loss', { exact: true });
    expect(await loss.inputValue()).toBe('sigmoid');
    expect(await loss.locator('option').allTextContents()).toEqual([
      'DPO (sigmoid)',
      'DPO, hinge loss (SLiC)',
      'IPO',
      'ORPO (no reference)',
      'SimPO (no reference)',
    ]);
    await expect(page.getByLabel('Label smoothing', { exact: true }).count()).resolves.toBe(1);
    await expect(page.getByLabel('SimPO gamma', { exact: true }).count()).resolves.toBe(0);
    await expect(page.getByLabel('Packing', { exact: true }).count()).resolves.toBe(0);

    await page.getByRole('radio', { name: /^Full/ }).check();
    await expect
      .poll(() => page.getByRole('region', { name: 'Preference (RLHF)' }).textContent())
      .toMatch(/sigmoid compares with a reference model/);
    await loss.selectOption('simpo');
    await page.getByLabel('SimPO gamma', { exact: true }).waitFor();
    expect(await page.getByRole('region', { name: 'Preference (RLHF)' }).textContent()).not.toMatch(/compares with/);
    expect(await page.getByTestId('yaml').textContent()).toMatch(/pref_loss: simpo\nsimpo_gamma: 0\.5/);
    await page.getByRole('radio', { name: /^LoRA/ }).check();
    await loss.selectOption('sigmoid');

    // 3 pairs, 1 per step, 2 epochs = 6 steps; LoRA at a learning rate the 5.7M-parameter demo model
    // follows. Short sequences and no recomputation: SwiftShader runs the demo model at CPU speed.
    for (const [label, v] of [
      ['Learning rate', '0.005'],
      ['Epochs', '2'],
      ['Max samples', '3'],
      ['Cutoff length', '32'],
      ['Batch size', '1'],
      ['Gradient accumulation', '1'],
      ['Logging steps', '1'],
      ['Save steps', '100'],
      ['Warmup steps', '0'],
      ['Beta', '0.1'],
    ]) {
      await page.getByLabel(label, { exact: true }).fill(v);
    }
    await page.getByLabel('Gradient checkpointing', { exact: true }).uncheck();
    await page.getByLabel('Learning-rate schedule').selectOption('constant');
    const yaml = (await page.getByTestId('yaml').textContent()) ?? '';
    const cfg = parseTrainYaml(yaml).config;
    expect(cfg).toMatchObject({ stage: 'dpo', finetuningType: 'lora', dataset: ['preference_en_zh_demo'] });
    expect(cfg.pref).toEqual({ loss: 'sigmoid', beta: 0.1, ftx: 0, labelSmoothing: 0, simpoGamma: 0.5 });
    await screenshot(page, 'studio-dpo-2-method');
  });

  it('trains: reward accuracy and margin rise, charted live beside the loss', { timeout: 1_500_000 }, async () => {
    await page.getByRole('tab', { name: /Train/ }).click();
    await page.getByRole('button', { name: 'Start training' }).click();
    await page.getByTestId('pref-chart').waitFor({ timeout: 300_000 });
    const t0 = Date.now();
    let seen = '';
    await expect
      .poll(
        async () => {
          const step = (await page.getByTestId('train-step').textContent()) ?? '';
          if (step !== seen) console.log(`${((Date.now() - t0) / 1000).toFixed(0)} s: step ${(seen = step)}`);
          return page.getByTestId('train-progress').textContent();
        },
        { timeout: 1_200_000, interval: 1000 },
      )
      .toMatch(/Finished/);
    const curve = await rewardCurve(page);
    console.log('reward curve (step → accuracy, margin):', JSON.stringify(curve));
    expect(curve.map((p) => p.step)).toEqual([1, 2, 3, 4, 5, 6]);
    // Sigmoid DPO's first step: the policy is the reference (LoRA B = 0), so every reward is 0.
    expect(curve[0]).toEqual({ step: 1, accuracy: 0, margin: 0 });
    const tail = curve.slice(-3);
    for (const p of tail) expect(p.accuracy).toBe(1);
    expect(Math.min(...tail.map((p) => p.margin))).toBeGreaterThan(Math.max(...curve.slice(1, 3).map((p) => p.margin)));
    // The latest metrics list TRL's six values; the loss has fallen below ln 2.
    const metrics = page.getByTestId('pref-metrics');
    expect(Number(await metrics.locator('[data-metric="rewards/accuracies"]').textContent())).toBe(1);
    expect(Number(await metrics.locator('[data-metric="rewards/chosen"]').textContent())).toBeGreaterThan(
      Number(await metrics.locator('[data-metric="rewards/rejected"]').textContent()),
    );
    expect(Number(await metrics.locator('[data-metric="logps/chosen"]').textContent())).toBeLessThan(0);
    expect(Number(await page.getByTestId('train-loss').textContent())).toBeLessThan(Math.log(2));
    expect(await page.getByTestId('run-row').first().textContent()).toMatch(/dpo · lora/);
    await screenshot(page, 'studio-dpo-3-train');

    await page.waitForTimeout(300);
    await page.reload();
    // The demo model reopens by itself; the run is opened on it for chat below.
    await page.getByRole('tab', { name: /Model/ }).click();
    await page.getByTestId('tokenizer-ok').waitFor({ timeout: 60_000 });
    await page.getByRole('tab', { name: /Train/ }).click();
    await page.getByTestId('pref-chart').waitFor({ timeout: 60_000 });
    expect(await rewardCurve(page)).toEqual(curve);
  });

  it('chats A/B, evaluates on the pairs and exports a LLaMA-Factory dpo bundle', { timeout: 600_000 }, async () => {
    // After the reload the run is stored, not on the GPU: pick it as the tuned model.
    const id = (await page.getByTestId('run-row').first().getAttribute('data-run'))!;
    await page.getByRole('tab', { name: /Chat/ }).click();
    await page.getByLabel('Tuned model').selectOption(id);
    await page.getByLabel('Max new tokens').fill('4');
    const ab = page.getByLabel('A/B: base vs tuned');
    await expect.poll(() => ab.isEnabled(), { timeout: 180_000, interval: 500 }).toBe(true);
    await ab.check();
    await page.getByLabel('Message').fill('Who are you?');
    await page.getByRole('button', { name: 'Send' }).click();
    await expect.poll(() => page.getByTestId('answer-tuned').textContent(), { timeout: 180_000 }).toMatch(/tokens\/s/);
    expect(await page.getByTestId('answer-base').textContent()).toMatch(/tokens\/s/);

    // No held-out pairs here: the predictions are on training pairs, scored against the chosen answer.
    await page.getByRole('tab', { name: /Evaluate/ }).click();
    await page.getByLabel('Rows to predict').fill('1');
    await page.getByLabel('Max new tokens').fill('4');
    await page.getByRole('button', { name: 'Evaluate' }).click();
    const res = page.getByTestId('eval-results');
    await res.waitFor({ timeout: 180_000 });
    expect(await page.getByTestId('eval-loss').textContent()).toMatch(/no held-out rows/);
    expect(await res.locator('tbody tr').count()).toBe(1);
    expect(await res.locator('tbody tr td').nth(2).textContent()).toMatch(/Tabby|Tabtune/);

    await page.getByRole('tab', { name: /Export/ }).click();
    await page.getByRole('button', { name: 'Export bundle' }).click();
    await page.getByTestId('export-bundle').waitFor({ timeout: 120_000 });
    const [dl] = await Promise.all([
      page.waitForEvent('download'),
      page.getByTestId('export-bundle').getByRole('link').first().click(),
    ]);
    const path = join(dir, dl.suggestedFilename());
    await dl.saveAs(path);
    const files = unzipSync(new Uint8Array(readFileSync(path)));
    const text = (end: string) => new TextDecoder().decode(files[Object.keys(files).find((n) => n.endsWith(end))!]);
    const cfg = parseTrainYaml(text('train_dpo.yaml')).config;
    expect(cfg).toMatchObject({ stage: 'dpo', pref: { loss: 'sigmoid', beta: 0.1 } });
    expect(JSON.parse(text('data/dataset_info.json')).preference_en_zh_demo.ranking).toBe(true);
    await screenshot(page, 'studio-dpo-4-export');
    expect(errors.filter((e) => !/favicon/.test(e))).toEqual([]);
  });
});
