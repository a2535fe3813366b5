// Host-side dtype conversion of raw little-endian tensor bytes (torch `.to(dtype)` semantics:
// 16-bit results round to nearest even; 16 → 16 goes through f32, exact for the widening step).
import { bf16BitsToF32, f16BitsToF32, f32ToBf16Bits, f32ToF16Bits } from '../numeric/half.ts';

export type FloatDType = 'f32' | 'bf16' | 'f16';
export const ST_DTYPE: Record<FloatDType, 'F32' | 'BF16' | 'F16'> = { f32: 'F32', bf16: 'BF16', f16: 'F16' };
export const TORCH_DTYPE: Record<FloatDType, 'float32' | 'bfloat16' | 'float16'> = {
  f32: 'float32',
  bf16: 'bfloat16',
  f16: 'float16',
};
export const ELEMENT_BYTES: Record<FloatDType, number> = { f32: 4, bf16: 2, f16: 2 };

function aligned<T>(bytes: Uint8Array, size: number, make: (b: ArrayBuffer, o: number, n: number) => T): T {
  const n = bytes.byteLength / size;
  if (bytes.byteOffset % size === 0) return make(bytes.buffer as ArrayBuffer, bytes.byteOffset, n);
  const copy = new Uint8Array(bytes); // a real copy even of a Node Buffer (whose slice() is a view)
  return make(copy.buffer, 0, n);
}

/** Converts whole elements of `from` to `to`; returns the input itself when they match. */
export function convertBytes(bytes: Uint8Array, from: FloatDType, to: FloatDType): Uint8Array {
  if (from === to) return bytes;
  if (bytes.byteLength % ELEMENT_BYTES[from] !== 0)
    throw new Error(`convertBytes: ${bytes.byteLength} bytes is not a whole number of ${from} elements`);
  const n = bytes.byteLength / ELEMENT_BYTES[from];
  const read: (i: number) => number =
    from === 'f32'
      ? (
          (f) => (i: number) =>
            f[i]
        )(aligned(bytes, 4, (b, o, k) => new Float32Array(b, o, k)))
      : ((u) => (from === 'bf16' ? (i: number) => bf16BitsToF32(u[i]) : (i: number) => f16BitsToF32(u[i])))(
          aligned(bytes, 2, (b, o, k) => new Uint16Array(b, o, k)),
        );
  if (to === 'f32') {
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) out[i] = read(i);
    return new Uint8Array(out.buffer);
  }
  const out = new Uint16Array(n);
  const enc = to === 'bf16' ? f32ToBf16Bits : f32ToF16Bits;
  for (let i = 0; i < n; i++) out[i] = enc(read(i));
  return new Uint8Array(out.buffer);
}
