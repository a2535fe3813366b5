// A normal CLI run on a machine without a GPU driver prints no native noise: no Dawn
// "Warning: vkCreateInstance: Found no drivers!", no C++ source-location or stack line, only our
// own line naming the adapter. The CLI runs as a user runs it: `node bin/tabtune.mjs`, without the
// VK_ICD_FILENAMES this project's gpu-node tests set. Node only (subprocesses); it needs Debian's
// chromium for SwiftShader, like every GPU test here.
import { describe, expect, it } from 'vitest';
import { runtime } from './context.ts';
import { runCli as run } from './cli-util.ts';

const ROOT = 'tests/artifacts/cli-quiet';

/** The environment of a user's shell: no Vulkan driver override. */
function userEnv(over: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, ...over };
  delete env.VK_ICD_FILENAMES;
  delete env.VK_DRIVER_FILES;
  delete env.VK_ADD_DRIVER_FILES;
  return env;
}

function expectQuiet(err: string): void {
  expect(err).not.toMatch(/vkCreateInstance/);
  expect(err).not.toMatch(/^\s*Warning:/m); // Dawn's own warnings ("Warning: …"); ours are "tabtune: warning: …"
  expect(err).not.toMatch(/^\s+at\s/m); // a stack frame, JS or Dawn's "    at CheckVkSuccessImpl (…)"
  expect(err).not.toMatch(/\.(cpp|cc|h):\d+/); // a native source location
  expect(err).not.toMatch(/VK_ERROR_/);
  for (const line of err.split('\n').filter((l) => l.trim()))
    expect(line, err).toMatch(/^(tabtune|note|warning)\b|^\s+\d+ %/);
  expect(err).toMatch(/^tabtune: WebGPU adapter: \S/m);
}

describe.skipIf(runtime !== 'node')('the CLI on a machine without a GPU driver', () => {
  it('opens the GPU without native warnings or stack lines, and names the adapter once', async () => {
    const { writeFileSync, mkdirSync, rmSync, existsSync } = await import('node:fs');
    const { join, resolve } = await import('node:path');
    const { tinyLlamaConfig, tinyWeights, writeModelFolder } = await import('./export-helpers.ts');
    const { chooseVulkanDrivers } = await import('../../src/engine/node-gpu.ts');
    const root = resolve(ROOT);
    rmSync(root, { recursive: true, force: true });
    const raw = tinyLlamaConfig({
      num_hidden_layers: 1,
      hidden_size: 32,
      intermediate_size: 64,
      torch_dtype: 'float32',
    });
    await writeModelFolder(join(root, 'model'), raw, tinyWeights(raw, 'F32', 5));
    const yaml = join(root, 'export.yaml');
    writeFileSync(
      yaml,
      [`model_name_or_path: ${join(root, 'model')}`, `export_dir: ${join(root, 'out')}`, ''].join('\n'),
    );

    // `tabtune export` (no adapter): opens the GPU, loads the model, writes it back.
    const plain = await run(['export', yaml], userEnv());
    expect(plain.code, plain.err).toBe(0);
    expectQuiet(plain.err);
    expect(plain.err.match(/WebGPU adapter:/g)).toHaveLength(1);
    expect(existsSync(join(root, 'out', 'model.safetensors'))).toBe(true);
    const hardware = chooseVulkanDrivers(userEnv()).kind === 'system';
    // SwiftShader is named for what it is, never passed off as a GPU.
    if (!hardware) expect(plain.err).toMatch(/WebGPU adapter: .*swiftshader[\s\S]*software \(CPU\)/i);

    // A GPU driver manifest whose library is missing (a driver half-removed, or a container without
    // it): Dawn fails on it natively, but only in the probe, and the run continues on SwiftShader.
    const icd = join(root, 'xdg', 'vulkan', 'icd.d');
    mkdirSync(icd, { recursive: true });
    writeFileSync(
      join(icd, 'nvidia_icd.json'),
      JSON.stringify({
        file_format_version: '1.0.0',
        ICD: { library_path: 'libGLX_nvidia_missing.so.0', api_version: '1.3.0' },
      }),
    );
    const broken = await run(
      ['export', yaml],
      userEnv({ XDG_DATA_DIRS: `${join(root, 'xdg')}:/usr/local/share:/usr/share` }),
    );
    expect(broken.code, broken.err).toBe(0);
    expectQuiet(broken.err);
    if (!hardware)
      expect(broken.err).toMatch(
        /installed Vulkan driver \(nvidia_icd\.json\) offers no WebGPU adapter; using SwiftShader/,
      );
  });
});
