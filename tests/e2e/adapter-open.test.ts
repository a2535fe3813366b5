// A PEFT adapter written outside Tabtune (by PyTorch, in PEFT's file layout) opened in the studio
// on a tiny Llama: chat A/B against the base, evaluate, export merged (checked against
// W + (α/r)·B·A), reload (the adapter is kept), continue training from it; and an adapter made for
// another base is refused with the tensor named.
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { unzipSync } from 'fflate';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Browser, Page } from 'playwright';
import { launch, screenshot, ARTIFACTS } from './browser.ts';
import { addDataFile, fillMethod, openModelFolder, openStudio } from './studio-steps.ts';
import { writeTinyModel } from './tiny-model.ts';
import { bytesSource } from '../../src/io/byte-source.ts';
import { SafetensorsFile } from '../../src/io/safetensors.ts';
import { parseAdapterConfig } from '../../src/io/peft.ts';
import { startHubStandin, type HubStandin } from '../hub-standin/server.ts';

const dir = join(ARTIFACTS, 'adapter-open');
const R = 4;
const ALPHA = 8;
const TOKEN = 'hf_alicewritetoken0123';

/**
 * Writes a PEFT LoRA adapter folder with PyTorch (peft itself is not installed here): the
 * adapter_config.json fields and the `base_model.model.<module>.lora_A/B.weight` keys that peft's
 * save_pretrained writes (src/peft/utils/save_and_load.py), A [r, in], B [out, r], F32; B is
 * random instead of zeros so the adapter changes the model.
 */
function writePeftAdapter(out: string, o: { hidden: number; layers: number; base: string; seed: number }): string[] {
  mkdirSync(out, { recursive: true });
  const script = String.raw`
import json, struct, sys, torch
out, hidden, layers, base, seed, r, alpha = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5]), int(sys.argv[6]), float(sys.argv[7])
torch.manual_seed(seed)
# The tiny model: 4 heads of hidden/4, 2 KV heads, so v_proj is [hidden/2, hidden].
shapes = {"q_proj": (hidden, hidden), "v_proj": (hidden // 2, hidden)}
tensors = {}
for l in range(layers):
    for m, (o, i) in shapes.items():
        key = f"base_model.model.model.layers.{l}.self_attn.{m}"
        tensors[f"{key}.lora_A.weight"] = (torch.rand(r, i) * 2 - 1) / i ** 0.5
        tensors[f"{key}.lora_B.weight"] = torch.randn(o, r) * 0.5
header, data, at = {}, b"", 0
for k in sorted(tensors):
    b = tensors[k].contiguous().numpy().astype("<f4").tobytes()
    header[k] = {"dtype": "F32", "shape": list(tensors[k].shape), "data_offsets": [at, at + len(b)]}
    data += b
    at += len(b)
h = json.dumps(header, separators=(",", ":")).encode()
h += b" " * (-len(h) % 8)
open(f"{out}/adapter_model.safetensors", "wb").write(struct.pack("<Q", len(h)) + h + data)
json.dump({"alpha_pattern": {}, "auto_mapping": None, "base_model_name_or_path": base, "bias": "none",
  "fan_in_fan_out": False, "inference_mode": True, "init_lora_weights": True, "layers_pattern": None,
  "layers_to_transform": None, "lora_alpha": alpha, "lora_dropout": 0.05, "modules_to_save": None,
  "peft_type": "LORA", "r": r, "rank_pattern": {}, "revision": None, "target_modules": ["q_proj", "v_proj"],
  "task_type": "CAUSAL_LM", "use_dora": False, "use_rslora": False}, open(f"{out}/adapter_config.json", "w"), indent=2)
`;
  const p = spawnSync(
    '/usr/bin/python3',
    ['-c', script, out, String(o.hidden), String(o.layers), o.base, String(o.seed), String(R), String(ALPHA)],
    { encoding: 'utf8' },
  );
  if (p.status !== 0) throw new Error(`python adapter writer failed: ${p.stderr}`);
  return ['adapter_config.json', 'adapter_model.safetensors'].map((f) => join(out, f));
}

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

async function f32(file: Uint8Array, name: string): Promise<{ data: Float32Array; shape: number[] }> {
  const st = await SafetensorsFile.open(bytesSource(file, name));
  const raw = await st.readTensor(name);
  expect(raw.dtype).toBe('F32');
  return { data: new Float32Array(raw.bytes.slice().buffer), shape: raw.shape };
}

