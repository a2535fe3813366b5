import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium, type Browser, type Page } from 'playwright';
import { CHROMIUM_PATH, CHROMIUM_WEBGPU_ARGS } from '../../scripts/chromium.ts';

export const ARTIFACTS = join(import.meta.dirname, '../artifacts');

export async function launch(opts: { webgpu?: boolean } = {}): Promise<Browser> {
  const args =
    opts.webgpu === false ? CHROMIUM_WEBGPU_ARGS.filter((a) => !/webgpu|vulkan|angle/i.test(a)) : CHROMIUM_WEBGPU_ARGS;
  return chromium.launch({ executablePath: CHROMIUM_PATH, args });
}

/** Saves a full-page screenshot under tests/artifacts/ (kept by CI as evidence). */
export async function screenshot(page: Page, name: string): Promise<string> {
  mkdirSync(ARTIFACTS, { recursive: true });
  const path = join(ARTIFACTS, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  return path;
}

/** Collects page and worker console errors so a failing test shows them. */
export function collectErrors(page: Page): string[] {
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error') errors.push(`console: ${m.text()}`);
  });
  return errors;
}
