import type { Gpu } from './device.ts';
import { GpuError, withErrorScopes } from './errors.ts';
import type { PooledBuffer } from './pool.ts';
import type { PassStamps } from './profiler.ts';
import { tensorBytes, type Tensor } from './tensor.ts';
import { BUF } from './usage.ts';

export type Bindable = GPUBuffer | PooledBuffer | Tensor;

function gpuBuffer(b: Bindable): GPUBuffer {
  if ('buf' in b) return b.buf.buffer;
  if ('buffer' in b && 'category' in b) return b.buffer;
  return b as GPUBuffer;
}

/** Byte offset of a tensor view in its buffer (0 for everything else). */
function baseOffset(b: Bindable): number {
  return 'buf' in b ? (b.offset ?? 0) : 0;
}

function binding(b: Bindable): GPUBufferBinding {
  // A view binds only its range, so kernels see it as a buffer of its own.
  if ('buf' in b && b.offset !== undefined) return { buffer: b.buf.buffer, offset: b.offset, size: tensorBytes(b) };
  return { buffer: gpuBuffer(b) };
}

export interface Kernel {
  pipeline: GPUComputePipeline;
  /** Kernel name and shapes, e.g. "matmul A[37×50] B[23×50]": named in every error. */
  what: string;
}

const ARENA_BYTES = 64 * 1024;

/**
 * Records many dispatches into one command buffer. Every kernel takes its parameters as a
 * uniform at @binding(0) and its storage buffers at @binding(1..n); the parameters of all
 * dispatches go into one arena written with a single writeBuffer at submit.
 */
export class Recorder {
  readonly encoder: GPUCommandEncoder;
  private pass: GPUComputePassEncoder | null = null;
  private readonly arenas: { buf: PooledBuffer; host: Uint8Array<ArrayBuffer>; used: number }[] = [];
  private readonly whats: string[] = [];
  private readonly stamps: PassStamps[] = [];
  private readonly align: number;
  dispatchCount = 0;

  constructor(
    readonly gpu: Gpu,
    readonly label = 'step',
  ) {
    this.encoder = gpu.device.createCommandEncoder({ label });
    this.align = gpu.limits.minUniformBufferOffsetAlignment;
  }

  dispatch(
    kernel: Kernel,
    params: ArrayBuffer,
    buffers: Bindable[],
    groups: readonly [number, number?, number?],
  ): void {
    const [x, y = 1, z = 1] = groups;
    const max = this.gpu.limits.maxComputeWorkgroupsPerDimension;
    if (x > max || y > max || z > max) {
      throw new GpuError('limit', kernel.what, `grid ${x}×${y}×${z} exceeds ${max} workgroups per dimension`);
    }
    if (x === 0 || y === 0 || z === 0) return;
    const slot = this.uniformSlot(params);
    const entries: GPUBindGroupEntry[] = [
      { binding: 0, resource: { buffer: slot.buffer, offset: slot.offset, size: params.byteLength } },
    ];
    buffers.forEach((b, i) => entries.push({ binding: i + 1, resource: binding(b) }));
    const bindGroup = this.gpu.device.createBindGroup({
      layout: kernel.pipeline.getBindGroupLayout(0),
      entries,
      label: kernel.what,
    });
    const profiler = this.gpu.profiler;
    if (profiler) {
      this.endPass();
      const timestampWrites = profiler.passStamps(this.stamps, kernel.what);
      this.pass = this.encoder.beginComputePass({ label: this.label, timestampWrites });
    }
    const pass = (this.pass ??= this.encoder.beginComputePass({ label: this.label }));
    pass.setPipeline(kernel.pipeline);
    pass.setBindGroup(0, bindGroup);
    pass.dispatchWorkgroups(x, y, z);
    if (profiler) this.endPass();
    this.whats.push(kernel.what);
    this.dispatchCount++;
  }

