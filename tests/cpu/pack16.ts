// CPU reference for shaders/pack16.wgsl: f32 → bf16 by value (the nearer of the two bf16
// neighbours, ties to the even mantissa, NaN stays NaN), written independently of the bit trick
// the shader and src/engine/numeric/half.ts use.
const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

function bitsOf(x: number): number {
  f32[0] = x;
  return u32[0];
}

function valueOf(bits: number): number {
  u32[0] = bits >>> 0;
  return f32[0];
}

/** bf16 bit pattern of the f32 value x (given as its bits). */
export function bf16OfF32Bits(bits: number): number {
  const x = valueOf(bits);
  if (Number.isNaN(x)) return ((bits >>> 16) | 0x40) & 0xffff;
  const down = bits >>> 16; // truncation: the neighbour towards zero
  if ((bits & 0xffff) === 0) return down;
  const up = down + 1; // the neighbour away from zero (0x7f80 / 0xff80 = ±inf past the largest finite)
  const lo = valueOf(down << 16);
  // Past the largest finite bf16 the next step is 2¹²⁸ (what IEEE rounding compares against; it becomes inf).
  const hi = (up & 0x7fff) === 0x7f80 ? Math.sign(x) * 2 ** 128 : valueOf((up << 16) >>> 0);
  const dLo = Math.abs(x - lo);
  const dHi = Math.abs(hi - x);
  if (dLo < dHi) return down;
  if (dHi < dLo) return up & 0xffff;
  return (down & 1 ? up : down) & 0xffff;
}

/** Packed words of the bf16 values of f32 `src` (element 2j low half, 2j+1 high half). */
export function packBf16Ref(src: Float32Array): Uint32Array {
  const out = new Uint32Array(Math.ceil(src.length / 2));
  for (let i = 0; i < src.length; i++) {
    const h = bf16OfF32Bits(bitsOf(src[i]));
    out[i >> 1] |= i & 1 ? h << 16 : h;
  }
  return out;
}

/** f32 values of n packed bf16 elements. */
export function unpackBf16Ref(words: Uint32Array, n: number): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = valueOf(i & 1 ? words[i >> 1] & 0xffff0000 : (words[i >> 1] & 0xffff) << 16);
  return out;
}
