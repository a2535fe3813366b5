// The Debian packages the test suite runs, each with how to tell it is there. `npm test`
// installs the missing ones with apt (as root) before any test starts, so a fresh Debian
// machine with only Node and apt runs the whole suite, PyTorch oracles included.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';

export const PYTHON = '/usr/bin/python3';
const CHROMIUM = process.env.TABTUNE_CHROMIUM ?? '/usr/bin/chromium';
const SWIFTSHADER_ICD = '/usr/lib/chromium/vk_swiftshader_icd.json';

function dpkgInstalled(name) {
  const r = spawnSync('dpkg-query', ['-W', '-f=${db:Status-Abbrev}', name], { encoding: 'utf8' });
  return r.status === 0 && r.stdout.startsWith('ii');
}

function hasLib(name) {
  const r = spawnSync('/sbin/ldconfig', ['-p'], { encoding: 'utf8' });
  return r.status === 0 && r.stdout.includes(name);
}

function hasCjkFont() {
  const r = spawnSync('fc-list', [':lang=zh'], { encoding: 'utf8' });
  return r.status === 0 && r.stdout.trim().length > 0;
}

function pythonImports(module) {
  if (!existsSync(PYTHON)) return false;
  return spawnSync(PYTHON, ['-c', `import ${module}`], { stdio: 'ignore' }).status === 0;
}

/** Each entry: the apt package, why the suite needs it, and a presence check. */
export const SYSTEM_PACKAGES = [
  {
    pkg: 'chromium',
    why: 'browser and e2e tests; its SwiftShader Vulkan driver gives Node+Dawn an adapter',
    present: () => existsSync(CHROMIUM) && existsSync(SWIFTSHADER_ICD),
  },
  { pkg: 'libvulkan1', why: 'the Vulkan loader Dawn needs', present: () => hasLib('libvulkan.so.1') },
  {
    pkg: 'fonts-wqy-microhei',
    why: 'screenshots of the 中文 UI',
    present: () => hasCjkFont() || dpkgInstalled('fonts-wqy-microhei'),
  },
  // Listed before python3-torch so apt satisfies torch's BLAS dependency with the OpenMP build
  // (the pthread OpenBLAS oversubscribes a 2-core machine and is ~10x slower here).
  {
    pkg: 'libopenblas0-openmp',
    why: 'fast BLAS for the PyTorch oracles',
    present: () => dpkgInstalled('libopenblas0-openmp'),
  },
  {
    pkg: 'python3-torch',
    why: 'PyTorch reference checks (safetensors, export, model fixtures)',
    present: () => pythonImports('torch'),
  },
  {
    pkg: 'python3-yaml',
    why: 'PyYAML reads our LLaMA-Factory YAML as LLaMA-Factory does',
    present: () => pythonImports('yaml'),
  },
];

/** Installs what is missing; returns false (after saying why) when that is not possible. */
export function ensureSystemPackages(log = console.log) {
  const missing = SYSTEM_PACKAGES.filter((p) => !p.present());
  if (!missing.length) return true;
  const names = missing.map((p) => p.pkg).join(' ');
  const cmd = `apt-get update && apt-get install -y --no-install-recommends ${names}`;
  for (const p of missing) log(`npm test: missing ${p.pkg} (${p.why})`);
  if (process.getuid?.() !== 0) {
    console.error(`npm test: install them as root, then run npm test again:\n  sudo ${cmd}`);
    return false;
  }
  log(`npm test: installing ${names} with apt…`);
  const r = spawnSync('bash', ['-c', `export DEBIAN_FRONTEND=noninteractive; ${cmd}`], { stdio: 'inherit' });
  if (r.status !== 0) {
    console.error(`npm test: apt-get failed (exit ${r.status}). Run as root: ${cmd}`);
    return false;
  }
  const still = SYSTEM_PACKAGES.filter((p) => !p.present());
  if (still.length) {
    console.error(`npm test: still missing after apt-get: ${still.map((p) => p.pkg).join(', ')}`);
    return false;
  }
  return true;
}
