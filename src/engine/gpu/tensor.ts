import type { MemoryCategory } from './ledger.ts';
import type { PooledBuffer } from './pool.ts';

/**
 * Element types as stored on the GPU. 16-bit types are packed two per u32 (element 2j in
 * the low half, as the little-endian bytes of a safetensors file already are); `u8` packs
 * four per u32; `nf4` packs two 4-bit codes per byte.
 */
export type DType = 'f32' | 'f16' | 'bf16' | 'i32' | 'u32' | 'u8' | 'nf4';

export const BITS: Record<DType, number> = { f32: 32, f16: 16, bf16: 16, i32: 32, u32: 32, u8: 8, nf4: 4 };

/** Storage bytes for `numel` elements, padded to whole u32 words (what WGSL can bind). */
export function storageBytes(dtype: DType, numel: number): number {
  return Math.ceil((numel * BITS[dtype]) / 32) * 4;
}

export function numelOf(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/**
 * A GPU tensor: a row-major array of `shape` in a pooled buffer — the whole buffer, or for a
 * view (`offset` set) the aligned range starting there, which the view's owner releases.
 */
export interface Tensor {
  readonly buf: PooledBuffer;
  readonly dtype: DType;
  readonly shape: readonly number[];
  readonly label: string;
  /** Byte offset of a view into `buf` (a multiple of minStorageBufferOffsetAlignment). */
  readonly offset?: number;
}

/** Bytes of the tensor's elements (what a binding of it covers). */
export function tensorBytes(t: Tensor): number {
  return storageBytes(t.dtype, numelOf(t.shape));
}

/** A view of `shape` at byte `offset` of `parent`'s buffer; it shares the parent's lifetime. */
export function tensorView(
  parent: Tensor,
  offset: number,
  dtype: DType,
  shape: readonly number[],
  label: string,
): Tensor {
  const at = (parent.offset ?? 0) + offset;
  const bytes = storageBytes(dtype, numelOf(shape));
  if (at + bytes > (parent.offset ?? 0) + tensorBytes(parent))
    throw new Error(`view ${label} (${bytes} bytes at ${offset}) overflows ${describe(parent)}`);
  return { buf: parent.buf, dtype, shape: [...shape], label, offset: at };
}

export function describe(t: Tensor): string {
  return `${t.label}[${t.shape.join('×')}:${t.dtype}]`;
}

export type HostArray = Float32Array | Int32Array | Uint32Array | Uint16Array | Uint8Array;

export interface TensorSpec {
  dtype: DType;
  shape: readonly number[];
  category: MemoryCategory;
  label: string;
}
