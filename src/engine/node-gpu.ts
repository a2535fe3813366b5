import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { homedir, tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { acquireGpu, parseForcedKernels, type Gpu } from './gpu/index.ts';
import type { ShaderSources } from './gpu/shader-library.ts';

export const SWIFTSHADER_ICD = '/usr/lib/chromium/vk_swiftshader_icd.json';

/** One Vulkan driver manifest (an ICD .json) the Vulkan loader would read. */
export interface VulkanDriver {
  manifest: string;
  library: string;
  /** Mesa lavapipe (llvmpipe, which Dawn rejects) or SwiftShader: a CPU, not a GPU. */
  software: boolean;
}

const SOFTWARE_DRIVER = /lvp_icd|vulkan_lvp|lavapipe|llvmpipe|swiftshader/i;

/** The folders the Vulkan loader searches for driver manifests on Linux, in its order. */
export function vulkanDriverFolders(env: NodeJS.ProcessEnv = process.env, home = homedir()): string[] {
  const list = (v: string | undefined, dflt: string) => (v && v.trim() ? v : dflt).split(':').filter(Boolean);
  const configHome = env.XDG_CONFIG_HOME || join(home, '.config');
  const dataHome = env.XDG_DATA_HOME || join(home, '.local', 'share');
  const dirs = [
    configHome,
    ...list(env.XDG_CONFIG_DIRS, '/etc/xdg'),
    '/etc',
    dataHome,
    ...list(env.XDG_DATA_DIRS, '/usr/local/share:/usr/share'),
    '/usr/local/share',
    '/usr/share',
  ].map((d) => join(d, 'vulkan', 'icd.d'));
  return [...new Set(dirs)];
}

/**
 * The Vulkan drivers the loader would find without VK_ICD_FILENAMES / VK_DRIVER_FILES:
 * every manifest in the standard folders plus VK_ADD_DRIVER_FILES. Read from the files only
 * (nothing native runs), so a machine without a GPU driver is known before Dawn is asked.
 */
export function findVulkanDrivers(env: NodeJS.ProcessEnv = process.env, home = homedir()): VulkanDriver[] {
  const files: string[] = [];
  const addPath = (p: string) => {
    try {
      if (p.endsWith('.json')) {
        if (existsSync(p)) files.push(p);
        return;
      }
      for (const f of readdirSync(p).sort()) if (f.endsWith('.json')) files.push(join(p, f));
    } catch {
      // a folder that is missing or unreadable holds no driver
    }
  };
  for (const d of vulkanDriverFolders(env, home)) addPath(d);
  for (const p of (env.VK_ADD_DRIVER_FILES ?? '').split(':').filter(Boolean)) addPath(p);
  const out: VulkanDriver[] = [];
  for (const manifest of [...new Set(files)]) {
    let library = '';
    try {
      const j = JSON.parse(readFileSync(manifest, 'utf8')) as { ICD?: { library_path?: unknown } };
      library = typeof j.ICD?.library_path === 'string' ? j.ICD.library_path : '';
    } catch {
      continue; // not a driver manifest the loader could use either
    }
    if (!library) continue;
    out.push({ manifest, library, software: SOFTWARE_DRIVER.test(`${basename(manifest)} ${library}`) });
  }
  return out;
}

/** Which Vulkan drivers Dawn should be given, decided before any native code runs. */
export type DriverChoice =
  | { kind: 'user'; files: string } // VK_ICD_FILENAMES / VK_DRIVER_FILES set by the user: used as they are
  | { kind: 'system'; drivers: VulkanDriver[] } // a hardware driver is installed: probe it
  | { kind: 'swiftshader'; software: VulkanDriver[] }; // none (at most lavapipe): SwiftShader directly

export function chooseVulkanDrivers(env: NodeJS.ProcessEnv = process.env, home = homedir()): DriverChoice {
  const files = env.VK_DRIVER_FILES || env.VK_ICD_FILENAMES;
  if (files) return { kind: 'user', files };
  const drivers = findVulkanDrivers(env, home);
  const hardware = drivers.filter((d) => !d.software);
  return hardware.length ? { kind: 'system', drivers: hardware } : { kind: 'swiftshader', software: drivers };
}

export interface ProbedAdapter {
  vendor: string;
  architecture: string;
  description: string;
}

const PROBE = `
const [url] = process.argv.slice(1);
let out = null;
try {
  const { create } = await import(url);
  const gpu = create([]);
  const a = await gpu.requestAdapter({ powerPreference: 'high-performance' });
  if (a) out = { vendor: a.info.vendor ?? '', architecture: a.info.architecture ?? '', description: a.info.description ?? '' };
} catch {}
process.stdout.write('\\n@@tabtune-probe ' + JSON.stringify(out) + '\\n');
process.exit(0);
`;

/**
 * Asks Dawn for an adapter on the system's Vulkan drivers in a child process, so whatever Dawn
 * and the drivers print natively (Dawn's "vkCreateInstance: Found no drivers!" warning and its
 * source-location line) stays there. Null when there is no adapter, the child fails or hangs.
 */
export async function probeSystemAdapter(timeoutMs = 30_000): Promise<ProbedAdapter | null> {
  const url = pathToFileURL(createRequire(import.meta.url).resolve('webgpu')).href;
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ['--input-type=module', '-e', PROBE, url],
      { env: process.env, timeout: timeoutMs, windowsHide: true, maxBuffer: 1 << 20 },
      (_err, stdout) => {
        const m = /^@@tabtune-probe (.*)$/m.exec(String(stdout ?? ''));
        try {
          resolve(m ? (JSON.parse(m[1]) as ProbedAdapter | null) : null);
        } catch {
          resolve(null);
        }
      },
    );
  });
}

