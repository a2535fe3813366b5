import { GpuError } from './errors.ts';
import { KernelChoices, type ForcedKernels } from './kernel-choices.ts';
import { PipelineCache } from './pipelines.ts';
import { BufferPool } from './pool.ts';
import { DispatchProfiler } from './profiler.ts';
import type { ShaderSources } from './shader-library.ts';

export interface AdapterReport {
  vendor: string;
  architecture: string;
  device: string;
  description: string;
  isFallbackAdapter: boolean;
  features: string[];
  limits: Record<string, number>;
}

export interface AcquireOptions {
  /** The WebGPU entry point: `navigator.gpu` in a browser, `create([])` from `webgpu` in Node. */
  gpu?: GPU;
  shaders: ShaderSources;
  powerPreference?: GPUPowerPreference;
  onLost?: (info: { reason: string; message: string }) => void;
  /** Ask for at most these limits (tests use WEBGPU_DEFAULT_LIMITS to stand in for the smallest adapter). */
  limitCaps?: Partial<Record<RaisedLimit, number>>;
  /** Kernel variants pinned by the user or a test (see kernel-choices.ts). */
  forcedKernels?: ForcedKernels;
}

/** The limits every WebGPU adapter must offer (the spec's defaults): what Tabtune can count on. */
export const WEBGPU_DEFAULT_LIMITS = {
  maxBufferSize: 268435456,
  maxStorageBufferBindingSize: 134217728,
  maxComputeWorkgroupStorageSize: 16384,
  maxComputeInvocationsPerWorkgroup: 256,
  maxComputeWorkgroupSizeX: 256,
  maxComputeWorkgroupSizeY: 256,
  maxComputeWorkgroupSizeZ: 64,
  maxComputeWorkgroupsPerDimension: 65535,
  maxStorageBuffersPerShaderStage: 8,
  maxBindGroups: 4,
} as const satisfies Record<RaisedLimit, number>;

/** Limits we raise to what the adapter really offers; the defaults (128 MiB bindings) are far too small for LLMs. */
const RAISED_LIMITS = [
  'maxBufferSize',
  'maxStorageBufferBindingSize',
  'maxComputeWorkgroupStorageSize',
  'maxComputeInvocationsPerWorkgroup',
  'maxComputeWorkgroupSizeX',
  'maxComputeWorkgroupSizeY',
  'maxComputeWorkgroupSizeZ',
  'maxComputeWorkgroupsPerDimension',
  'maxStorageBuffersPerShaderStage',
  'maxBindGroups',
] as const;
type RaisedLimit = (typeof RAISED_LIMITS)[number];

const WANTED_FEATURES: GPUFeatureName[] = ['shader-f16', 'timestamp-query', 'subgroups' as GPUFeatureName];

export function reportAdapter(adapter: GPUAdapter): AdapterReport {
  const info = adapter.info;
  const limits: Record<string, number> = {};
  for (const key in adapter.limits) {
    const v = (adapter.limits as unknown as Record<string, unknown>)[key];
    if (typeof v === 'number') limits[key] = v;
  }
  // Dawn-node's limits object keeps its fields on the prototype: enumerate those too.
  for (const key of Object.getOwnPropertyNames(Object.getPrototypeOf(adapter.limits))) {
    const v = (adapter.limits as unknown as Record<string, unknown>)[key];
    if (typeof v === 'number') limits[key] = v;
  }
  return {
    vendor: info?.vendor ?? '',
    architecture: info?.architecture ?? '',
    device: info?.device ?? '',
    description: info?.description ?? '',
    isFallbackAdapter: (info as { isFallbackAdapter?: boolean } | undefined)?.isFallbackAdapter ?? false,
    features: [...adapter.features].map(String).sort(),
    limits,
  };
}

/** The device, its caches and its memory ledger: everything a kernel needs to run. */
export class Gpu {
  readonly pipelines: PipelineCache;
  readonly pool: BufferPool;
  readonly lost: Promise<GPUDeviceLostInfo>;
  readonly kernels: KernelChoices;
  /** Set while kernels are being timed one by one (startProfiling). */
  profiler: DispatchProfiler | null = null;
  private destroyed = false;

  constructor(
    readonly device: GPUDevice,
    readonly adapter: AdapterReport,
    readonly shaders: ShaderSources,
    forcedKernels: ForcedKernels = {},
  ) {
    this.kernels = new KernelChoices(forcedKernels);
    this.pipelines = new PipelineCache(device, shaders);
    this.pool = new BufferPool(device, device.limits.maxBufferSize);
    this.lost = device.lost;
  }

  get ledger() {
    return this.pool.ledger;
  }

  get limits(): GPUSupportedLimits {
    return this.device.limits;
  }

  hasFeature(name: string): boolean {
    return this.device.features.has(name);
  }

  /** Times every dispatch from now on (each in a pass of its own: slower, for development only). */
  startProfiling(): DispatchProfiler {
    if (!this.hasFeature('timestamp-query')) {
      throw new Error('profiling needs timestamp queries, which this adapter does not offer');
    }
    return (this.profiler = new DispatchProfiler(this.device));
  }

  get isDestroyed(): boolean {
    return this.destroyed;
  }

  destroy(): void {
    this.destroyed = true;
    this.pool.trim();
    this.device.destroy();
  }
}

export async function acquireGpu(opts: AcquireOptions): Promise<Gpu> {
  const gpu = opts.gpu ?? (globalThis.navigator as Navigator | undefined)?.gpu;
  if (!gpu) {
    throw new GpuError('no-webgpu', 'startup', 'this browser exposes no WebGPU (navigator.gpu is missing)');
  }
  const adapter = await gpu.requestAdapter({ powerPreference: opts.powerPreference ?? 'high-performance' });
  if (!adapter) throw new GpuError('no-adapter', 'startup', 'WebGPU is present but no GPU adapter was offered');
  const requiredLimits: Record<string, number> = {};
  for (const key of RAISED_LIMITS) {
    const v = (adapter.limits as unknown as Record<string, number>)[key];
    const cap = opts.limitCaps?.[key];
    if (typeof v === 'number') requiredLimits[key] = cap === undefined ? v : Math.min(v, cap);
  }
  const requiredFeatures = WANTED_FEATURES.filter((f) => adapter.features.has(f));
  const device = await adapter.requestDevice({ requiredLimits, requiredFeatures, label: 'tabtune' });
  const g = new Gpu(device, reportAdapter(adapter), opts.shaders, opts.forcedKernels);
  void device.lost.then((info) => {
    if (g.isDestroyed && info.reason === 'destroyed') return;
    opts.onLost?.({ reason: String(info.reason), message: info.message });
  });
  device.addEventListener?.('uncapturederror', (ev) => {
    // Errors outside our scopes are bugs; make them loud instead of silently dropped.
    console.error('[tabtune] uncaptured WebGPU error:', (ev as GPUUncapturedErrorEvent).error.message);
  });
  return g;
}
