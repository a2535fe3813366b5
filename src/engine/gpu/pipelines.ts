import { GpuError } from './errors.ts';
import { constantsKey, resolveShader, type ShaderConstants, type ShaderSources } from './shader-library.ts';

/** Compiled compute pipelines, keyed by shader name + constants + entry point. */
export class PipelineCache {
  private readonly cache = new Map<string, Promise<GPUComputePipeline>>();

  constructor(
    private readonly device: GPUDevice,
    private readonly sources: ShaderSources,
  ) {}

  get size(): number {
    return this.cache.size;
  }

  get(name: string, constants: ShaderConstants = {}, entryPoint = 'main'): Promise<GPUComputePipeline> {
    const key = `${constantsKey(name, constants)}#${entryPoint}`;
    let p = this.cache.get(key);
    if (!p) {
      p = this.compile(name, constants, entryPoint, key);
      // A failed compile must not poison the cache for a corrected retry.
      p.catch(() => this.cache.delete(key));
      this.cache.set(key, p);
    }
    return p;
  }

  private async compile(
    name: string,
    constants: ShaderConstants,
    entryPoint: string,
    label: string,
  ): Promise<GPUComputePipeline> {
    const code = resolveShader(this.sources, name, constants);
    const module = this.device.createShaderModule({ code, label });
    const info = await module.getCompilationInfo();
    const errors = info.messages.filter((m) => m.type === 'error');
    if (errors.length) {
      const lines = code.split('\n');
      const detail = errors
        .map((m) => `line ${m.lineNum}:${m.linePos} ${m.message}\n    ${lines[m.lineNum - 1]?.trim() ?? ''}`)
        .join('\n');
      throw new GpuError('compile', label, detail);
    }
    try {
      return await this.device.createComputePipelineAsync({ layout: 'auto', compute: { module, entryPoint }, label });
    } catch (e) {
      throw new GpuError('compile', label, (e as Error).message);
    }
  }
}
