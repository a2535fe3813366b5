import type { ShaderSources } from './gpu/shader-library.ts';

// Vite inlines every shaders/*.wgsl as a string (the browser build, vitest in both runtimes).
const modules = import.meta.glob('../../shaders/*.wgsl', { query: '?raw', import: 'default', eager: true }) as Record<string, string>;

export const viteShaders: ShaderSources = Object.fromEntries(
  Object.entries(modules).map(([path, src]) => [path.replace(/^.*\//, '').replace(/\.wgsl$/, ''), src]),
);
