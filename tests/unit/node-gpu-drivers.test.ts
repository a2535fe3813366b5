// Which Vulkan drivers Dawn is given (src/engine/node-gpu.ts), decided from the manifest files alone
// so that a machine without a GPU driver never runs Dawn on the bare loader (its native
// "vkCreateInstance: Found no drivers!" warning and stack line).
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  chooseVulkanDrivers,
  findVulkanDrivers,
  isSoftwareAdapter,
  vulkanDriverFolders,
} from '../../src/engine/node-gpu.ts';

let root: string;
const icd = (dir: string, name: string, library: string) => {
  const d = join(root, dir, 'vulkan', 'icd.d');
  mkdirSync(d, { recursive: true });
  writeFileSync(
    join(d, name),
    JSON.stringify({ file_format_version: '1.0.0', ICD: { library_path: library, api_version: '1.3.0' } }),
  );
  return join(d, name);
};
const mine = (env: NodeJS.ProcessEnv) =>
  findVulkanDrivers(env, join(root, 'home')).filter((d) => d.manifest.startsWith(root));

beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), 'tabtune-icd-'));
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

describe('Vulkan driver manifests', () => {
  it('searches the loader folders: XDG config and data dirs, /etc, /usr/local/share, /usr/share', () => {
    const f = vulkanDriverFolders({ XDG_DATA_DIRS: '/opt/a:/opt/b' }, '/home/u');
    expect(f).toEqual(
      expect.arrayContaining([
        '/home/u/.config/vulkan/icd.d',
        '/etc/xdg/vulkan/icd.d',
        '/etc/vulkan/icd.d',
        '/home/u/.local/share/vulkan/icd.d',
        '/opt/a/vulkan/icd.d',
        '/opt/b/vulkan/icd.d',
        '/usr/local/share/vulkan/icd.d',
        '/usr/share/vulkan/icd.d',
      ]),
    );
    expect(new Set(f).size).toBe(f.length);
  });

  it('tells lavapipe and SwiftShader (CPUs) from hardware drivers', () => {
    const lvp = icd('only-lvp', 'lvp_icd.x86_64.json', '/usr/lib/x86_64-linux-gnu/libvulkan_lvp.so');
    const ss = icd('only-lvp', 'vk_swiftshader_icd.json', './libvk_swiftshader.so');
    const env = { XDG_DATA_DIRS: join(root, 'only-lvp') };
    expect(mine(env)).toEqual([
      { manifest: lvp, library: '/usr/lib/x86_64-linux-gnu/libvulkan_lvp.so', software: true },
      { manifest: ss, library: './libvk_swiftshader.so', software: true },
    ]);
    const nv = icd('nvidia', 'nvidia_icd.json', 'libGLX_nvidia.so.0');
    const intel = icd('nvidia', 'intel_icd.x86_64.json', '/usr/lib/x86_64-linux-gnu/libvulkan_intel.so');
    expect(mine({ XDG_DATA_DIRS: join(root, 'nvidia') }).map((d) => [d.manifest, d.software])).toEqual([
      [intel, false],
      [nv, false],
    ]);
  });

  it('reads VK_ADD_DRIVER_FILES and skips files that are not driver manifests', () => {
    const d = join(root, 'extra');
    mkdirSync(d, { recursive: true });
    writeFileSync(join(d, 'broken.json'), '{not json');
    writeFileSync(join(d, 'layer.json'), JSON.stringify({ layer: { name: 'x' } }));
    const radv = join(d, 'radeon_icd.x86_64.json');
    writeFileSync(radv, JSON.stringify({ ICD: { library_path: '/usr/lib/libvulkan_radeon.so' } }));
    expect(mine({ XDG_DATA_DIRS: join(root, 'none'), VK_ADD_DRIVER_FILES: d }).map((x) => x.manifest)).toEqual([radv]);
    expect(mine({ XDG_DATA_DIRS: join(root, 'none'), VK_ADD_DRIVER_FILES: radv }).map((x) => x.manifest)).toEqual([
      radv,
    ]);
  });
});

describe('chooseVulkanDrivers', () => {
  it("keeps the user's VK_ICD_FILENAMES / VK_DRIVER_FILES", () => {
    expect(chooseVulkanDrivers({ VK_ICD_FILENAMES: '/x.json' })).toEqual({ kind: 'user', files: '/x.json' });
    expect(chooseVulkanDrivers({ VK_DRIVER_FILES: '/y.json', VK_ICD_FILENAMES: '/x.json' })).toEqual({
      kind: 'user',
      files: '/y.json',
    });
  });
  it('goes straight to SwiftShader when at most lavapipe is installed, and probes a hardware driver', () => {
    const home = join(root, 'home');
    const hostHasHardware = findVulkanDrivers({ XDG_DATA_DIRS: join(root, 'none') }, home).some((d) => !d.software);
    const lvpOnly = chooseVulkanDrivers({ XDG_DATA_DIRS: join(root, 'only-lvp') }, home);
    if (!hostHasHardware) expect(lvpOnly.kind).toBe('swiftshader');
    const nv = chooseVulkanDrivers({ XDG_DATA_DIRS: join(root, 'nvidia') }, home);
    expect(nv.kind).toBe('system');
    if (nv.kind === 'system') expect(nv.drivers.map((d) => d.library)).toContain('libGLX_nvidia.so.0');
  });
});

it('isSoftwareAdapter: SwiftShader and llvmpipe are not GPUs', () => {
  expect(
    isSoftwareAdapter({ vendor: 'google', architecture: 'swiftshader', description: 'SwiftShader driver 5.0.0' }),
  ).toBe(true);
  expect(isSoftwareAdapter({ vendor: 'mesa', architecture: '', description: 'llvmpipe (LLVM 15.0.6, 256 bits)' })).toBe(
    true,
  );
  expect(isSoftwareAdapter({ vendor: 'nvidia', architecture: 'ada-lovelace', description: 'NVIDIA H200' })).toBe(false);
});
