// LoRA merge for export (PEFT: W += scale·(B @ A)), one row chunk at a time:
//   out[j] = round(W[wOffset + j] + delta[j]),  delta = s·B[rows]·A computed by the matmul op.
// W comes through the weight decoder the constants select (dense f32/bf16/f16, or NF4, which is
// dequantized on the fly). The output is f32, or bf16/f16 rounded to nearest-even like torch's
// .to(dtype), written two per u32 (element 2j in the low half), one thread per output word.
#include "{{W_DECODE}}"

const OUT_KIND: u32 = {{OUT_KIND}};

struct Params {
  count: u32, wOffset: u32, _pad0: u32, _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> delta: array<f32>;
@group(0) @binding(3) var<storage, read_write> outWords: array<u32>;

fn mergedAt(j: u32) -> f32 {
  return weightAt(p.wOffset + j) + delta[j];
}

fn toBf16Bits(x: f32) -> u32 {
  let bits = bitcast<u32>(x);
  if ((bits & 0x7f800000u) == 0x7f800000u && (bits & 0x7fffffu) != 0u) { return (bits >> 16u) | 0x40u; }
  return (bits + 0x7fffu + ((bits >> 16u) & 1u)) >> 16u;
}

fn toF16Bits(x: f32) -> u32 {
  let bits = bitcast<u32>(x);
  let sign = (bits >> 16u) & 0x8000u;
  let e = i32((bits >> 23u) & 0xffu);
  var mant = bits & 0x7fffffu;
  if (e == 255) { return sign | 0x7c00u | select(0u, 0x200u, mant != 0u); }
  let he = e - 127 + 15;
  if (he >= 31) { return sign | 0x7c00u; }
  if (he <= 0) {
    if (he < -10) { return sign; }
    mant |= 0x800000u;
    let shift = u32(14 - he);
    let half = 1u << (shift - 1u);
    let rest = mant & ((1u << shift) - 1u);
    var m = mant >> shift;
    if (rest > half || (rest == half && (m & 1u) == 1u)) { m += 1u; }
    return sign | m;
  }
  var h = sign | (u32(he) << 10u) | (mant >> 13u);
  let rest = mant & 0x1fffu;
  // A carry out of the mantissa correctly bumps the exponent (up to infinity).
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1u) == 1u)) { h += 1u; }
  return h;
}

fn to16(x: f32) -> u32 {
  return select(toF16Bits(x), toBf16Bits(x), OUT_KIND == 1u);
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let w = (wg.y * nwg.x + wg.x) * 64u + lid;
  if (OUT_KIND == 0u) {
    if (w >= p.count) { return; }
    outWords[w] = bitcast<u32>(mergedAt(w));
    return;
  }
  let j = w * 2u;
  if (j >= p.count) { return; }
  var word = to16(mergedAt(j));
  if (j + 1u < p.count) { word |= to16(mergedAt(j + 1u)) << 16u; }
  outWords[w] = word;
}