  copy(src: Bindable, srcOffset: number, dst: Bindable, dstOffset: number, bytes: number): void {
    this.endPass();
    this.encoder.copyBufferToBuffer(
      gpuBuffer(src),
      baseOffset(src) + srcOffset,
      gpuBuffer(dst),
      baseOffset(dst) + dstOffset,
      bytes,
    );
  }

  /** Zero-fills a whole buffer or view (or a range of it). */
  clear(b: Bindable, offset = 0, bytes?: number): void {
    this.endPass();
    const view = 'buf' in b && b.offset !== undefined;
    this.encoder.clearBuffer(
      gpuBuffer(b),
      baseOffset(b) + offset,
      bytes ?? (view ? tensorBytes(b) - offset : undefined),
    );
  }

  /** Submits, then resolves once WebGPU has validated the work; errors name every kernel recorded. */
  async submit(): Promise<void> {
    this.endPass();
    const what = `${this.label} (${this.whats.length} dispatches: ${summarise(this.whats)})`;
    await this.gpu.pool.checkAllocations();
    const afterSubmit = this.stamps.length ? this.gpu.profiler?.resolve(this.encoder, this.stamps) : undefined;
    await withErrorScopes(this.gpu.device, what, () => {
      for (const a of this.arenas) this.gpu.device.queue.writeBuffer(a.buf.buffer, 0, a.host, 0, a.used);
      this.gpu.device.queue.submit([this.encoder.finish({ label: this.label })]);
    });
    afterSubmit?.();
    // The queue runs a later writeBuffer after this submit, so the arenas are reusable now.
    const spare = spareArenas(this.gpu);
    for (const a of this.arenas) spare.push(a.buf);
    this.arenas.length = 0;
  }

  private endPass(): void {
    this.pass?.end();
    this.pass = null;
  }

  private uniformSlot(params: ArrayBuffer): { buffer: GPUBuffer; offset: number } {
    const need = Math.ceil(params.byteLength / this.align) * this.align;
    let arena = this.arenas[this.arenas.length - 1];
    if (!arena || arena.used + need > ARENA_BYTES) {
      const buf =
        spareArenas(this.gpu).pop() ??
        this.gpu.pool.acquireSpecial(ARENA_BYTES, BUF.UNIFORM | BUF.COPY_DST, 'scratch', 'uniform-arena');
      arena = { buf, host: new Uint8Array(ARENA_BYTES), used: 0 };
      this.arenas.push(arena);
    }
    const offset = arena.used;
    arena.host.set(new Uint8Array(params), offset);
    arena.used += need;
    return { buffer: arena.buf.buffer, offset };
  }
}

const arenasByGpu = new WeakMap<Gpu, PooledBuffer[]>();
function spareArenas(gpu: Gpu): PooledBuffer[] {
  let list = arenasByGpu.get(gpu);
  if (!list) arenasByGpu.set(gpu, (list = []));
  return list;
}

function summarise(whats: string[]): string {
  const shown = whats.slice(0, 6).join('; ');
  return whats.length > 6 ? `${shown}; …` : shown;
}

/** Little helper to build a params block: u32/i32/f32 fields in declaration order. */
export class Params {
  private readonly view: DataView;
  private readonly bytes: ArrayBuffer;
  private at = 0;
  constructor(fields: number) {
    // Uniform structs are 16-byte aligned in size.
    this.bytes = new ArrayBuffer(Math.ceil((fields * 4) / 16) * 16);
    this.view = new DataView(this.bytes);
  }
  u32(v: number): this {
    this.view.setUint32(this.at, v >>> 0, true);
    this.at += 4;
    return this;
  }
  i32(v: number): this {
    this.view.setInt32(this.at, v | 0, true);
    this.at += 4;
    return this;
  }
  f32(v: number): this {
    this.view.setFloat32(this.at, v, true);
    this.at += 4;
    return this;
  }
  get buffer(): ArrayBuffer {
    return this.bytes;
  }
}
