// CPU reference for shaders/nf4.wgsl, written from bitsandbytes' rules (functional.py, kernels.cu):
// absmax per block, x·(1/absmax) against the f32 midpoints of the NF4 code book with strict `>`,
// two codes per byte (high nibble first), and the 8-bit dynamic double quantization of absmax.
const f = Math.fround;

/** The NF4 code book (bitsandbytes get_4bit_type("nf4")), rounded to f32. */
export const NF4_VALUES = [
  -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635, -0.18477343022823334,
  -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
  0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
].map(f);

/** Midpoints between neighbouring codes in f32, as the CUDA decision tree's literals. */
const MIDS = NF4_VALUES.slice(0, 15).map((v, i) => f((v + NF4_VALUES[i + 1]) / 2));

export function nf4QuantizeValue(x: number): number {
  let q = 0;
  for (const t of MIDS) if (x > t) q++;
  return q;
}

export interface Nf4Ref {
  packed: Uint8Array;
  absmax: Float32Array;
  codes: Uint8Array;
}

export function quantizeNf4Ref(w: ArrayLike<number>, blocksize: number): Nf4Ref {
  const n = w.length;
  const nb = Math.ceil(n / blocksize);
  const absmax = new Float32Array(nb);
  for (let i = 0; i < n; i++)
    absmax[Math.floor(i / blocksize)] = Math.max(absmax[Math.floor(i / blocksize)], Math.abs(w[i]));
  const padded = Math.ceil(n / 2) * 2;
  const codes = new Uint8Array(padded);
  for (let i = 0; i < padded; i++) {
    const a = absmax[Math.floor(i / blocksize)];
    // 1/0 = ∞ and 0·∞ = NaN in an all-zero block: no threshold is exceeded, code 0.
    const x = i < n ? w[i] : 0;
    codes[i] = nf4QuantizeValue(f(x * f(1 / a)));
  }
  const packed = new Uint8Array(padded / 2);
  for (let j = 0; j < packed.length; j++) packed[j] = (codes[2 * j] << 4) | codes[2 * j + 1];
  return { packed, absmax, codes: codes.subarray(0, n) };
}

/** kernels.cu dQuantize<0>: binary search then nearer bracketing code by f32 midpoint. */
export function quantize8Ref(x: number, code: Float32Array): number {
  let pivot = 127;
  let upperPivot = 255;
  let lowerPivot = 0;
  let lower = -1;
  let upper = 1;
  let v = code[pivot];
  for (let step = 64; step > 0; step >>= 1) {
    if (x > v) {
      lowerPivot = pivot;
      lower = v;
      pivot += step;
    } else {
      upperPivot = pivot;
      upper = v;
      pivot -= step;
    }
    v = code[pivot];
  }
  if (upperPivot === 255) upper = code[255];
  if (lowerPivot === 0) lower = code[0];
  if (x > v) return x > f(f(upper + v) * 0.5) ? upperPivot : pivot;
  return x < f(f(lower + v) * 0.5) ? lowerPivot : pivot;
}

export interface DoubleQuantRef {
  offset: number;
  codes: Uint8Array;
  nestedAbsmax: Float32Array;
  /** code8[q]·nested + offset, two f32 roundings. */
  decoded: Float32Array;
}

/** Double quantization with the GPU's summation order for the mean (see shaders/nf4.wgsl dq_offset). */
export function doubleQuantRef(absmax: Float32Array, code: Float32Array, nestedBlock = 256): DoubleQuantRef {
  const n = absmax.length;
  const partial = new Float32Array(256);
  for (let i = 0; i < n; i++) partial[i % 256] = f(partial[i % 256] + absmax[i]);
  for (let h = 128; h > 0; h >>= 1) for (let t = 0; t < h; t++) partial[t] = f(partial[t] + partial[t + h]);
  const offset = f(partial[0] * f(1 / n));
  const nn = Math.ceil(n / nestedBlock);
  const nestedAbsmax = new Float32Array(nn);
  for (let i = 0; i < n; i++) {
    const b = Math.floor(i / nestedBlock);
    nestedAbsmax[b] = Math.max(nestedAbsmax[b], Math.abs(f(absmax[i] - offset)));
  }
  const codes = new Uint8Array(n);
  const decoded = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const nested = nestedAbsmax[Math.floor(i / nestedBlock)];
    codes[i] = nested === 0 ? 0 : quantize8Ref(f(f(absmax[i] - offset) * f(1 / nested)), code);
    decoded[i] = f(f(code[codes[i]] * nested) + offset);
  }
  return { offset, codes, nestedAbsmax, decoded };
}

export function dequantizeNf4Ref(codes: ArrayLike<number>, absmax: Float32Array, blocksize: number): Float32Array {
  const out = new Float32Array(codes.length);
  for (let i = 0; i < codes.length; i++) out[i] = f(NF4_VALUES[codes[i]] * absmax[Math.floor(i / blocksize)]);
  return out;
}

export function unpackNf4(packed: Uint8Array, n: number): Uint8Array {
  const codes = new Uint8Array(n);
  for (let i = 0; i < n; i++) codes[i] = (packed[i >> 1] >> (i & 1 ? 0 : 4)) & 15;
  return codes;
}
