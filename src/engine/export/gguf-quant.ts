// Q8_0 as ggml-quants.c quantize_row_q8_0_ref: blocks of 32 along a row; per block
// d = max|x| / 127 (f32), stored as f16; q = roundf(x / d) (round half away from zero) as int8;
// a block of zeros gets d = 0 and q = 0. 34 bytes per block: f16 d, then 32 int8.
import { f32ToF16Bits } from '../numeric/half.ts';

export const Q8_0_BLOCK = 32;
export const Q8_0_BLOCK_BYTES = 34;

/** Quantizes whole blocks of f32 values (x.length a multiple of 32). */
export function quantizeQ8_0(x: Float32Array): Uint8Array {
  if (x.length % Q8_0_BLOCK !== 0) throw new Error(`q8_0: ${x.length} values is not a whole number of 32-blocks`);
  const nb = x.length / Q8_0_BLOCK;
  const out = new Uint8Array(nb * Q8_0_BLOCK_BYTES);
  const view = new DataView(out.buffer);
  for (let b = 0; b < nb; b++) {
    const base = b * Q8_0_BLOCK;
    let amax = 0;
    for (let j = 0; j < Q8_0_BLOCK; j++) amax = Math.max(amax, Math.abs(x[base + j]));
    const d = Math.fround(amax / 127);
    const id = d ? Math.fround(1 / d) : 0;
    const o = b * Q8_0_BLOCK_BYTES;
    view.setUint16(o, f32ToF16Bits(d), true);
    for (let j = 0; j < Q8_0_BLOCK; j++) {
      const v = Math.fround(x[base + j] * id);
      const q = v < 0 ? -Math.round(-v) : Math.round(v); // roundf: halves away from zero
      view.setInt8(o + 2 + j, q);
    }
  }
  return out;
}

/** Dequantizes Q8_0 blocks back to f32 (for tests and checks). */
export function dequantizeQ8_0(bytes: Uint8Array): Float32Array {
  const nb = bytes.byteLength / Q8_0_BLOCK_BYTES;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = new Float32Array(nb * Q8_0_BLOCK);
  for (let b = 0; b < nb; b++) {
    const h = view.getUint16(b * Q8_0_BLOCK_BYTES, true);
    const sign = h & 0x8000 ? -1 : 1;
    const e = (h >>> 10) & 0x1f;
    const m = h & 0x3ff;
    const d = e === 0 ? sign * m * 2 ** -24 : sign * (1 + m / 1024) * 2 ** (e - 15);
    for (let j = 0; j < Q8_0_BLOCK; j++) out[b * Q8_0_BLOCK + j] = d * view.getInt8(b * Q8_0_BLOCK_BYTES + 2 + j);
  }
  return out;
}

/** Re-chunks a byte stream into pieces whose lengths are multiples of `unit` (the last may be short). */
export async function* rechunk(src: AsyncIterable<Uint8Array>, unit: number): AsyncGenerator<Uint8Array> {
  let carry = new Uint8Array(0);
  for await (const chunk of src) {
    let buf = chunk;
    if (carry.length) {
      buf = new Uint8Array(carry.length + chunk.length);
      buf.set(carry);
      buf.set(chunk, carry.length);
    }
    const whole = buf.length - (buf.length % unit);
    if (whole) yield buf.subarray(0, whole);
    carry = buf.slice(whole);
  }
  if (carry.length) yield carry;
}

/** f32 bytes → quantized blocks of `block` values each (rows must be whole blocks). */
export async function* blockChunks(
  f32Bytes: AsyncIterable<Uint8Array>,
  block: number,
  quantize: (x: Float32Array) => Uint8Array,
): AsyncGenerator<Uint8Array> {
  for await (const chunk of rechunk(f32Bytes, block * 4)) {
    const f = new Float32Array(chunk.byteLength / 4);
    new Uint8Array(f.buffer).set(chunk);
    yield quantize(f);
  }
}

/** f32 bytes (a multiple of 32 values per chunk after rechunking) → Q8_0 blocks. */
export function q8_0Chunks(f32Bytes: AsyncIterable<Uint8Array>): AsyncGenerator<Uint8Array> {
  return blockChunks(f32Bytes, Q8_0_BLOCK, quantizeQ8_0);
}
