// The studio's Model → Data → Method flow in Chromium (SwiftShader), with a tiny model made here.
import { mkdirSync, writeFileSync, readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { Browser, BrowserContext, Page } from 'playwright';
import { collectErrors, launch, screenshot, ARTIFACTS } from './browser.ts';
import { writeTinyModel } from './tiny-model.ts';

const root = join(import.meta.dirname, '../..');
const modelDir = join(ARTIFACTS, 'studio-tiny-model');

function makeDataFiles(): { valid: string; broken: string } {
  const dir = join(ARTIFACTS, 'studio-data');
  mkdirSync(dir, { recursive: true });
  const valid = join(dir, 'my_pets.jsonl');
  const rows = Array.from({ length: 12 }, (_, i) => ({
    instruction: `Name pet number ${i}.`,
    input: '',
    output: `Pet ${i} is called Biscuit ${i}.`,
  }));
  writeFileSync(valid, rows.map((r) => JSON.stringify(r)).join('\n') + '\n');
  return { valid, broken: join(root, 'datasets/broken/sharegpt_turn_errors.json') };
}

async function openTab(page: Page, name: RegExp) {
  await page.getByRole('tab', { name }).click();
}

describe('studio: model, data, method', () => {
  let browser: Browser;
  let context: BrowserContext;
  let page: Page;
  let errors: string[];
  let modelFiles: string[];
  let data: { valid: string; broken: string };

  beforeAll(async () => {
    modelFiles = await writeTinyModel({
      dir: modelDir,
      architecture: 'LlamaForCausalLM',
      hidden: 32,
      intermediate: 64,
      dtype: 'BF16',
      seed: 7,
      scale: 0.1,
    });
    data = makeDataFiles();
    browser = await launch();
    context = await browser.newContext({ viewport: { width: 1200, height: 900 } });
    page = await context.newPage();
    errors = collectErrors(page);
    await page.goto(inject('baseUrl'));
  });
  afterAll(async () => {
    await browser?.close();
  });

  it('has seven labelled steps reachable with the keyboard', async () => {
    const tabs = page.getByRole('tab');
    await expect.poll(() => tabs.count()).toBe(7);
    expect(await tabs.allTextContents()).toEqual([
      '1 Model',
      '2 Data',
      '3 Method',
      '4 Train',
      '5 Chat',
      '6 Evaluate',
      '7 Export',
    ]);
    await page.getByRole('tab', { name: /Model/ }).focus();
    await page.keyboard.press('ArrowRight');
    expect(await page.getByRole('tab', { name: /Data/ }).getAttribute('aria-selected')).toBe('true');
    await expect.poll(() => page.evaluate(() => document.activeElement?.textContent)).toMatch(/Data/);
    await page.keyboard.press('End');
    expect(await page.getByRole('tab', { name: /Export/ }).getAttribute('aria-selected')).toBe('true');
    await page.keyboard.press('Home');
    expect(await page.getByRole('tab', { name: /Model/ }).getAttribute('aria-selected')).toBe('true');
  });

  it('opens the demo model offline and a tiny local model with its config and weights checked', async () => {
    await page.getByTestId('tokenizer-ok').waitFor({ timeout: 60_000 });
    expect(await page.getByTestId('model-info').textContent()).toMatch(/Model: tabtune-demo/);
    await page.getByLabel('A folder on this computer').check();
    await page.locator('#model-files').setInputFiles(modelFiles);
    await expect
      .poll(() => page.getByTestId('model-info').textContent(), { timeout: 60_000 })
      .toMatch(/Model: local model[\s\S]*LlamaForCausalLM/);
    const info = await page.getByTestId('model-info').textContent();
    expect(info).toMatch(/matching config\.json/);
    expect(info).toMatch(/Layers\s*2/);
    await screenshot(page, 'studio-1-model');
  });

  it('says clearly when a model folder is unsupported', async () => {
    const dir = join(ARTIFACTS, 'studio-bad-model');
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'config.json'), JSON.stringify({ architectures: ['GPT2LMHeadModel'], model_type: 'gpt2' }));
    await page.locator('#model-files').setInputFiles([join(dir, 'config.json')]);
    await expect
      .poll(() => page.getByTestId('model-info').textContent(), { timeout: 30_000 })
      .toMatch(/GPT2LMHeadModel[\s\S]*Pick a Llama, Qwen2\/2\.5\/3, Mistral, Gemma 2\/3, SmolLM3 or Phi-3 model/);
    // back to the tiny model for the next steps
    await page.locator('#model-files').setInputFiles(modelFiles);
    await expect
      .poll(() => page.getByTestId('model-info').textContent(), { timeout: 60_000 })
      .toMatch(/Model: local model[\s\S]*matching config\.json/);
  });

  it('preselects the demo dataset and previews rendered conversations with trained tokens marked', async () => {
    await openTab(page, /Data/);
    const demo = page.locator('[data-key="samples/identity_en_zh"]');
    await demo.waitFor({ timeout: 60_000 });
    expect(await demo.getByRole('checkbox').isChecked()).toBe(true);
    const preview = page.getByTestId('preview');
    await preview.waitFor({ timeout: 60_000 });
    expect(await preview.locator('mark').count()).toBeGreaterThan(0);
    expect(await preview.locator('mark').first().textContent()).not.toContain('<|im_start|>user');
    expect(await preview.textContent()).toContain('<|im_start|>assistant');
  });

  it('reports a broken dataset row by row and accepts a valid one', async () => {
    await page.locator('#data-files').setInputFiles([data.valid, data.broken]);
    const mine = page.locator('[data-key$="/my_pets.jsonl"]');
    await mine.waitFor({ timeout: 60_000 });
    expect(await mine.textContent()).toMatch(/alpaca\s*12\s*12\s*0/);
    const broken = page.getByRole('region', { name: /Validation report for sharegpt_turn_errors\.json/ });
    await broken.waitFor();
    const issues = broken.getByTestId('issue');
    expect(await issues.count()).toBeGreaterThan(2);
    const text = await broken.textContent();
    expect(text).toMatch(/invalid/);
    expect(text).toMatch(/sharegpt_turn_errors\.json/);
    expect(await issues.first().textContent()).toMatch(/\S+/);
    await page.getByRole('button', { name: 'Tokenize and count' }).click();
    const stats = page.getByTestId('token-stats');
    await stats.waitFor({ timeout: 120_000 });
    expect(await page.getByTestId('trained-tokens').textContent()).toMatch(/\d+ in total, \d+ trained/);
    await screenshot(page, 'studio-2-data');
  });

  it('shows LlamaBoard defaults, live YAML and the memory planner with one-click fixes', async () => {
    await openTab(page, /Method/);
    const yaml = page.getByTestId('yaml');
    await yaml.waitFor();
    const y = await yaml.textContent();
    for (const line of [
      'learning_rate: 5.0e-5',
      'num_train_epochs: 3.0',
      'cutoff_len: 2048',
      'max_samples: 100000',
      'per_device_train_batch_size: 2',
      'gradient_accumulation_steps: 8',
      'lr_scheduler_type: cosine',
      'max_grad_norm: 1.0',
      'logging_steps: 5',
      'save_steps: 100',
      'lora_rank: 8',
      'lora_alpha: 16',
      'lora_target: all',
    ]) {
      expect(y).toContain(line);
    }
    expect(y).toMatch(/dataset: identity_en_zh,my_pets\.jsonl/);
    await page.getByLabel('Learning rate').fill('1e-4');
    await expect.poll(() => yaml.textContent()).toContain('learning_rate: 1.0e-4');
    await page.getByLabel('LoRA rank').fill('0');
    await expect.poll(() => page.getByRole('alert').filter({ hasText: 'whole number' }).count()).toBeGreaterThan(0);
    await page.getByLabel('LoRA rank').fill('16');

    const planner = page.getByTestId('planner');
    await page.getByLabel('GPU memory to use (GiB)').fill('0.001');
    await expect
      .poll(() => page.getByTestId('plan-total').textContent(), { timeout: 30_000 })
      .toMatch(/more than your/);
    const fix = planner.getByRole('button').first();
    const before = await page.getByTestId('plan-total').textContent();
    await fix.click();
    await expect.poll(() => page.getByTestId('plan-total').textContent()).not.toBe(before);
    await page.getByLabel('GPU memory to use (GiB)').fill('8');
    await expect.poll(() => page.getByTestId('plan-total').textContent()).toMatch(/within your 8\.00 GiB/);
    await screenshot(page, 'studio-3-method');

    // Settings load back from a LLaMA-Factory YAML; unknown keys are reported, not dropped silently.
    const yamlPath = join(ARTIFACTS, 'studio-data', 'load_me.yaml');
    writeFileSync(
      yamlPath,
      'model_name_or_path: x/y\nstage: sft\ndo_train: true\nfinetuning_type: lora\nlora_rank: 32\nlearning_rate: 3.0e-4\nnum_train_epochs: 2.0\ndataset: identity\nmystery_key: 1\n',
    );
    await page.locator('#load-yaml').setInputFiles(yamlPath);
    await expect.poll(() => page.getByLabel('LoRA rank').inputValue()).toBe('32');
    expect(await page.getByLabel('Learning rate').inputValue()).toBe('0.0003');
    expect(await page.getByRole('status').filter({ hasText: 'load_me.yaml' }).textContent()).toMatch(/mystery_key/);
    await page.getByLabel('Learning rate').fill('1e-4');
    await page.getByLabel('LoRA rank').fill('16');
  });

  it('keeps settings, step and dropped files after a reload', async () => {
    await page.waitForTimeout(600); // settings are saved 250 ms after the last change
    await page.reload();
    await expect
      .poll(() => page.getByRole('tab', { name: /Method/ }).getAttribute('aria-selected'), { timeout: 30_000 })
      .toBe('true');
    expect(await page.getByLabel('Learning rate').inputValue()).toBe('0.0001');
    expect(await page.getByLabel('LoRA rank').inputValue()).toBe('16');
    await openTab(page, /Data/);
    await page.locator('[data-key$="/my_pets.jsonl"]').waitFor({ timeout: 60_000 });
    expect(await page.locator('[data-key$="/my_pets.jsonl"]').getByRole('checkbox').isChecked()).toBe(true);
  });

  it('switches every step to Chinese', async () => {
    await page.getByRole('button', { name: 'Language' }).click();
    await expect
      .poll(() => page.getByRole('tab').allTextContents())
      .toEqual(['1 模型', '2 数据', '3 方法', '4 训练', '5 对话', '6 评估', '7 导出']);
    await page.getByRole('tab', { name: /方法/ }).click();
    await page.getByLabel('学习率', { exact: true }).waitFor();
    await screenshot(page, 'studio-4-method-zh');
    await page.getByRole('button', { name: 'Language' }).click();
    expect(errors.filter((e) => !/Failed to load resource/.test(e))).toEqual([]);
  });

  it('downloads a hub model through its resolve URLs, caches it and reopens it after a reload without the network', async () => {
    // A fake huggingface.co serving the tiny model (Range requests included), counting requests.
    const served: string[] = [];
    const files = new Map(modelFiles.map((p) => [p.split('/').pop()!, readFileSync(p)]));
    await context.route('https://huggingface.co/**', async (route) => {
      const req = route.request();
      const m = /\/test-org\/tiny-llama\/resolve\/main\/(.+)$/.exec(req.url());
      const body = m ? files.get(decodeURIComponent(m[1])) : undefined;
      served.push(`${req.method()} ${m?.[1] ?? req.url()}`);
      const cors = {
        'access-control-allow-origin': '*',
        'access-control-expose-headers': 'content-length, content-range',
      };
      if (!body) return route.fulfill({ status: 404, body: 'Entry not found', headers: cors });
      if (req.method() === 'HEAD')
        return route.fulfill({ status: 200, headers: { ...cors, 'content-length': String(body.length) } });
      return route.fulfill({ status: 200, body, headers: { ...cors, 'content-length': String(body.length) } });
    });
    await page.getByRole('tab', { name: /Model/ }).click();
    await page.getByLabel('Hugging Face Hub').check();
    await page.getByLabel('Model id').fill('test-org/tiny-llama');
    await page.getByRole('button', { name: 'Download and open' }).click();
    await expect
      .poll(() => page.getByTestId('model-info').textContent(), { timeout: 60_000 })
      .toMatch(/Model: test-org\/tiny-llama[\s\S]*matching config\.json/);
    expect(served).toContain('GET model.safetensors');
    // The stored-models list refreshes after the download settles.
    await expect
      .poll(() => page.getByRole('region', { name: 'Models stored in this browser' }).textContent(), {
        timeout: 30_000,
      })
      .toContain('test-org/tiny-llama');
    await screenshot(page, 'studio-1b-hub');
    const before = served.length;
    await page.waitForTimeout(600);
    await page.reload();
    await expect
      .poll(() => page.getByTestId('model-info').textContent(), { timeout: 60_000 })
      .toMatch(/Model: test-org\/tiny-llama[\s\S]*matching config\.json/);
    expect(served.slice(before)).toEqual([]);
  });
  it('downloads from a mirror endpoint with bytes, speed and ETA on screen, and resumes a paused download with a Range request', async () => {
    // A slow mirror on 127.0.0.1: model.safetensors trickles out over ~12 s so progress can be watched and paused.
    const files = new Map(modelFiles.map((p) => [p.split('/').pop()!, readFileSync(p)]));
    const seen: string[] = [];
    const cors = {
      'access-control-allow-origin': '*',
      'access-control-allow-headers': 'range, authorization',
      'access-control-expose-headers': 'content-length, content-range',
    };
    const server: Server = createServer((req, res) => {
      if (req.method === 'OPTIONS') return void res.writeHead(204, cors).end();
      const m = /\/test-org\/slow-llama\/resolve\/main\/(.+)$/.exec(req.url ?? '');
      const name = m ? decodeURIComponent(m[1]) : '';
      const body = files.get(name);
      seen.push(`${req.method} ${name} ${req.headers.range ?? ''}`.trim());
      if (!body) return void res.writeHead(404, cors).end('Entry not found');
      if (req.method === 'HEAD')
        return void res.writeHead(200, { ...cors, 'content-length': String(body.length) }).end();
      const start = Number(/^bytes=(\d+)-$/.exec(req.headers.range ?? '')?.[1] ?? 0);
      const part = body.subarray(start);
      res.writeHead(start ? 206 : 200, {
        ...cors,
        'content-length': String(part.length),
        ...(start ? { 'content-range': `bytes ${start}-${body.length - 1}/${body.length}` } : {}),
      });
      if (name !== 'model.safetensors') return void res.end(part);
      const step = Math.ceil(body.length / 60);
      let at = 0;
      const timer = setInterval(() => {
        if (res.destroyed || at >= part.length) {
          clearInterval(timer);
          if (!res.destroyed) res.end();
          return;
        }
        res.write(part.subarray(at, at + step));
        at += step;
      }, 200);
      res.on('close', () => clearInterval(timer));
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as { port: number }).port;
    try {
      await page.getByRole('tab', { name: /Model/ }).click();
      await page.getByLabel('Hugging Face Hub').check();
      await page.getByLabel('Model id').fill('test-org/slow-llama');
      await page.getByLabel('Hub endpoint').fill(`http://127.0.0.1:${port}/`);
      await page.getByRole('button', { name: 'Download and open' }).click();
      const progress = page.getByTestId('download-progress');
      await expect
        .poll(() => progress.textContent(), { timeout: 60_000 })
        .toMatch(
          /model\.safetensors \(file \d of \d\): [\d.]+ (B|KiB|MiB) of [\d.]+ (KiB|MiB) · [\d.]+ (B|KiB|MiB)\/s · \d+:\d\d left/,
        );
      const value = await progress.getByRole('progressbar').getAttribute('value');
      expect(Number(value)).toBeGreaterThan(0);
      expect(Number(value)).toBeLessThan(100);
      await screenshot(page, 'studio-1c-hub-progress');
      await page.getByRole('button', { name: 'Pause download' }).click();
      await page.getByRole('alert').filter({ hasText: 'resume where it stopped' }).waitFor({ timeout: 30_000 });
      await page.getByRole('button', { name: 'Download and open' }).click();
      await expect
        .poll(() => page.getByTestId('model-info').textContent(), { timeout: 120_000 })
        .toMatch(/Model: test-org\/slow-llama[\s\S]*matching config\.json/);
      const resumed = seen.filter((l) => /^GET model\.safetensors bytes=\d+-$/.test(l));
      expect(resumed.length, seen.join('\n')).toBeGreaterThan(0);
      expect(Number(/bytes=(\d+)-/.exec(resumed[0])![1])).toBeGreaterThan(0);
    } finally {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
      await page.getByLabel('Hub endpoint').fill('https://huggingface.co');
    }
  });
});
