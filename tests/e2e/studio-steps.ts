// Studio steps the end-to-end tests share: a page on the studio with its errors collected, a model
// folder opened in the Model step, a data file added in the Data step (training on it instead of
// the identity_en_zh sample), and Method fields filled in.
import { basename } from 'node:path';
import { inject } from 'vitest';
import type { Browser, Page } from 'playwright';
import { collectErrors } from './browser.ts';

/** A 1200×900 page on the studio, and the page's and its workers' console errors as they come. */
export async function openStudio(
  browser: Browser,
  opts: { acceptDownloads?: boolean; before?: (page: Page) => Promise<unknown> } = {},
): Promise<{ page: Page; errors: string[] }> {
  const context = await browser.newContext({
    viewport: { width: 1200, height: 900 },
    ...(opts.acceptDownloads ? { acceptDownloads: true } : {}),
  });
  const page = await context.newPage();
  const errors = collectErrors(page);
  await opts.before?.(page);
  await page.goto(inject('baseUrl'));
  return { page, errors };
}

/** What the Model step shows for a folder whose weights match its config.json. */
export const LOCAL_MODEL_INFO = /Model: local model[\s\S]*matching config\.json/;

/** Model step: "A folder on this computer" with `files`, until the model info matches `info`. */
export async function openModelFolder(page: Page, files: string[], info: RegExp = LOCAL_MODEL_INFO): Promise<void> {
  await page.getByRole('tab', { name: /Model/ }).click();
  await page.getByLabel('A folder on this computer').check();
  await page.locator('#model-files').setInputFiles(files);
  await page.getByTestId('model-info').filter({ hasText: info }).waitFor({ timeout: 60_000 });
}

/** Data step: adds the data file at `path` and unticks the identity_en_zh sample, so the run trains on the file. */
export async function addDataFile(page: Page, path: string): Promise<void> {
  await page.getByRole('tab', { name: /Data/ }).click();
  await page.locator('[data-key="samples/identity_en_zh"]').waitFor({ timeout: 60_000 });
  await page.locator('#data-files').setInputFiles([path]);
  await page.locator(`[data-key$="/${basename(path)}"]`).waitFor({ timeout: 60_000 });
  await page.getByLabel('Train on identity_en_zh').uncheck();
}

/** Method step: fills each labelled field (label → value) in order. */
export async function fillMethod(page: Page, fields: Record<string, string>): Promise<void> {
  await page.getByRole('tab', { name: /Method/ }).click();
  for (const [label, v] of Object.entries(fields)) await page.getByLabel(label, { exact: true }).fill(v);
}
