// The llama.cpp oracle for the GGUF export tests: node-llama-cpp with its prebuilt linux-x64 CPU
// binary, installed on demand into .cache/llama-oracle/ (not a package.json dependency: its
// optional CUDA/Vulkan packages would make every `npm ci` download hundreds of MB).
// `node scripts/llama-oracle.mjs` installs it when missing; `npm test` calls ensureLlamaOracle().
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ORACLE_VERSION = '3.22.1';
const root = join(dirname(fileURLToPath(import.meta.url)), '..');
export const ORACLE_DIR = join(root, '.cache/llama-oracle');
/** The package folder tests import (by absolute path). */
export const ORACLE_PACKAGE = join(ORACLE_DIR, 'node_modules/node-llama-cpp');

export function llamaOracleInstalled() {
  return (
    existsSync(join(ORACLE_PACKAGE, 'package.json')) &&
    existsSync(join(ORACLE_DIR, 'node_modules/@node-llama-cpp/linux-x64/package.json'))
  );
}

/** Installs the oracle when missing; returns false (after saying why) when it cannot. */
export function ensureLlamaOracle() {
  if (llamaOracleInstalled()) return true;
  if (process.platform !== 'linux' || process.arch !== 'x64') {
    console.log(`npm test: the llama.cpp oracle (node-llama-cpp) is only set up for linux-x64; the GGUF tests skip`);
    return true;
  }
  const pkgs = [`node-llama-cpp@${ORACLE_VERSION}`, `@node-llama-cpp/linux-x64@${ORACLE_VERSION}`];
  console.log(`npm test: installing the llama.cpp oracle into .cache/llama-oracle (${pkgs.join(' ')})…`);
  mkdirSync(ORACLE_DIR, { recursive: true });
  const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';
  const args = ['install', '--no-save', '--omit=optional', '--no-package-lock', '--no-audit', '--no-fund'];
  const r = spawnSync(npm, [...args, '--prefix', ORACLE_DIR, ...pkgs], {
    stdio: 'inherit',
    cwd: ORACLE_DIR,
    // node-llama-cpp's postinstall must not try to build llama.cpp from source.
    env: { ...process.env, NODE_LLAMA_CPP_SKIP_DOWNLOAD: 'true' },
  });
  if (r.status !== 0 || !llamaOracleInstalled()) {
    console.log(
      `npm test: FAILED to install the llama.cpp oracle (npm exited with ${r.status}); the GGUF export tests need it.\n` +
        `  Install it by hand: npm ${args.join(' ')} --prefix ${ORACLE_DIR} ${pkgs.join(' ')}`,
    );
    return false;
  }
  return true;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  process.exit(ensureLlamaOracle() ? 0 : 1);
}
