// Where the Debian Chromium lives and the flags that give it a SwiftShader WebGPU adapter
// (see ../shared/TESTING.md). Shared by the vitest browser project, e2e tests and bench.
export const CHROMIUM_PATH = process.env.TABTUNE_CHROMIUM ?? '/usr/bin/chromium';

// Playwright appends its own --enable-features; the last one wins, so callers merge.
export const CHROMIUM_WEBGPU_ARGS = [
  '--enable-unsafe-webgpu',
  '--use-webgpu-adapter=swiftshader',
  '--enable-features=Vulkan',
  '--use-vulkan=swiftshader',
  '--use-angle=swiftshader',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
  '--no-sandbox',
];

export const SWIFTSHADER_ICD = '/usr/lib/chromium/vk_swiftshader_icd.json';
