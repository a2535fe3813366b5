import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { Browser } from 'playwright';
import { collectErrors, launch, screenshot } from './browser.ts';

describe('the studio finds WebGPU from its Worker', () => {
  let browser: Browser;
  beforeAll(async () => {
    browser = await launch();
  });
  afterAll(async () => {
    await browser?.close();
  });

  it('shows the adapter, its limits and a passing GPU self-test', async () => {
    const page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
    const errors = collectErrors(page);
    // Init scripts run in the page's main realm only, not in Workers: a call here means the UI thread touched the GPU.
    await page.addInitScript(() => {
      const gpu = navigator.gpu;
      const original = gpu?.requestAdapter.bind(gpu);
      if (gpu && original) {
        gpu.requestAdapter = (o?: GPURequestAdapterOptions) => {
          (window as unknown as { __tabtuneMainThreadGpu?: boolean }).__tabtuneMainThreadGpu = true;
          return original(o);
        };
      }
    });
    await page.goto(inject('baseUrl'));
    // Folded once the self-test passes; the summary line already names the adapter.
    await expect
      .poll(() => page.getByTestId('gpu-status').textContent(), { timeout: 120_000 })
      .toMatch(/self-test passed \(software adapter/);
    await page.getByText('Your GPU and WebGPU self-test').click();
    const panel = page.getByTestId('adapter-panel');
    await panel.waitFor({ timeout: 120_000 });
    await expect.poll(() => page.getByTestId('adapter-architecture').textContent()).toMatch(/swiftshader/i);
    expect(await page.getByTestId('adapter-vendor').textContent()).toMatch(/google/i);
    expect(await page.getByTestId('selftest').textContent()).toMatch(/matmul 64³/);
    expect(await panel.textContent()).toContain('maxStorageBufferBindingSize');
    expect(
      await page.evaluate(
        () => (window as unknown as { __tabtuneMainThreadGpu?: boolean }).__tabtuneMainThreadGpu ?? false,
      ),
    ).toBe(false);
    await screenshot(page, 'adapter-panel');
    expect(errors).toEqual([]);
  });

  it('switches the UI to Chinese', async () => {
    const page = await browser.newPage();
    await page.goto(inject('baseUrl'));
    await page.getByRole('button', { name: 'Language' }).click();
    await expect.poll(() => page.getByRole('heading', { level: 2 }).first().textContent()).toBe('模型');
    await expect
      .poll(() => page.locator('summary').first().textContent(), { timeout: 120_000 })
      .toMatch(/^你的 GPU 与 WebGPU 自检 — .*自检通过/);
    await screenshot(page, 'adapter-panel-zh');
  });
});

describe('without WebGPU', () => {
  it('tells the user what to do instead of a blank page', async () => {
    const browser = await launch({ webgpu: false });
    try {
      const page = await browser.newPage();
      // Hide WebGPU in every realm (the Worker included) the way an unsupported browser would.
      // Only scripts are rewritten: routing everything would let a background model fetch outlive the browser.
      await page.route(/\.m?js(\?|$)/, async (route) => {
        const res = await route.fetch();
        const body = `try{Object.defineProperty(Object.getPrototypeOf(navigator),'gpu',{get:()=>undefined});}catch{}\n${await res.text()}`;
        await route.fulfill({ response: res, body });
      });
      await page.goto(inject('baseUrl'));
      const alert = page.getByTestId('no-webgpu');
      await alert.waitFor({ timeout: 60_000 });
      expect(await alert.textContent()).toMatch(/WebGPU is not available here[\s\S]*Chrome/);
      expect(await page.getByRole('button', { name: 'Try again' }).isVisible()).toBe(true);
      await screenshot(page, 'no-webgpu');
      await page.unrouteAll({ behavior: 'ignoreErrors' });
    } finally {
      await browser.close();
    }
  });
});