async function download(page: Page, testid: string): Promise<Uint8Array> {
  const link = page.getByTestId(testid).getByRole('link').first();
  const [dl] = await Promise.all([page.waitForEvent('download'), link.click()]);
  const path = join(dir, dl.suggestedFilename());
  await dl.saveAs(path);
  return new Uint8Array(readFileSync(path));
}

describe('studio: open a PEFT adapter', () => {
  let browser: Browser;
  let page: Page;
  let errors: string[];
  let model: string[];
  let adapter: string[];
  let wrong: string[];
  let hub: HubStandin;
  let mergedZip: Record<string, Uint8Array>;

  beforeAll(async () => {
    mkdirSync(dir, { recursive: true });
    hub = await startHubStandin({ tokens: { [TOKEN]: 'alice' }, existing: [] });
    model = await writeTinyModel({
      dir: join(dir, 'tiny-llama'),
      architecture: 'LlamaForCausalLM',
      hidden: 32,
      intermediate: 64,
      dtype: 'F32',
      seed: 5,
      scale: 0.2,
    });
    adapter = writePeftAdapter(join(dir, 'tiny-lora'), { hidden: 32, layers: 2, base: 'local model', seed: 1 });
    wrong = writePeftAdapter(join(dir, 'wide-lora'), { hidden: 48, layers: 2, base: 'someone/wide-llama', seed: 2 });
    const data = makeData();
    browser = await launch();
    ({ page, errors } = await openStudio(browser, { acceptDownloads: true }));
    await openModelFolder(page, model);
    await addDataFile(page, data);
    await fillMethod(page, {
      'Learning rate': '0.01',
      Epochs: '1',
      'Cutoff length': '64',
      'Batch size': '2',
      'Gradient accumulation': '1',
      'Validation size': '2',
      'Logging steps': '1',
      'Save steps': '100',
      'Warmup steps': '0',
    });
    await page.getByLabel('Learning-rate schedule').selectOption('constant');
  });
  afterAll(async () => {
    await browser?.close();
    await hub?.close();
  });

  it('refuses an adapter made for another base, naming the tensor', async () => {
    await page.getByRole('tab', { name: /Model/ }).click();
    await page.locator('#adapter-files').setInputFiles(wrong);
    const row = page.locator('[data-testid="adapter-row"]', { hasText: 'someone/wide-llama' });
    await row.waitFor({ timeout: 30_000 });
    expect(await row.textContent()).toMatch(/r 4 · α 8 · q_proj, v_proj · 8 tensors/);
    expect(await row.textContent()).toMatch(/loaded model is local model/);
    await row.getByRole('button', { name: /^Open adapter/ }).click();
    const err = page.getByTestId('adapter-open').getByRole('alert');
    await err.waitFor({ timeout: 30_000 });
    expect(await err.textContent()).toMatch(
      /does not fit local model \(it was trained on someone\/wide-llama\).*base_model\.model\.model\.layers\.\d\.self_attn\.(q|v)_proj\.lora_A\.weight: shape \[4, 48\] does not fit this model \(expected \[4, 32\] for r=4\)/,
    );
    await screenshot(page, 'adapter-open-mismatch');
    await row.getByRole('button', { name: /^Delete adapter/ }).click();
    await expect.poll(() => row.count()).toBe(0);
  });

  it('opens the adapter on the loaded model and chats with it A/B against the base', async () => {
    await page.locator('#adapter-files').setInputFiles(adapter);
    const row = page.getByTestId('adapter-row').first();
    await row.waitFor({ timeout: 30_000 });
    expect(await row.textContent()).toMatch(/Trained on local model/);
    await row.getByRole('button', { name: /^Open adapter/ }).click();
    await expect
      .poll(() => page.getByTestId('adapter-opened').textContent(), { timeout: 180_000 })
      .toMatch(/is open on local model/);
    await screenshot(page, 'adapter-open-model');
    // The Train step lists it as an opened adapter, with no steps of its own.
    await page.getByRole('tab', { name: /Train/ }).click();
    const runRow = page.locator('[data-testid="run-row"]').first();
    await expect
      .poll(() => runRow.textContent(), { timeout: 30_000 })
      .toMatch(/—[\s\S]*Opened adapter \(trained elsewhere\)/);
    expect(await page.getByTestId('train-step').textContent()).toBe('—');
    await page.getByRole('tab', { name: /Chat/ }).click();
    await page.getByLabel('Max new tokens').fill('8');
    await page.getByLabel('A/B: base vs tuned').check();
    await page.getByLabel('Message').fill('Say hi 1.');
    await page.getByRole('button', { name: 'Send' }).click();
    const tuned = page.getByTestId('answer-tuned');
    await expect.poll(() => tuned.textContent(), { timeout: 180_000 }).toMatch(/tokens\/s/);
    expect(await page.getByTestId('answer-base').textContent()).toMatch(/tokens\/s/);
    await screenshot(page, 'adapter-open-chat');
  });

  it('evaluates the opened adapter', async () => {
    await page.getByRole('tab', { name: /Evaluate/ }).click();
    await page.getByLabel('Rows to predict').fill('2');
    await page.getByLabel('Max new tokens').fill('8');
    await page.getByRole('button', { name: 'Evaluate' }).click();
    await page.getByTestId('eval-results').waitFor({ timeout: 180_000 });
    expect(Number(await page.getByTestId('eval-loss').textContent())).toBeGreaterThan(0);
  });

  it('exports the merged model: W + (α/r)·B·A on the adapted modules, the rest unchanged', async () => {
    await page.getByRole('tab', { name: /Export/ }).click();
    await page.locator('#export-dtype').selectOption('f32');
    await page.getByRole('button', { name: 'Export merged model' }).click();
    await page.getByTestId('export-merged').waitFor({ timeout: 120_000 });
    const merged = (mergedZip = unzipSync(await download(page, 'export-merged')));
    const st = merged[Object.keys(merged).find((n) => n.endsWith('model.safetensors'))!];
    const baseFile = new Uint8Array(readFileSync(model[1]));
    const adapterFile = new Uint8Array(readFileSync(adapter[1]));
    for (const [layer, mod] of [
      [0, 'q_proj'],
      [1, 'v_proj'],
    ] as const) {
      const name = `model.layers.${layer}.self_attn.${mod}.weight`;
      const W = await f32(baseFile, name);
      const M = await f32(st, name);
      const A = await f32(adapterFile, `base_model.model.${name.replace(/\.weight$/, '')}.lora_A.weight`);
      const B = await f32(adapterFile, `base_model.model.${name.replace(/\.weight$/, '')}.lora_B.weight`);
      const [out, inF] = W.shape;
      expect(M.shape).toEqual([out, inF]);
      let maxErr = 0;
      let maxDelta = 0;
      for (let o = 0; o < out; o++)
        for (let i = 0; i < inF; i++) {
          let ba = 0;
          for (let k = 0; k < R; k++) ba += B.data[o * R + k] * A.data[k * inF + i];
          const want = W.data[o * inF + i] + (ALPHA / R) * ba;
          maxErr = Math.max(maxErr, Math.abs(M.data[o * inF + i] - want));
          maxDelta = Math.max(maxDelta, Math.abs(ba));
        }
      expect(maxDelta).toBeGreaterThan(0.05);
      expect(maxErr).toBeLessThan(1e-5);
    }
    const k = 'model.layers.0.self_attn.k_proj.weight';
    expect((await f32(st, k)).data).toEqual((await f32(baseFile, k)).data);
    await screenshot(page, 'adapter-open-export');
  });

  it('pushes the merged export to a hub (a local stand-in): 401 and 409 are messages, then a private repo with every file', async () => {
    const push = page.getByTestId('hub-push');
    await push.getByLabel('Merged model').check();
    await push.locator('#hub-repo').fill('alice/tiny-merged');
    await push.locator('#hub-push-endpoint').fill(hub.url);
    expect(await push.locator('#hub-push-token').getAttribute('type')).toBe('password');
    await push.locator('#hub-push-token').fill('hf_notavalidtoken');
    await push.getByRole('button', { name: 'Push to the Hub' }).click();
    const alert = push.getByRole('alert');
    await expect.poll(() => alert.textContent(), { timeout: 60_000 }).toMatch(/rejected the access token \(401\)/);
    expect(await alert.textContent()).not.toContain('hf_notavalidtoken');
    expect(hub.repos.size).toBe(0);
    // Nothing lost: the export is still there to push.
    expect(await page.getByTestId('export-merged').getByRole('link').count()).toBeGreaterThan(0);

    const firstGood = hub.requests.length;
    await push.locator('#hub-push-token').fill(TOKEN);
    await push.getByRole('button', { name: 'Push to the Hub' }).click();
    await expect
      .poll(
        () =>
          push
            .getByTestId('hub-done')
            .textContent()
            .catch(() => ''),
        { timeout: 120_000 },
      )
      .toMatch(/Created the repo and uploaded \d+ files/);
    expect(hub.problems).toEqual([]);
    const repo = hub.repos.get('alice/tiny-merged')!;
    expect(repo.visibility).toBe('private');
    // The zip was unpacked: the repo holds the files themselves, byte for byte.
    const want = new Map(Object.entries(mergedZip).map(([n, b]) => [n.split('/').slice(1).join('/'), b]));
    expect([...repo.files.keys()].sort()).toEqual([...want.keys()].sort());
    for (const [n, b] of want) expect(repo.files.get(n), n).toEqual(b);
    // Every API call of the push carried the token as a bearer header (CORS preflights carry none).
    const calls = hub.requests
      .slice(firstGood)
      .filter((q) => q.method !== 'OPTIONS' && !q.path.startsWith('/lfs-upload/'));
    expect(calls.map((q) => q.path)).toEqual(
      expect.arrayContaining(['/api/repos/create', '/api/models/alice/tiny-merged/commit/main']),
    );
    expect(calls.every((q) => q.auth === `Bearer ${TOKEN}`)).toBe(true);
    expect(await push.getByTestId('hub-progress').textContent()).toMatch(/Done/);
    await screenshot(page, 'adapter-open-hub-push');

    await push.getByRole('button', { name: 'Push to the Hub' }).click();
    await expect
      .poll(() => alert.textContent(), { timeout: 60_000 })
      .toMatch(/alice\/tiny-merged already exists .*\(409\)/);
    await push.getByLabel('Update an existing repo (add a commit to it)').check();
    await push.getByRole('button', { name: 'Push to the Hub' }).click();
    await expect
      .poll(
        () =>
          push
            .getByTestId('hub-done')
            .textContent()
            .catch(() => ''),
        { timeout: 120_000 },
      )
      .toMatch(/Uploaded \d+ files to the repo/);
    expect(repo.commits).toHaveLength(2);
  });

  it('pushes the opened adapter to a private repo and opens it again by its hub id with the token', async () => {
    await page.getByRole('button', { name: 'Export adapter' }).click();
    await page.getByTestId('export-peft').waitFor({ timeout: 120_000 });
    const push = page.getByTestId('hub-push');
    await push.getByLabel('PEFT adapter').check();
    await push.locator('#hub-repo').fill('alice/tiny-lora');
    expect(await push.getByLabel('Private repo').isChecked()).toBe(true); // private by default
    await push.getByRole('button', { name: 'Push to the Hub' }).click();
    await expect
      .poll(
        () =>
          push
            .getByTestId('hub-done')
            .textContent()
            .catch(() => ''),
        { timeout: 120_000 },
      )
      .toMatch(/Created the repo and uploaded 2 files/);
    const repo = hub.repos.get('alice/tiny-lora')!;
    expect(repo.visibility).toBe('private');
    expect([...repo.files.keys()].sort()).toEqual(['adapter_config.json', 'adapter_model.safetensors']);
    // The pushed adapter holds the opened one's weights.
    const k = 'base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight';
    expect((await f32(repo.files.get('adapter_model.safetensors')!, k)).data).toEqual(
      (await f32(new Uint8Array(readFileSync(adapter[1])), k)).data,
    );

    // Fetch it back by id from the same endpoint (the Model step's hub endpoint), and open it.
    await page.getByRole('tab', { name: /Model/ }).click();
    await page.getByLabel('Hugging Face Hub').check();
    await page.locator('#hub-endpoint').fill(hub.url);
    await page.getByLabel('A folder on this computer').check();
    const before = await page.getByTestId('adapter-row').count();
    // Without a token the private repo is not there (the hub answers 404, as huggingface.co does).
    await page.locator('#adapter-hub-id').fill('alice/tiny-lora');
    await page.getByRole('button', { name: 'Fetch adapter' }).click();
    await expect
      .poll(
        () =>
          page
            .getByRole('alert')
            .filter({ hasText: 'alice/tiny-lora' })
            .textContent({ timeout: 1000 })
            .catch(() => ''),
        { timeout: 30_000 },
      )
      .toMatch(/HTTP 404[\s\S]*access token/);
    expect(await page.getByTestId('adapter-row').count()).toBe(before);
    // The Model step's token (the one its downloads use, never saved) opens it.
    await page.getByLabel('Hugging Face Hub').check();
    expect(await page.locator('#hub-token').getAttribute('type')).toBe('password');
    await page.locator('#hub-token').fill(TOKEN);
    await page.getByLabel('A folder on this computer').check();
    await page.getByRole('button', { name: 'Fetch adapter' }).click();
    await expect.poll(() => page.getByTestId('adapter-row').count(), { timeout: 30_000 }).toBe(before + 1);
    const row = page.locator('[data-testid="adapter-row"]', { hasText: 'alice/tiny-lora' });
    expect(await row.textContent()).toMatch(/r 4 · α 8 · q_proj, v_proj · 8 tensors[\s\S]*Trained on local model/);
    await row.getByRole('button', { name: /^Open adapter/ }).click();
    await expect
      .poll(() => page.getByTestId('adapter-opened').textContent(), { timeout: 180_000 })
      .toMatch(/alice\/tiny-lora is open on local model/);
    await page.getByLabel('Hugging Face Hub').check();
    await page.locator('#hub-token').fill('');
    await page.locator('#hub-endpoint').fill('https://huggingface.co');
    await page.getByLabel('A folder on this computer').check();
    // The fetches before the token was given sent none; the one after sent it.
    const auths = hub.requests.filter((r) => r.path.endsWith('/resolve/main/adapter_config.json')).map((r) => !!r.auth);
    expect(auths.length).toBeGreaterThan(1);
    expect(auths.at(-1)).toBe(true);
    expect(auths.slice(0, -1).every((a) => !a)).toBe(true);
  });

  it('keeps the adapter over a reload and continues training from it', async () => {
    await page.waitForTimeout(300);
    await page.reload();
    await page.getByRole('tab', { name: /Model/ }).click();
    await page
      .getByTestId('model-info')
      .filter({ hasText: /Model: local model[\s\S]*matching config\.json/ })
      .waitFor({ timeout: 60_000 });
    const row = page.getByTestId('adapter-row').first();
    await row.waitFor({ timeout: 30_000 });
    expect(await row.textContent()).toMatch(/tiny-lora|adapter/);
    await row.getByRole('button', { name: /^Continue training adapter/ }).click();
    await expect
      .poll(() => page.getByTestId('train-status').textContent(), { timeout: 480_000, interval: 1000 })
      .toMatch(/Finished/);
    const runRow = page.locator('[data-testid="run-row"]').first();
    expect(await runRow.textContent()).toMatch(/r 4\/α 8/);
    await screenshot(page, 'adapter-open-continued');
    // The continued adapter is the trained one: same shape, moved weights.
    await page.getByRole('tab', { name: /Export/ }).click();
    await page.getByRole('button', { name: 'Export adapter' }).click();
    await page.getByTestId('export-peft').waitFor({ timeout: 120_000 });
    const peft = unzipSync(await download(page, 'export-peft'));
    const ac = parseAdapterConfig(
      new TextDecoder().decode(peft[Object.keys(peft).find((n) => n.endsWith('adapter_config.json'))!]),
    );
    expect([ac.r, ac.loraAlpha, [...ac.targetModules].sort()]).toEqual([R, ALPHA, ['q_proj', 'v_proj']]);
    const trained = peft[Object.keys(peft).find((n) => n.endsWith('adapter_model.safetensors'))!];
    const key = 'base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight';
    const before = await f32(new Uint8Array(readFileSync(adapter[1])), key);
    const after = await f32(trained, key);
    expect(after.shape).toEqual(before.shape);
    let moved = 0;
    for (let i = 0; i < before.data.length; i++) moved = Math.max(moved, Math.abs(after.data[i] - before.data[i]));
    expect(moved).toBeGreaterThan(1e-4);
    // Started from the adapter, not from zeros: B keeps most of its opened values.
    let dist = 0;
    let norm = 0;
    for (let i = 0; i < before.data.length; i++) {
      dist += (after.data[i] - before.data[i]) ** 2;
      norm += before.data[i] ** 2;
    }
    expect(Math.sqrt(dist)).toBeLessThan(0.5 * Math.sqrt(norm));

    // The Evaluate step can pick the opened adapter back (runs and opened adapters are one list).
    await page.getByRole('tab', { name: /Evaluate/ }).click();
    const opened = page.locator('#run-pick option', { hasText: 'Adapter alice/tiny-lora · on local model' });
    const id = (await opened.getAttribute('value'))!;
    expect(id).toMatch(/^adapter-/);
    await page.locator('#run-pick').selectOption(id);
    await expect.poll(() => page.getByRole('heading', { name: `Run ${id}` }).count(), { timeout: 120_000 }).toBe(1);
    await page.getByLabel('Rows to predict').fill('1');
    await page.getByRole('button', { name: 'Evaluate' }).click();
    await page.getByTestId('eval-results').waitFor({ timeout: 180_000 });
    await screenshot(page, 'adapter-open-pick');
    expect(errors.filter((e) => !/Failed to load resource/.test(e))).toEqual([]);
  });
});
