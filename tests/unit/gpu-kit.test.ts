// The GPU kit (bench/kit): `npm run gpu-kit` packs a self-contained folder within 60 MiB, and
// `bash run.sh --tiny OUT` runs its whole path here (the packed Node, Dawn and Vulkan loader on
// SwiftShader, PyTorch on the CPU) without any Node on PATH, writing one JSON with every section
// filled; without --tiny a software adapter is refused, not timed as a GPU.
import { execFileSync, spawnSync } from 'node:child_process';
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { nodeShaders } from '../../src/engine/shaders.node.ts';

const root = resolve(import.meta.dirname, '../..');
const SWIFTSHADER_ICD = '/usr/lib/chromium/vk_swiftshader_icd.json';
const tmp = mkdtempSync(join(tmpdir(), 'gpu-kit-test-'));
const kit = join(tmp, 'kit');
const work = join(tmp, 'work');
const out = join(tmp, 'out');

type Json = Record<string, any>;

beforeAll(() => {
  execFileSync(process.execPath, [join(root, 'node_modules/tsx/dist/cli.mjs'), 'bench/kit/pack.ts', '--out', kit], {
    cwd: root,
    stdio: 'pipe',
  });
}, 600_000);

afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('gpu kit', () => {
  it('packs every part within 60 MiB, the shaders inside the bundle', () => {
    const manifest = JSON.parse(readFileSync(join(kit, 'manifest.json'), 'utf8')) as Json;
    const files = manifest.files as { path: string; bytes: number; sha256: string }[];
    const paths = files.map((f) => f.path).sort();
    for (const p of [
      'node.xz',
      'webgpu/dawn.node.xz',
      'webgpu/index.js',
      'webgpu/package.json',
      'lib/libstdc++.so.6.xz',
      'tabtune-kit.mjs',
      'tabtune-cli.mjs',
      'torch_peft.py',
      'report.py',
      'run.sh',
    ])
      expect(paths).toContain(p);
    expect(paths.some((p) => /^debs\/libvulkan1_.*_amd64\.deb$/.test(p))).toBe(true);
    for (const f of files) {
      const bytes = readFileSync(join(kit, f.path));
      expect(bytes.length, f.path).toBe(f.bytes);
      expect(createHash('sha256').update(bytes).digest('hex'), f.path).toBe(f.sha256);
    }
    const total = readdirSync(kit, { recursive: true, withFileTypes: true })
      .filter((d) => d.isFile())
      .reduce((a, d) => a + readFileSync(join(d.parentPath, d.name)).length, 0);
    expect(total).toBeLessThanOrEqual(60 * 2 ** 20);
    expect(manifest.node).toBe(process.version);
    // every WGSL file travels inside the bundle, byte for byte (the bundle reads nothing from shaders/)
    const file = join(tmp, 'shaders.json');
    execFileSync(process.execPath, [join(kit, 'tabtune-kit.mjs'), 'shaders', '--out', file], { cwd: tmp });
    const embedded = JSON.parse(readFileSync(file, 'utf8')) as Json;
    expect(embedded.status).toBe('ok');
    expect(embedded.sources).toEqual(nodeShaders());
    expect(embedded.count).toBeGreaterThanOrEqual(20);
    const bundle = readFileSync(join(kit, 'tabtune-kit.mjs'), 'utf8');
    expect(bundle).not.toMatch(/from ["']\.\.?\//); // no import left pointing into the repository
  });

  it('runs --tiny end to end without a Node on PATH and writes one JSON with every section filled', () => {
    // A `node` (and npm/npx) first on PATH that only leaves a mark: run.sh must use the packed one.
    const fakeBin = join(tmp, 'fake-bin');
    mkdirSync(fakeBin, { recursive: true });
    const mark = join(tmp, 'system-node-used');
    for (const name of ['node', 'npm', 'npx', 'tsx']) {
      writeFileSync(join(fakeBin, name), `#!/bin/sh\necho "$0 $*" >> '${mark}'\nexit 99\n`);
      chmodSync(join(fakeBin, name), 0o755);
    }
    const r = spawnSync('bash', [join(kit, 'run.sh'), '--tiny', out], {
      cwd: tmp,
      encoding: 'utf8',
      env: {
        PATH: `${fakeBin}:${process.env.PATH}`,
        HOME: process.env.HOME,
        TABTUNE_KIT_WORK: work,
        TABTUNE_KIT_PYTHON: '/usr/bin/python3',
        TABTUNE_KIT_ICD: SWIFTSHADER_ICD,
      },
    });
    expect(r.status, r.stderr).toBe(0);
    expect(existsSync(mark), existsSync(mark) ? readFileSync(mark, 'utf8') : '').toBe(false);
    const written = readdirSync(out);
    expect(written).toHaveLength(1);
    const report = JSON.parse(readFileSync(join(out, written[0]), 'utf8')) as Json;
    expect(report.mode).toBe('tiny');
    const s = report.sections as Json;
    const model = 'tiny-qwen2-hd32';
    const names = [
      'adapter',
      'matmul',
      `prepare.${model}`,
      `train.${model}.lora`,
      `torch.${model}`,
      `train.${model}.qlora`,
      'attention',
    ];
    expect(Object.keys(s)).toEqual(names);
    for (const n of names) expect(s[n].status, `${n}: ${s[n].error ?? ''}\n${s[n].logTail ?? ''}`).toBe('ok');

    expect(s.adapter.software).toBe(true);
    expect(report.machine.vulkanLoader).toMatch(/^packed libvulkan1_/);
    // matmul: every variant and the tuner's pick at each size, all measured
    const variants = s.matmul.variants as string[];
    expect(variants.length).toBeGreaterThanOrEqual(3);
    expect(s.matmul.rows.map((r: Json) => r.size)).toEqual([64, 128]);
    for (const row of s.matmul.rows) {
      for (const v of [...variants, 'tuned']) expect(row.gflops[v], `${row.size} ${v}`).toBeGreaterThan(0);
      expect(variants).toContain(row.tuned.chosen);
    }
    for (const row of s.attention.rows) expect(row.ms, row.name).toBeGreaterThan(0);
    expect(s.attention.rows.map((r: Json) => r.name)).toEqual(['attention fwd seq64', 'attention bwd seq64']);
    // our steps: tokens/s, the ledger's peak beside the plan, decode ms/token
    for (const method of ['lora', 'qlora']) {
      const t = s[`train.${model}.${method}`];
      expect(t.steps.length).toBeGreaterThanOrEqual(1);
      expect(t.tokensPerS).toBeGreaterThan(0);
      expect(t.ledgerPeakTotal).toBeGreaterThan(0);
      expect(Math.abs(t.planError)).toBeLessThanOrEqual(0.05);
    }
    expect(s[`train.${model}.lora`].decode.msPerToken).toBeGreaterThan(0);
    // PyTorch on the same weights, adapters and tokens: f32 agrees with our first loss
    const torch = s[`torch.${model}`];
    for (const mode of ['bf16', 'f32']) {
      expect(torch.modes[mode].status).toBe('ok');
      expect(torch.modes[mode].tokensPerS).toBeGreaterThan(0);
    }
    expect(torch.modes.qlora.status).toMatch(/^skipped: /);
    const vs = torch.modes.f32.vsOurs;
    expect(vs.relDiff[0]).toBeLessThan(1e-4);
    expect(vs.steps).toBeGreaterThanOrEqual(1);
    expect(report.summary[model].lora_vs_torch_f32_lossRelDiff[0]).toBeLessThan(1e-4);
    expect(report.summary.matmulGflops['128'].tunerPick).toBe(s.matmul.rows[1].tuned.chosen);
  }, 900_000);

  it('refuses a software adapter without --tiny', () => {
    const rt = join(work, 'rt');
    const file = join(tmp, 'adapter.json');
    const r = spawnSync(join(rt, 'node'), [join(rt, 'tabtune-kit.mjs'), 'adapter', '--out', file], {
      encoding: 'utf8',
      env: {
        ...process.env,
        VK_ICD_FILENAMES: SWIFTSHADER_ICD,
        LD_LIBRARY_PATH: join(rt, 'vulkan/usr/lib/x86_64-linux-gnu'),
      },
    });
    expect(r.status).toBe(1);
    const j = JSON.parse(readFileSync(file, 'utf8')) as Json;
    expect(j.status).toBe('error');
    expect(j.error).toMatch(/software one \(google swiftshader/);
  }, 120_000);
});
