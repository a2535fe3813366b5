import type { Gpu } from './device.ts';
import { GpuError, withErrorScopes } from './errors.ts';
import type { MemoryCategory } from './ledger.ts';
import {
  describe,
  numelOf,
  storageBytes,
  tensorBytes,
  type DType,
  type HostArray,
  type Tensor,
  type TensorSpec,
} from './tensor.ts';
import { BUF, MAP_MODE_READ } from './usage.ts';

export function createTensor(gpu: Gpu, spec: TensorSpec): Tensor {
  const bytes = storageBytes(spec.dtype, numelOf(spec.shape));
  const buf = gpu.pool.acquire(bytes, spec.category, spec.label);
  return { buf, dtype: spec.dtype, shape: [...spec.shape], label: spec.label };
}

/** A tensor whose bytes are zero (pooled buffers come back dirty). */
export function zerosTensor(gpu: Gpu, spec: TensorSpec): Tensor {
  const t = createTensor(gpu, spec);
  const enc = gpu.device.createCommandEncoder();
  enc.clearBuffer(t.buf.buffer, t.offset ?? 0, t.offset === undefined ? undefined : tensorBytes(t));
  gpu.device.queue.submit([enc.finish()]);
  return t;
}

export function uploadTensor(gpu: Gpu, data: HostArray, spec: TensorSpec): Tensor {
  const t = createTensor(gpu, spec);
  writeTensor(gpu, t, data);
  return t;
}

export function writeTensor(gpu: Gpu, t: Tensor, data: HostArray, byteOffset = 0): void {
  const bytes = new Uint8Array(data.buffer as ArrayBuffer, data.byteOffset, data.byteLength);
  const padded = Math.ceil(bytes.byteLength / 4) * 4;
  const room = t.offset === undefined ? t.buf.size : tensorBytes(t);
  if (byteOffset + padded > room) {
    throw new GpuError(
      'validation',
      describe(t),
      `writing ${bytes.byteLength} bytes at ${byteOffset} overflows its ${room}-byte ${t.offset === undefined ? 'buffer' : 'view'}`,
    );
  }
  const at = (t.offset ?? 0) + byteOffset;
  if (padded === bytes.byteLength) {
    gpu.device.queue.writeBuffer(t.buf.buffer, at, bytes);
  } else {
    const tmp = new Uint8Array(padded);
    tmp.set(bytes);
    gpu.device.queue.writeBuffer(t.buf.buffer, at, tmp);
  }
}

export function releaseTensor(gpu: Gpu, t: Tensor): void {
  if (t.offset !== undefined) throw new Error(`${describe(t)} is a view: release the tensor it views`);
  gpu.pool.release(t.buf);
}

/** Copies GPU bytes back to the host (one staging buffer, one map). */
export async function readBytes(
  gpu: Gpu,
  src: GPUBuffer,
  offset: number,
  bytes: number,
  what: string,
): Promise<ArrayBuffer> {
  const size = Math.ceil(bytes / 4) * 4;
  const staging = gpu.pool.acquireSpecial(size, BUF.MAP_READ | BUF.COPY_DST, 'scratch', `readback ${what}`);
  try {
    await withErrorScopes(gpu.device, `readback ${what}`, () => {
      const enc = gpu.device.createCommandEncoder();
      enc.copyBufferToBuffer(src, offset, staging.buffer, 0, size);
      gpu.device.queue.submit([enc.finish()]);
    });
    await staging.buffer.mapAsync(MAP_MODE_READ);
    const out = staging.buffer.getMappedRange().slice(0, bytes);
    staging.buffer.unmap();
    return out;
  } finally {
    gpu.pool.destroy(staging);
  }
}

const HOST_TYPE: Record<DType, (b: ArrayBuffer, n: number) => HostArray> = {
  f32: (b, n) => new Float32Array(b, 0, n),
  i32: (b, n) => new Int32Array(b, 0, n),
  u32: (b, n) => new Uint32Array(b, 0, n),
  f16: (b, n) => new Uint16Array(b, 0, n),
  bf16: (b, n) => new Uint16Array(b, 0, n),
  u8: (b, n) => new Uint8Array(b, 0, n),
  nf4: (b, n) => new Uint8Array(b, 0, Math.ceil(n / 2)),
};

export async function readTensor(gpu: Gpu, t: Tensor): Promise<HostArray> {
  const n = numelOf(t.shape);
  const bytes = storageBytes(t.dtype, n);
  const raw = await readBytes(gpu, t.buf.buffer, t.offset ?? 0, bytes, describe(t));
  return HOST_TYPE[t.dtype](raw, n);
}

export async function readF32(gpu: Gpu, t: Tensor): Promise<Float32Array> {
  if (t.dtype !== 'f32') throw new GpuError('validation', describe(t), 'readF32 needs an f32 tensor');
  return (await readTensor(gpu, t)) as Float32Array;
}

export function tensorSpec(
  dtype: DType,
  shape: readonly number[],
  category: MemoryCategory,
  label: string,
): TensorSpec {
  return { dtype, shape, category, label };
}
