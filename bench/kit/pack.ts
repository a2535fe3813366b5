// npm run gpu-kit [-- --out DIR]: packs the GPU kit, a folder that measures Tabtune and PyTorch +
// PEFT on a Linux x86-64 GPU machine that has python3 + torch but no Node and no network:
//
//   node.xz                   this Node binary (process.execPath), xz-compressed
//   webgpu/                   the npm webgpu package's index.js + package.json, dawn.node.xz (linux-x64 only)
//   lib/libstdc++.so.6.xz     used only where the system's is older than Dawn needs (GLIBCXX_3.4.30)
//   debs/libvulkan1_*.deb     the Vulkan loader (apt-get download), for machines whose driver lacks it
//   tabtune-kit.mjs           bench/kit/main.ts bundled by esbuild, every shader embedded
//   tabtune-cli.mjs           the CLI (src/cli/main.ts) bundled the same way
//   torch_peft.py, report.py  the PyTorch + PEFT side and the report merger
//   run.sh                    `bash run.sh [--tiny] OUTDIR`
//   manifest.json             what was packed: commit, Node version, sizes, sha256
//
// The default folder, .cache/gpu-kit/, is git-ignored; the compressed Node binary is cached in
// .cache/gpu-kit-cache/ by its size and mtime (xz takes about a minute). The kit must stay within
// 60 MiB: a tool that copies a working tree to a GPU machine carries at most 64 MiB of ignored files.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  chmodSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  realpathSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { nodeShaders } from '../../src/engine/shaders.node.ts';

export const KIT_MAX_BYTES = 60 * 1024 * 1024;
const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const args = process.argv.slice(2);
const outIdx = args.indexOf('--out');
const out = resolve(outIdx >= 0 ? args[outIdx + 1] : join(root, '.cache', 'gpu-kit'));
const cacheDir = join(root, '.cache', 'gpu-kit-cache');
const log = (line: string) => console.error(`gpu-kit: ${line}`);

