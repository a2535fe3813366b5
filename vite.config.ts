import { resolve } from 'node:path';
import { defineConfig } from 'vitest/config';
import { svelte } from '@sveltejs/vite-plugin-svelte';
import { playwright } from '@vitest/browser-playwright';
import { CHROMIUM_PATH, CHROMIUM_WEBGPU_ARGS, SWIFTSHADER_ICD } from './scripts/chromium.ts';

const ci = !!process.env.CI;
// The kernel tuner's choices for the test runs: measured once per checkout, never in the user's ~/.cache.
const TEST_KERNEL_CACHE = resolve('.cache', 'kernels-test.json');

export default defineConfig({
  plugins: [svelte()],
  worker: { format: 'es' },
  server: { host: '127.0.0.1', fs: { allow: ['.'] } },
  build: { target: 'es2022', chunkSizeWarningLimit: 4096 },
  test: {
    reporters: ci ? ['default'] : ['default'],
    projects: [
      {
        extends: true,
        test: {
          name: 'unit',
          include: ['tests/unit/**/*.test.ts'],
          environment: 'node',
          testTimeout: 60_000,
        },
      },
      {
        extends: true,
        test: {
          name: 'gpu-node',
          include: ['tests/gpu/**/*.test.ts'],
          environment: 'node',
          setupFiles: ['tests/gpu/setup-node.ts'],
          env: { VK_ICD_FILENAMES: SWIFTSHADER_ICD, TABTUNE_KERNEL_CACHE: TEST_KERNEL_CACHE },
          testTimeout: 300_000,
          hookTimeout: 120_000,
          // Dawn's SwiftShader uses every core itself; files in parallel only thrash.
          fileParallelism: false,
        },
      },
      {
        extends: true,
        test: {
          name: 'browser',
          include: ['tests/gpu/**/*.test.ts', 'tests/browser/**/*.test.ts'],
          testTimeout: 300_000,
          hookTimeout: 120_000,
          fileParallelism: false,
          browser: {
            enabled: true,
            headless: true,
            screenshotFailures: false,
            provider: playwright({
              launchOptions: { executablePath: CHROMIUM_PATH, args: CHROMIUM_WEBGPU_ARGS },
            }),
            instances: [{ browser: 'chromium' }],
          },
        },
      },
      {
        extends: true,
        test: {
          name: 'e2e',
          include: ['tests/e2e/**/*.test.ts'],
          globalSetup: ['tests/e2e/global-setup.ts'],
          environment: 'node',
          env: { TABTUNE_KERNEL_CACHE: TEST_KERNEL_CACHE },
          testTimeout: 600_000,
          hookTimeout: 300_000,
          fileParallelism: false,
        },
      },
    ],
  },
});
