// GPU memory in the studio, in Chromium with SwiftShader WebGPU on a tiny Llama made by the test:
// a budget below the run's plan is met by auto-fit at Start (the run says what it changed), and an
// out-of-memory error mid-run (what the device reports when another app takes GPU memory; the
// engine Worker's device is made to report one, once) is retried once with the next smaller plan
// from the last checkpoint, and the run finishes.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Browser, Page } from 'playwright';
import { launch, screenshot, ARTIFACTS } from './browser.ts';
import { addDataFile, fillMethod, openModelFolder, openStudio } from './studio-steps.ts';
import { writeTinyModel } from './tiny-model.ts';

const dir = join(ARTIFACTS, 'studio-memory');

// Injected at the top of the engine Worker: the device's popErrorScope answers one
// 'out-of-memory' scope with a GPUOutOfMemoryError once `self.__tabtuneOomOnce` is set.
const OOM_ONCE = `{const push=GPUDevice.prototype.pushErrorScope,pop=GPUDevice.prototype.popErrorScope,st=new WeakMap();
GPUDevice.prototype.pushErrorScope=function(f){if(!st.has(this))st.set(this,[]);st.get(this).push(f);return push.call(this,f);};
GPUDevice.prototype.popErrorScope=async function(){const f=st.get(this)?.pop();const e=await pop.call(this);
if(!e&&f==='out-of-memory'&&self.__tabtuneOomOnce){self.__tabtuneOomOnce=false;return new GPUOutOfMemoryError('simulated: another application took the GPU memory');}return e;};}\n`;

/** Bytes of a size the studio printed ("2.41 MiB"). */
function bytesOf(text: string): number {
  const m = /([\d.]+) (B|KiB|MiB|GiB)/.exec(text);
  if (!m) throw new Error(`no size in ${text}`);
  return Number(m[1]) * 1024 ** ['B', 'KiB', 'MiB', 'GiB'].indexOf(m[2]);
}

describe('studio: a run fitted to the GPU memory budget, and retried after running out of memory', () => {
  let browser: Browser;
  let page: Page;
  let errors: string[];

  beforeAll(async () => {
    const model = await writeTinyModel({
      dir: join(dir, 'model'),
      architecture: 'LlamaForCausalLM',
      hidden: 32,
      intermediate: 64,
      dtype: 'F32',
      seed: 17,
      scale: 0.2,
    });
    const data = join(dir, 'colors.jsonl');
    const rows = Array.from({ length: 16 }, (_, i) => ({
      instruction: `Name color ${i % 4}.`,
      input: '',
      output: ['Red.', 'Green.', 'Blue.', 'Gold.'][i % 4],
    }));
    writeFileSync(data, rows.map((r) => JSON.stringify(r)).join('\n') + '\n');
    browser = await launch();
    ({ page, errors } = await openStudio(browser, {
      before: (p) =>
        p.route(/\/assets\/worker-[^/]*\.js$/, async (route) => {
          const res = await route.fetch();
          await route.fulfill({ response: res, body: OOM_ONCE + (await res.text()) });
        }),
    }));
    await openModelFolder(page, model);
    await addDataFile(page, data);
    await fillMethod(page, {
      'Learning rate': '0.01',
      Epochs: '1',
      // Every row is longer than this, so the run's plan (its longest row) is the Method step's (cutoff_len).
      'Cutoff length': '16',
      'Batch size': '2',
      'Gradient accumulation': '1',
      'Logging steps': '1',
      'Save steps': '2',
      'Warmup steps': '0',
    });
    await page.getByLabel('Gradient checkpointing', { exact: true }).uncheck();
  });
  afterAll(async () => {
    await browser?.close();
  });

  it('auto-fits a run to a budget below its plan and says what it changed', async () => {
    const total = page.getByTestId('plan-total');
    await total.filter({ hasText: /within your/ }).waitFor({ timeout: 60_000 });
    const planned = bytesOf((await total.textContent())!);
    // Just below the plan: auto-fit must act, and smaller plans remain for the retry.
    await page.locator('#budget').fill(String((planned * 0.99) / 2 ** 30));
    await total.filter({ hasText: /more than your/ }).waitFor({ timeout: 60_000 });
    await page.getByRole('tab', { name: /Train/ }).click();
    await page.getByRole('button', { name: 'Start training' }).click();
    const fit = page.getByTestId('train-memory-fit');
    await fit.waitFor({ timeout: 120_000 });
    const text = (await fit.textContent())!;
    // The planner's steps in order, cheapest first, as many as the budget needs.
    expect(text).toMatch(
      /^Fitted to your GPU memory budget of [\d.]+ [KM]iB: turn on gradient checkpointing[;.].* Predicted peak/,
    );
    expect(bytesOf(text.split('Predicted peak')[1])).toBeLessThanOrEqual(planned * 0.99);
  });

  it('retries once with the next smaller plan after an out-of-memory error, from the last checkpoint', async () => {
    await expect
      .poll(async () => Number((await page.getByTestId('train-checkpoint').textContent()) ?? 'NaN'), {
        timeout: 300_000,
        interval: 300,
      })
      .toBeGreaterThanOrEqual(2);
    const worker = page.workers().find((w) => /\/assets\/worker-/.test(w.url()));
    expect(worker).toBeDefined();
    await worker!.evaluate(() => ((self as unknown as { __tabtuneOomOnce: boolean }).__tabtuneOomOnce = true));
    const retry = page.getByTestId('train-memory-retry');
    await retry.waitFor({ timeout: 120_000 });
    expect(await retry.textContent()).toMatch(
      /Out of GPU memory at step \d+: retried once from the last checkpoint with the next smaller plan \(.+; predicted peak [\d.]+ [KM]iB\)/,
    );
    await screenshot(page, 'studio-memory-retry');
    await expect
      .poll(() => page.getByTestId('train-status').textContent(), { timeout: 300_000, interval: 500 })
      .toMatch(/Finished/);
    expect(await page.getByTestId('train-step').textContent()).toMatch(/8 \/ 8/);
    expect(errors).toEqual([]);
  });
});