function sh(cmd: string, argv: string[], cwd?: string): string {
  return execFileSync(cmd, argv, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** xz -6 (multi-threaded where xz can) of `src` into `dest`, through a cache keyed by the source's size and mtime. */
function xzCached(src: string, dest: string, key: string): void {
  const st = statSync(src);
  const cached = join(cacheDir, `${key}-${st.size}-${Math.floor(st.mtimeMs)}.xz`);
  if (!existsSync(cached)) {
    mkdirSync(cacheDir, { recursive: true });
    log(`compressing ${src} (${(st.size / 2 ** 20).toFixed(1)} MiB) with xz`);
    const tmp = `${cached}.${process.pid}.tmp`;
    execFileSync('sh', ['-c', 'xz -6 -T0 -c "$1" > "$2"', 'sh', src, tmp], { stdio: 'inherit' });
    renameSync(tmp, cached);
  }
  copyFileSync(cached, dest);
}

async function bundle(entry: string, outfile: string): Promise<void> {
  const esbuild = await import('esbuild');
  const shaders = nodeShaders();
  await esbuild.build({
    entryPoints: [join(root, entry)],
    outfile,
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    // dawn.node is loaded by the webgpu package's own index.js, unpacked beside the bundle
    external: ['webgpu'],
    legalComments: 'none',
    logLevel: 'warning',
    banner: {
      js: "import { createRequire as __kitRequire } from 'node:module'; const require = __kitRequire(import.meta.url);",
    },
    plugins: [
      {
        // Node reads shaders/*.wgsl from disk next to the sources; the bundle carries them instead.
        name: 'embedded-shaders',
        setup(b) {
          b.onLoad({ filter: /[\\/]src[\\/]engine[\\/]shaders\.node\.ts$/ }, () => ({
            contents: `export function nodeShaders() { return ${JSON.stringify(shaders)}; }\n`,
            loader: 'js',
          }));
        },
      },
    ],
  });
}

/** The Vulkan loader's Debian package: `apt-get download`, else apt's cache of the installed one. */
function vulkanDeb(dest: string): string {
  const tmp = join(cacheDir, 'debs');
  mkdirSync(tmp, { recursive: true });
  try {
    sh('apt-get', ['download', 'libvulkan1'], tmp);
  } catch (e) {
    log(`apt-get download libvulkan1 failed (${(e as Error).message.split('\n')[0]}); looking in apt's cache`);
  }
  const pick = (dir: string) =>
    existsSync(dir)
      ? readdirSync(dir)
          .filter((f) => /^libvulkan1_.*_amd64\.deb$/.test(f))
          .sort()
          .map((f) => join(dir, f))
      : [];
  const found = [...pick(tmp), ...pick('/var/cache/apt/archives')];
  if (!found.length)
    throw new Error('no libvulkan1 .deb: `apt-get download libvulkan1` failed and apt has none cached');
  const deb = found[found.length - 1];
  mkdirSync(dest, { recursive: true });
  copyFileSync(deb, join(dest, deb.split('/').pop()!));
  return deb;
}

function libstdcxx(): string {
  const candidates = ['/usr/lib/x86_64-linux-gnu/libstdc++.so.6', '/lib/x86_64-linux-gnu/libstdc++.so.6'];
  const p = candidates.find(existsSync);
  if (!p) throw new Error(`no libstdc++.so.6 in ${candidates.join(', ')}`);
  return realpathSync(p);
}

function sha256(file: string): string {
  return createHash('sha256').update(readFileSync(file)).digest('hex');
}

function listFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((d) =>
    d.isDirectory() ? listFiles(join(dir, d.name)) : [join(dir, d.name)],
  );
}

async function main(): Promise<void> {
  if (process.platform !== 'linux' || process.arch !== 'x64')
    throw new Error(
      `the kit carries this Node binary; pack it on Linux x86-64 (this is ${process.platform}-${process.arch})`,
    );
  const t0 = performance.now();
  rmSync(out, { recursive: true, force: true });
  mkdirSync(join(out, 'webgpu'), { recursive: true });
  mkdirSync(join(out, 'lib'), { recursive: true });

  log('bundling bench/kit/main.ts and src/cli/main.ts with esbuild');
  await bundle('bench/kit/main.ts', join(out, 'tabtune-kit.mjs'));
  await bundle('src/cli/main.ts', join(out, 'tabtune-cli.mjs'));

  const webgpuDir = dirname(createRequire(import.meta.url).resolve('webgpu'));
  const dawn = join(webgpuDir, 'dist', 'linux-x64', 'dawn.node');
  copyFileSync(join(webgpuDir, 'index.js'), join(out, 'webgpu', 'index.js'));
  copyFileSync(join(webgpuDir, 'package.json'), join(out, 'webgpu', 'package.json'));
  const webgpuVersion = (JSON.parse(readFileSync(join(webgpuDir, 'package.json'), 'utf8')) as { version: string })
    .version;
  xzCached(dawn, join(out, 'webgpu', 'dawn.node.xz'), `dawn-${webgpuVersion}`);
  xzCached(process.execPath, join(out, 'node.xz'), `node-${process.version}`);
  xzCached(libstdcxx(), join(out, 'lib', 'libstdc++.so.6.xz'), 'libstdcxx');
  const deb = vulkanDeb(join(out, 'debs'));

  for (const f of ['run.sh', 'torch_peft.py', 'report.py']) copyFileSync(join(root, 'bench', 'kit', f), join(out, f));
  chmodSync(join(out, 'run.sh'), 0o755);

  let commit = 'unknown';
  try {
    commit = sh('git', ['rev-parse', 'HEAD'], root).trim();
    if (sh('git', ['status', '--porcelain', '--', 'src', 'shaders', 'bench'], root).trim()) commit += '+dirty';
  } catch {
    // not a git checkout: the manifest says unknown
  }
  const files = listFiles(out).map((f) => ({ path: relative(out, f), bytes: statSync(f).size, sha256: sha256(f) }));
  const total = files.reduce((a, f) => a + f.bytes, 0);
  const manifest = {
    packed: new Date().toISOString(),
    commit,
    node: process.version,
    webgpu: webgpuVersion,
    vulkanDeb: deb.split('/').pop(),
    bytes: total,
    files,
  };
  writeFileSync(join(out, 'manifest.json'), JSON.stringify(manifest, null, 1) + '\n');
  const size = total + statSync(join(out, 'manifest.json')).size;
  if (size > KIT_MAX_BYTES)
    throw new Error(`the kit is ${(size / 2 ** 20).toFixed(1)} MiB, over its ${KIT_MAX_BYTES / 2 ** 20} MiB limit`);
  log(`packed ${out}: ${(size / 2 ** 20).toFixed(1)} MiB in ${((performance.now() - t0) / 1000).toFixed(0)} s`);
  log(`run it: bash ${relative(process.cwd(), out) || '.'}/run.sh [--tiny] OUTDIR`);
}

await main();
