#!/usr/bin/env node
// `npm test`: installs with apt what the tests run when it is missing (scripts/system-deps.mjs:
// chromium for WebGPU without a GPU, python3-torch, python3-yaml and libopenblas0-openmp for the
// PyTorch/PyYAML oracles, …) and the llama.cpp oracle, type-checks, checks formatting, then runs
// every vitest project (unit, gpu-node, browser, e2e) and prints one closing count line.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { ensureSystemPackages } from './system-deps.mjs';
import { ensureLlamaOracle } from './llama-oracle.mjs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
if (!ensureSystemPackages()) process.exit(1);
// llama.cpp (node-llama-cpp, prebuilt CPU binary) for the GGUF export tests, into .cache/llama-oracle.
if (!ensureLlamaOracle()) process.exit(1);

// Types first: a type error anywhere (engine, UI, tests) fails the run, but tests still run so
// the report shows everything at once.
console.log('npm test: type-checking (tsc + svelte-check)…');
const typecheck = spawnSync('npm', ['run', '--silent', 'typecheck'], { stdio: 'inherit', cwd: root });
console.log('npm test: checking formatting (prettier --check; `npm run format` fixes it)…');
const format = spawnSync(
  process.execPath,
  [join(root, 'node_modules/prettier/bin/prettier.cjs'), '--check', '--log-level', 'warn', '.'],
  {
    stdio: 'inherit',
    cwd: root,
  },
);

const artifacts = join(root, 'tests/artifacts');
mkdirSync(artifacts, { recursive: true });
const jsonOut = join(artifacts, 'vitest.json');
const args = process.argv.slice(2);
const vitest = spawnSync(
  process.execPath,
  [
    join(root, 'node_modules/vitest/vitest.mjs'),
    'run',
    '--reporter=default',
    '--reporter=json',
    `--outputFile.json=${jsonOut}`,
    ...args,
  ],
  { stdio: 'inherit', cwd: root, env: { ...process.env, PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD: '1' } },
);

let closing = 'vitest: no report written';
if (existsSync(jsonOut)) {
  const r = JSON.parse(readFileSync(jsonOut, 'utf8'));
  const skipped = (r.numPendingTests ?? 0) + (r.numTodoTests ?? 0);
  closing = `vitest: ${r.numPassedTests} passed, ${r.numFailedTests} failed${skipped ? `, ${skipped} skipped` : ''}`;
}
if (typecheck.status !== 0) console.log('npm test: the type check FAILED (see above)');
if (format.status !== 0) console.log('npm test: formatting FAILED: run `npm run format` (files listed above)');
if (vitest.status !== 0 && !/ [1-9]\d* failed/.test(closing)) {
  console.log(`npm test: vitest exited with status ${vitest.status} (unhandled errors or a crash: see above)`);
}
console.log(`\n${closing}`);
process.exit(typecheck.status !== 0 || format.status !== 0 ? 1 : (vitest.status ?? 1));
