// NF4 code book and quantization rule of bitsandbytes (bitsandbytes/functional.py, csrc/kernels.cu:
// dQuantizeNF4 / dDequantizeNF4). Values are given as f32 bit patterns so no compiler rounds a
// decimal literal differently.
const NF4_CODE_BITS = array<u32, 16>(
  0xbf800000u, 0xbf3239b1u, 0xbf066b30u, 0xbeca32a0u, 0xbe91a24du, 0xbe3d353fu, 0xbdba7871u, 0x00000000u,
  0x3da2faffu, 0x3e24cae3u, 0x3e7c04ddu, 0x3ead033au, 0x3ee1a4b8u, 0x3f1007abu, 0x3f3913b3u, 0x3f800000u);

// f32 midpoints between neighbouring codes; the CUDA decision tree picks code i+1 when x > T[i].
const NF4_MID_BITS = array<u32, 15>(
  0xbf591cd8u, 0xbf1c5270u, 0xbeeb8480u, 0xbeadea76u, 0xbe703cecu, 0xbe0d38bcu, 0xbd3a7871u,
  0x3d22faffu, 0x3df64862u, 0x3e5067e0u, 0x3e9582d4u, 0x3ec753f9u, 0x3f006d04u, 0x3f248dafu, 0x3f5c89dau);

// Read through a per-invocation copy of the table: a constant array indexed per call is rebuilt on
// every call by some compilers (SwiftShader's), which made NF4 products 4-5× slower than f32 there.
var<private> nf4CodeTable: array<u32, 16> = NF4_CODE_BITS;

fn nf4Code(q: u32) -> f32 {
  return bitcast<f32>(nf4CodeTable[q & 15u]);
}

// Index of the nearest code to x (x already scaled by 1/absmax). Strict `>` as in the tree, so
// an exact midpoint goes to the lower code and NaN (0·∞ in an all-zero block) gives 0.
fn nf4Quantize(x: f32) -> u32 {
  let mids = NF4_MID_BITS;
  var q = 0u;
  for (var i = 0u; i < 15u; i++) {
    q += select(0u, 1u, x > bitcast<f32>(mids[i]));
  }
  return q;
}

// 1/a correctly rounded for a positive normal f32 with a < 2^126 (WGSL allows 2.5 ulp for `/`,
// CUDA's 1.0f/x is exact, and quantized bytes must not depend on the GPU). Long division of the
// 24-bit mantissa in integers. Returns 0 when a == 0 so callers can special-case empty blocks.
fn exactReciprocal(a: f32) -> f32 {
  let bits = bitcast<u32>(a);
  let e = (bits >> 23u) & 0xffu;
  if (e == 0u || e >= 253u) { return select(1.0 / a, 0.0, a == 0.0); }
  let frac = bits & 0x7fffffu;
  if (frac == 0u) { return bitcast<f32>((254u - e) << 23u); }
  let m = frac | 0x800000u;
  // q = floor(2^48 / m) has 25 bits (m is not a power of two, so the top bit is 2^24).
  var rem = 0x1000000u - m;
  var q = 1u;
  for (var i = 0u; i < 24u; i++) {
    rem <<= 1u;
    q <<= 1u;
    if (rem >= m) { rem -= m; q |= 1u; }
  }
  let roundBit = q & 1u;
  var mant = q >> 1u;
  if (roundBit == 1u && (rem != 0u || (mant & 1u) == 1u)) { mant += 1u; }
  var exp = 253u - e;
  if (mant == 0x1000000u) { mant = 0x800000u; exp += 1u; }
  return bitcast<f32>((exp << 23u) | (mant & 0x7fffffu));
}
