import type { ShaderSources } from './gpu/shader-library.ts';

// Vite inlines every shaders/*.wgsl and shaders/include/*.wgsl as a string (the browser build,
// vitest in both runtimes); keys are the paths under shaders/ without extension.
const modules = import.meta.glob(['../../shaders/*.wgsl', '../../shaders/include/*.wgsl'], {
  query: '?raw',
  import: 'default',
  eager: true,
}) as Record<string, string>;

export const viteShaders: ShaderSources = Object.fromEntries(
  Object.entries(modules).map(([path, src]) => [path.replace(/^.*?shaders\//, '').replace(/\.wgsl$/, ''), src]),
);