export function isSoftwareAdapter(a: { vendor?: string; architecture?: string; description?: string }): boolean {
  return /swiftshader|llvmpipe|lavapipe|software/i.test(
    `${a.architecture ?? ''} ${a.description ?? ''} ${a.vendor ?? ''}`,
  );
}

export interface NodeGpuOptions {
  /** true: SwiftShader even when a GPU driver is installed; false: never fall back to it. */
  forceSwiftShader?: boolean;
  /** Receives one line when an installed GPU driver gave no adapter and SwiftShader is used instead. */
  log?: (line: string) => void;
}

/**
 * A GPU in Node through Dawn (the npm `webgpu` package). On a machine without a GPU the
 * Debian chromium package's SwiftShader Vulkan driver is the only adapter Dawn accepts.
 *
 * The Vulkan drivers are chosen before Dawn starts, so nothing native is printed on a normal run:
 * with no hardware driver manifest installed (none at all, or only Mesa's lavapipe, which Dawn
 * rejects) Dawn is pointed straight at SwiftShader; with one, a child process first checks that
 * it yields an adapter. VK_ICD_FILENAMES / VK_DRIVER_FILES set by the user are used as they are.
 */
export async function nodeGpu(
  shaders: ShaderSources,
  opts: NodeGpuOptions = {},
): Promise<{ gpu: Gpu; close: () => void }> {
  if (!process.env.XDG_RUNTIME_DIR) process.env.XDG_RUNTIME_DIR = mkdtempSync(join(tmpdir(), 'xdg-'));
  const useSwiftShader = () => {
    if (!existsSync(SWIFTSHADER_ICD)) {
      throw new Error(`no Vulkan GPU driver is installed and SwiftShader (${SWIFTSHADER_ICD}) is missing`);
    }
    process.env.VK_ICD_FILENAMES = SWIFTSHADER_ICD;
  };
  const choice: DriverChoice =
    opts.forceSwiftShader && !process.env.VK_ICD_FILENAMES && !process.env.VK_DRIVER_FILES
      ? { kind: 'swiftshader', software: [] }
      : chooseVulkanDrivers();
  let fallback = false; // may retry on SwiftShader if the system drivers fail in-process after all
  if (choice.kind === 'swiftshader') {
    if (opts.forceSwiftShader === false)
      throw new Error('no Vulkan GPU driver is installed (and SwiftShader is not allowed here)');
    useSwiftShader();
  } else if (choice.kind === 'system' && opts.forceSwiftShader !== false) {
    const probed = await probeSystemAdapter();
    if (probed && !isSoftwareAdapter(probed)) {
      fallback = true;
    } else {
      const names = choice.drivers.map((d) => basename(d.manifest)).join(', ');
      opts.log?.(
        `tabtune: the installed Vulkan driver (${names}) offers no WebGPU adapter${probed ? ` (only ${probed.architecture || probed.description || probed.vendor})` : ''}; using SwiftShader`,
      );
      useSwiftShader();
    }
  }
  const webgpu = await import('webgpu');
  Object.assign(globalThis, webgpu.globals);
  let entry: GPU | null = webgpu.create([]);
  let g: Gpu;
  // TABTUNE_KERNELS=matmul=register8x8 pins a kernel variant instead of the measured choice.
  const forcedKernels = parseForcedKernels(process.env.TABTUNE_KERNELS);
  try {
    g = await acquireGpu({ gpu: entry, shaders, forcedKernels });
  } catch (e) {
    if (!fallback) throw e;
    // The probe saw an adapter but this process did not get one: retry on SwiftShader.
    useSwiftShader();
    entry = webgpu.create([]);
    g = await acquireGpu({ gpu: entry, shaders, forcedKernels });
  }
  return {
    gpu: g,
    close: () => {
      g.destroy();
      entry = null; // Dawn keeps the process alive while the GPU object lives.
    },
  };
}
